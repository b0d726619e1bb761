package main

import (
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// readOnlyDir makes dir unwritable for this process, also as root (where
// permission bits do not apply: the directory is made immutable), and
// undoes that at cleanup.
func readOnlyDir(t *testing.T, dir string) {
	t.Helper()
	if os.Geteuid() != 0 {
		if err := os.Chmod(dir, 0o555); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = os.Chmod(dir, 0o755) })
		return
	}
	if out, err := exec.Command("chattr", "+i", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot make %s unwritable for root (chattr +i: %v %s)", dir, err, out)
	}
	t.Cleanup(func() { _ = exec.Command("chattr", "-i", dir).Run() })
}

// TestRestoreUnwritableTarget: a target that cannot be written fails the
// restore before anything is written, and a restore that could write only
// part of the files says so instead of reporting them restored.
func TestRestoreUnwritableTarget(t *testing.T) {
	base := t.TempDir()
	src := filepath.Join(base, "src")
	c := newCLI(t, filepath.Join(base, "repo"))
	c.init()
	writeFile(t, filepath.Join(src, "top.txt"), []byte("top\n"), 0o644)
	for _, n := range []string{"a", "b", "c"} {
		writeFile(t, filepath.Join(src, "sub", n+".txt"), []byte(n+"\n"), 0o644)
	}
	c.ok("backup", src)

	ro := filepath.Join(base, "ro")
	if err := os.Mkdir(ro, 0o755); err != nil {
		t.Fatal(err)
	}
	readOnlyDir(t, ro)
	res := c.run("restore", "latest", "--target", ro)
	if res.code != 1 || strings.Contains(res.stdout, "restored") || !strings.Contains(res.stderr, "not writable") {
		t.Fatalf("restore into a read-only directory: %s", res)
	}

	// The target is writable, one directory in it is not: the three files
	// there fail, the summary says so and does not count them.
	target := filepath.Join(base, "partial")
	sub := restoredPath(target, filepath.Join(src, "sub"))
	if err := os.MkdirAll(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	readOnlyDir(t, sub)
	res = c.run("restore", "latest", "--target", target)
	if res.code != 1 || strings.Contains(res.stdout, "restored ") {
		t.Fatalf("partial restore: %s", res)
	}
	if !strings.Contains(res.stderr, "1 files restored, 3 not") {
		t.Fatalf("partial restore does not count what failed: %s", res)
	}
	res = c.run("--json", "restore", "latest", "--target", target)
	var js restoreJSON
	if err := json.Unmarshal([]byte(res.stdout), &js); err != nil || res.code != 1 || js.FilesRestored != 1 || js.FilesFailed != 3 {
		t.Fatalf("--json of a partial restore (%v): %s", err, res)
	}
}

// TestRestoreDelete: restoring into a directory that holds other files
// warns and keeps them; --delete removes what the snapshot does not have,
// within what the filters select.
func TestRestoreDelete(t *testing.T) {
	base := t.TempDir()
	src := filepath.Join(base, "src")
	c := newCLI(t, filepath.Join(base, "repo"))
	c.init()
	writeFile(t, filepath.Join(src, "a.txt"), []byte("a\n"), 0o644)
	writeFile(t, filepath.Join(src, "sub", "b.txt"), []byte("b\n"), 0o644)
	c.ok("backup", src)

	target := filepath.Join(base, "target")
	c.ok("restore", "latest", "--target", target)
	extra := restoredPath(target, filepath.Join(src, "extra.txt"))
	oldDir := restoredPath(target, filepath.Join(src, "sub", "old"))
	writeFile(t, extra, []byte("not in the snapshot\n"), 0o644)
	writeFile(t, filepath.Join(oldDir, "c.txt"), []byte("c\n"), 0o644)

	res := c.ok("restore", "latest", "--target", target)
	if !strings.Contains(res.stderr, "is not empty") {
		t.Fatalf("no warning about a non-empty target: %s", res)
	}
	if _, err := os.Stat(extra); err != nil {
		t.Fatalf("a restore without --delete removed a file: %v", err)
	}
	// With a filter, only what it selects is deleted.
	c.ok("restore", "latest", "--target", target, "--delete", "--include", filepath.Join(src, "sub"))
	if _, err := os.Stat(oldDir); !os.IsNotExist(err) {
		t.Fatalf("--delete with --include kept %s: %v", oldDir, err)
	}
	if _, err := os.Stat(extra); err != nil {
		t.Fatalf("--delete removed %s, outside --include: %v", extra, err)
	}
	res = c.ok("restore", "latest", "--target", target, "--delete")
	if _, err := os.Stat(extra); !os.IsNotExist(err) || !strings.Contains(res.stdout, "deleted 1 entries") {
		t.Fatalf("--delete kept %s (%v): %s", extra, err, res)
	}
	compareTrees(t, src, restoredPath(target, src), false)
}

// slowReader delivers data in small pieces with a pause before each.
type slowReader struct {
	data  []byte
	pause time.Duration
}

func (s *slowReader) Read(b []byte) (int, error) {
	if len(s.data) == 0 {
		return 0, io.EOF
	}
	time.Sleep(s.pause)
	n := copy(b[:min(len(b), 64<<10)], s.data)
	s.data = s.data[n:]
	return n, nil
}

// TestProgressLogLines: with stderr not a terminal (a cron or systemd
// log), a long backup says how far it got at every interval.
func TestProgressLogLines(t *testing.T) {
	c := newCLI(t, filepath.Join(t.TempDir(), "repo"))
	c.init()
	c.env = []string{"CAIRN_PROGRESS_INTERVAL=100ms"}
	res := c.runIn(&slowReader{data: randomBytes(9, 1<<20), pause: 100 * time.Millisecond}, "backup", "--stdin")
	if res.code != 0 || !strings.Contains(res.stderr, "progress: ") {
		t.Fatalf("no progress lines in the log: %s", res)
	}
}
