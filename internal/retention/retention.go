// Package retention decides which snapshots a retention policy keeps, with
// the semantics of restic's "forget --keep-*" options, and picks the snapshot
// that was current at a given moment ("the state as of Tuesday 03:00").
//
// The rules, applied to each group of snapshots separately (see GroupBy),
// newest snapshot first:
//
//   - Last n keeps the n newest snapshots.
//   - Hourly, Daily, Weekly, Monthly and Yearly n keep the newest snapshot of
//     each of the last n hours, days, ISO weeks (Monday to Sunday, numbered
//     with time.ISOWeek), months or years that have at least one snapshot:
//     periods without a snapshot are not counted. Periods are calendar
//     periods in the location passed to Apply (the local time zone in the
//     CLI). Unlimited (-1) keeps the newest of every such period.
//   - If a counted rule still has periods left when it reaches the oldest
//     snapshot of the group, that oldest snapshot is kept as well (restic
//     0.17: the longest possible history is kept while a policy is not yet
//     filled); its reason is then prefixed with "oldest", such as "oldest
//     monthly snapshot", when it is not the newest of its period.
//   - Within (plus WithinMonths calendar months) keeps every snapshot taken
//     strictly less than that long before the newest snapshot of the group,
//     not before the current time, so a host that stopped backing up keeps its
//     last snapshots. Snapshots dated after Policy.Now (clock skew) are never
//     taken as the newest; they are kept by this rule.
//   - Tags keeps every snapshot carrying one of the listed tag sets: an entry
//     "a,b" needs both tags, the entries are alternatives, and the empty
//     entry "" matches snapshots without tags.
//
// A snapshot kept by any rule is kept, with every rule that kept it named in
// its reasons. An empty policy keeps everything; callers refuse to forget
// with one.
package retention

import (
	"bytes"
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/cairn-backup/cairn/repo"
)

// Unlimited as a count keeps the newest snapshot of every period.
const Unlimited = -1

// Policy says which snapshots to keep. Counts are 0 (rule off), a positive
// number of periods, or Unlimited.
type Policy struct {
	Last, Hourly, Daily, Weekly, Monthly, Yearly int
	// Within keeps snapshots taken less than WithinMonths calendar months
	// plus Within before the newest snapshot of the group (restic's
	// --keep-within 2y5m7d3h is WithinMonths 29 and Within 7*24h+3h).
	Within       time.Duration
	WithinMonths int
	// Tags keeps snapshots having all tags of any one entry ("a,b" needs a
	// and b; "" matches untagged snapshots).
	Tags []string
	// Now is the clock that tells snapshots dated in the future apart for
	// the within rule; the zero time treats no snapshot as being in the future.
	// It is not a rule: it does not make a policy non-empty.
	Now time.Time
}

// Empty reports whether the policy has no rule: it would keep everything.
func (p Policy) Empty() bool {
	return p.Last == 0 && p.Hourly == 0 && p.Daily == 0 && p.Weekly == 0 && p.Monthly == 0 &&
		p.Yearly == 0 && p.Within == 0 && p.WithinMonths == 0 && len(p.Tags) == 0
}

// Validate rejects counts below Unlimited and negative durations.
func (p Policy) Validate() error {
	for _, c := range []struct {
		name string
		n    int
	}{{"last", p.Last}, {"hourly", p.Hourly}, {"daily", p.Daily}, {"weekly", p.Weekly}, {"monthly", p.Monthly}, {"yearly", p.Yearly}} {
		if c.n < Unlimited {
			return fmt.Errorf("keep-%s %d: want a count of 0 or more, or -1 (unlimited)", c.name, c.n)
		}
	}
	if p.Within < 0 || p.WithinMonths < 0 {
		return fmt.Errorf("keep-within %s: must not be negative", formatWithin(p.WithinMonths, p.Within))
	}
	return nil
}

// String describes the policy in words, e.g. "keep 7 daily, 4 weekly
// snapshots and all snapshots within 10d of the newest".
func (p Policy) String() string {
	var counts []string
	for _, c := range []struct {
		n    int
		what string
	}{{p.Last, "last"}, {p.Hourly, "hourly"}, {p.Daily, "daily"}, {p.Weekly, "weekly"}, {p.Monthly, "monthly"}, {p.Yearly, "yearly"}} {
		switch {
		case c.n == Unlimited:
			counts = append(counts, "all "+c.what)
		case c.n > 0:
			counts = append(counts, fmt.Sprintf("%d %s", c.n, c.what))
		}
	}
	var parts []string
	if len(counts) > 0 {
		parts = append(parts, strings.Join(counts, ", ")+" snapshots")
	}
	if p.Within != 0 || p.WithinMonths != 0 {
		parts = append(parts, "all snapshots within "+formatWithin(p.WithinMonths, p.Within)+" of the newest")
	}
	for _, t := range p.Tags {
		parts = append(parts, "all snapshots with "+tagReason(t))
	}
	if len(parts) == 0 {
		return "keep everything (empty policy)"
	}
	return "keep " + strings.Join(parts, " and ")
}

