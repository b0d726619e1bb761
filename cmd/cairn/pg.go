package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/cairn-backup/cairn/archiver"
	"github.com/cairn-backup/cairn/internal/source"
	"github.com/cairn-backup/cairn/pgstream"
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/tree"
)

// PostgreSQL dumps live in the snapshot under pgDir.
const (
	pgDir         = "/postgres/"
	pgSourceKind  = "postgres"
	pgGlobalsKind = "postgres-globals"
)

// pgBackupFlags are the PostgreSQL source's backup flags.
type pgBackupFlags struct {
	// Optional: a failing database is recorded as skipped (profiles).
	optional  bool
	urls      []string
	format    string
	noGlobals bool
	lockWait  time.Duration
	bin       string
}

func (f *pgBackupFlags) enabled() bool { return len(f.urls) > 0 }

func registerPgBackupFlags(fl *pflag.FlagSet, f *pgBackupFlags) {
	fl.StringArrayVar(&f.urls, "pg", nil, "dump the PostgreSQL database at `URL` (postgres://user@host:port/db, repeatable); password from the URL, PGPASSWORD or PGPASSFILE")
	fl.StringVar(&f.format, "pg-format", pgstream.FormatCustom, "PostgreSQL dump `format`: custom (pg_dump -Fc -Z0, restored by pg_restore) or plain (SQL, restored by psql)")
	fl.BoolVar(&f.noGlobals, "pg-no-globals", false, "do not store roles and tablespaces (pg_dumpall --globals-only, which needs a superuser)")
	fl.DurationVar(&f.lockWait, "pg-lock-wait-timeout", 5*time.Minute, "fail the backup rather than wait longer than `duration` for a table lock (0: wait forever)")
	fl.StringVar(&f.bin, "pg-bin", os.Getenv("CAIRN_PG_BIN"), "`directory` of pg_dump and pg_dumpall (default: PATH); env CAIRN_PG_BIN")
}

