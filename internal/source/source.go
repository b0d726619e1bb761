// Package source is what every input of a backup other than file system
// paths has in common: the streams it feeds the archiver, the records it
// adds to the snapshot (repo.Source, with its details), and how it ends.
// Each kind of source lives in a package below this one (command,
// postgres, redis) and produces Captures; the backup package runs them.
package source

import (
	"github.com/cairn-backup/cairn/archiver"
	"github.com/cairn-backup/cairn/repo"
)

// Capture is one source's part of a running backup.
type Capture struct {
	// Streams are stored in the snapshot (their paths are its paths).
	Streams []archiver.Stream
	// Records describe the source in the snapshot; Finish may still fill
	// in details (row counts, key counts).
	Records []repo.Source
	// Finish, when set, runs once the streams were read (res is nil when
	// the backup failed, to stop what the source started). It returns an
	// error when the source failed: then no snapshot is written, unless
	// the source is Optional.
	Finish func(res *archiver.Result) error
	// Optional sources that fail are left out of the snapshot (recorded
	// as skipped) instead of failing it.
	Optional bool
}

// Skipped is the Capture of an optional source that failed before it
// started: it only records why.
func Skipped(kind string, err error) Capture {
	return Capture{Optional: true, Records: []repo.Source{{Kind: kind, Name: "/" + kind, Status: repo.SourceSkipped, Error: err.Error()}}}
}

// Kinds of file sources: the records of file system paths and of standard
// input.
const (
	KindFiles = "files"
	KindStdin = "stdin"
)
