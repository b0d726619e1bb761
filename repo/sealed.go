package repo

import (
	"encoding/json"
	"fmt"

	"github.com/cairn-backup/cairn/crypto"
)

// Files sealed under the master key are bound to their type from format
// version 2 on (docs/format.md §3.4): the type's label is the associated
// data of the seal, so a config, index file or snapshot copied into
// another type's place does not open there. Blobs and pack headers are not
// bound: they are found only through the index, which is, and each blob's
// content is checked against its ID.
var (
	adConfig   = []byte("cairn config")
	adIndex    = []byte("cairn index")
	adSnapshot = []byte("cairn snapshot")
)

// boundVersion is the first format version whose files are bound.
const boundVersion = 2

// sealFile seals the plaintext of a file of the type ad names, for a
// repository of the given format version.
func sealFile(key *crypto.Key, version int, ad, plain []byte) []byte {
	if version >= boundVersion {
		return key.SealFor(nil, plain, ad)
	}
	return key.Seal(nil, plain)
}

// openFile opens a sealed file of the type ad names. In a version 2
// repository only a file sealed for that type opens. In version 1 an
// unbound file opens, and so does one bound to the right type: a
// migration (Migrate) interrupted half-way leaves both kinds.
func openFile(key *crypto.Key, version int, ad, sealed []byte) ([]byte, error) {
	if version >= boundVersion {
		plain, err := key.OpenFor(nil, sealed, ad)
		if err != nil {
			return nil, fmt.Errorf("%w (damaged, or not a %s: an object of another type put in its place)", err, ad[len("cairn "):])
		}
		return plain, nil
	}
	plain, err := key.Open(nil, sealed)
	if err != nil {
		if bound, berr := key.OpenFor(nil, sealed, ad); berr == nil {
			return bound, nil
		}
	}
	return plain, err
}

// openJSON opens a sealed JSON file of the type ad names into v; what and
// name (the object) label the errors.
func (r *Repository) openJSON(what, name string, ad, sealed []byte, v any) error {
	js, err := openFile(r.key, r.cfg.Version, ad, sealed)
	if err != nil {
		return fmt.Errorf("%s %s: %w", what, ShortName(name), err)
	}
	if err := json.Unmarshal(js, v); err != nil {
		return fmt.Errorf("decode %s %s: %w", what, ShortName(name), err)
	}
	return nil
}
