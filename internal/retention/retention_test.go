package retention

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/crypto"
	"github.com/cairn-backup/cairn/repo"
)

// The history the policy table runs on: one snapshot every night at 03:00
// UTC from Saturday 2025-11-15 to Tuesday 2026-01-13 (60 nights, labelled
// N1115 ... N0113), and five extra snapshots (E1 ... E5) on the last two
// days. Calendar facts the expectations rely on:
//
//   - 2026-01-01 is a Thursday, so ISO week 2026-W01 runs from Monday
//     2025-12-29 to Sunday 2026-01-04; W02 is Jan 5-11, W03 Jan 12-18.
//   - The Sundays closing the ISO weeks before are Dec 28 (2025-W52), 21,
//     14, 7, Nov 30, 23 and 16 (2025-W46, which holds only Nov 15 and 16).
//   - The history spans the months Nov, Dec, Jan and the years 2025, 2026.
//
// Newest first, the list starts E5 (Jan 13 11:15), E4 (Jan 13 03:40, the
// same hour as N0113), N0113, E3 (Jan 12 21:30), E2 (15:00), E1 (09:00),
// N0112, N0111, ...
//
// Tags: N1120 "release"; N1224 "audit" and "release"; E1 and E3 "manual".
func history() (all []*repo.Snapshot, byLabel map[string]*repo.Snapshot, label map[*repo.Snapshot]string) {
	byLabel = map[string]*repo.Snapshot{}
	label = map[*repo.Snapshot]string{}
	add := func(l string, t time.Time, tags ...string) {
		sn := &repo.Snapshot{Time: t, Hostname: "app", Paths: []string{"/srv"}, Tags: tags, ID: crypto.Hash([]byte(l))}
		all = append(all, sn)
		byLabel[l] = sn
		label[sn] = l
	}
	start := time.Date(2025, 11, 15, 3, 0, 0, 0, time.UTC)
	for i := range 60 {
		t := start.AddDate(0, 0, i)
		var tags []string
		switch t.Format("0102") {
		case "1120":
			tags = []string{"release"}
		case "1224":
			tags = []string{"audit", "release"}
		}
		add("N"+t.Format("0102"), t, tags...)
	}
	add("E1", time.Date(2026, 1, 12, 9, 0, 0, 0, time.UTC), "manual")
	add("E2", time.Date(2026, 1, 12, 15, 0, 0, 0, time.UTC))
	add("E3", time.Date(2026, 1, 12, 21, 30, 0, 0, time.UTC), "manual")
	add("E4", time.Date(2026, 1, 13, 3, 40, 0, 0, time.UTC))
	add("E5", time.Date(2026, 1, 13, 11, 15, 0, 0, time.UTC))
	// Apply must not depend on the input order.
	rng := rand.New(rand.NewPCG(1, 2))
	rng.Shuffle(len(all), func(i, j int) { all[i], all[j] = all[j], all[i] })
	return all, byLabel, label
}

