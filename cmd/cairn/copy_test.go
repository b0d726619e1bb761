package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/repo/backend/s3/s3test"
)

// copySummary is copy's --json summary.
type copySummary struct {
	Copied  int   `json:"snapshots_copied"`
	Present int   `json:"snapshots_present"`
	Blobs   int   `json:"blobs_copied"`
	Stored  int64 `json:"bytes_stored"`
}

// copyFrom runs copy --json and returns its summary.
func (c *cli) copyFrom(args ...string) copySummary {
	c.t.Helper()
	res := c.ok(append([]string{"--json", "copy"}, args...)...)
	lines := strings.Split(strings.TrimSpace(res.stdout), "\n")
	var s copySummary
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &s); err != nil {
		c.t.Fatalf("copy --json: %v\n%s", err, res)
	}
	return s
}

// TestCopy copies a file tree and a series of database nights (stored as
// deltas) from a local repository to one on MinIO made from it, and from
// there back to a third, local one: every snapshot restores byte for byte
// from each copy, check --read-data passes, a second copy moves nothing,
// an interrupted copy resumes without duplicates, and a repository not
// made from the source is refused.
func TestCopy(t *testing.T) {
	srv := s3test.StartT(t)
	base := t.TempDir()
	data := filepath.Join(base, "data")
	writeFile(t, filepath.Join(data, "big.bin"), randomBytes(31, 5<<20), 0o644)
	writeFile(t, filepath.Join(data, "etc", "app.conf"), []byte("key = value\n"), 0o600)
	if err := os.Symlink("etc/app.conf", filepath.Join(data, "conf")); err != nil {
		t.Fatal(err)
	}
	src := newCLI(t, filepath.Join(base, "src"))
	src.password = "source password"
	src.init("--pack-size", "1")
	src.ok("backup", data)
	nights := [][]byte{pgLikeDump(60000, 0), pgLikeDump(60000, 30), pgLikeDump(60000, 17)}
	deltas := uint64(0)
	for _, n := range nights {
		deltas += src.backupStdinJSON(n).DeltaBlobs
	}
	if deltas == 0 {
		t.Fatal("the nights were not stored as deltas: the copy of deltas is not tested")
	}
	srcSnaps := src.snapshots()

	s3env := []string{"AWS_ACCESS_KEY_ID=" + srv.User, "AWS_SECRET_ACCESS_KEY=" + srv.Password}
	dst := newCLI(t, "s3:"+srv.URL()+"/cairn-copy/offsite")
	dst.env = append(s3env, "CAIRN_FROM_PASSWORD=source password")
	dst.init("--pack-size", "1", "--from-repo", src.repo)

	// Interrupted after the first snapshot: copy that one alone, then
	// remove its snapshot file (its packs and index stay).
	first := dst.copyFrom("--from-repo", src.repo, srcSnaps[0].ID)
	if first.Copied != 1 || first.Blobs == 0 {
		t.Fatalf("first copy: %+v", first)
	}
	if len(dst.snapshots()) != 1 {
		t.Fatal("one snapshot copied, not one listed")
	}
	all := dst.copyFrom("--from-repo", src.repo)
	if all.Copied != len(srcSnaps)-1 || all.Present != 1 {
		t.Fatalf("copy of the rest: %+v", all)
	}
	again := dst.copyFrom("--from-repo", src.repo)
	if again.Copied != 0 || again.Blobs != 0 || again.Present != len(srcSnaps) {
		t.Fatalf("second copy moved something: %+v", again)
	}
	dst.checkReadData()

	// Each copy names its original and restores byte for byte.
	dstSnaps := dst.snapshots()
	if len(dstSnaps) != len(srcSnaps) {
		t.Fatalf("%d snapshots copied, %d in the source", len(dstSnaps), len(srcSnaps))
	}
	res := dst.ok("--json", "snapshots")
	for _, sn := range srcSnaps {
		if !strings.Contains(res.stdout, `"copied_from":"`+sn.ID+`"`) {
			t.Errorf("no copy names %s as its original", sn.ShortID)
		}
	}
	verify := func(c *cli, snaps []snapshotInfo) {
		t.Helper()
		target := filepath.Join(t.TempDir(), "r")
		c.ok("restore", snaps[0].ID, "--target", target)
		compareTrees(t, data, restoredPath(target, data), false)
		for i, night := range nights {
			got := c.ok("dump", snaps[i+1].ID, "/db.pgdump").stdout
			if !bytes.Equal([]byte(got), night) {
				t.Errorf("night %d from %s: %d bytes differ from the %d backed up", i+1, c.repo, len(got), len(night))
			}
		}
	}
	verify(dst, dstSnaps)

	// From MinIO back to a local repository made from it.
	back := newCLI(t, filepath.Join(base, "back"))
	back.env = []string{"CAIRN_FROM_AWS_ACCESS_KEY_ID=" + srv.User, "CAIRN_FROM_AWS_SECRET_ACCESS_KEY=" + srv.Password, "CAIRN_FROM_PASSWORD=" + dst.password}
	back.init("--from-repo", dst.repo)
	if s := back.copyFrom("--from-repo", dst.repo); s.Copied != len(srcSnaps) {
		t.Fatalf("copy from MinIO: %+v", s)
	}
	back.checkReadData()
	verify(back, back.snapshots())

	// A repository not made from the source is refused.
	other := newCLI(t, filepath.Join(base, "other"))
	other.env = []string{"CAIRN_FROM_PASSWORD=source password"}
	other.init()
	if res := other.run("copy", "--from-repo", src.repo); res.code != 1 || !strings.Contains(res.stderr, "init --from-repo") {
		t.Errorf("copy into an unrelated repository: %s", res)
	}
}

