package cache

import (
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/zeebo/blake3"
)

// keyHintDir holds, per repository, the name of the key file that opened
// it last (repo.Options.PreferKey).
const keyHintDir = "keys"

// ClientFile is where a client keeps a file of its own about a repository
// (a key hint, the snapshots it saw): base/dir/<h>, where <h> names the
// repository by the hash of its sealed config, which is read before any
// key (its ID is inside).
func ClientFile(base, dir string, sealedConfig []byte) string {
	sum := blake3.Sum256(sealedConfig)
	return filepath.Join(base, dir, hex.EncodeToString(sum[:16]))
}

// WriteClientFile writes a ClientFile through a temporary name and a
// rename, so processes sharing it never read half of one, creating its
// directory and the cache directory tag.
func WriteClientFile(p string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return err
	}
	base := filepath.Dir(filepath.Dir(p))
	if _, err := os.Stat(filepath.Join(base, tagFile)); err != nil {
		_ = writeAtomic(filepath.Join(base, tagFile), []byte(tagContent))
	}
	return writeAtomic(p, data)
}

// KeyHint returns the key file that last opened the repository whose
// sealed config is given, or "" when none is remembered under base.
func KeyHint(base string, sealedConfig []byte) string {
	b, err := os.ReadFile(ClientFile(base, keyHintDir, sealedConfig))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// SaveKeyHint remembers key file name as the one that opened the
// repository. It is a hint, not a secret: a name, nothing derived from the
// password or the key.
func SaveKeyHint(base string, sealedConfig []byte, name string) error {
	return WriteClientFile(ClientFile(base, keyHintDir, sealedConfig), []byte(name+"\n"))
}

// keyCopyDir holds copies of key files, named as in the repository.
const keyCopyDir = "keyfiles"

// locationFile is where a client keeps a file about the repository at
// location, read before anything of the repository is (base/dir/at-<h>).
func locationFile(base, dir, location string) string {
	sum := blake3.Sum256([]byte("cairn location\x00" + location))
	return filepath.Join(base, dir, "at-"+hex.EncodeToString(sum[:16]))
}

// LocationKey returns the key file that last opened the repository at
// location, by name and as stored, from a copy kept under base; "" and
// nil when none is kept or the copy does not hash to its name. It lets the
// key derivation start before the repository's config has arrived; the
// key file must still be read from the repository before the key is used
// (repo.Options.DerivedKey), so a removed one never opens it.
func LocationKey(base, location string) (string, []byte) {
	b, err := os.ReadFile(locationFile(base, keyHintDir, location))
	if err != nil {
		return "", nil
	}
	name := strings.TrimSpace(string(b))
	if !objectName(name) {
		return "", nil
	}
	data, err := os.ReadFile(filepath.Join(base, keyCopyDir, name))
	if err != nil {
		return "", nil
	}
	if sum := blake3.Sum256(data); hex.EncodeToString(sum[:]) != name {
		return "", nil
	}
	return name, data
}

// SaveLocationKey keeps a copy of key file name (data, as stored: the
// master key sealed under the password) for the repository at location.
// Anyone who can read the repository has the same bytes.
func SaveLocationKey(base, location, name string, data []byte) error {
	if !objectName(name) {
		return fmt.Errorf("key file name %q", name)
	}
	if err := WriteClientFile(filepath.Join(base, keyCopyDir, name), data); err != nil {
		return err
	}
	return WriteClientFile(locationFile(base, keyHintDir, location), []byte(name+"\n"))
}

// RemoveKeyCopy deletes the copy of key file name, if there is one: a key
// removed from the repository (perhaps because its password leaked) must
// not live on in the cache, sealed under that password.
func RemoveKeyCopy(base, name string) {
	if objectName(name) {
		_ = os.Remove(filepath.Join(base, keyCopyDir, name))
	}
}