// nights lists the labels of the nights from MMDD to MMDD, newest first
// (from is the newer one), e.g. nights("0111", "0107").
func nights(from, to string) []string {
	parse := func(s string) time.Time {
		t, err := time.Parse("0102", s)
		if err != nil {
			panic(err)
		}
		y := 2026
		if t.Month() >= 11 {
			y = 2025
		}
		return time.Date(y, t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
	}
	var out []string
	for d := parse(from); !d.Before(parse(to)); d = d.AddDate(0, 0, -1) {
		out = append(out, "N"+d.Format("0102"))
	}
	return out
}

func join(parts ...[]string) []string { return slices.Concat(parts...) }

func l(s ...string) []string { return s }

func TestForgetHistoryHelpers(t *testing.T) {
	all, _, _ := history()
	if len(all) != 65 {
		t.Fatalf("history has %d snapshots, want 65", len(all))
	}
	if got := nights("0102", "1230"); !slices.Equal(got, l("N0102", "N0101", "N1231", "N1230")) {
		t.Fatalf("nights = %v", got)
	}
	if n := len(nights("0113", "1115")); n != 60 {
		t.Fatalf("%d nights, want 60", n)
	}
	// The calendar facts the expectations rely on.
	for _, c := range []struct {
		date       string
		year, week int
		weekday    time.Weekday
	}{
		{"2025-11-15", 2025, 46, time.Saturday}, {"2025-11-16", 2025, 46, time.Sunday},
		{"2025-11-17", 2025, 47, time.Monday}, {"2025-12-28", 2025, 52, time.Sunday},
		{"2025-12-29", 2026, 1, time.Monday}, {"2026-01-04", 2026, 1, time.Sunday},
		{"2026-01-05", 2026, 2, time.Monday}, {"2026-01-12", 2026, 3, time.Monday},
	} {
		d, _ := time.Parse("2006-01-02", c.date)
		y, w := d.ISOWeek()
		if y != c.year || w != c.week || d.Weekday() != c.weekday {
			t.Errorf("%s is %d-W%02d %s, the test assumes %d-W%02d %s", c.date, y, w, d.Weekday(), c.year, c.week, c.weekday)
		}
	}
}

func TestForgetPolicyTable(t *testing.T) {
	allNights := nights("0113", "1115")
	untagged := slices.DeleteFunc(join(l("E5", "E4", "E2"), allNights), func(s string) bool { return s == "N1120" || s == "N1224" })
	everything := join(l("E5", "E4", "N0113", "E3", "E2", "E1"), nights("0112", "1115"))

	cases := []struct {
		name    string
		p       Policy
		keep    []string            // labels, in any order
		reasons map[string][]string // exact reasons of some kept snapshots
	}{
		{
			name: "keep-last 5",
			p:    Policy{Last: 5},
			keep: l("E5", "E4", "N0113", "E3", "E2"),
			reasons: map[string][]string{
				"E5": {"last snapshot"}, "E2": {"last snapshot"},
			},
		},
		{
			// Days with snapshots, newest first: Jan 13 (newest E5), Jan 12
			// (newest E3), then one night each.
			name: "keep-daily 7",
			p:    Policy{Daily: 7},
			keep: join(l("E5", "E3"), nights("0111", "0107")),
		},
		{
			// Weekly: W03 E5, W02 N0111 (Sunday), W01 N0104 (Sunday),
			// 2025-W52 N1228. Monthly: Jan E5, Dec N1231, Nov N1130, then 3
			// months are left at the oldest snapshot, N1115: kept as well.
			name: "keep-daily 7 weekly 4 monthly 6",
			p:    Policy{Daily: 7, Weekly: 4, Monthly: 6},
			keep: join(l("E5", "E3"), nights("0111", "0107"), l("N0104", "N1228", "N1231", "N1130", "N1115")),
			reasons: map[string][]string{
				"E5":    {"daily snapshot", "weekly snapshot", "monthly snapshot"},
				"N0111": {"daily snapshot", "weekly snapshot"},
				"N0107": {"daily snapshot"},
				"N0104": {"weekly snapshot"},
				"N1228": {"weekly snapshot"},
				"N1231": {"monthly snapshot"},
				"N1130": {"monthly snapshot"},
				"N1115": {"oldest monthly snapshot"},
			},
		},
		{
			// Cut-off: newest (Jan 13 11:15) minus 10 days = Jan 3 11:15.
			name:    "keep-within 10d",
			p:       Policy{Within: 10 * 24 * time.Hour},
			keep:    join(l("E5", "E4", "E3", "E2", "E1"), nights("0113", "0104")),
			reasons: map[string][]string{"E5": {"within 10d"}, "N0104": {"within 10d"}},
		},
		{
			// Cut-off exactly at N0113 (03:00): "within" is strict, as restic's.
			name:    "keep-within 8h15m, boundary",
			p:       Policy{Within: 8*time.Hour + 15*time.Minute},
			keep:    l("E5", "E4"),
			reasons: map[string][]string{"E4": {"within 8h15m0s"}},
		},
		{
			// One calendar month before Jan 13 11:15 is Dec 13 11:15.
			name:    "keep-within 1m (calendar month)",
			p:       Policy{WithinMonths: 1},
			keep:    join(l("E5", "E4", "E3", "E2", "E1"), nights("0113", "1214")),
			reasons: map[string][]string{"N1214": {"within 1m"}},
		},
		{
			name: "keep-within 1y keeps the whole history",
			p:    Policy{WithinMonths: 12},
			keep: everything,
		},
		{
			// Hours with snapshots: Jan 13 11h (E5), Jan 13 03h (E4 is newer
			// than N0113), Jan 12 21h, 15h, 09h, 03h, then one per night:
			// 6 + 18 nights back to Dec 25.
			name: "keep-hourly 24, several per day and per hour",
			p:    Policy{Hourly: 24},
			keep: join(l("E5", "E4", "E3", "E2", "E1", "N0112"), nights("0111", "1225")),
			reasons: map[string][]string{
				"E4": {"hourly snapshot"}, "N1225": {"hourly snapshot"},
			},
		},
		{
			name:    "keep-yearly 2 across New Year",
			p:       Policy{Yearly: 2},
			keep:    l("E5", "N1231"),
			reasons: map[string][]string{"N1231": {"yearly snapshot"}},
		},
		{
			// Only two years have snapshots: the third count keeps the oldest.
			name:    "keep-yearly 3 keeps the oldest too",
			p:       Policy{Yearly: 3},
			keep:    l("E5", "N1231", "N1115"),
			reasons: map[string][]string{"N1115": {"oldest yearly snapshot"}},
		},
		{
			name: "keep-weekly 3, ISO weeks start on Monday",
			p:    Policy{Weekly: 3},
			keep: l("E5", "N0111", "N0104"),
		},
		{
			// Ten weeks have snapshots; the tenth, 2025-W46, is kept by its
			// newest (Sunday Nov 16) and the count is used up: N1115 goes.
			name: "keep-weekly 10 uses every week exactly",
			p:    Policy{Weekly: 10},
			keep: l("E5", "N0111", "N0104", "N1228", "N1221", "N1214", "N1207", "N1130", "N1123", "N1116"),
		},
		{
			name:    "keep-weekly 11 keeps the oldest too",
			p:       Policy{Weekly: 11},
			keep:    l("E5", "N0111", "N0104", "N1228", "N1221", "N1214", "N1207", "N1130", "N1123", "N1116", "N1115"),
			reasons: map[string][]string{"N1116": {"weekly snapshot"}, "N1115": {"oldest weekly snapshot"}},
		},
		{
			name: "keep-monthly 2 across the month boundary",
			p:    Policy{Monthly: 2},
			keep: l("E5", "N1231"),
		},
		{
			name:    "keep-tag release",
			p:       Policy{Tags: l("release")},
			keep:    l("N1224", "N1120"),
			reasons: map[string][]string{"N1224": {"tag release"}},
		},
		{
			name:    "keep-tag manual or audit",
			p:       Policy{Tags: l("manual", "audit")},
			keep:    l("E3", "E1", "N1224"),
			reasons: map[string][]string{"E1": {"tag manual"}, "N1224": {"tag audit"}},
		},
		{
			name:    "keep-tag audit,release needs both",
			p:       Policy{Tags: l("audit,release")},
			keep:    l("N1224"),
			reasons: map[string][]string{"N1224": {"tags audit,release"}},
		},
		{
			name:    "keep-tag '' keeps untagged snapshots",
			p:       Policy{Tags: l("")},
			keep:    untagged,
			reasons: map[string][]string{"E5": {"no tags"}},
		},
		{
			name: "keep-tag release,manual matches nothing",
			p:    Policy{Tags: l("release,manual")},
			keep: nil,
		},
		{
			name: "keep-last 3 daily 3 tag release",
			p:    Policy{Last: 3, Daily: 3, Tags: l("release")},
			keep: l("E5", "E4", "N0113", "E3", "N0111", "N1224", "N1120"),
			reasons: map[string][]string{
				"E5":    {"last snapshot", "daily snapshot"},
				"N0113": {"last snapshot"},
				"E3":    {"daily snapshot"},
				"N1224": {"tag release"},
			},
		},
		{
			// Cut-off Jan 12 11:15: E1 (09:00) is outside and not tagged
			// release; tags come first in the reasons, then within, then counts.
			name: "keep-within 1d tag release monthly 1",
			p:    Policy{Within: 24 * time.Hour, Tags: l("release"), Monthly: 1},
			keep: l("E5", "E4", "N0113", "E3", "E2", "N1224", "N1120"),
			reasons: map[string][]string{
				"E5":    {"within 1d", "monthly snapshot"},
				"E3":    {"within 1d"},
				"N1120": {"tag release"},
			},
		},
		{
			name: "keep-daily unlimited",
			p:    Policy{Daily: Unlimited},
			keep: join(l("E5", "E3"), nights("0111", "1115")),
		},
		{
			// Unlimited counts never run out, so the oldest is always kept.
			name:    "keep-monthly unlimited",
			p:       Policy{Monthly: Unlimited},
			keep:    l("E5", "N1231", "N1130", "N1115"),
			reasons: map[string][]string{"N1115": {"oldest monthly snapshot"}},
		},
		{
			name: "keep-last unlimited",
			p:    Policy{Last: Unlimited},
			keep: everything,
		},
		{
			name:    "empty policy keeps everything",
			p:       Policy{},
			keep:    everything,
			reasons: map[string][]string{"E5": {"policy is empty"}, "N1115": {"policy is empty"}},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			all, byLabel, label := history()
			groups := Apply(all, c.p, GroupBy{Host: true, Paths: true}, time.UTC)
			if len(groups) != 1 {
				t.Fatalf("%d groups, want 1", len(groups))
			}
			g := groups[0]
			if g.Key.Host != "app" || !slices.Equal(g.Key.Paths, l("/srv")) {
				t.Errorf("group key %+v", g.Key)
			}
			checkGroup(t, g, label, len(all))
			var got []string
			for _, d := range g.Keep {
				got = append(got, label[d.Snapshot])
			}
			want := slices.Clone(c.keep)
			for _, w := range want {
				if byLabel[w] == nil {
					t.Fatalf("expected label %s is not in the history", w)
				}
			}
			slices.Sort(got)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Errorf("kept %d snapshots, want %d\n  missing: %v\n  extra:   %v", len(got), len(want), minus(want, got), minus(got, want))
			}
			for lbl, wantReasons := range c.reasons {
				var found bool
				for _, d := range g.Keep {
					if label[d.Snapshot] == lbl {
						found = true
						if !slices.Equal(d.Reasons, wantReasons) {
							t.Errorf("%s kept for %q, want %q", lbl, d.Reasons, wantReasons)
						}
					}
				}
				if !found {
					t.Errorf("%s not kept; want reasons %q", lbl, wantReasons)
				}
			}
		})
	}
}

