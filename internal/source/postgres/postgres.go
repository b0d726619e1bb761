// Package postgres is the PostgreSQL source: it backs up databases by
// running pg_dump (and pg_dumpall --globals-only) into the snapshot, with
// each table's row count in the snapshot's details (pgstream does the
// talking to the server), and restores a dump with pg_restore or psql,
// then checks the restored row counts against the backup's.
package postgres

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cairn-backup/cairn/archiver"
	"github.com/cairn-backup/cairn/internal/pgstream"
	"github.com/cairn-backup/cairn/internal/source"
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/tree"
)

// Dumps live in the snapshot under Dir; their records have Kind, the
// globals' GlobalsKind.
const (
	Dir         = "/postgres/"
	Kind        = "postgres"
	GlobalsKind = "postgres-globals"
)

// BackupOptions say what to dump.
type BackupOptions struct {
	URLs      []string // postgres://user@host:port/db
	Format    string   // pgstream.FormatCustom or FormatPlain
	NoGlobals bool     // no pg_dumpall --globals-only
	LockWait  time.Duration
	Bin       string // directory of the client programs (default: PATH)
	// Optional: a failing database is recorded as skipped (profiles).
	Optional bool
	// BaseURL, when set, is a server to take a physical base backup of
	// (pg_basebackup), for point-in-time recovery with its archived WAL.
	BaseURL string
	// BaseSpread asks for a spread checkpoint instead of a fast one.
	BaseSpread bool
}

// Enabled reports whether any database is to be dumped or base backup
// taken.
func (f BackupOptions) Enabled() bool { return len(f.URLs) > 0 || f.BaseURL != "" }

// RestoreOptions say where and how to restore a dump.
type RestoreOptions struct {
	Target   string // database URL
	Database string // which dump, when the snapshot holds several
	Create   bool
	Clean    bool
	Globals  bool
	NoOwner  bool
	Jobs     int
	Bin      string
}

// Enabled reports whether a restore target is given.
func (f RestoreOptions) Enabled() bool { return f.Target != "" }

// start runs pg_dump for every database (and pg_dumpall --globals-only
// once) and returns their captures. Each Finish fails, so that no snapshot
// is written, unless its program exited 0 after writing a complete dump.
func start(ctx context.Context, f BackupOptions, o source.Out) (out []source.Capture, err error) {
	if len(f.URLs) == 0 {
		return nil, nil
	}
	if f.Format != pgstream.FormatCustom && f.Format != pgstream.FormatPlain {
		return nil, fmt.Errorf("--pg-format %q: use %s or %s", f.Format, pgstream.FormatCustom, pgstream.FormatPlain)
	}
	if f.LockWait < 0 {
		return nil, errors.New("--pg-lock-wait-timeout must not be negative")
	}
	var conns []*pgstream.ConnInfo
	for _, u := range f.URLs {
		c, err := pgstream.ParseConn(u)
		if err != nil {
			return nil, fmt.Errorf("--pg: %w", err)
		}
		conns = append(conns, c)
	}
	if !f.NoGlobals {
		for _, c := range conns[1:] {
			if c.Get("host") != conns[0].Get("host") || c.Get("port") != conns[0].Get("port") {
				return nil, fmt.Errorf("--pg %s and %s are different servers, but one snapshot holds one set of globals: back up each server separately, or give --pg-no-globals", conns[0], c)
			}
		}
	}
	tools := pgstream.Tools{Dir: f.Bin}
	seen := map[string]string{} // snapshot path -> what is stored there
	// Started programs are ended if a later one cannot start.
	defer func() {
		if err != nil {
			for _, s := range out {
				_ = s.Finish(nil)
			}
			out = nil
		}
	}()
	if !f.NoGlobals {
		g, err := pgstream.StartGlobals(ctx, pgstream.DumpOptions{Conn: conns[0], Tools: tools})
		if err != nil {
			return out, err
		}
		p := Dir + pgstream.GlobalsFileName
		out = append(out, source.Capture{
			Streams:  []archiver.Stream{{Path: p, Reader: g.Reader, Chunking: repo.ChunkingDatabase}},
			Records:  []repo.Source{{Kind: GlobalsKind, Name: p, Status: repo.SourceOK, Meta: map[string]string{"connection": conns[0].String()}}},
			Finish:   func(*archiver.Result) error { return g.Finish() },
			Optional: f.Optional,
		})
		seen[p] = "the globals"
	}
	for _, c := range conns {
		d, err := pgstream.StartDump(ctx, pgstream.DumpOptions{Conn: c, Tools: tools, Format: f.Format, LockWaitTimeout: f.LockWait})
		if err != nil {
			return out, err
		}
		p := Dir + pgstream.FileName(d.Database, f.Format)
		srcs := []repo.Source{{Kind: Kind, Name: p, Status: repo.SourceOK}}
		out = append(out, source.Capture{
			Optional: f.Optional,
			Streams:  []archiver.Stream{{Path: p, Reader: d.Reader, Chunking: repo.ChunkingDatabase}},
			Records:  srcs,
			Finish: func(*archiver.Result) error {
				det, err := d.Finish()
				if err != nil {
					return err
				}
				for _, w := range d.Warnings() {
					fmt.Fprintf(o.Stderr, "pg_dump %s: %s\n", d.Database, w)
				}
				setDetails(&srcs[0], det)
				o.Printf("postgres: %s -> %s: %d tables, %d rows, PostgreSQL %s, WAL %s at %s\n", det.Database, p,
					len(det.Tables), det.Rows(), det.ServerRelease(), det.WALLSN, det.Time.Local().Format("2006-01-02 15:04:05"))
				return nil
			},
		})
		if prev, ok := seen[p]; ok {
			return out, fmt.Errorf("--pg %s: %s would hold both its dump and %s: give each database once (a plain-format database named \"globals\" collides with the globals)", c, p, prev)
		}
		seen[p] = c.String()
	}
	return out, nil
}

