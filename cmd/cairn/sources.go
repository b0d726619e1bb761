package main

import (
	"github.com/cairn-backup/cairn/internal/source"
	"github.com/cairn-backup/cairn/internal/source/postgres"
	"github.com/cairn-backup/cairn/internal/source/redis"
)

// newSources lists the sources besides files, standard input and a
// command, in the order their backups start and their restores run
// (databases before caches). A new source is one line here; its flags,
// backup and restore live in its package under internal/source.
func newSources() []source.Source {
	return []source.Source{
		postgres.NewSource(),
		redis.NewSource(),
	}
}