// checkGroup checks the shape of a group: every snapshot once, both lists
// newest first, every kept snapshot with a reason.
func checkGroup(t *testing.T, g Group, label map[*repo.Snapshot]string, total int) {
	t.Helper()
	if n := len(g.Keep) + len(g.Remove); n != total {
		t.Errorf("keep %d + remove %d = %d, want %d", len(g.Keep), len(g.Remove), n, total)
	}
	seen := map[*repo.Snapshot]bool{}
	var keep []*repo.Snapshot
	for _, d := range g.Keep {
		if len(d.Reasons) == 0 {
			t.Errorf("%s kept without a reason", label[d.Snapshot])
		}
		keep = append(keep, d.Snapshot)
	}
	for _, list := range [][]*repo.Snapshot{keep, g.Remove} {
		for i, sn := range list {
			if seen[sn] {
				t.Errorf("%s appears twice", label[sn])
			}
			seen[sn] = true
			if i > 0 && list[i-1].Time.Before(sn.Time) {
				t.Errorf("%s listed before the newer %s", label[list[i-1]], label[sn])
			}
		}
	}
}

func minus(a, b []string) []string {
	var out []string
	for _, x := range a {
		if !slices.Contains(b, x) {
			out = append(out, x)
		}
	}
	return out
}

func snap(id string, host string, paths []string, tags []string, t time.Time) *repo.Snapshot {
	return &repo.Snapshot{Time: t, Hostname: host, Paths: paths, Tags: tags, ID: crypto.Hash([]byte(id))}
}

