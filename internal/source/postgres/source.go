package postgres

import (
	"context"
	"os"
	"time"

	"github.com/spf13/pflag"

	"github.com/cairn-backup/cairn/internal/pgstream"
	"github.com/cairn-backup/cairn/internal/profile"
	"github.com/cairn-backup/cairn/internal/source"
)

// Source is the PostgreSQL source of the command line (source.Source):
// the flags fill in its options.
type Source struct {
	backup  BackupOptions
	restore RestoreOptions
}

var _ source.Source = (*Source)(nil)

// NewSource returns the source with no flags given.
func NewSource() *Source { return &Source{} }

// Name implements source.Source.
func (s *Source) Name() string { return Kind }

// Hints implements source.Source.
func (s *Source) Hints() (backup, restore string) { return "--pg", "--pg-target URL for PostgreSQL" }

// BackupFlags implements source.Source.
func (s *Source) BackupFlags(fl *pflag.FlagSet) {
	f := &s.backup
	fl.StringArrayVar(&f.URLs, "pg", nil, "dump the PostgreSQL database at `URL` (postgres://user@host:port/db, repeatable); password from the URL, PGPASSWORD or PGPASSFILE")
	fl.StringVar(&f.Format, "pg-format", pgstream.FormatCustom, "PostgreSQL dump `format`: custom (pg_dump -Fc -Z0, restored by pg_restore) or plain (SQL, restored by psql)")
	fl.BoolVar(&f.NoGlobals, "pg-no-globals", false, "do not store roles and tablespaces (pg_dumpall --globals-only, which needs a superuser)")
	fl.DurationVar(&f.LockWait, "pg-lock-wait-timeout", 5*time.Minute, "fail the backup rather than wait longer than `duration` for a table lock (0: wait forever)")
	fl.StringVar(&f.Bin, "pg-bin", os.Getenv("CAIRN_PG_BIN"), "`directory` of pg_dump and pg_dumpall (default: PATH); env CAIRN_PG_BIN")
	fl.StringVar(&f.BaseURL, "pg-base", "", "take a physical base backup of the PostgreSQL server at `URL` (pg_basebackup; the server must archive its WAL with 'cairn wal-push')")
	fl.BoolVar(&f.BaseSpread, "pg-base-spread-checkpoint", false, "let the base backup wait for a spread checkpoint instead of asking for a fast one")
}

// FromProfile implements source.Source: the profile's databases are added
// to --pg.
func (s *Source) FromProfile(p *profile.Profile, changed func(string) bool) {
	f, pp := &s.backup, p.Postgres
	f.URLs = append(f.URLs, pp.Databases...)
	if pp.Format != "" && !changed("pg-format") {
		f.Format = pp.Format
	}
	if !pp.Globals {
		f.NoGlobals = true
	}
	if pp.Bin != "" && f.Bin == "" {
		f.Bin = pp.Bin
	}
	f.Optional = f.Optional || pp.Optional
	if pp.PITR && f.BaseURL == "" {
		f.BaseURL = pp.BaseURL
	}
}

// BackupEnabled implements source.Source.
func (s *Source) BackupEnabled() bool { return s.backup.Enabled() }

// Optional implements source.Source.
func (s *Source) Optional() bool { return s.backup.Optional }

// Start implements source.Source.
func (s *Source) Start(ctx context.Context, o source.Out) ([]source.Capture, error) {
	out, err := start(ctx, s.backup, o)
	if err != nil || s.backup.BaseURL == "" {
		return out, err
	}
	base, err := startBase(ctx, s.backup, o)
	if err != nil {
		for _, c := range out {
			_ = c.Finish(nil)
		}
		return nil, err
	}
	return append(out, base), nil
}

// RestoreFlags implements source.Source.
func (s *Source) RestoreFlags(fl *pflag.FlagSet) {
	f := &s.restore
	fl.StringVar(&f.Target, "pg-target", "", "restore a PostgreSQL dump into the database at `URL` (password from the URL, PGPASSWORD or PGPASSFILE)")
	fl.StringVar(&f.Database, "pg-database", "", "restore the dump of database `name` (when the snapshot holds several)")
	fl.BoolVar(&f.Create, "pg-create", false, "create the target database if it does not exist")
	fl.BoolVar(&f.Clean, "pg-clean", false, "restore into a non-empty database, dropping the dumped objects first (pg_restore --clean --if-exists)")
	fl.BoolVar(&f.Globals, "pg-globals", false, "apply the stored roles and tablespaces first (existing ones are left unchanged)")
	fl.BoolVar(&f.NoOwner, "pg-no-owner", false, "do not restore ownership and privileges (pg_restore --no-owner --no-acl)")
	fl.IntVar(&f.Jobs, "jobs", 1, "run pg_restore with `N` parallel jobs (from a temporary copy of the dump in $TMPDIR)")
	fl.StringVar(&f.Bin, "pg-bin", os.Getenv("CAIRN_PG_BIN"), "`directory` of pg_restore and psql (default: PATH); env CAIRN_PG_BIN")
}

// RestoreEnabled implements source.Source.
func (s *Source) RestoreEnabled() bool { return s.restore.Enabled() }

// Restore implements source.Source.
func (s *Source) Restore(ctx context.Context, rs source.Restore) error {
	return Restore(ctx, rs, s.restore)
}

// CheckRestore implements source.Source.
func (s *Source) CheckRestore(ctx context.Context, rs source.Restore) (string, error) {
	return CheckRestore(ctx, rs, s.restore)
}
