package retention

import (
	"bytes"
	"fmt"
	"strings"
	"time"

	"github.com/cairn-backup/cairn/repo"
)

// ParseAt reads a point in time: RFC 3339 with a zone offset
// ("2026-01-06T03:00:00Z", "2026-01-06T03:00:00+01:00", fractional seconds
// allowed), or a wall-clock time in loc: "2026-01-06 03:00:00",
// "2026-01-06 03:00" (also with a T instead of the space) or a bare date
// "2026-01-06", which means 00:00 at the start of that day. nil loc means
// time.Local.
func ParseAt(s string, loc *time.Location) (time.Time, error) {
	if loc == nil {
		loc = time.Local
	}
	s = strings.TrimSpace(s)
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	for _, layout := range []string{
		"2006-01-02 15:04:05", "2006-01-02 15:04", "2006-01-02T15:04:05", "2006-01-02T15:04", "2006-01-02",
	} {
		if t, err := time.ParseInLocation(layout, s, loc); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("invalid time %q: use RFC 3339 (2026-01-06T03:00:00Z) or local time as 2026-01-06 03:00[:00] or 2026-01-06", s)
}

// SelectAt returns the newest snapshot taken at or before at, or nil if
// every snapshot is newer. Of snapshots with the same time it returns the
// one with the greatest ID, whatever the order of snaps: that is the last
// of them in repo.ListSnapshots order, the one "latest" also picks.
func SelectAt(snaps []*repo.Snapshot, at time.Time) *repo.Snapshot {
	var best *repo.Snapshot
	for _, sn := range snaps {
		if sn.Time.After(at) {
			continue
		}
		if best == nil || sn.Time.After(best.Time) ||
			(sn.Time.Equal(best.Time) && bytes.Compare(sn.ID[:], best.ID[:]) > 0) {
			best = sn
		}
	}
	return best
}
