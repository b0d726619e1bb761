package main

// CLI tests of 'forget' and of --at on 'snapshots' and 'restore'. They use
// the binary and helpers of e2e_test.go (cairnBin, newCLI, ...).

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

type forgetGroupOut struct {
	Host    string         `json:"host"`
	Paths   []string       `json:"paths"`
	Keep    []snapshotInfo `json:"keep"`
	Remove  []snapshotInfo `json:"remove"`
	Reasons []struct {
		Snapshot snapshotInfo `json:"snapshot"`
		Matches  []string     `json:"matches"`
	} `json:"reasons"`
}

// TestForgetAndAt makes 15 nightly-ish backups of host "app" over March
// 2026 and one of host "other", then checks forget's dry run, the real run,
// and which snapshots 'snapshots --at' and 'restore --at' pick.
//
// March 2026: the 1st is a Sunday; ISO weeks run Mar 2-8 (W10), 9-15,
// 16-22 (W12) and 23-29 (W13). Host app has backups at 03:00 UTC on Mar 1,
// 4, 8, 11, 15, 18, 22 and every day from 23 to 29, plus 29 12:00 (M29b).
// --keep-daily 7 keeps the newest of Mar 29 ... 23 (all of W13);
// --keep-weekly 2 keeps W13's newest (M29b) and W12's (M22).
func TestForgetAndAt(t *testing.T) {
	base := t.TempDir()
	c := newCLI(t, filepath.Join(base, "repo"))
	c.env = append(c.env, "TZ=UTC") // periods and --at are local time
	c.init()

	type bk struct{ label, host, time string }
	backups := []bk{
		{"M01", "app", "2026-03-01T03:00:00Z"}, {"OTHER", "other", "2026-03-02T03:00:00Z"},
		{"M04", "app", "2026-03-04T03:00:00Z"}, {"M08", "app", "2026-03-08T03:00:00Z"},
		{"M11", "app", "2026-03-11T03:00:00Z"}, {"M15", "app", "2026-03-15T03:00:00Z"},
		{"M18", "app", "2026-03-18T03:00:00Z"}, {"M22", "app", "2026-03-22T03:00:00Z"},
	}
	for _, d := range []string{"23", "24", "25", "26", "27", "28", "29"} {
		backups = append(backups, bk{"M" + d, "app", "2026-03-" + d + "T03:00:00Z"})
	}
	backups = append(backups, bk{"M29b", "app", "2026-03-29T12:00:00Z"})
	id := map[string]string{}
	label := map[string]string{}
	for _, b := range backups {
		res := c.runIn(strings.NewReader("content of "+b.label+"\n"), "--json", "backup", "--stdin",
			"--stdin-filename", "db.sql", "--host", b.host, "--time", b.time)
		var s backupSummary
		if res.code != 0 || json.Unmarshal(jsonSummary(t, res.stdout), &s) != nil || s.SnapshotID == "" {
			t.Fatalf("backup %s: %s", b.label, res)
		}
		id[b.label], label[s.SnapshotID] = s.SnapshotID, b.label
	}
	atJSON := func(args ...string) string {
		t.Helper()
		res := c.ok(append([]string{"--json", "snapshots"}, args...)...)
		var out []snapshotInfo
		if err := json.Unmarshal([]byte(res.stdout), &out); err != nil || len(out) != 1 {
			t.Fatalf("snapshots %q: want one snapshot: %v\n%s", args, err, res)
		}
		return label[out[0].ID]
	}

	// --at before forget: exactly at a snapshot, 1 s before it, and filters.
	if got := atJSON("--at", "2026-03-18 03:00"); got != "M18" {
		t.Errorf("snapshots --at '2026-03-18 03:00' picked %s, want M18", got)
	}
	if got := atJSON("--at", "2026-03-18T02:59:59Z", "--host", "app"); got != "M15" {
		t.Errorf("snapshots --at 1s before M18 picked %s, want M15", got)
	}
	if got := atJSON("--at", "2026-03-03"); got != "OTHER" {
		t.Errorf("snapshots --at 2026-03-03 picked %s, want OTHER", got)
	}
	target := filepath.Join(base, "r1")
	res := c.ok("restore", "--at", "2026-03-03", "--host", "app", "--target", target)
	want := "restoring snapshot " + id["M01"][:8] + " taken at 2026-03-01 03:00:00 UTC, the newest at or before 2026-03-03 00:00:00 UTC"
	if !strings.Contains(res.stdout, want) {
		t.Errorf("restore --at does not say which snapshot it chose; want %q in:\n%s", want, res)
	}
	if data, err := os.ReadFile(filepath.Join(target, "db.sql")); err != nil || string(data) != "content of M01\n" {
		t.Errorf("restore --at restored %q, %v; want M01's content", data, err)
	}

	// Usage errors, found before the repository is opened.
	for _, args := range [][]string{
		{"restore", "--target", target},
		{"restore", "latest", "--at", "2026-03-03", "--target", target},
		{"restore", "--at", "March 3rd", "--target", target},
		{"snapshots", "--at", "2026-03-32"},
		{"forget", "--keep-last", "1", id["M01"]},
		{"forget", "--keep-daily", "-2"},
		{"forget", "--keep-within", "7w"},
		{"forget", "--keep-last", "1", "--group-by", "hostname"},
	} {
		if res := c.run(args...); res.code != 1 {
			t.Errorf("cairn %q exited %d, want 1: %s", args, res.code, res)
		}
	}
	if res := c.ok("forget"); !strings.Contains(res.stderr, "no policy was specified, no snapshots will be removed") {
		t.Errorf("forget without a policy: %s", res)
	}

	// Dry run, JSON: per group what is kept and why, and what would go.
	res = c.ok("--json", "forget", "--keep-daily", "7", "--keep-weekly", "2", "--dry-run")
	var groups []forgetGroupOut
	if err := json.Unmarshal([]byte(res.stdout), &groups); err != nil {
		t.Fatalf("forget --json does not decode: %v\n%s", err, res)
	}
	labels := func(sns []snapshotInfo) []string {
		var out []string
		for _, sn := range sns {
			out = append(out, label[sn.ID])
		}
		return out
	}
	wantKeep := []string{"M29b", "M28", "M27", "M26", "M25", "M24", "M23", "M22"}
	wantRemove := []string{"M29", "M18", "M15", "M11", "M08", "M04", "M01"}
	if len(groups) != 2 || groups[0].Host != "app" || groups[1].Host != "other" || !slices.Equal(groups[0].Paths, []string{"/db.sql"}) {
		t.Fatalf("forget --json: want groups for host app and other, got:\n%s", res.stdout)
	}
	if got := labels(groups[0].Keep); !slices.Equal(got, wantKeep) {
		t.Errorf("dry run keeps %v, want %v", got, wantKeep)
	}
	if got := labels(groups[0].Remove); !slices.Equal(got, wantRemove) {
		t.Errorf("dry run removes %v, want %v", got, wantRemove)
	}
	if got := labels(groups[1].Keep); len(groups[1].Remove) != 0 || !slices.Equal(got, []string{"OTHER"}) {
		t.Errorf("group other: keeps %v, removes %d; want OTHER kept", got, len(groups[1].Remove))
	}
	reasons := map[string][]string{}
	for _, r := range groups[0].Reasons {
		reasons[label[r.Snapshot.ID]] = r.Matches
	}
	for l, want := range map[string][]string{
		"M29b": {"daily snapshot", "weekly snapshot"}, "M23": {"daily snapshot"}, "M22": {"weekly snapshot"},
	} {
		if !slices.Equal(reasons[l], want) {
			t.Errorf("%s kept for %q, want %q", l, reasons[l], want)
		}
	}
	if n := len(c.snapshots()); n != len(backups) {
		t.Fatalf("%d snapshots after a dry run, want %d", n, len(backups))
	}

	// The real run removes exactly those.
	res = c.ok("forget", "--keep-daily", "7", "--keep-weekly", "2")
	for _, s := range []string{"snapshots for host [app], paths [/db.sql]", "weekly snapshot", "removed 7 snapshots"} {
		if !strings.Contains(res.stdout, s) {
			t.Errorf("forget output lacks %q:\n%s", s, res)
		}
	}
	var left []string
	for _, sn := range c.snapshots() {
		left = append(left, label[sn.ID])
	}
	slices.Sort(left)
	wantLeft := append(slices.Clone(wantKeep), "OTHER")
	slices.Sort(wantLeft)
	if !slices.Equal(left, wantLeft) {
		t.Errorf("after forget: %v, want %v", left, wantLeft)
	}

	// --at after forget: the removed ones are gone.
	if got := atJSON("--at", "2026-03-22T12:00:00Z"); got != "M22" {
		t.Errorf("snapshots --at after forget picked %s, want M22", got)
	}
	res = c.run("restore", "--at", "2026-03-20", "--host", "app", "--target", filepath.Join(base, "r2"))
	if res.code != 1 || !strings.Contains(res.stderr, "no matching snapshot was taken at or before 2026-03-20 00:00:00 UTC") {
		t.Errorf("restore --at before every kept snapshot: %s", res)
	}

	// A policy that keeps nothing of a group is refused.
	res = c.run("forget", "--keep-tag", "release", "--dry-run")
	if res.code != 1 || !strings.Contains(res.stderr, "refusing to remove every snapshot") {
		t.Errorf("forget keeping nothing was not refused: %s", res)
	}

	// Explicit IDs (a unique prefix here) are removed.
	res = c.ok("--json", "forget", id["OTHER"][:10])
	if err := json.Unmarshal([]byte(res.stdout), &groups); err != nil || len(groups) != 1 ||
		!slices.Equal(labels(groups[0].Remove), []string{"OTHER"}) {
		t.Fatalf("forget ID --json: %v\n%s", err, res)
	}
	if n := len(c.snapshots()); n != len(wantKeep) {
		t.Errorf("%d snapshots after forget ID, want %d", n, len(wantKeep))
	}
}