// pgBackupSources starts pg_dump for every --pg database (and pg_dumpall
// --globals-only once) and returns their streams. Each finish fails, so
// that no snapshot is written, unless its program exited 0 after writing a
// complete dump.
func (a *app) pgBackupSources(ctx context.Context, bf *backupFlags) (out []source.Capture, err error) {
	f := &bf.pg
	if !f.enabled() {
		return nil, nil
	}
	if f.format != pgstream.FormatCustom && f.format != pgstream.FormatPlain {
		return nil, fmt.Errorf("--pg-format %q: use %s or %s", f.format, pgstream.FormatCustom, pgstream.FormatPlain)
	}
	if f.lockWait < 0 {
		return nil, errors.New("--pg-lock-wait-timeout must not be negative")
	}
	var conns []*pgstream.ConnInfo
	for _, u := range f.urls {
		c, err := pgstream.ParseConn(u)
		if err != nil {
			return nil, fmt.Errorf("--pg: %w", err)
		}
		conns = append(conns, c)
	}
	if !f.noGlobals {
		for _, c := range conns[1:] {
			if c.Get("host") != conns[0].Get("host") || c.Get("port") != conns[0].Get("port") {
				return nil, fmt.Errorf("--pg %s and %s are different servers, but one snapshot holds one set of globals: back up each server separately, or give --pg-no-globals", conns[0], c)
			}
		}
	}
	tools := pgstream.Tools{Dir: f.bin}
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
	if !f.noGlobals {
		g, err := pgstream.StartGlobals(ctx, pgstream.DumpOptions{Conn: conns[0], Tools: tools})
		if err != nil {
			return out, err
		}
		p := pgDir + pgstream.GlobalsFileName
		out = append(out, source.Capture{
			Streams:  []archiver.Stream{{Path: p, Reader: g.Reader, Chunking: repo.ChunkingDatabase}},
			Records:  []repo.Source{{Kind: pgGlobalsKind, Name: p, Status: repo.SourceOK, Meta: map[string]string{"connection": conns[0].String()}}},
			Finish:   func(*archiver.Result) error { return g.Finish() },
			Optional: f.optional,
		})
		seen[p] = "the globals"
	}
	for _, c := range conns {
		d, err := pgstream.StartDump(ctx, pgstream.DumpOptions{Conn: c, Tools: tools, Format: f.format, LockWaitTimeout: f.lockWait})
		if err != nil {
			return out, err
		}
		p := pgDir + pgstream.FileName(d.Database, f.format)
		srcs := []repo.Source{{Kind: pgSourceKind, Name: p, Status: repo.SourceOK}}
		out = append(out, source.Capture{
			Optional: f.optional,
			Streams:  []archiver.Stream{{Path: p, Reader: d.Reader, Chunking: repo.ChunkingDatabase}},
			Records:  srcs,
			Finish: func(*archiver.Result) error {
				det, err := d.Finish()
				if err != nil {
					return err
				}
				for _, w := range d.Warnings() {
					fmt.Fprintf(a.stderr, "pg_dump %s: %s\n", d.Database, w)
				}
				setPgDetails(&srcs[0], det)
				if !a.jsonOutput {
					a.printf("postgres: %s -> %s: %d tables, %d rows, PostgreSQL %s, WAL %s at %s\n", det.Database, p,
						len(det.Tables), det.Rows(), det.ServerRelease(), det.WALLSN, det.Time.Local().Format("2006-01-02 15:04:05"))
				}
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

// setPgDetails records what the backup learnt about a database with its
// source: a few facts for people, and the whole Details as JSON.
func setPgDetails(s *repo.Source, d *pgstream.Details) {
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

// pgDetails reads what setPgDetails stored.
func pgDetails(s repo.Source) (*pgstream.Details, error) {
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

// pgRestoreFlags are the PostgreSQL source's restore flags.
type pgRestoreFlags struct {
	target   string
	database string
	create   bool
	clean    bool
	globals  bool
	noOwner  bool
	jobs     int
	bin      string
}

func (f *pgRestoreFlags) enabled() bool { return f.target != "" }

func registerPgRestoreFlags(fl *pflag.FlagSet, f *pgRestoreFlags) {
	fl.StringVar(&f.target, "pg-target", "", "restore a PostgreSQL dump into the database at `URL` (password from the URL, PGPASSWORD or PGPASSFILE)")
	fl.StringVar(&f.database, "pg-database", "", "restore the dump of database `name` (when the snapshot holds several)")
	fl.BoolVar(&f.create, "pg-create", false, "create the target database if it does not exist")
	fl.BoolVar(&f.clean, "pg-clean", false, "restore into a non-empty database, dropping the dumped objects first (pg_restore --clean --if-exists)")
	fl.BoolVar(&f.globals, "pg-globals", false, "apply the stored roles and tablespaces first (existing ones are left unchanged)")
	fl.BoolVar(&f.noOwner, "pg-no-owner", false, "do not restore ownership and privileges (pg_restore --no-owner --no-acl)")
	fl.IntVar(&f.jobs, "jobs", 1, "run pg_restore with `N` parallel jobs (from a temporary copy of the dump in $TMPDIR)")
	fl.StringVar(&f.bin, "pg-bin", os.Getenv("CAIRN_PG_BIN"), "`directory` of pg_restore and psql (default: PATH); env CAIRN_PG_BIN")
}

// pgDump is a dump stored in a snapshot.
type pgDump struct {
	source  repo.Source
	details *pgstream.Details
}

// pgDumps lists the snapshot's PostgreSQL dumps.
func pgDumps(sn *repo.Snapshot) ([]pgDump, error) {
	var out []pgDump
	for _, s := range sn.Sources {
		if s.Kind != pgSourceKind || s.Status != repo.SourceOK {
			continue
		}
		d, err := pgDetails(s)
		if err != nil {
			return nil, err
		}
		out = append(out, pgDump{s, d})
	}
	return out, nil
}

// choosePgDump picks the dump to restore: --pg-database, else the target
// URL's database if the snapshot has it, else the only one.
func choosePgDump(dumps []pgDump, want, targetDB string) (pgDump, error) {
	var names []string
	for _, d := range dumps {
		names = append(names, d.details.Database)
	}
	find := func(db string) (pgDump, bool) {
		for _, d := range dumps {
			if d.details.Database == db {
				return d, true
			}
		}
		return pgDump{}, false
	}
	switch {
	case len(dumps) == 0:
		return pgDump{}, errors.New("the snapshot holds no PostgreSQL dump (back up with --pg URL)")
	case want != "":
		if d, ok := find(want); ok {
			return d, nil
		}
		return pgDump{}, fmt.Errorf("--pg-database %s: the snapshot holds dumps of %s only", want, strings.Join(names, ", "))
	}
	if d, ok := find(targetDB); ok {
		return d, nil
	}
	if len(dumps) == 1 {
		return dumps[0], nil
	}
	return pgDump{}, fmt.Errorf("the snapshot holds dumps of several databases (%s): choose one with --pg-database", strings.Join(names, ", "))
}

// pgRestore restores the snapshot's databases when --pg-target is given.
func (a *app) pgRestore(ctx context.Context, r *repo.Repository, sn *repo.Snapshot, f *pgRestoreFlags) error {
	if !f.enabled() {
		if f.database != "" || f.create || f.clean || f.globals || f.noOwner {
			return errors.New("--pg-database, --pg-create, --pg-clean, --pg-globals and --pg-no-owner need --pg-target URL")
		}
		return nil
	}
	if f.jobs < 1 {
		return errors.New("--jobs must be at least 1")
	}
	target, err := pgstream.ParseConn(f.target)
	if err != nil {
		return fmt.Errorf("--pg-target: %w", err)
	}
	dumps, err := pgDumps(sn)
	if err != nil {
		return err
	}
	d, err := choosePgDump(dumps, f.database, target.Database())
	if err != nil {
		return fmt.Errorf("snapshot %s: %w", sn.ID.Short(), err)
	}
	node, err := tree.Find(ctx, r, sn.Tree, d.source.Name)
	if err != nil {
		return err
	}
	var globals io.Reader
	if f.globals {
		gnode, err := tree.Find(ctx, r, sn.Tree, pgDir+pgstream.GlobalsFileName)
		if err != nil {
			return fmt.Errorf("--pg-globals: snapshot %s holds no globals (was it taken with --pg-no-globals?)", sn.ID.Short())
		}
		var buf bytes.Buffer
		if err := a.dumpFile(ctx, r, gnode, &buf); err != nil {
			return fmt.Errorf("read globals: %w", err)
		}
		globals = &buf
	}
	if node.Type != tree.File {
		return fmt.Errorf("%s is not a file in snapshot %s", d.source.Name, sn.ID.Short())
	}
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(a.dumpFile(ctx, r, node, pw)) }()
	defer pr.CloseWithError(errors.New("restore ended"))

	var log io.Writer = io.Discard
	if !a.quiet && !a.jsonOutput {
		log = a.stdout
	}
	res, err := pgstream.Restore(ctx, pgstream.RestoreOptions{
		Target: target, Tools: pgstream.Tools{Dir: f.bin}, Dump: pr, Details: d.details, Globals: globals,
		Create: f.create, Clean: f.clean, NoOwner: f.noOwner, Jobs: f.jobs, Log: log,
	})
	if res == nil {
		return err
	}
	if a.jsonOutput {
		checks := res.Checks
		if checks == nil {
			checks = []pgstream.TableCheck{}
		}
		if jerr := a.printJSON(map[string]any{
			"message_type": "pg_restore", "snapshot_id": sn.ID.String(), "source": d.source.Name,
			"database": res.Database, "created": res.Created, "existing_roles": res.ExistingRoles,
			"bytes_restored": res.Bytes, "restore_duration": res.RestoreTime.Seconds(),
			"tables": checks, "extra_tables": res.Extra, "verified": err == nil,
		}); jerr != nil && err == nil {
			err = jerr
		}
		return err
	}
	if !a.quiet || err != nil {
		fmt.Fprintf(a.stdout, "restored %s in %s; ANALYZE done; row counts against the backup:\n", formatBytes(uint64(res.Bytes)), res.RestoreTime.Round(time.Millisecond))
		pgstream.WriteChecks(a.stdout, res.Checks)
		if len(res.Extra) > 0 {
			fmt.Fprintf(a.stdout, "%d table(s) in %s were not in the backup: %s\n", len(res.Extra), res.Database, strings.Join(res.Extra, ", "))
		}
	}
	if err != nil {
		return fmt.Errorf("database %s: %w", res.Database, err)
	}
	a.printf("verified: %d tables, %d rows, as at backup\n", len(res.Checks), d.details.Rows())
	return nil
}
