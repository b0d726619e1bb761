package main

import (
	"context"

	"github.com/spf13/pflag"

	"github.com/cairn-backup/cairn/repo"
)

// redisBackupFlags are the Redis source's backup flags.
type redisBackupFlags struct{}

func (f *redisBackupFlags) enabled() bool { return false }

func registerRedisBackupFlags(*pflag.FlagSet, *redisBackupFlags) {}

// redisBackupSources returns the --redis source.
func (a *app) redisBackupSources(context.Context, *backupFlags) ([]backupSource, error) {
	return nil, nil
}

// redisRestoreFlags are the Redis source's restore flags.
type redisRestoreFlags struct{}

func (f *redisRestoreFlags) enabled() bool { return false }

func registerRedisRestoreFlags(*pflag.FlagSet, *redisRestoreFlags) {}

// redisRestore restores the snapshot's RDB when a Redis destination is given.
func (a *app) redisRestore(context.Context, *repo.Repository, *repo.Snapshot, *redisRestoreFlags) error {
	return nil
}