func TestForgetGrouping(t *testing.T) {
	day := func(d int) time.Time { return time.Date(2026, 2, d, 3, 0, 0, 0, time.UTC) }
	a1 := snap("a1", "app", l("/srv", "/etc"), nil, day(1).Add(-time.Hour))
	a2 := snap("a2", "app", l("/etc", "/srv"), l("x"), day(2)) // same paths, other order
	a3 := snap("a3", "app", l("/srv"), l("x"), day(3))
	d1 := snap("d1", "db", l("/dump"), nil, day(1))
	d2 := snap("d2", "db", l("/dump"), l("x"), day(4))
	all := []*repo.Snapshot{d2, a3, a1, d1, a2}

	type want struct {
		key  string
		keep []*repo.Snapshot
	}
	for _, c := range []struct {
		by   string
		want []want
	}{
		{"host,paths", []want{
			{"host [app], paths [/etc, /srv]", []*repo.Snapshot{a2}},
			{"host [app], paths [/srv]", []*repo.Snapshot{a3}},
			{"host [db], paths [/dump]", []*repo.Snapshot{d2}},
		}},
		{"host", []want{
			{"host [app]", []*repo.Snapshot{a3}},
			{"host [db]", []*repo.Snapshot{d2}},
		}},
		{"", []want{{"all snapshots", []*repo.Snapshot{d2}}}},
		{"tags", []want{
			{"tags []", []*repo.Snapshot{d1}},
			{"tags [x]", []*repo.Snapshot{d2}},
		}},
		{"paths, tags", []want{
			{"paths [/dump], tags []", []*repo.Snapshot{d1}},
			{"paths [/dump], tags [x]", []*repo.Snapshot{d2}},
			{"paths [/etc, /srv], tags []", []*repo.Snapshot{a1}},
			{"paths [/etc, /srv], tags [x]", []*repo.Snapshot{a2}},
			{"paths [/srv], tags [x]", []*repo.Snapshot{a3}},
		}},
	} {
		by, err := ParseGroupBy(c.by)
		if err != nil {
			t.Fatal(err)
		}
		groups := Apply(all, Policy{Last: 1}, by, time.UTC)
		if len(groups) != len(c.want) {
			t.Errorf("group by %q: %d groups, want %d", c.by, len(groups), len(c.want))
			continue
		}
		total := 0
		for i, g := range groups {
			total += len(g.Keep) + len(g.Remove)
			if g.Key.String() != c.want[i].key {
				t.Errorf("group by %q: group %d is %q, want %q", c.by, i, g.Key, c.want[i].key)
			}
			var keep []*repo.Snapshot
			for _, d := range g.Keep {
				keep = append(keep, d.Snapshot)
			}
			if !slices.Equal(keep, c.want[i].keep) {
				t.Errorf("group by %q, %s: kept %d snapshots, not the newest one", c.by, g.Key, len(keep))
			}
		}
		if total != len(all) {
			t.Errorf("group by %q: %d snapshots in groups, want %d", c.by, total, len(all))
		}
	}
	if _, err := ParseGroupBy("host,path"); err == nil {
		t.Error("ParseGroupBy accepted an unknown field")
	}
	if g, _ := ParseGroupBy("tags,host"); g.String() != "host,tags" {
		t.Errorf("GroupBy.String = %q", g)
	}
}