// setDetails records what the backup learnt about a database with its
// source: a few facts for people, and the whole Details as JSON.
func setDetails(s *repo.Source, d *pgstream.Details) {
	js, _ := json.Marshal(d)
	s.Meta = map[string]string{
		"database":       d.Database,
		"format":         d.Format,
		"connection":     d.Connection,
		"server_version": d.ServerVersion,
		"wal_lsn":        d.WALLSN,
		"time":           d.Time.Format(time.RFC3339Nano),
		"tables":         strconv.Itoa(len(d.Tables)),
		"rows":           strconv.FormatInt(d.Rows(), 10),
	}
	s.Details = js
}

// detailsOf reads what setDetails stored.
func detailsOf(s repo.Source) (*pgstream.Details, error) {
	js := []byte(s.Details)
	if len(js) == 0 {
		return nil, fmt.Errorf("%s: the snapshot holds no details of this dump", s.Name)
	}
	var d pgstream.Details
	if err := json.Unmarshal(js, &d); err != nil {
		return nil, fmt.Errorf("%s: details: %w", s.Name, err)
	}
	return &d, nil
}

// StoredDump is a dump stored in a snapshot.
type StoredDump struct {
	Source  repo.Source
	Details *pgstream.Details
}

// storedDumps lists the snapshot's PostgreSQL dumps.
func storedDumps(sn *repo.Snapshot) ([]StoredDump, error) {
	var out []StoredDump
	for _, s := range sn.Sources {
		if s.Kind != Kind || s.Status != repo.SourceOK {
			continue
		}
		d, err := detailsOf(s)
		if err != nil {
			return nil, err
		}
		out = append(out, StoredDump{s, d})
	}
	return out, nil
}

// choose picks the dump to restore: want, else the target's database if
// the snapshot has it, else the only one.
func choose(dumps []StoredDump, want, targetDB string) (StoredDump, error) {
	var names []string
	for _, d := range dumps {
		names = append(names, d.Details.Database)
	}
	find := func(db string) (StoredDump, bool) {
		for _, d := range dumps {
			if d.Details.Database == db {
				return d, true
			}
		}
		return StoredDump{}, false
	}
	switch {
	case len(dumps) == 0:
		return StoredDump{}, errors.New("the snapshot holds no PostgreSQL dump (back up with --pg URL)")
	case want != "":
		if d, ok := find(want); ok {
			return d, nil
		}
		return StoredDump{}, fmt.Errorf("--pg-database %s: the snapshot holds dumps of %s only", want, strings.Join(names, ", "))
	}
	if d, ok := find(targetDB); ok {
		return d, nil
	}
	if len(dumps) == 1 {
		return dumps[0], nil
	}
	return StoredDump{}, fmt.Errorf("the snapshot holds dumps of several databases (%s): choose one with --pg-database", strings.Join(names, ", "))
}

// CheckRestore checks, without changing anything, that Restore can run
// with f against its target now, and says what it will do there.
func CheckRestore(ctx context.Context, rs source.Restore, f RestoreOptions) (string, error) {
	target, err := pgstream.ParseConn(f.Target)
	if err != nil {
		return "", err
	}
	dumps, err := storedDumps(rs.Snapshot)
	if err != nil {
		return "", err
	}
	d, err := choose(dumps, f.Database, target.Database())
	if err != nil {
		return "", fmt.Errorf("snapshot %s: %w", rs.Snapshot.ID.Short(), err)
	}
	if f.Globals && !slices.Contains(rs.Snapshot.Paths, Dir+pgstream.GlobalsFileName) {
		return "", fmt.Errorf("snapshot %s holds no globals (was it taken without them?)", rs.Snapshot.ID.Short())
	}
	return pgstream.Preflight(ctx, pgstream.RestoreOptions{Target: target, Tools: pgstream.Tools{Dir: f.Bin},
		Details: d.Details, Create: f.Create, Clean: f.Clean})
}

