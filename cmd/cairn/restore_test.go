package main

import (
	"encoding/json"
	"fmt"
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
	out, err := exec.Command("chattr", "+i", dir).CombinedOutput()
	if err == nil {
		t.Cleanup(func() { _ = exec.Command("chattr", "-i", dir).Run() })
		return
	}
	// File systems without the immutable flag (tmpfs): an empty read-only
	// tmpfs mounted over the (empty) directory.
	out2, err2 := exec.Command("mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", dir).CombinedOutput()
	if err2 != nil {
		t.Skipf("cannot make %s unwritable for root (chattr +i: %v %s; read-only mount: %v %s)", dir, err, out, err2, out2)
	}
	t.Cleanup(func() { _ = exec.Command("umount", dir).Run() })
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

// TestMaxEntries: ls, diff, stats and restore of a snapshot with more
// entries than --max-entries (or CAIRN_MAX_ENTRIES) fail with one clear
// line and exit 1; a restore writes nothing. (A tree whose directories
// repeat one another, which unfolds without end, is tested in tree and
// restorer.)
func TestMaxEntries(t *testing.T) {
	base := t.TempDir()
	src := filepath.Join(base, "src")
	c := newCLI(t, filepath.Join(base, "repo"))
	c.init()
	for i := range 30 {
		writeFile(t, filepath.Join(src, fmt.Sprintf("d%d", i%3), fmt.Sprintf("f%02d", i)), []byte{byte(i)}, 0o644)
	}
	c.ok("backup", src)
	for i := range 30 { // every directory changes: diff compares every entry
		writeFile(t, filepath.Join(src, fmt.Sprintf("d%d", i%3), fmt.Sprintf("f%02d", i)), []byte{byte(i), 1}, 0o644)
	}
	c.ok("backup", src)
	sns := c.snapshots()
	if len(sns) != 2 {
		t.Fatalf("%d snapshots, want 2", len(sns))
	}
	target := filepath.Join(base, "target")
	for _, args := range [][]string{{"ls", "latest"}, {"stats", "latest"}, {"diff", sns[0].ID, sns[1].ID}, {"restore", "latest", "--target", target}} {
		res := c.run(append([]string{"--max-entries", "20"}, args...)...)
		if res.code != 1 || !strings.Contains(res.stderr, "more than 20 entries") || strings.Count(strings.TrimSpace(res.stderr), "\n") > 1 {
			t.Errorf("%q with --max-entries 20: want exit 1 and one line about the bound: %s", args, res)
		}
	}
	if _, err := os.Stat(target); err == nil {
		if ents, _ := os.ReadDir(target); len(ents) > 0 {
			t.Errorf("a restore over the bound wrote %d entries", len(ents))
		}
	}
	c.env = append(c.env, "CAIRN_MAX_ENTRIES=20")
	if res := c.run("ls", "latest"); res.code != 1 || !strings.Contains(res.stderr, "more than 20 entries") {
		t.Errorf("ls with CAIRN_MAX_ENTRIES=20: %s", res)
	}
	c.ok("--max-entries", "1000", "restore", "latest", "--target", target)
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

// TestJSONLines: --json output is JSON lines, as restic's: status lines at
// most once a second while a backup runs, then the summary with restic's
// field names; errors and the exit error are JSON lines on stderr.
func TestJSONLines(t *testing.T) {
	base := t.TempDir()
	c := newCLI(t, filepath.Join(base, "repo"))
	c.init()
	res := c.runIn(&slowReader{data: randomBytes(10, 2<<20), pause: 80 * time.Millisecond}, "--json", "backup", "--stdin")
	if res.code != 0 {
		t.Fatalf("backup: %s", res)
	}
	summary := jsonSummary(t, res.stdout)
	if n := strings.Count(res.stdout, `"message_type":"status"`); n == 0 {
		t.Fatalf("a backup of about 2.5 s printed no status line:\n%s", res.stdout)
	}
	var s map[string]any
	if err := json.Unmarshal(summary, &s); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"snapshot_id", "files_new", "files_changed", "files_unmodified", "data_added", "data_added_packed", "total_files_processed", "total_bytes_processed", "total_duration"} {
		if _, ok := s[k]; !ok {
			t.Errorf("summary lacks restic's field %s: %s", k, summary)
		}
	}

	// A path that cannot be read: an error line and the exit error, on
	// stderr, each one JSON object.
	src := filepath.Join(base, "src")
	writeFile(t, filepath.Join(src, "a.txt"), []byte("a\n"), 0o644)
	res = c.run("--json", "backup", src, filepath.Join(base, "missing"))
	if res.code != 3 {
		t.Fatalf("backup with a missing path: %s", res)
	}
	jsonSummary(t, res.stdout)
	lines := strings.Split(strings.TrimSpace(res.stderr), "\n")
	var first, last map[string]any
	if json.Unmarshal([]byte(lines[0]), &first) != nil || json.Unmarshal([]byte(lines[len(lines)-1]), &last) != nil ||
		first["message_type"] != "error" || first["during"] != "archival" || !strings.HasSuffix(fmt.Sprint(first["item"]), "missing") ||
		last["message_type"] != "exit_error" || last["code"] != float64(3) {
		t.Fatalf("stderr of a partial --json backup: %q", res.stderr)
	}
	if out := c.ok("--json", "snapshots").stdout; strings.Count(strings.TrimSpace(out), "\n") != 0 {
		t.Fatalf("snapshots --json is not one line: %q", out)
	}
}

// TestMetricsFile: --metrics-file writes the outcome in Prometheus text
// format; a failed night keeps the time of the last success.
func TestMetricsFile(t *testing.T) {
	base := t.TempDir()
	c := newCLI(t, filepath.Join(base, "repo"))
	c.init()
	src := filepath.Join(base, "src")
	writeFile(t, filepath.Join(src, "a.txt"), []byte("a\n"), 0o644)
	metrics := filepath.Join(base, "cairn.prom")
	c.ok("backup", src, "--metrics-file", metrics)
	read := func() map[string]float64 {
		t.Helper()
		b, err := os.ReadFile(metrics)
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]float64{}
		for _, l := range strings.Split(string(b), "\n") {
			if l == "" || strings.HasPrefix(l, "#") {
				continue
			}
			f := strings.Fields(l)
			var v float64
			if _, err := fmt.Sscan(f[len(f)-1], &v); err != nil {
				t.Fatalf("metrics line %q: %v", l, err)
			}
			m[f[0]] = v
		}
		return m
	}
	m := read()
	success := m[`cairn_backup_last_success_timestamp_seconds{profile=""}`]
	if m[`cairn_backup_exit_code{profile=""}`] != 0 || success == 0 || m[`cairn_backup_files_processed{profile=""}`] != 1 ||
		m[`cairn_backup_source_ok{profile="",kind="files",source="`+src+`",status="ok"}`] != 1 {
		t.Fatalf("metrics after a good backup: %v", m)
	}
	if res := c.run("backup", "--metrics-file", metrics, "--stdin-from-command", "--", "false"); res.code != 1 {
		t.Fatalf("failing command: %s", res)
	}
	m = read()
	if m[`cairn_backup_exit_code{profile=""}`] != 1 || m[`cairn_backup_last_success_timestamp_seconds{profile=""}`] != success {
		t.Fatalf("metrics after a failed backup: %v", m)
	}
}