// TestCopyKilled kills copy with SIGKILL once packs have arrived, then
// copies again: check passes after the kill and after the second copy,
// the destination indexes each blob once (as many as the source), and the
// copy restores byte for byte.
func TestCopyKilled(t *testing.T) {
	base := t.TempDir()
	data := filepath.Join(base, "data")
	for i := range 40 {
		writeFile(t, filepath.Join(data, fmt.Sprintf("f%02d.bin", i)), randomBytes(uint64(100+i), 1<<20+i), 0o644)
	}
	src := newCLI(t, filepath.Join(base, "src"))
	src.init("--pack-size", "1")
	src.ok("backup", data)
	dst := newCLI(t, filepath.Join(base, "dst"))
	dst.env = []string{"CAIRN_FROM_PASSWORD=" + src.password}
	dst.init("--pack-size", "1", "--from-repo", src.repo)

	cmd := dst.command(context.Background(), nil, "copy", "--from-repo", src.repo)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	killed := false
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline) && !killed; {
		packs, _ := filepath.Glob(filepath.Join(dst.repo, "data", "*", "*"))
		select {
		case <-done:
			t.Fatal("copy ended before it could be killed: the test needs a larger source")
		default:
		}
		if len(packs) >= 3 {
			_ = cmd.Process.Kill()
			<-done
			killed = true
		}
		time.Sleep(5 * time.Millisecond)
	}
	if !killed {
		t.Fatal("no pack arrived within a minute")
	}
	if n := len(dst.snapshots()); n != 0 {
		t.Fatalf("a killed copy left %d snapshots", n)
	}
	if res := dst.run("check"); res.code != 0 {
		t.Fatalf("check after a killed copy: %s", res)
	}
	if s := dst.copyFrom("--from-repo", src.repo); s.Copied != 1 {
		t.Fatalf("copy after the kill: %+v", s)
	}
	dst.checkReadData()
	blobs := func(c *cli) float64 {
		var st map[string]any
		if err := json.Unmarshal([]byte(c.ok("--json", "stats").stdout), &st); err != nil {
			t.Fatal(err)
		}
		return st["total_blob_count"].(float64)
	}
	if s, d := blobs(src), blobs(dst); s != d {
		t.Errorf("the destination indexes %v blobs, the source %v", d, s)
	}
	target := filepath.Join(base, "target")
	dst.ok("restore", "latest", "--target", target)
	compareTrees(t, data, restoredPath(target, data), false)
}

