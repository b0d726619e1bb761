package repo

import (
	"errors"

	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/repo/backend"
)

// maxBlobSize bounds a blob's plaintext (and zstd's window when decoding).
const maxBlobSize = 64 << 20

// Payload flags: the first byte of every blob's plaintext payload.
const (
	payloadRaw  = 0
	payloadZstd = 1
	// A delta payload is base ID || delta (docs/format.md §7.1), the delta
	// raw or zstd-compressed. The base is always a full (raw or zstd) blob.
	payloadDelta     = 2
	payloadDeltaZstd = 3
)

// ErrBlobNotFound is wrapped when a blob is not in the index.
var ErrBlobNotFound = errors.New("blob not in index")

// ErrBlobCorrupt is wrapped when a stored blob fails decryption or its hash.
var ErrBlobCorrupt = errors.New("blob is corrupt")

// PackType is the object type of the packs that hold blobs of type t.
func PackType(t index.BlobType) backend.FileType {
	if t == index.TreeBlob {
		return backend.TreePack
	}
	return backend.DataPack
}

// ShortName is the first eight characters of an object name, for messages.
func ShortName(n string) string {
	if len(n) > 8 {
		return n[:8]
	}
	return n
}