// Periods are calendar periods in the given location.
func TestForgetLocation(t *testing.T) {
	a := snap("a", "h", l("/"), nil, time.Date(2026, 1, 12, 22, 0, 0, 0, time.UTC))
	b := snap("b", "h", l("/"), nil, time.Date(2026, 1, 13, 1, 0, 0, 0, time.UTC))
	c := snap("c", "h", l("/"), nil, time.Date(2026, 1, 11, 12, 0, 0, 0, time.UTC))
	all := []*repo.Snapshot{a, b, c}
	kept := func(loc *time.Location) []*repo.Snapshot {
		var out []*repo.Snapshot
		for _, d := range Apply(all, Policy{Daily: 2}, GroupBy{}, loc)[0].Keep {
			out = append(out, d.Snapshot)
		}
		return out
	}
	// UTC: days Jan 13 (b) and Jan 12 (a).
	if got := kept(time.UTC); !slices.Equal(got, []*repo.Snapshot{b, a}) {
		t.Errorf("UTC: kept %v", ids(got))
	}
	// UTC-5: a and b are both on Jan 12 (17:00, 20:00), c on Jan 11.
	if got := kept(time.FixedZone("UTC-5", -5*3600)); !slices.Equal(got, []*repo.Snapshot{b, c}) {
		t.Errorf("UTC-5: kept %v", ids(got))
	}
}

func ids(sns []*repo.Snapshot) string {
	var s []string
	for _, sn := range sns {
		s = append(s, sn.ID.Short())
	}
	return strings.Join(s, " ")
}