// TestProfileOffsite: backup --config copies each new snapshot to the
// profile's offsite repositories (one local, one on MinIO whose
// credentials are in its own env_file, not in cairn's environment), and
// forget --config applies each offsite's own retention. An offsite that
// cannot be opened fails the backup with one message, after the snapshot
// was written.
func TestProfileOffsite(t *testing.T) {
	srv := s3test.StartT(t)
	base := t.TempDir()
	data := filepath.Join(base, "data")
	writeFile(t, filepath.Join(data, "f.txt"), []byte("night 0"), 0o644)
	pw := filepath.Join(base, "pw")
	writeFile(t, pw, []byte("primary password\n"), 0o600)
	offPW := filepath.Join(base, "offsite-pw")
	writeFile(t, offPW, []byte("offsite password\n"), 0o600)
	envFile := filepath.Join(base, "offsite.env")
	writeFile(t, envFile, []byte("AWS_ACCESS_KEY_ID="+srv.User+"\nAWS_SECRET_ACCESS_KEY="+srv.Password+"\n"), 0o600)
	primary, near, far := filepath.Join(base, "primary"), filepath.Join(base, "near"), "s3:"+srv.URL()+"/cairn-far/repo"

	c := newCLI(t, "")
	c.password = "primary password"
	c.env = []string{"CAIRN_FROM_PASSWORD=primary password"}
	c.ok("-r", primary, "init")
	offsite := newCLI(t, "")
	offsite.password = "offsite password"
	offsite.env = []string{"CAIRN_FROM_PASSWORD=primary password", "AWS_ACCESS_KEY_ID=" + srv.User, "AWS_SECRET_ACCESS_KEY=" + srv.Password}
	offsite.ok("-r", near, "init", "--from-repo", primary)
	offsite.ok("-r", far, "init", "--from-repo", primary)

	profileText := func(extra string) string {
		return "name = \"app\"\nrepository = \"" + primary + "\"\npassword_file = \"" + pw + "\"\n" +
			"[files]\npaths = [\"" + data + "\"]\n[retention]\nkeep_last = 3\n" +
			"[[offsite]]\nname = \"near\"\nrepository = \"" + near + "\"\npassword_file = \"" + offPW + "\"\n[offsite.retention]\nkeep_last = 1\n" +
			"[[offsite]]\nname = \"far\"\nrepository = \"" + far + "\"\npassword_file = \"" + offPW + "\"\nenv_file = \"" + envFile + "\"\n[offsite.retention]\nkeep_last = 2\n" + extra
	}
	cfg := filepath.Join(base, "app.toml")
	writeFile(t, cfg, []byte(profileText("")), 0o600)
	cli := newCLI(t, "") // no AWS_* variables: the far offsite's are in its env_file
	cli.password = "primary password"
	for night := 1; night <= 3; night++ {
		writeFile(t, filepath.Join(data, "f.txt"), []byte(fmt.Sprintf("night %d", night)), 0o644)
		res := cli.ok("backup", "--config", cfg)
		if !strings.Contains(res.stdout, "offsite near: snapshot") || !strings.Contains(res.stdout, "offsite far: snapshot") {
			t.Fatalf("night %d: no offsite copies reported: %s", night, res)
		}
	}
	count := func(loc string) int {
		t.Helper()
		o := *offsite
		o.repo = loc
		return len(o.snapshots())
	}
	if n, f := count(near), count(far); n != 3 || f != 3 {
		t.Fatalf("offsites hold %d and %d snapshots after 3 nights, want 3 each", n, f)
	}
	cli.ok("forget", "--config", cfg)
	if n, f := count(near), count(far); n != 1 || f != 2 {
		t.Errorf("after forget --config: near %d, far %d snapshots; want 1 and 2", n, f)
	}
	o := *offsite
	o.repo = near
	target := filepath.Join(base, "target")
	o.ok("restore", "latest", "--target", target)
	if b, err := os.ReadFile(filepath.Join(restoredPath(target, data), "f.txt")); err != nil || string(b) != "night 3" {
		t.Errorf("restore from the offsite copy: %q %v", b, err)
	}

	// An offsite that cannot be opened fails the backup loudly; the
	// snapshot itself is written.
	writeFile(t, cfg, []byte(profileText("[[offsite]]\nname = \"bad\"\nrepository = \""+filepath.Join(base, "missing")+"\"\npassword_file = \""+offPW+"\"\n")), 0o600)
	res := cli.run("backup", "--config", cfg)
	if res.code != 1 || !strings.Contains(res.stderr, "was written, but its copy failed: offsite bad") {
		t.Errorf("backup with a missing offsite: %s", res)
	}
	p := *c
	p.repo = primary
	if n := len(p.snapshots()); n != 4 {
		t.Errorf("primary holds %d snapshots, want 4", n)
	}
}

// TestCopySameSnapshot: a destination snapshot with the same tree, time,
// host, paths and tags as a source snapshot counts as its copy, whatever
// its ID (a source migrated since the copy has new IDs).
func TestCopySameSnapshot(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	writeFile(t, filepath.Join(data, "a.txt"), []byte("same\n"), 0o644)
	// Two backups of data give the same tree only if its ancestors (/tmp
	// among them, where other tests create directories) did not change in
	// between: the pair is taken again, in new repositories, when they did.
	var src, dst *cli
	for attempt := 1; ; attempt++ {
		repos := t.TempDir()
		src = newCLI(t, filepath.Join(repos, "src"))
		src.init()
		dst = newCLI(t, filepath.Join(repos, "dst"))
		dst.env = []string{"CAIRN_FROM_PASSWORD=" + src.password}
		dst.init("--from-repo", src.repo)
		for _, c := range []*cli{src, dst} {
			c.ok("backup", "--time", "2026-11-30 03:00:00", "--host", "h", data)
		}
		if src.snapshots()[0].Tree == dst.snapshots()[0].Tree {
			break
		}
		if attempt == 5 {
			t.Fatal("five pairs of backups of the same directory gave different trees")
		}
	}
	if s := dst.copyFrom("--from-repo", src.repo); s.Copied != 0 || s.Present != 1 {
		t.Errorf("the same snapshot under another ID was copied again: %+v", s)
	}
}
