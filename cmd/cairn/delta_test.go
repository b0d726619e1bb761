package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// pgLikeDump imitates pg_dump -Fc output: the PGDMP magic, then rows;
// every skip-th row is gone (0: none) and reappears changed at the end, as
// pgbench's updates move rows.
func pgLikeDump(rows, skip int) []byte {
	var b bytes.Buffer
	b.WriteString("PGDMP\x01\x0e\x00")
	row := func(k, bal int) {
		rng := rand.New(rand.NewPCG(uint64(k), 9))
		fmt.Fprintf(&b, "%d\t%d\t%d\t%016x%016x%016x\n", k, k%10, bal, rng.Uint64(), rng.Uint64(), rng.Uint64())
	}
	for k := 0; k < rows; k++ {
		if skip == 0 || k%skip != 2 {
			row(k, 0)
		}
	}
	for k := 2; skip > 0 && k < rows; k += skip {
		row(k, -k)
	}
	return b.Bytes()
}

type deltaSummary struct {
	SnapshotID      string `json:"snapshot_id"`
	DataBlobs       uint64 `json:"data_blobs"`
	DeltaBlobs      uint64 `json:"delta_blobs"`
	DataAddedPacked uint64 `json:"data_added_packed"`
}

func (c *cli) backupStdinJSON(input []byte, args ...string) deltaSummary {
	c.t.Helper()
	res := c.runIn(bytes.NewReader(input), append([]string{"--json", "backup", "--stdin", "--stdin-filename", "db.pgdump"}, args...)...)
	if res.code != 0 {
		c.t.Fatalf("backup --stdin: %s", res)
	}
	var s deltaSummary
	if err := json.Unmarshal(jsonSummary(c.t, res.stdout), &s); err != nil {
		c.t.Fatalf("backup --json: %v\n%s", err, res)
	}
	return s
}

// deltaRoundTrip backs up a dump and its next-day version, checks that the
// second is stored as deltas, forgets the first and prunes at once, and
// checks that the second still restores byte for byte and verifies.
func deltaRoundTrip(t *testing.T, c *cli) {
	day1, day2 := pgLikeDump(120000, 40), pgLikeDump(120000, 0)
	day1, day2 = day2, day1 // day 2 is the one with moved rows
	s1 := c.backupStdinJSON(day1)
	s2 := c.backupStdinJSON(day2)
	if s2.DeltaBlobs == 0 || s2.DeltaBlobs*2 < s2.DataBlobs {
		t.Fatalf("day 2: %d of %d new blobs are deltas", s2.DeltaBlobs, s2.DataBlobs)
	}
	if s2.DataAddedPacked*4 > s1.DataAddedPacked {
		t.Fatalf("day 2 added %d bytes, day 1 %d: deltas did not pay", s2.DataAddedPacked, s1.DataAddedPacked)
	}
	if got := c.ok("dump", s1.SnapshotID, "/db.pgdump").stdout; got != string(day1) {
		t.Fatalf("day 1 dumps %d bytes, want %d", len(got), len(day1))
	}
	c.ok("forget", s1.SnapshotID)
	c.ok("prune", "--grace", "0s")
	c.checkReadData()
	if got := c.ok("dump", s2.SnapshotID, "/db.pgdump").stdout; got != string(day2) {
		t.Fatalf("day 2 dumps %d bytes after prune, want %d", len(got), len(day2))
	}
	target := t.TempDir()
	c.ok("restore", s2.SnapshotID, "--target", target)
	if got, err := os.ReadFile(filepath.Join(target, "db.pgdump")); err != nil || !bytes.Equal(got, day2) {
		t.Fatalf("restored day 2: %d bytes, %v", len(got), err)
	}
	// Without deltas the same change is stored in full.
	s3 := c.backupStdinJSON(day1, "--no-delta")
	if s3.DeltaBlobs != 0 {
		t.Fatalf("--no-delta made %d deltas", s3.DeltaBlobs)
	}
}

func TestStdinDumpDeltas(t *testing.T) {
	c := newCLI(t, filepath.Join(t.TempDir(), "repo"))
	c.init()
	deltaRoundTrip(t, c)
}
