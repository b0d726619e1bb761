package redis

import (
	"context"

	"github.com/spf13/pflag"

	"github.com/cairn-backup/cairn/internal/profile"
	"github.com/cairn-backup/cairn/internal/rdb"
	"github.com/cairn-backup/cairn/internal/source"
)

// Source is the Redis source of the command line (source.Source): the
// flags fill in its options.
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
func (s *Source) Hints() (backup, restore string) {
	return "--redis", "--redis-target or --redis-rdb-dir for Redis"
}

// connFlags are the same for backup and restore: how to reach a server.
func connFlags(fl *pflag.FlagSet, f *ConnOptions) {
	fl.StringVar(&f.CAFile, "redis-ca-file", "", "verify the Redis server's TLS certificate (rediss://) against the CA certificates in `file`")
	fl.BoolVar(&f.Insecure, "redis-insecure-skip-verify", false, "do not verify the Redis server's TLS certificate (rediss://)")
	fl.DurationVar(&f.Timeout, "redis-timeout", rdb.DefaultTimeout, "give up when Redis makes no progress for `duration`")
}

// BackupFlags implements source.Source.
func (s *Source) BackupFlags(fl *pflag.FlagSet) {
	f := &s.backup
	fl.StringVar(&f.URL, "redis", "", "store the RDB of the Redis server at `URL` (redis://[user:password@]host:port, rediss:// for TLS; password also from "+passwordEnv+") as "+Path+", fetched over the replication protocol")
	fl.StringVar(&f.RDBFile, "redis-rdb-file", "", "store this saved RDB `file` (e.g. after BGSAVE) as "+Path+" instead, for servers that refuse replication")
	fl.BoolVar(&f.Optional, "redis-optional", false, "if the Redis source fails, write the snapshot without it and exit with 3")
	connFlags(fl, &f.Conn)
}

// FromProfile implements source.Source: the profile's server or file is
// used unless --redis or --redis-rdb-file is given.
func (s *Source) FromProfile(p *profile.Profile, _ func(string) bool) {
	f := &s.backup
	if f.URL == "" && f.RDBFile == "" {
		f.URL, f.RDBFile = p.Redis.URL, p.Redis.RDBFile
	}
	f.Optional = f.Optional || p.Redis.Optional
}

// BackupEnabled implements source.Source.
func (s *Source) BackupEnabled() bool { return s.backup.Enabled() }

// Optional implements source.Source.
func (s *Source) Optional() bool { return s.backup.Optional }

// Start implements source.Source.
func (s *Source) Start(ctx context.Context, o source.Out) ([]source.Capture, error) {
	return start(ctx, s.backup, o)
}

// RestoreFlags implements source.Source.
func (s *Source) RestoreFlags(fl *pflag.FlagSet) {
	f := &s.restore
	fl.StringVar(&f.RDBDir, "redis-rdb-dir", "", "write the snapshot's Redis RDB as `dir`/dump.rdb for a stopped server to load (with appendonly yes Redis loads its AOF instead)")
	fl.StringVar(&f.Target, "redis-target", "", "load the snapshot's Redis RDB into the running server at `URL`, replacing its whole data set (it briefly replicates from cairn)")
	fl.StringVar(&f.Listen, "redis-listen", "", "with --redis-target: `host:port` where cairn serves the RDB to the target (default: this machine's address facing the target, a free port)")
	connFlags(fl, &f.Conn)
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
