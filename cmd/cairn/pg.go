package main

import (
	"context"
	"os"
	"time"

	"github.com/spf13/pflag"

	"github.com/cairn-backup/cairn/internal/source"
	"github.com/cairn-backup/cairn/internal/source/postgres"
	"github.com/cairn-backup/cairn/pgstream"
	"github.com/cairn-backup/cairn/repo"
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

func (f *pgBackupFlags) options() postgres.BackupOptions {
	return postgres.BackupOptions{URLs: f.urls, Format: f.format, NoGlobals: f.noGlobals, LockWait: f.lockWait, Bin: f.bin, Optional: f.optional}
}

// pgBackupSources starts the --pg databases' dumps (internal/source/postgres).
func (a *app) pgBackupSources(ctx context.Context, bf *backupFlags) ([]source.Capture, error) {
	return postgres.Start(ctx, bf.pg.options(), a.out())
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

func (f *pgRestoreFlags) options() postgres.RestoreOptions {
	return postgres.RestoreOptions{Target: f.target, Database: f.database, Create: f.create, Clean: f.clean,
		Globals: f.globals, NoOwner: f.noOwner, Jobs: f.jobs, Bin: f.bin}
}

// pgRestore restores the snapshot's database when --pg-target is given.
func (a *app) pgRestore(ctx context.Context, r *repo.Repository, sn *repo.Snapshot, f *pgRestoreFlags) error {
	return postgres.Restore(ctx, a.sourceRestore(r, sn), f.options())
}