// GroupBy says which snapshot fields separate groups; the zero value puts
// all snapshots into one group.
type GroupBy struct {
	Host, Paths, Tags bool
}

// ParseGroupBy reads a comma-separated list of "host", "paths" and "tags";
// the empty string means no grouping. restic's default is "host,paths".
func ParseGroupBy(s string) (GroupBy, error) {
	var g GroupBy
	for _, f := range strings.Split(s, ",") {
		switch strings.TrimSpace(f) {
		case "":
		case "host":
			g.Host = true
		case "paths":
			g.Paths = true
		case "tags":
			g.Tags = true
		default:
			return g, fmt.Errorf("invalid group-by field %q: use host, paths and tags, comma-separated, or '' for no grouping", f)
		}
	}
	return g, nil
}

func (g GroupBy) String() string {
	var f []string
	if g.Host {
		f = append(f, "host")
	}
	if g.Paths {
		f = append(f, "paths")
	}
	if g.Tags {
		f = append(f, "tags")
	}
	return strings.Join(f, ",")
}

// Key identifies a group: the values of the grouped fields (paths and tags
// sorted); fields that are not grouped by are empty.
type Key struct {
	By    GroupBy
	Host  string
	Paths []string
	Tags  []string
}

// String is like restic's group header: "host [h], paths [/a, /b]".
func (k Key) String() string {
	var f []string
	if k.By.Host {
		f = append(f, "host ["+k.Host+"]")
	}
	if k.By.Paths {
		f = append(f, "paths ["+strings.Join(k.Paths, ", ")+"]")
	}
	if k.By.Tags {
		f = append(f, "tags ["+strings.Join(k.Tags, ", ")+"]")
	}
	if len(f) == 0 {
		return "all snapshots"
	}
	return strings.Join(f, ", ")
}

func (g GroupBy) key(sn *repo.Snapshot) Key {
	k := Key{By: g}
	if g.Host {
		k.Host = sn.Hostname
	}
	if g.Paths {
		k.Paths = sortedSet(sn.Paths)
	}
	if g.Tags {
		k.Tags = sortedSet(sn.Tags)
	}
	return k
}

func sortedSet(in []string) []string {
	out := slices.Clone(in)
	slices.Sort(out)
	return slices.Compact(out)
}

func compareKeys(a, b Key) int {
	return cmp.Or(strings.Compare(a.Host, b.Host), slices.Compare(a.Paths, b.Paths), slices.Compare(a.Tags, b.Tags))
}

// Decision is a kept snapshot and every rule that keeps it.
type Decision struct {
	Snapshot *repo.Snapshot
	Reasons  []string
}

// Group is the outcome for one group: Keep and Remove are newest first.
type Group struct {
	Key    Key
	Keep   []Decision
	Remove []*repo.Snapshot
}

// Apply groups snaps and applies p to each group. Periods are computed in
// loc (nil means time.Local). Groups are ordered by key; within a group,
// snapshots are ordered newest first, equal times by descending ID. snaps
// is not modified.
func Apply(snaps []*repo.Snapshot, p Policy, groupBy GroupBy, loc *time.Location) []Group {
	if loc == nil {
		loc = time.Local
	}
	var groups []Group
	var members [][]*repo.Snapshot
	for _, sn := range snaps {
		k := groupBy.key(sn)
		i := slices.IndexFunc(groups, func(g Group) bool { return compareKeys(g.Key, k) == 0 })
		if i < 0 {
			groups = append(groups, Group{Key: k})
			members = append(members, nil)
			i = len(groups) - 1
		}
		members[i] = append(members[i], sn)
	}
	for i := range groups {
		groups[i].Keep, groups[i].Remove = applyGroup(members[i], p, loc)
	}
	slices.SortFunc(groups, func(a, b Group) int { return compareKeys(a.Key, b.Key) })
	return groups
}

// newestFirst orders snapshots by time, newest first, then by ID descending.
func newestFirst(a, b *repo.Snapshot) int {
	if c := b.Time.Compare(a.Time); c != 0 {
		return c
	}
	return bytes.Compare(b.ID[:], a.ID[:])
}

