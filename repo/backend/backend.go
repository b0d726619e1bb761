// Package backend defines the storage interface a repository is kept in:
// named, write-once objects grouped by type.
package backend

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"
)

// FileType groups objects; each type is a directory (or key prefix).
type FileType string

// The object types of a repository.
const (
	Config   FileType = "config"
	Key      FileType = "keys"
	DataPack FileType = "data"
	TreePack FileType = "tree"
	Index    FileType = "index"
	Snapshot FileType = "snapshots"
	// WAL holds the records of archived PostgreSQL WAL files, named by a
	// keyed hash of the server and the file name (docs/format.md §19).
	WAL FileType = "wal"
	// Removals holds records of what cairn removed from a repository with
	// object lock, so that a later purge deletes only that for good
	// (docs/format.md §16.5).
	Removals FileType = "removals"
)

// AllTypes lists every object type, config first.
func AllTypes() []FileType {
	return []FileType{Config, Key, DataPack, TreePack, Index, Snapshot, WAL, Removals}
}

// Handle names one object.
type Handle struct {
	Type FileType
	Name string // hex object ID; empty for Config
}

func (h Handle) String() string {
	if h.Type == Config {
		return "config"
	}
	return fmt.Sprintf("%s/%s", h.Type, h.Name)
}

// FileInfo describes a stored object.
type FileInfo struct {
	Name string
	Size int64
}

// ErrNotFound is wrapped by every error about a missing object.
var ErrNotFound = errors.New("object not found")

// Backend stores objects. Implementations must be safe for concurrent use.
type Backend interface {
	// Location describes the backend for messages (path or URL).
	Location() string
	// Save stores data under h atomically: readers see the whole object or
	// nothing. Objects are write-once: saving an existing name again
	// succeeds without changing it, since names are content hashes.
	Save(ctx context.Context, h Handle, data []byte) error
	// Load returns length bytes at offset; length 0 means up to the end.
	// It fails with an error wrapping ErrNotFound for a missing object and
	// returns fewer bytes only if the object is shorter.
	Load(ctx context.Context, h Handle, offset, length int64) ([]byte, error)
	// Open streams length bytes at offset (the rest of the object when
	// length is 0), so a large range is consumed as it arrives instead of
	// being held whole. Like Load it fails with ErrNotFound for a missing
	// object; a transient failure in the middle of the body is resumed
	// where it stopped. The reader ends early only if the object does.
	Open(ctx context.Context, h Handle, offset, length int64) (io.ReadCloser, error)
	// Stat returns the size of an object.
	Stat(ctx context.Context, h Handle) (FileInfo, error)
	// List calls fn for every object of type t, in no particular order.
	List(ctx context.Context, t FileType, fn func(FileInfo) error) error
	// Remove deletes an object; removing a missing one is not an error.
	Remove(ctx context.Context, h Handle) error
	// Close releases resources.
	Close() error
}

// IsNotFound reports whether err says an object does not exist.
func IsNotFound(err error) bool { return errors.Is(err, ErrNotFound) }

// FileSaver is implemented by backends that can store an object from a
// local file, so that packs are built on disk instead of in memory.
type FileSaver interface {
	// TempDir is where the caller creates the file. For the local backend
	// it is inside the repository, so SaveFile can rename instead of copy.
	TempDir() string
	// SaveFile stores the first size bytes of f under h, atomically and
	// write-once like Save. The caller still owns f: it closes and removes
	// it afterwards (removing a renamed file's old name is harmless).
	SaveFile(ctx context.Context, h Handle, f *os.File, size int64) error
}

// Replacer is storage that can replace an object in one step: a reader
// sees the old content or the new, never neither. Only the config is ever
// replaced (a format migration); every other object is written once.
type Replacer interface {
	Replace(ctx context.Context, h Handle, data []byte) error
}

// Unwrap returns the storage behind a wrapping backend (such as the local
// cache), or be itself: for readers that must see what the repository
// holds, like check --read-data.
func Unwrap(be Backend) Backend {
	for {
		w, ok := be.(interface{ Unwrap() Backend })
		if !ok {
			return be
		}
		be = w.Unwrap()
	}
}

// ErrTooLarge is wrapped when an object is larger than any object of its
// type that cairn writes: it is not read into memory (a planted or damaged
// object must not exhaust memory before anything was authenticated).
var ErrTooLarge = errors.New("object is larger than its type allows")

// MaxLoadSize is the most a Load of one object of type t reads: far above
// what cairn writes (a config or key file is a few hundred bytes, packs
// stay under 4 GiB, docs/format.md), far below what would exhaust memory.
func MaxLoadSize(t FileType) int64 {
	switch t {
	case Config, Key:
		return 1 << 20
	case Snapshot:
		return 64 << 20
	case Index:
		return 1 << 30
	}
	return 4 << 30
}

// CheckLoadSize returns an error wrapping ErrTooLarge when n bytes of h
// are more than MaxLoadSize allows.
func CheckLoadSize(h Handle, n int64) error {
	if max := MaxLoadSize(h.Type); n > max {
		return fmt.Errorf("load %v: %d bytes, more than the %d a %s object may have: %w", h, n, max, h.Type, ErrTooLarge)
	}
	return nil
}

// ListAheader is storage where a listing costs a round trip (S3): a
// command that knows which listings it will need starts them at once, in
// the background, so they overlap with the key derivation instead of
// following it.
type ListAheader interface {
	// ListAhead starts listing each type now. The first List of such a
	// type is served from that listing, unless this backend wrote or
	// removed an object of the type in between (then it lists again).
	ListAhead(ctx context.Context, types ...FileType)
	// ListedAhead returns when the listing of t that the next List will
	// serve began, if one was started ahead.
	ListedAhead(t FileType) (time.Time, bool)
}

// ListStart is when a List of t on be that begins now sees the storage
// as of: now, or the start of the listing started ahead that it will be
// served from. Whoever reasons about objects written "after the listing"
// (the local cache) must take this time.
func ListStart(be Backend, t FileType) time.Time {
	if l, ok := Unwrap(be).(ListAheader); ok {
		if start, ok := l.ListedAhead(t); ok {
			return start
		}
	}
	return time.Now()
}

// ListAhead starts the listings types on be or the storage behind its
// wrappers, if that storage lists ahead; otherwise it does nothing.
func ListAhead(ctx context.Context, be Backend, types ...FileType) {
	if l, ok := Unwrap(be).(ListAheader); ok && len(types) > 0 {
		l.ListAhead(ctx, types...)
	}
}