// TestRestoreNoSpace: a target whose file system cannot hold the files
// fails before anything is written (here a 1 MiB tmpfs; mounting it needs
// root, elsewhere the test is skipped).
func TestRestoreNoSpace(t *testing.T) {
	base := t.TempDir()
	small := filepath.Join(base, "small")
	if err := os.Mkdir(small, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", small).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a small tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", small).Run() })
	src := filepath.Join(base, "src")
	writeFile(t, filepath.Join(src, "big.bin"), randomBytes(12, 3<<20), 0o644)
	c := newCLI(t, filepath.Join(base, "repo"))
	c.init()
	c.ok("backup", src)
	res := c.run("restore", "latest", "--target", small)
	if res.code != 1 || !strings.Contains(res.stderr, "not enough space") {
		t.Fatalf("restore into a file system that is too small: %s", res)
	}
	if ents, _ := os.ReadDir(small); len(ents) != 0 {
		t.Fatalf("a refused restore wrote %d entries", len(ents))
	}
}

// TestOversizedObjects: a config or snapshot object far larger than cairn
// writes (sparse, 200 GB) is refused with one line instead of exhausting
// memory before anything is authenticated.
func TestOversizedObjects(t *testing.T) {
	base := t.TempDir()
	repoDir := filepath.Join(base, "repo")
	c := newCLI(t, repoDir)
	c.init()
	src := filepath.Join(base, "src")
	writeFile(t, filepath.Join(src, "a.txt"), []byte("a\n"), 0o644)
	c.ok("backup", src)

	cfg := filepath.Join(repoDir, "config")
	orig, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(cfg, 200<<30); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range [][]string{{"snapshots"}, {"check"}, {"repair", "index"}} {
		res := c.run(cmd...)
		if res.code != 1 || !strings.Contains(res.stderr, "more than") || strings.Contains(res.stderr, "fatal error") {
			t.Fatalf("%v with a 200 GB config: %s", cmd, res)
		}
	}
	restoreFile(t, cfg, orig, 0o600)

	planted := filepath.Join(repoDir, "snapshots", strings.Repeat("ab", 32))
	writeFile(t, planted, nil, 0o600)
	if err := os.Truncate(planted, 200<<30); err != nil {
		t.Fatal(err)
	}
	res := c.run("snapshots")
	if strings.Contains(res.stderr, "fatal error") || !strings.Contains(res.stderr, "more than") {
		t.Fatalf("snapshots with a 200 GB snapshot object: %s", res)
	}
}

// TestChildProgramsGetNoSecrets: a --stdin-from-command program does not
// see the repository password or the S3 keys cairn was given.
func TestChildProgramsGetNoSecrets(t *testing.T) {
	c := newCLI(t, filepath.Join(t.TempDir(), "repo"))
	c.init()
	c.env = []string{"AWS_SECRET_ACCESS_KEY=s3-secret-value", "CAIRN_REDIS_PASSWORD=redis-secret-value", "KEPT_VARIABLE=kept"}
	c.ok("backup", "--stdin-from-command", "--stdin-filename", "env.txt", "--", "env")
	out := c.ok("dump", "latest", "/env.txt").stdout
	if strings.Contains(out, c.password) || strings.Contains(out, "secret-value") || !strings.Contains(out, "KEPT_VARIABLE=kept") {
		t.Fatalf("the child's environment:\n%s", out)
	}
}
