package main

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestSixtyNightsRetention makes 60 nightly snapshots with backup --time
// and checks, snapshot by snapshot, what each retention policy keeps
// against expectations computed here from the calendar alone.
func TestSixtyNightsRetention(t *testing.T) {
	c := newCLI(t, t.TempDir())
	c.init()
	start := time.Date(2026, 1, 1, 3, 0, 0, 0, time.UTC)
	nights := make([]time.Time, 60)
	for i := range nights {
		nights[i] = start.AddDate(0, 0, i)
	}
	// Two backups at a time: the 2-core machine spends most of each in key
	// derivation.
	var wg sync.WaitGroup
	sem := make(chan struct{}, 2)
	for i, n := range nights {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			res := c.runIn(strings.NewReader(fmt.Sprintf("night %d\n", i)), "backup", "--stdin", "--stdin-filename", "db.sql",
				"--host", "auth", "--time", n.Format(time.RFC3339))
			if res.code != 0 {
				t.Errorf("night %d: %s", i, res)
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	byID := map[string]time.Time{}
	for _, sn := range c.snapshots() {
		byID[sn.ID] = sn.Time.UTC()
	}
	if len(byID) != 60 {
		t.Fatalf("%d snapshots, want 60", len(byID))
	}

	// newestPer keeps the newest night of each of the last n periods.
	newestPer := func(n int, key func(time.Time) string) []time.Time {
		var out []time.Time
		seen := map[string]bool{}
		for i := len(nights) - 1; i >= 0 && len(seen) < n; i-- {
			k := key(nights[i])
			if !seen[k] {
				seen[k] = true
				out = append(out, nights[i])
			}
		}
		return out
	}
	day := func(t time.Time) string { return t.Format("2006-01-02") }
	week := func(t time.Time) string { y, w := t.ISOWeek(); return fmt.Sprintf("%d-%d", y, w) }
	month := func(t time.Time) string { return t.Format("2006-01") }
	last := nights[len(nights)-1]
	within := func(d time.Duration) []time.Time {
		var out []time.Time
		for _, n := range nights {
			if n.After(last.Add(-d)) {
				out = append(out, n)
			}
		}
		return out
	}
	union := func(sets ...[]time.Time) []time.Time {
		var out []time.Time
		for _, s := range sets {
			for _, x := range s {
				if !slices.ContainsFunc(out, x.Equal) {
					out = append(out, x)
				}
			}
		}
		return out
	}
	cases := []struct {
		name string
		args []string
		want []time.Time
	}{
		{"last 5", []string{"--keep-last", "5"}, nights[55:]},
		{"daily 7", []string{"--keep-daily", "7"}, newestPer(7, day)},
		{"weekly 4", []string{"--keep-weekly", "4"}, newestPer(4, week)},
		{"monthly 2", []string{"--keep-monthly", "2"}, newestPer(2, month)},
		{"daily 7 weekly 4 monthly 2", []string{"--keep-daily", "7", "--keep-weekly", "4", "--keep-monthly", "2"},
			union(newestPer(7, day), newestPer(4, week), newestPer(2, month))},
		{"within 10d", []string{"--keep-within", "10d"}, within(10 * 24 * time.Hour)},
		{"last 2 within 3d", []string{"--keep-last", "2", "--keep-within", "3d"}, union(nights[58:], within(3*24*time.Hour))},
	}
	for _, tc := range cases {
		res := c.ok(append([]string{"--json", "forget", "--dry-run"}, tc.args...)...)
		var groups []forgetGroupOut
		if err := json.Unmarshal([]byte(res.stdout), &groups); err != nil || len(groups) != 1 {
			t.Fatalf("%s: forget --json: %v\n%s", tc.name, err, res.stdout)
		}
		kept := map[time.Time]bool{}
		for _, sn := range groups[0].Keep {
			kept[byID[sn.ID]] = true
		}
		removed := map[time.Time]bool{}
		for _, sn := range groups[0].Remove {
			removed[byID[sn.ID]] = true
		}
		for _, n := range nights {
			want := slices.ContainsFunc(tc.want, n.Equal)
			switch {
			case want && !kept[n]:
				t.Errorf("%s: night %s should be kept", tc.name, day(n))
			case !want && !removed[n]:
				t.Errorf("%s: night %s should be removed", tc.name, day(n))
			}
		}
		if len(kept)+len(removed) != 60 {
			t.Errorf("%s: %d kept + %d removed != 60", tc.name, len(kept), len(removed))
		}
	}
}
