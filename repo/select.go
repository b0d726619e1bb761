package repo

import (
	"fmt"
	"slices"
	"sort"
	"strings"
)

// SelectSnapshot resolves "latest" (the newest of host, or of any host
// when host is empty), a full ID or a unique ID prefix among sns (oldest
// first, as ListSnapshots returns them).
func SelectSnapshot(sns []*Snapshot, ref, host string) (*Snapshot, error) {
	if ref == "latest" {
		for i := len(sns) - 1; i >= 0; i-- {
			if host == "" || sns[i].Hostname == host {
				return sns[i], nil
			}
		}
		return nil, fmt.Errorf("no snapshot found")
	}
	var match []*Snapshot
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

// FindParent returns the newest snapshot of host with exactly these paths,
// the parent of a new backup of them.
func FindParent(sns []*Snapshot, host string, paths []string) *Snapshot {
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

// FindParentInGroup returns the newest snapshot of host tagged group (a
// deployment profile's tag), whatever its paths: the snapshots of one
// profile are one series even when an optional source was skipped.
func FindParentInGroup(sns []*Snapshot, host, group string) *Snapshot {
	for i := len(sns) - 1; i >= 0; i-- {
		if sns[i].Hostname == host && slices.Contains(sns[i].Tags, group) {
			return sns[i]
		}
	}
	return nil
}

// FindStreamPrev returns the newest snapshot of host that holds path: a
// stream's previous version (for deltas) may be in a snapshot of other
// paths than its parent.
func FindStreamPrev(sns []*Snapshot, host, path string) *Snapshot {
	for i := len(sns) - 1; i >= 0; i-- {
		if sns[i].Hostname == host && slices.Contains(sns[i].Paths, path) {
			return sns[i]
		}
	}
	return nil
}