// A snapshot dated in the future is not "the newest" for keep-within, and
// keep-within keeps it.
func TestForgetWithinIgnoresFuture(t *testing.T) {
	now := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	future := snap("f", "h", l("/"), nil, now.Add(30*24*time.Hour))
	recent := snap("r", "h", l("/"), nil, now.Add(-2*time.Hour))
	older := snap("o", "h", l("/"), nil, now.Add(-50*time.Hour))
	old := snap("x", "h", l("/"), nil, now.Add(-5*24*time.Hour))
	all := []*repo.Snapshot{future, recent, older, old}

	g := Apply(all, Policy{Within: 72 * time.Hour, Now: now}, GroupBy{}, time.UTC)[0]
	var keep []*repo.Snapshot
	for _, d := range g.Keep {
		keep = append(keep, d.Snapshot)
	}
	if !slices.Equal(keep, []*repo.Snapshot{future, recent, older}) || !slices.Equal(g.Remove, []*repo.Snapshot{old}) {
		t.Errorf("with Now: kept %v, removed %v", ids(keep), ids(g.Remove))
	}
	// Without a clock the future snapshot is the newest: only it is within.
	g = Apply(all, Policy{Within: 72 * time.Hour}, GroupBy{}, time.UTC)[0]
	if len(g.Keep) != 1 || g.Keep[0].Snapshot != future {
		t.Errorf("without Now: kept %d", len(g.Keep))
	}
}

func TestForgetPolicyEmptyValidateString(t *testing.T) {
	if !(Policy{Now: time.Now()}).Empty() {
		t.Error("a policy with only a clock is not empty")
	}
	for _, p := range []Policy{{Last: 1}, {Yearly: Unlimited}, {Within: time.Hour}, {WithinMonths: 1}, {Tags: l("")}} {
		if p.Empty() {
			t.Errorf("%+v is empty", p)
		}
	}
	if err := (Policy{Daily: -2}).Validate(); err == nil {
		t.Error("Validate accepted a count of -2")
	}
	if err := (Policy{Daily: Unlimited, Within: time.Hour}).Validate(); err != nil {
		t.Error(err)
	}
	got := Policy{Daily: 7, Weekly: Unlimited, Within: 240 * time.Hour, Tags: l("nightly")}.String()
	want := "keep 7 daily, all weekly snapshots and all snapshots within 10d of the newest and all snapshots with tag nightly"
	if got != want {
		t.Errorf("String:\n got %q\nwant %q", got, want)
	}
}

func TestForgetParseWithin(t *testing.T) {
	for _, c := range []struct {
		in     string
		months int
		d      time.Duration
	}{
		{"2y5m7d3h", 29, 7*24*time.Hour + 3*time.Hour},
		{"10d", 0, 240 * time.Hour},
		{"36h", 0, 36 * time.Hour},
		{"1y", 12, 0},
		{"90m", 90, 0}, // restic: months
		{"1d1d", 0, 48 * time.Hour},
		{"8h15m0s", 0, 8*time.Hour + 15*time.Minute}, // Go duration
		{"1.5h", 0, 90 * time.Minute},
		{"0", 0, 0},
	} {
		m, d, err := ParseWithin(c.in)
		if err != nil || m != c.months || d != c.d {
			t.Errorf("ParseWithin(%q) = %d, %v, %v; want %d, %v", c.in, m, d, err, c.months, c.d)
		}
	}
	for _, in := range []string{"", "5w", "d", "7", "-1h", "1y-2m", "3 days"} {
		if m, d, err := ParseWithin(in); err == nil {
			t.Errorf("ParseWithin(%q) = %d, %v, want an error", in, m, d)
		}
	}
	for _, c := range []struct {
		months int
		d      time.Duration
		want   string
	}{
		{29, 171 * time.Hour, "2y5m7d3h"}, {0, 240 * time.Hour, "10d"}, {12, 0, "1y"},
		{0, 8*time.Hour + 15*time.Minute, "8h15m0s"}, {0, 0, "0h"}, {1, time.Minute, "1m+1m0s"},
	} {
		if got := formatWithin(c.months, c.d); got != c.want {
			t.Errorf("formatWithin(%d, %v) = %q, want %q", c.months, c.d, got, c.want)
		}
		if c.d%time.Hour == 0 {
			m, d, err := ParseWithin(c.want)
			if err != nil || m != c.months || d != c.d {
				t.Errorf("%q does not read back: %d, %v, %v", c.want, m, d, err)
			}
		}
	}
}

