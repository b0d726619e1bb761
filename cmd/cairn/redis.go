package main

import (
	"context"
	"time"

	"github.com/spf13/pflag"

	"github.com/cairn-backup/cairn/internal/source"
	"github.com/cairn-backup/cairn/internal/source/redis"
	"github.com/cairn-backup/cairn/rdb"
	"github.com/cairn-backup/cairn/repo"
)

// redisConnFlags say how to reach a Redis server (backup source or target).
type redisConnFlags struct {
	caFile   string
	insecure bool
	timeout  time.Duration
}

func registerRedisConnFlags(fl *pflag.FlagSet, f *redisConnFlags) {
	fl.StringVar(&f.caFile, "redis-ca-file", "", "verify the Redis server's TLS certificate (rediss://) against the CA certificates in `file`")
	fl.BoolVar(&f.insecure, "redis-insecure-skip-verify", false, "do not verify the Redis server's TLS certificate (rediss://)")
	fl.DurationVar(&f.timeout, "redis-timeout", rdb.DefaultTimeout, "give up when Redis makes no progress for `duration`")
}

// redisBackupFlags are the Redis source's backup flags.
type redisBackupFlags struct {
	url      string
	rdbFile  string
	optional bool
	conn     redisConnFlags
}

func (f *redisBackupFlags) enabled() bool { return f.url != "" || f.rdbFile != "" }

func registerRedisBackupFlags(fl *pflag.FlagSet, f *redisBackupFlags) {
	fl.StringVar(&f.url, "redis", "", "store the RDB of the Redis server at `URL` (redis://[user:password@]host:port, rediss:// for TLS; password also from "+redis.PasswordEnv+") as "+redis.Path+", fetched over the replication protocol")
	fl.StringVar(&f.rdbFile, "redis-rdb-file", "", "store this saved RDB `file` (e.g. after BGSAVE) as "+redis.Path+" instead, for servers that refuse replication")
	fl.BoolVar(&f.optional, "redis-optional", false, "if the Redis source fails, write the snapshot without it and exit with 3")
	registerRedisConnFlags(fl, &f.conn)
}

func (f *redisConnFlags) options() redis.ConnOptions {
	return redis.ConnOptions{CAFile: f.caFile, Insecure: f.insecure, Timeout: f.timeout}
}

func (f *redisBackupFlags) options() redis.BackupOptions {
	return redis.BackupOptions{URL: f.url, RDBFile: f.rdbFile, Optional: f.optional, Conn: f.conn.options()}
}

// redisBackupSources starts the --redis or --redis-rdb-file source
// (internal/source/redis).
func (a *app) redisBackupSources(ctx context.Context, bf *backupFlags) ([]source.Capture, error) {
	return redis.Start(ctx, bf.redis.options(), a.out())
}

// redisRestoreFlags are the Redis source's restore flags.
type redisRestoreFlags struct {
	rdbDir string
	target string
	listen string
	conn   redisConnFlags
}

func (f *redisRestoreFlags) enabled() bool { return f.rdbDir != "" || f.target != "" }

func registerRedisRestoreFlags(fl *pflag.FlagSet, f *redisRestoreFlags) {
	fl.StringVar(&f.rdbDir, "redis-rdb-dir", "", "write the snapshot's Redis RDB as `dir`/dump.rdb for a stopped server to load (with appendonly yes Redis loads its AOF instead)")
	fl.StringVar(&f.target, "redis-target", "", "load the snapshot's Redis RDB into the running server at `URL`, replacing its whole data set (it briefly replicates from cairn)")
	fl.StringVar(&f.listen, "redis-listen", "", "with --redis-target: `host:port` where cairn serves the RDB to the target (default: this machine's address facing the target, a free port)")
	registerRedisConnFlags(fl, &f.conn)
}

func (f *redisRestoreFlags) options() redis.RestoreOptions {
	return redis.RestoreOptions{RDBDir: f.rdbDir, Target: f.target, Listen: f.listen, Conn: f.conn.options()}
}

// redisRestore restores the snapshot's RDB when a Redis destination is given.
func (a *app) redisRestore(ctx context.Context, r *repo.Repository, sn *repo.Snapshot, f *redisRestoreFlags) error {
	return redis.Restore(ctx, a.sourceRestore(r, sn), f.options())
}
