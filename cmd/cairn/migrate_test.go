package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cairn-backup/cairn/crypto"
)

// TestMigrate upgrades a copy of the version 1 golden repository with
// cairn migrate: snapshot IDs change (printed old -> new), check
// --read-data passes, the files restore; a sealed config body planted
// among the snapshots is then refused (version 1 listed it as a snapshot);
// a second migrate has nothing to do.
func TestMigrate(t *testing.T) {
	base := t.TempDir()
	repoDir := filepath.Join(base, "repo")
	if err := os.CopyFS(repoDir, os.DirFS(filepath.Join("..", "..", "testdata", "golden-repo"))); err != nil {
		t.Fatal(err)
	}
	c := newCLI(t, repoDir)
	c.password = "golden vector password"
	plantConfig := func() string {
		t.Helper()
		cfg, err := os.ReadFile(filepath.Join(repoDir, "config"))
		if err != nil {
			t.Fatal(err)
		}
		body := cfg[5:] // after the magic and the version byte
		name := crypto.Hash(body).String()
		writeFile(t, filepath.Join(repoDir, "snapshots", name), body, 0o600)
		return name
	}
	before := c.snapshots()
	if len(before) != 1 {
		t.Fatalf("golden repository: %d snapshots", len(before))
	}
	// Version 1: the planted config passes for a snapshot.
	planted := plantConfig()
	if n := len(c.snapshots()); n != 2 {
		t.Fatalf("version 1 with a planted config body: %d snapshots listed, want 2 (the weakness migrate removes)", n)
	}
	if err := os.Remove(filepath.Join(repoDir, "snapshots", planted)); err != nil {
		t.Fatal(err)
	}

	res := c.ok("--json", "migrate")
	var out struct {
		MessageType string `json:"message_type"`
		From        int    `json:"from_version"`
		To          int    `json:"to_version"`
		Snapshots   []struct {
			Old string `json:"old_id"`
			New string `json:"new_id"`
		} `json:"snapshots"`
	}
	if err := json.Unmarshal([]byte(res.stdout), &out); err != nil {
		t.Fatalf("migrate --json: %v\n%s", err, res)
	}
	if out.MessageType != "migrate" || out.From != 1 || out.To != 2 || len(out.Snapshots) != 1 || out.Snapshots[0].Old != before[0].ID {
		t.Fatalf("migrate --json: %+v", out)
	}
	after := c.snapshots()
	if len(after) != 1 || after[0].ID != out.Snapshots[0].New || !after[0].Time.Equal(before[0].Time) {
		t.Fatalf("after migrate: %+v", after)
	}
	c.checkReadData()
	target := filepath.Join(base, "target")
	c.ok("restore", "latest", "--target", target)
	if b, err := os.ReadFile(filepath.Join(target, "stream", "stdin.txt")); err != nil || string(b) != "streamed\n" {
		t.Errorf("restored stream: %q %v", b, err)
	}

	plantConfig()
	if res := c.run("snapshots"); res.code == 0 || !strings.Contains(res.stderr, "not a snapshot") {
		t.Errorf("version 2 with a planted config body: %s", res)
	}
	if res := c.run("check"); res.code != 1 {
		t.Errorf("check with a planted config body: %s", res)
	}
	if res := c.ok("migrate"); !strings.Contains(res.stdout, "nothing to do") {
		t.Errorf("second migrate: %s", res)
	}
}
