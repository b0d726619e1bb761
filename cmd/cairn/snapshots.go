package main

import (
	"context"
	"fmt"

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

func formatBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.3f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