type bucket struct {
	count  int
	period func(t time.Time, nr int) int
	reason string
	last   int
	seen   bool
}

func byIndex(_ time.Time, nr int) int { return nr }
func byHour(t time.Time, _ int) int {
	return t.Year()*1000000 + int(t.Month())*10000 + t.Day()*100 + t.Hour()
}
func byDay(t time.Time, _ int) int { return t.Year()*10000 + int(t.Month())*100 + t.Day() }
func byWeek(t time.Time, _ int) int {
	y, w := t.ISOWeek()
	return y*100 + w
}
func byMonth(t time.Time, _ int) int { return t.Year()*100 + int(t.Month()) }
func byYear(t time.Time, _ int) int  { return t.Year() }

func applyGroup(snaps []*repo.Snapshot, p Policy, loc *time.Location) (keep []Decision, remove []*repo.Snapshot) {
	list := slices.Clone(snaps)
	slices.SortFunc(list, newestFirst)
	if p.Empty() {
		for _, sn := range list {
			keep = append(keep, Decision{Snapshot: sn, Reasons: []string{"policy is empty"}})
		}
		return keep, nil
	}
	buckets := []bucket{
		{count: p.Last, period: byIndex, reason: "last snapshot"},
		{count: p.Hourly, period: byHour, reason: "hourly snapshot"},
		{count: p.Daily, period: byDay, reason: "daily snapshot"},
		{count: p.Weekly, period: byWeek, reason: "weekly snapshot"},
		{count: p.Monthly, period: byMonth, reason: "monthly snapshot"},
		{count: p.Yearly, period: byYear, reason: "yearly snapshot"},
	}
	within := p.Within != 0 || p.WithinMonths != 0
	var cut time.Time
	if within {
		// The newest snapshot not dated in the future. If every snapshot
		// is in the future, the zero time makes all of them "within".
		var newest time.Time
		for _, sn := range list {
			if !p.Now.IsZero() && sn.Time.After(p.Now) {
				continue
			}
			if sn.Time.After(newest) {
				newest = sn.Time
			}
		}
		cut = newest.In(loc).AddDate(0, -p.WithinMonths, 0).Add(-p.Within)
	}
	withinReason := "within " + formatWithin(p.WithinMonths, p.Within)

	for nr, sn := range list {
		var reasons []string
		for _, tl := range p.Tags {
			if hasTagSet(sn.Tags, tl) {
				reasons = append(reasons, tagReason(tl))
			}
		}
		if within && sn.Time.After(cut) {
			reasons = append(reasons, withinReason)
		}
		t := sn.Time.In(loc)
		oldest := nr == len(list)-1
		for i := range buckets {
			b := &buckets[i]
			if b.count == 0 || b.count < Unlimited {
				continue
			}
			val := b.period(t, nr)
			newPeriod := !b.seen || val != b.last
			if !newPeriod && !oldest {
				continue
			}
			reason := b.reason
			if !newPeriod {
				reason = "oldest " + reason
			}
			b.last, b.seen = val, true
			if b.count > 0 {
				b.count--
			}
			reasons = append(reasons, reason)
		}
		if len(reasons) > 0 {
			keep = append(keep, Decision{Snapshot: sn, Reasons: reasons})
		} else {
			remove = append(remove, sn)
		}
	}
	return keep, remove
}

// hasTagSet reports whether have contains every tag of the comma-separated
// set; the empty set matches only a snapshot without tags.
func hasTagSet(have []string, set string) bool {
	want := splitTags(set)
	if len(want) == 0 {
		return len(have) == 0
	}
	for _, w := range want {
		if !slices.Contains(have, w) {
			return false
		}
	}
	return true
}

// MatchTags reports whether a snapshot with tags have matches a filter of
// tag sets, as restic's --tag: any one set, all tags of the set ("a,b"
// needs both; "" means untagged). No sets match everything.
func MatchTags(have []string, sets []string) bool {
	if len(sets) == 0 {
		return true
	}
	for _, s := range sets {
		if hasTagSet(have, s) {
			return true
		}
	}
	return false
}

func splitTags(s string) []string {
	var out []string
	for _, t := range strings.Split(s, ",") {
		if t = strings.TrimSpace(t); t != "" {
			out = append(out, t)
		}
	}
	return out
}

func tagReason(set string) string {
	tags := splitTags(set)
	switch len(tags) {
	case 0:
		return "no tags"
	case 1:
		return "tag " + tags[0]
	}
	return "tags " + strings.Join(tags, ",")
}
