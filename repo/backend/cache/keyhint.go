package cache

import (
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"

	"github.com/zeebo/blake3"
)

// keyHintDir holds, per repository, the name of the key file that opened
// it last (repo.Options.PreferKey). A repository is known here by the hash
// of its sealed config, which is read before any key: its ID is inside.
const keyHintDir = "keys"

func keyHintPath(base string, sealedConfig []byte) string {
	sum := blake3.Sum256(sealedConfig)
	return filepath.Join(base, keyHintDir, hex.EncodeToString(sum[:16]))
}

// KeyHint returns the key file that last opened the repository whose
// sealed config is given, or "" when none is remembered under base.
func KeyHint(base string, sealedConfig []byte) string {
	b, err := os.ReadFile(keyHintPath(base, sealedConfig))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// SaveKeyHint remembers key file name as the one that opened the
// repository. It is a hint, not a secret: a name, nothing derived from the
// password or the key.
func SaveKeyHint(base string, sealedConfig []byte, name string) error {
	p := keyHintPath(base, sealedConfig)
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(base, tagFile)); err != nil {
		_ = writeAtomic(filepath.Join(base, tagFile), []byte(tagContent))
	}
	return writeAtomic(p, []byte(name+"\n"))
}