func TestSelectAt(t *testing.T) {
	all, byLabel, label := history()
	at := func(s string) *repo.Snapshot {
		t.Helper()
		tm, err := ParseAt(s, time.UTC)
		if err != nil {
			t.Fatal(err)
		}
		return SelectAt(all, tm)
	}
	n0110 := byLabel["N0110"].Time
	for _, c := range []struct {
		name string
		at   time.Time
		want string
	}{
		{"exactly at a snapshot", n0110, "N0110"},
		{"1ns before", n0110.Add(-time.Nanosecond), "N0109"},
		{"1ns after", n0110.Add(time.Nanosecond), "N0110"},
		{"between two", time.Date(2026, 1, 9, 12, 0, 0, 0, time.UTC), "N0109"},
		{"at the first", byLabel["N1115"].Time, "N1115"},
		{"before the first", byLabel["N1115"].Time.Add(-time.Nanosecond), ""},
		{"after the last", time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC), "E5"},
		{"between extras", time.Date(2026, 1, 12, 20, 0, 0, 0, time.UTC), "E2"},
		{"at a time in another zone", n0110.In(time.FixedZone("x", 7200)), "N0110"},
	} {
		got := SelectAt(all, c.at)
		if label[got] != c.want {
			t.Errorf("%s (%v): got %q, want %q", c.name, c.at, label[got], c.want)
		}
	}
	// The same via ParseAt's forms.
	for _, c := range []struct{ at, want string }{
		{"2026-01-10T03:00:00Z", "N0110"},
		{"2026-01-10T02:59:59.999999999Z", "N0109"},
		{"2026-01-10T05:00:00+02:00", "N0110"},
		{"2026-01-10 03:00", "N0110"},
		{"2026-01-10 02:59:59", "N0109"},
		{"2026-01-10T03:00", "N0110"},
		{"2026-01-10", "N0109"}, // midnight
		{"2025-11-15", ""},
	} {
		if got := at(c.at); label[got] != c.want {
			t.Errorf("--at %s: got %q, want %q", c.at, label[got], c.want)
		}
	}
	if SelectAt(nil, time.Now()) != nil {
		t.Error("SelectAt(nil) is not nil")
	}
}

// Of snapshots with the same time, the one with the greatest ID wins,
// whatever the order of the list.
func TestSelectAtTies(t *testing.T) {
	tm := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var sns []*repo.Snapshot
	for i := range 5 {
		sns = append(sns, snap(fmt.Sprint(i), "h", l("/"), nil, tm))
	}
	best := sns[0]
	for _, sn := range sns {
		if sn.ID.String() > best.ID.String() {
			best = sn
		}
	}
	for range 10 {
		rand.Shuffle(len(sns), func(i, j int) { sns[i], sns[j] = sns[j], sns[i] })
		if got := SelectAt(sns, tm); got != best {
			t.Fatalf("tie: got %s, want %s", got.ID.Short(), best.ID.Short())
		}
	}
}

func TestParseAt(t *testing.T) {
	berlin := time.FixedZone("CET", 3600)
	for _, c := range []struct {
		in   string
		loc  *time.Location
		want time.Time
	}{
		{"2026-01-06T03:00:00Z", berlin, time.Date(2026, 1, 6, 3, 0, 0, 0, time.UTC)},
		{"2026-01-06T03:00:00.5+01:00", time.UTC, time.Date(2026, 1, 6, 2, 0, 0, 5e8, time.UTC)},
		{"2026-01-06 03:00", berlin, time.Date(2026, 1, 6, 2, 0, 0, 0, time.UTC)},
		{"2026-01-06 03:00:07", berlin, time.Date(2026, 1, 6, 2, 0, 7, 0, time.UTC)},
		{"2026-01-06T03:00", time.UTC, time.Date(2026, 1, 6, 3, 0, 0, 0, time.UTC)},
		{" 2026-01-06 ", berlin, time.Date(2026, 1, 5, 23, 0, 0, 0, time.UTC)},
	} {
		got, err := ParseAt(c.in, c.loc)
		if err != nil || !got.Equal(c.want) {
			t.Errorf("ParseAt(%q, %s) = %v, %v; want %v", c.in, c.loc, got, err, c.want)
		}
	}
	for _, in := range []string{"", "yesterday", "2026-13-01", "2026-01-06 25:00", "06.01.2026", "2026-01-06T03:0"} {
		if got, err := ParseAt(in, time.UTC); err == nil {
			t.Errorf("ParseAt(%q) = %v, want an error", in, got)
		}
	}
}