// Restore restores a database of the snapshot into f.Target and checks
// its row counts against the backup's. It does nothing without a target.
func Restore(ctx context.Context, rs source.Restore, f RestoreOptions) error {
	if !f.Enabled() {
		if f.Database != "" || f.Create || f.Clean || f.Globals || f.NoOwner {
			return errors.New("--pg-database, --pg-create, --pg-clean, --pg-globals and --pg-no-owner need --pg-target URL")
		}
		return nil
	}
	sn, a := rs.Snapshot, rs.Out
	if f.Jobs < 1 {
		return errors.New("--jobs must be at least 1")
	}
	target, err := pgstream.ParseConn(f.Target)
	if err != nil {
		return fmt.Errorf("--pg-target: %w", err)
	}
	dumps, err := storedDumps(sn)
	if err != nil {
		return err
	}
	d, err := choose(dumps, f.Database, target.Database())
	if err != nil {
		return fmt.Errorf("snapshot %s: %w", sn.ID.Short(), err)
	}
	node, err := tree.Find(ctx, rs.Repo, sn.Tree, d.Source.Name)
	if err != nil {
		return err
	}
	var globals io.Reader
	if f.Globals {
		gnode, err := tree.Find(ctx, rs.Repo, sn.Tree, Dir+pgstream.GlobalsFileName)
		if err != nil {
			return fmt.Errorf("--pg-globals: snapshot %s holds no globals (was it taken with --pg-no-globals?)", sn.ID.Short())
		}
		var buf bytes.Buffer
		if err := rs.DumpNode(ctx, gnode, &buf); err != nil {
			return fmt.Errorf("read globals: %w", err)
		}
		globals = &buf
	}
	if node.Type != tree.File {
		return fmt.Errorf("%s is not a file in snapshot %s", d.Source.Name, sn.ID.Short())
	}
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(rs.DumpNode(ctx, node, pw)) }()
	defer pr.CloseWithError(errors.New("restore ended"))

	var log io.Writer = io.Discard
	if !a.Quiet && !a.JSON {
		log = a.Stdout
	}
	res, err := pgstream.Restore(ctx, pgstream.RestoreOptions{
		Target: target, Tools: pgstream.Tools{Dir: f.Bin}, Dump: pr, Details: d.Details, Globals: globals,
		Create: f.Create, Clean: f.Clean, NoOwner: f.NoOwner, Jobs: f.Jobs, Log: log,
	})
	if res == nil {
		return err
	}
	if a.JSON {
		checks := res.Checks
		if checks == nil {
			checks = []pgstream.TableCheck{}
		}
		if jerr := a.PrintJSON(restoreJSON{
			MessageType: "pg_restore", SnapshotID: sn.ID.String(), Source: d.Source.Name,
			Database: res.Database, Created: res.Created, ExistingRoles: res.ExistingRoles,
			BytesRestored: res.Bytes, RestoreDuration: res.RestoreTime.Seconds(),
			Tables: checks, ExtraTables: res.Extra, Verified: err == nil,
		}); jerr != nil && err == nil {
			err = jerr
		}
		return err
	}
	if !a.Quiet || err != nil {
		fmt.Fprintf(a.Stdout, "restored %s in %s; ANALYZE done; row counts against the backup:\n", source.FormatBytes(uint64(res.Bytes)), res.RestoreTime.Round(time.Millisecond))
		pgstream.WriteChecks(a.Stdout, res.Checks)
		if len(res.Extra) > 0 {
			fmt.Fprintf(a.Stdout, "%d table(s) in %s were not in the backup: %s\n", len(res.Extra), res.Database, strings.Join(res.Extra, ", "))
		}
	}
	if err != nil {
		return fmt.Errorf("database %s: %w", res.Database, err)
	}
	a.Printf("verified: %d tables, %d rows, as at backup\n", len(res.Checks), d.Details.Rows())
	return nil
}

// restoreJSON is the --json message of a PostgreSQL restore.
type restoreJSON struct {
	MessageType     string                `json:"message_type"` // "pg_restore"
	SnapshotID      string                `json:"snapshot_id"`
	Source          string                `json:"source"` // the dump's path in the snapshot
	Database        string                `json:"database"`
	Created         bool                  `json:"created"`
	ExistingRoles   []string              `json:"existing_roles"`
	BytesRestored   int64                 `json:"bytes_restored"`
	RestoreDuration float64               `json:"restore_duration"` // seconds
	Tables          []pgstream.TableCheck `json:"tables"`
	ExtraTables     []string              `json:"extra_tables"`
	Verified        bool                  `json:"verified"`
}
