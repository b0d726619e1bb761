package main

import (
	"context"

	"github.com/cairn-backup/cairn/internal/source"
	"github.com/cairn-backup/cairn/repo"
)

// findSnapshot resolves "latest", a full ID or a unique ID prefix
// (repo.SelectSnapshot).
func findSnapshot(ctx context.Context, r *repo.Repository, ref string, host string) (*repo.Snapshot, error) {
	sns, err := r.ListSnapshots(ctx)
	if err != nil && len(sns) == 0 {
		return nil, err
	}
	return repo.SelectSnapshot(sns, ref, host)
}

func formatBytes(n uint64) string { return source.FormatBytes(n) }
