package main

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/cairn-backup/cairn/repo"
)

// findSnapshot resolves "latest", a full ID or a unique ID prefix.
func findSnapshot(ctx context.Context, r *repo.Repository, ref string, host string) (*repo.Snapshot, error) {
	sns, err := r.ListSnapshots(ctx)
	if err != nil && len(sns) == 0 {
		return nil, err
	}
	if ref == "latest" {
		for i := len(sns) - 1; i >= 0; i-- {
			if host == "" || sns[i].Hostname == host {
				return sns[i], nil
			}
		}
		return nil, fmt.Errorf("no snapshot found")
	}
	var match []*repo.Snapshot
	for _, sn := range sns {
		if strings.HasPrefix(sn.ID.String(), strings.ToLower(ref)) {
			match = append(match, sn)
		}
	}
	switch {
	case ref == "" || len(match) == 0:
		return nil, fmt.Errorf("no snapshot matches %q", ref)
	case len(match) > 1:
		return nil, fmt.Errorf("snapshot prefix %q is ambiguous (%d snapshots)", ref, len(match))
	}
	return match[0], nil
}

// findParent returns the newest snapshot of the same host and paths.
func findParent(sns []*repo.Snapshot, host string, paths []string) *repo.Snapshot {
	want := slices.Clone(paths)
	sort.Strings(want)
	for i := len(sns) - 1; i >= 0; i-- {
		sn := sns[i]
		got := slices.Clone(sn.Paths)
		sort.Strings(got)
		if sn.Hostname == host && slices.Equal(got, want) {
			return sn
		}
	}
	return nil
}

// findStreamPrev returns the newest snapshot of host that holds path: a
// stream's previous version (for deltas) may be in a snapshot of other
// paths than its parent.
func findStreamPrev(sns []*repo.Snapshot, host, path string) *repo.Snapshot {
	for i := len(sns) - 1; i >= 0; i-- {
		if sns[i].Hostname == host && slices.Contains(sns[i].Paths, path) {
			return sns[i]
		}
	}
	return nil
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
