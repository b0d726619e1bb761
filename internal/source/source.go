// Package source is what every input of a backup other than file system
// paths has in common: the streams it feeds the archiver, the records it
// adds to the snapshot (repo.Source, with its details), and how it ends.
// Each kind of source lives in a package below this one (command,
// postgres, redis) and produces Captures; the backup package runs them.
// Databases and caches implement Source, which also carries their flags,
// so that the command line lists them in one place (cmd/cairn/sources.go).
package source

import (
	"context"
	"encoding/json"
	"fmt"
	"io"

	"github.com/spf13/pflag"

	"github.com/cairn-backup/cairn/archiver"
	"github.com/cairn-backup/cairn/internal/profile"
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/restorer"
	"github.com/cairn-backup/cairn/tree"
)

// Source is one kind of input besides file paths, standard input and a
// command (a database, a cache). It owns its flags, so that a new source
// is its own package and one line in the command line's list of sources:
// the backup and restore commands add its flags, start it when its backup
// flags ask for it, and restore it when its restore flags name a target.
// One value serves one run of a command.
type Source interface {
	// Name is the word for the source in messages and in the record of
	// a skipped source ("postgres").
	Name() string
	// Hints name the flags that enable the source, for the messages that
	// ask for something to back up or a place to restore to.
	Hints() (backup, restore string)

	// BackupFlags adds the backup flags to fl.
	BackupFlags(fl *pflag.FlagSet)
	// FromProfile adds the profile's section to the backup flags; a flag
	// given on the command line (changed) wins over the profile.
	FromProfile(p *profile.Profile, changed func(flag string) bool)
	// BackupEnabled reports whether the backup flags ask for the source.
	BackupEnabled() bool
	// Optional sources that fail to start are recorded as skipped
	// instead of failing the backup.
	Optional() bool
	// Start begins the backup: the streams to store and what to record.
	Start(ctx context.Context, o Out) ([]Capture, error)

	// RestoreFlags adds the restore flags to fl.
	RestoreFlags(fl *pflag.FlagSet)
	// RestoreEnabled reports whether the restore flags name a target.
	RestoreEnabled() bool
	// CheckRestore checks, changing nothing, that Restore can run against
	// the enabled target now, and says what it will do there. Restores
	// check every target before they restore anything.
	CheckRestore(ctx context.Context, rs Restore) (string, error)
	// Restore restores the source's part of a snapshot to that target
	// and verifies it; without a target it only rejects restore flags
	// that need one. It runs for every source, enabled or not.
	Restore(ctx context.Context, rs Restore) error
}

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

// Stdin is the Capture that stores r (standard input) at path.
func Stdin(path string, r io.Reader, chunking string) Capture {
	return Capture{
		Streams: []archiver.Stream{{Path: path, Reader: r, Chunking: chunking}},
		Records: []repo.Source{{Kind: KindStdin, Name: path, Status: repo.SourceOK}},
	}
}

// Out is where a source reports to the user: lines of text on Stdout
// (none when Quiet), warnings on Stderr, or, with JSON, one JSON object per
// report.
type Out struct {
	Stdout, Stderr io.Writer
	JSON, Quiet    bool
}

// Printf writes a line of text, unless the output is JSON or quiet.
func (o Out) Printf(format string, args ...any) {
	if !o.JSON && !o.Quiet {
		fmt.Fprintf(o.Stdout, format, args...)
	}
}

// Warnf writes a warning to Stderr.
func (o Out) Warnf(format string, args ...any) {
	fmt.Fprintf(o.Stderr, "warning: "+format+"\n", args...)
}

// PrintJSON writes v as one line of JSON, as every command of cairn does.
func (o Out) PrintJSON(v any) error {
	return json.NewEncoder(o.Stdout).Encode(v)
}

// Restore is what a source needs to restore its part of a snapshot.
type Restore struct {
	Repo     *repo.Repository
	Snapshot *repo.Snapshot
	Out      Out
	// Downloads is the number of pack reads in flight (repo.ReadOptions).
	Downloads int
	// MaxEntries bounds the entries a file restore plans
	// (restorer.Options).
	MaxEntries int
}

// Dump writes the stored file at path in the snapshot to w.
func (rs Restore) Dump(ctx context.Context, path string, w io.Writer) error {
	n, err := tree.Find(ctx, rs.Repo, rs.Snapshot.Tree, path)
	if err != nil {
		return err
	}
	return restorer.Dump(ctx, rs.Repo, n, w, rs.Downloads)
}

// DumpNode writes a stored file to w.
func (rs Restore) DumpNode(ctx context.Context, n *tree.Node, w io.Writer) error {
	return restorer.Dump(ctx, rs.Repo, n, w, rs.Downloads)
}

// FormatBytes formats a byte count with binary units, as cairn prints them.
func FormatBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.3f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
