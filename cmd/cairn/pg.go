package main

import (
	"context"

	"github.com/spf13/pflag"

	"github.com/cairn-backup/cairn/repo"
)

// pgBackupFlags are the PostgreSQL source's backup flags.
type pgBackupFlags struct{}

func (f *pgBackupFlags) enabled() bool { return false }

func registerPgBackupFlags(*pflag.FlagSet, *pgBackupFlags) {}

// pgBackupSources returns one source per --pg database.
func (a *app) pgBackupSources(context.Context, *backupFlags) ([]backupSource, error) { return nil, nil }

// pgRestoreFlags are the PostgreSQL source's restore flags.
type pgRestoreFlags struct{}

func (f *pgRestoreFlags) enabled() bool { return false }

func registerPgRestoreFlags(*pflag.FlagSet, *pgRestoreFlags) {}

// pgRestore restores the snapshot's databases when --pg-target is given.
func (a *app) pgRestore(context.Context, *repo.Repository, *repo.Snapshot, *pgRestoreFlags) error {
	return nil
}
