package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
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
