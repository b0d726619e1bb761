package main

// End-to-end tests: they build the real cairn binary once and run it the
// way a user does, comparing real bytes and metadata on disk.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cairn-backup/cairn/internal/clitest"
)

// cairnBin is the binary built by TestMain.
var cairnBin string

func TestMain(m *testing.M) {
	// One build for every test of the package (e2e, pg, redis, cache);
	// every cairn they start keeps its local cache in the build's
	// temporary directory.
	os.Exit(clitest.Main(m, &cairnBin))
}

// result is one finished cairn invocation.
type result struct {
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\n--- stdout:\n%s\n--- stderr:\n%s", r.code, r.stdout, r.stderr)
}

// combined is stdout and stderr together, for searching messages.
func (r result) combined() string { return r.stdout + "\n" + r.stderr }

// cli runs cairn against one repository.
type cli struct {
	t        *testing.T
	repo     string
	password string
	env      []string // extra KEY=VALUE entries
}

func newCLI(t *testing.T, repoDir string) *cli {
	return &cli{t: t, repo: repoDir, password: "correct horse battery staple"}
}

func (c *cli) runner() *clitest.Runner {
	return &clitest.Runner{Bin: cairnBin, Repo: c.repo, Env: append([]string{"CAIRN_PASSWORD=" + c.password}, c.env...)}
}

func (c *cli) command(ctx context.Context, stdin io.Reader, args ...string) *exec.Cmd {
	cmd := c.runner().Command(ctx, args...)
	if stdin != nil {
		cmd.Stdin = stdin
	}
	return cmd
}

// runIn runs cairn with stdin (may be nil) and returns its output and exit code.
func (c *cli) runIn(stdin io.Reader, args ...string) result {
	c.t.Helper()
	r := c.runner().Run(c.t, stdin, args...)
	return result{stdout: r.Stdout, stderr: r.Stderr, code: r.Code}
}

func (c *cli) run(args ...string) result {
	c.t.Helper()
	return c.runIn(nil, args...)
}

// ok runs cairn and fails the test unless it exits 0.
func (c *cli) ok(args ...string) result {
	c.t.Helper()
	res := c.run(args...)
	if res.code != 0 {
		c.t.Fatalf("cairn %q failed: %s", args, res)
	}
	return res
}

func (c *cli) init(extra ...string) {
	c.t.Helper()
	c.ok(append([]string{"init"}, extra...)...)
}

// backupJSON runs backup --json and decodes the summary.
type backupSummary struct {
	SnapshotID      string  `json:"snapshot_id"`
	FilesNew        uint64  `json:"files_new"`
	FilesChanged    uint64  `json:"files_changed"`
	FilesUnmodified uint64  `json:"files_unmodified"`
	DataAdded       uint64  `json:"data_added"`
	FilesRead       *int64  `json:"files_read"`
	TotalFiles      uint64  `json:"total_files_processed"`
	TotalBytes      uint64  `json:"total_bytes_processed"`
	Duration        float64 `json:"total_duration"`
}

// jsonSummary checks that a backup's --json output is JSON lines (one
// object each: status lines, then the summary) and returns the summary.
func jsonSummary(t *testing.T, stdout string) []byte {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
	for i, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("--json line %d is not one JSON object (%v): %q", i+1, err, l)
		}
		want := "status"
		if i == len(lines)-1 {
			want = "summary"
		}
		if m["message_type"] != want {
			t.Fatalf("--json line %d of %d has message_type %v, want %s:\n%s", i+1, len(lines), m["message_type"], want, stdout)
		}
	}
	return []byte(lines[len(lines)-1])
}

func (c *cli) backupJSON(args ...string) backupSummary {
	c.t.Helper()
	res := c.ok(append([]string{"--json", "backup"}, args...)...)
	var s backupSummary
	if err := json.Unmarshal(jsonSummary(c.t, res.stdout), &s); err != nil {
		c.t.Fatalf("backup --json output does not decode: %v\n%s", err, res)
	}
	if s.FilesRead == nil {
		c.t.Fatalf("backup --json has no files_read field:\n%s", res.stdout)
	}
	if len(s.SnapshotID) != 64 {
		c.t.Fatalf("backup --json snapshot_id %q is not a full ID", s.SnapshotID)
	}
	return s
}

type snapshotInfo struct {
	ID       string          `json:"id"`
	ShortID  string          `json:"short_id"`
	Time     time.Time       `json:"time"`
	Hostname string          `json:"hostname"`
	Tags     []string        `json:"tags"`
	Paths    []string        `json:"paths"`
	Parent   string          `json:"parent"`
	Tree     string          `json:"tree"`
	Summary  json.RawMessage `json:"summary"`
}

func (c *cli) snapshots() []snapshotInfo {
	c.t.Helper()
	res := c.ok("--json", "snapshots")
	var out []snapshotInfo
	if err := json.Unmarshal([]byte(res.stdout), &out); err != nil {
		c.t.Fatalf("snapshots --json does not decode: %v\n%s", err, res)
	}
	return out
}

func (c *cli) checkReadData() {
	c.t.Helper()
	res := c.run("check", "--read-data")
	if res.code != 0 {
		c.t.Fatalf("check --read-data failed: %s", res)
	}
}

// ---------------------------------------------------------------------------
// Source trees and their comparison.

func randomBytes(seed uint64, n int) []byte {
	var s [32]byte
	s[0], s[1] = byte(seed), byte(seed>>8)
	rng := rand.NewChaCha8(s)
	b := make([]byte, n)
	_, _ = rng.Read(b)
	return b
}

func writeFile(t *testing.T, p string, data []byte, perm os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, perm); err != nil {
		t.Fatal(err)
	}
}

// entryInfo is what the comparison looks at for one path.
type entryInfo struct {
	ifmt   uint32 // S_IFMT bits
	mode   uint32 // 07777 bits
	size   int64
	sum    string // sha256 of regular file content
	mtime  int64  // ns
	target string // symlink target
	rdev   uint64 // devices
	ino    uint64
	nlink  uint64
	uid    uint32
	gid    uint32
	xattrs map[string]string
}

func listXattrs(t *testing.T, p string) map[string]string {
	t.Helper()
	buf := make([]byte, 64<<10)
	n, err := unix.Llistxattr(p, buf)
	if err != nil {
		if errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EOPNOTSUPP) {
			return nil
		}
		t.Fatalf("llistxattr %q: %v", p, err)
	}
	out := map[string]string{}
	for _, name := range strings.Split(string(buf[:n]), "\x00") {
		if name == "" || name == "security.selinux" {
			continue
		}
		val := make([]byte, 64<<10)
		m, err := unix.Lgetxattr(p, name, val)
		if err != nil {
			t.Fatalf("lgetxattr %q %q: %v", p, name, err)
		}
		out[name] = string(val[:m])
	}
	return out
}

// scanTree lstat()s every entry below root (root itself as ".").
func scanTree(t *testing.T, root string) map[string]entryInfo {
	t.Helper()
	out := map[string]entryInfo{}
	var walk func(rel string)
	walk = func(rel string) {
		p := filepath.Join(root, rel)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			t.Fatalf("lstat %q: %v", p, err)
		}
		e := entryInfo{
			ifmt: st.Mode & unix.S_IFMT, mode: st.Mode & 0o7777, size: st.Size,
			mtime: st.Mtim.Nano(), ino: st.Ino, nlink: uint64(st.Nlink), uid: st.Uid, gid: st.Gid,
			xattrs: listXattrs(t, p),
		}
		switch e.ifmt {
		case unix.S_IFREG:
			data, err := os.ReadFile(p)
			if err != nil {
				t.Fatalf("read %q: %v", p, err)
			}
			s := sha256.Sum256(data)
			e.sum = hex.EncodeToString(s[:])
		case unix.S_IFCHR, unix.S_IFBLK:
			e.rdev = st.Rdev
		case unix.S_IFLNK:
			tgt, err := os.Readlink(p)
			if err != nil {
				t.Fatal(err)
			}
			e.target = tgt
		}
		out[rel] = e
		if e.ifmt == unix.S_IFDIR {
			ents, err := os.ReadDir(p)
			if err != nil {
				t.Fatalf("readdir %q: %v", p, err)
			}
			for _, de := range ents {
				walk(filepath.Join(rel, de.Name()))
			}
		}
	}
	walk(".")
	return out
}

// compareTrees reports every difference between a source and a restored tree.
func compareTrees(t *testing.T, srcRoot, dstRoot string, checkOwner bool) {
	t.Helper()
	src := scanTree(t, srcRoot)
	dst := scanTree(t, dstRoot)
	names := make([]string, 0, len(src))
	for k := range src {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, rel := range names {
		s := src[rel]
		d, ok := dst[rel]
		if !ok {
			t.Errorf("%q: missing from the restore", rel)
			continue
		}
		if s.ifmt != d.ifmt {
			t.Errorf("%q: type %o restored as %o", rel, s.ifmt, d.ifmt)
			continue
		}
		if s.ifmt != unix.S_IFLNK && s.mode != d.mode {
			t.Errorf("%q: mode %04o restored as %04o", rel, s.mode, d.mode)
		}
		if s.ifmt == unix.S_IFREG || s.ifmt == unix.S_IFLNK {
			if s.size != d.size {
				t.Errorf("%q: size %d restored as %d", rel, s.size, d.size)
			}
		}
		if s.sum != d.sum {
			t.Errorf("%q: content differs (sha256 %s restored as %s)", rel, s.sum, d.sum)
		}
		if s.mtime != d.mtime {
			t.Errorf("%q: mtime %d restored as %d (%v vs %v)", rel, s.mtime, d.mtime, time.Unix(0, s.mtime).UTC(), time.Unix(0, d.mtime).UTC())
		}
		if s.rdev != d.rdev {
			t.Errorf("%q: device %d:%d restored as %d:%d", rel, unix.Major(s.rdev), unix.Minor(s.rdev), unix.Major(d.rdev), unix.Minor(d.rdev))
		}
		if s.target != d.target {
			t.Errorf("%q: symlink target %q restored as %q", rel, s.target, d.target)
		}
		if s.nlink != d.nlink && s.ifmt != unix.S_IFDIR {
			t.Errorf("%q: link count %d restored as %d", rel, s.nlink, d.nlink)
		}
		if checkOwner && (s.uid != d.uid || s.gid != d.gid) {
			t.Errorf("%q: owner %d:%d restored as %d:%d", rel, s.uid, s.gid, d.uid, d.gid)
		}
		if len(s.xattrs) != len(d.xattrs) {
			t.Errorf("%q: xattrs %q restored as %q", rel, xattrNames(s.xattrs), xattrNames(d.xattrs))
		} else {
			for k, v := range s.xattrs {
				if d.xattrs[k] != v {
					t.Errorf("%q: xattr %s = %q restored as %q", rel, k, v, d.xattrs[k])
				}
			}
		}
	}
	for rel := range dst {
		if _, ok := src[rel]; !ok {
			t.Errorf("%q: restored but not in the source", rel)
		}
	}
	// Hardlink identity: names sharing an inode in the source share one in
	// the restore, and names that do not, do not.
	srcIno := map[uint64][]string{}
	for rel, e := range src {
		if e.ifmt == unix.S_IFREG {
			srcIno[e.ino] = append(srcIno[e.ino], rel)
		}
	}
	seen := map[uint64]string{}
	for _, group := range srcIno {
		sort.Strings(group)
		first, ok := dst[group[0]]
		if !ok {
			continue
		}
		for _, rel := range group[1:] {
			if d, ok := dst[rel]; ok && d.ino != first.ino {
				t.Errorf("hardlinks %q and %q were restored as separate files", group[0], rel)
			}
		}
		if other, dup := seen[first.ino]; dup {
			t.Errorf("%q and %q are separate files but were restored as one inode", other, group[0])
		}
		seen[first.ino] = group[0]
	}
}

func xattrNames(m map[string]string) []string {
	var out []string
	for k, v := range m {
		out = append(out, fmt.Sprintf("%s (%d bytes)", k, len(v)))
	}
	sort.Strings(out)
	return out
}

// restoredPath is where a backed-up absolute path lands below a restore target.
func restoredPath(target, abs string) string { return filepath.Join(target, abs) }

// setTimesDeep sets distinct nanosecond mtimes (and atimes) on every entry
// below root, children before their directory, without following links.
func setTimesDeep(t *testing.T, root string, base int64) {
	t.Helper()
	i := int64(0)
	var walk func(p string)
	walk = func(p string) {
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.IsDir() {
			ents, err := os.ReadDir(p)
			if err != nil {
				t.Fatal(err)
			}
			for _, de := range ents {
				walk(filepath.Join(p, de.Name()))
			}
		}
		i++
		ns := base + i*1_000_003_001
		ts := []unix.Timespec{unix.NsecToTimespec(ns - 7), unix.NsecToTimespec(ns)}
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			t.Fatalf("utimes %q: %v", p, err)
		}
	}
	walk(root)
}

// ---------------------------------------------------------------------------

// TestRoundTripEveryKind backs up a tree with every kind of entry and odd
// metadata, restores it and compares everything lstat, readlink and
// getxattr can see.
func TestRoundTripEveryKind(t *testing.T) {
	base := t.TempDir()
	src := filepath.Join(base, "src")
	c := newCLI(t, filepath.Join(base, "repo"))
	c.init()

	// Large file: several chunks.
	writeFile(t, filepath.Join(src, "big.bin"), randomBytes(1, 20<<20+12345), 0o644)
	// Repetitive content: the same chunk several times in one file.
	writeFile(t, filepath.Join(src, "zeros.bin"), make([]byte, 17<<20+3), 0o644)
	// Empty files.
	writeFile(t, filepath.Join(src, "empty"), nil, 0o644)
	writeFile(t, filepath.Join(src, "sub", "also empty"), nil, 0o600)
	// A deep directory chain.
	deep := src
	for i := 0; i < 20; i++ {
		deep = filepath.Join(deep, fmt.Sprintf("d%02d", i))
	}
	writeFile(t, filepath.Join(deep, "leaf.txt"), []byte("at the bottom\n"), 0o644)
	// Odd names.
	odd := []string{"with space", "ünïcødé-文件", "new\nline", "\xff\xfe-invalid-utf8", "-dash-first", "tab\there", "back\\slash", "..dots", "ZZ:colon"}
	for i, n := range odd {
		writeFile(t, filepath.Join(src, "odd", n), []byte(fmt.Sprintf("odd name %d %q\n", i, n)), 0o644)
	}
	if err := os.Mkdir(filepath.Join(src, "odd", "dir \xff with\nnewline"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(src, "odd", "dir \xff with\nnewline", "inside"), []byte("x"), 0o644)
	// Symlinks: relative, absolute, dangling, to a directory, odd target bytes.
	links := map[string]string{
		"rel-link":      "big.bin",
		"abs-link":      filepath.Join(src, "big.bin"),
		"dangling-link": "does/not/exist",
		"dir-link":      "sub",
		"odd-link":      "odd/\xff\xfe-invalid-utf8",
		"outside-link":  "../../../../etc/passwd",
	}
	if err := os.MkdirAll(filepath.Join(src, "links"), 0o755); err != nil {
		t.Fatal(err)
	}
	for n, tgt := range links {
		if err := os.Symlink(tgt, filepath.Join(src, "links", n)); err != nil {
			t.Fatal(err)
		}
	}
	// Hardlinks: two names, one inode, in different directories, plus a
	// three-name group.
	writeFile(t, filepath.Join(src, "hard", "one"), randomBytes(2, 700<<10), 0o640)
	if err := os.Link(filepath.Join(src, "hard", "one"), filepath.Join(src, "sub", "two")); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(src, "hard", "a"), []byte("three names\n"), 0o644)
	for _, n := range []string{"b", "c"} {
		if err := os.Link(filepath.Join(src, "hard", "a"), filepath.Join(src, "hard", n)); err != nil {
			t.Fatal(err)
		}
	}
	// Modes.
	writeFile(t, filepath.Join(src, "modes", "m0600"), []byte("0600"), 0o600)
	writeFile(t, filepath.Join(src, "modes", "m0755"), []byte("#!/bin/sh\n"), 0o755)
	// Made read-only after its xattr is set (a user cannot set xattrs on a
	// file it cannot write).
	writeFile(t, filepath.Join(src, "modes", "m0444"), []byte("read only"), 0o644)
	if os.Geteuid() == 0 {
		// Only root can read it back (as a user it tests exit code 3 instead).
		writeFile(t, filepath.Join(src, "modes", "m0000"), []byte("no access"), 0o000)
	}
	writeFile(t, filepath.Join(src, "modes", "setuid"), []byte("suid"), 0o755)
	if err := unix.Chmod(filepath.Join(src, "modes", "setuid"), 0o4755); err != nil {
		t.Fatal(err)
	}
	for n, m := range map[string]uint32{"setgid-dir": 0o2755, "sticky-dir": 0o1777, "dir0700": 0o700} {
		p := filepath.Join(src, "modes", n)
		if err := os.Mkdir(p, 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(p, "f"), []byte(n), 0o644)
		if err := unix.Chmod(p, m); err != nil {
			t.Fatal(err)
		}
	}
	// An empty directory and a FIFO.
	if err := os.Mkdir(filepath.Join(src, "emptydir"), 0o751); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(filepath.Join(src, "fifo"), 0o620); err != nil {
		t.Fatal(err)
	}
	if err := unix.Chmod(filepath.Join(src, "fifo"), 0o620); err != nil {
		t.Fatal(err)
	}
	// Device nodes (root only, and not in every container).
	if os.Geteuid() == 0 {
		for n, dev := range map[string]uint32{"chardev": unix.S_IFCHR, "blockdev": unix.S_IFBLK} {
			err := unix.Mknod(filepath.Join(src, n), dev|0o640, int(unix.Mkdev(7, 201)))
			if err != nil {
				t.Logf("mknod %s: %v; device nodes not tested", n, err)
				break
			}
		}
	}
	// Xattrs (user namespace), including a binary, an empty and a large value.
	xattrsOK := true
	xattrs := []struct{ path, name, value string }{
		{"big.bin", "user.cairn.note", "hello"},
		{"big.bin", "user.cairn.binary", "\x00\x01\xff\xfe"},
		{"empty", "user.cairn.empty", ""},
		{"sub", "user.cairn.dir", "directory attr"},
		{"modes/m0444", "user.cairn.large", strings.Repeat("0123456789abcdef", 125)},
	}
	for _, x := range xattrs {
		err := unix.Lsetxattr(filepath.Join(src, x.path), x.name, []byte(x.value), 0)
		if errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EOPNOTSUPP) {
			t.Logf("file system does not support user xattrs; skipping that part")
			xattrsOK = false
			break
		}
		if err != nil {
			t.Fatalf("setxattr %s: %v", x.path, err)
		}
	}
	if err := os.Chmod(filepath.Join(src, "modes", "m0444"), 0o444); err != nil {
		t.Fatal(err)
	}
	// Ownership (only root can give files away).
	isRoot := os.Geteuid() == 0
	if isRoot {
		if err := os.Lchown(filepath.Join(src, "modes", "m0600"), 1234, 5678); err != nil {
			t.Fatal(err)
		}
		if err := os.Lchown(filepath.Join(src, "links", "rel-link"), 4321, 8765); err != nil {
			t.Fatal(err)
		}
		if err := os.Lchown(filepath.Join(src, "emptydir"), 2222, 3333); err != nil {
			t.Fatal(err)
		}
		// chown clears setuid: set it again.
		if err := unix.Chmod(filepath.Join(src, "modes", "setuid"), 0o4755); err != nil {
			t.Fatal(err)
		}
	}
	// Nanosecond mtimes everywhere, one of them the brief's example.
	setTimesDeep(t, src, 1234567891_123456789)
	ts := []unix.Timespec{unix.NsecToTimespec(1234567891_123456789), unix.NsecToTimespec(1234567891_123456789)}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, filepath.Join(src, "empty"), ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		t.Fatal(err)
	}
	// Pre-1970 and far-future times.
	for p, ns := range map[string]int64{"odd/with space": -86400*365*10*1e9 + 5, "odd/-dash-first": 4102444800_000000001} {
		ts := []unix.Timespec{unix.NsecToTimespec(ns), unix.NsecToTimespec(ns)}
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, filepath.Join(src, p), ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			t.Fatal(err)
		}
	}

	res := c.ok("backup", src)
	if res.stderr != "" {
		t.Errorf("backup printed warnings for a readable tree:\n%s", res.stderr)
	}
	target := filepath.Join(base, "restore")
	res = c.ok("restore", "latest", "--target", target)
	if strings.Contains(res.stderr, "error") {
		t.Errorf("restore reported errors:\n%s", res.stderr)
	}
	compareTrees(t, src, restoredPath(target, src), true)
	// Restoring again over the first restore gives the same tree.
	res = c.run("restore", "latest", "--target", target)
	if res.code != 0 {
		t.Errorf("second restore into the same target: %s", res)
	}
	compareTrees(t, src, restoredPath(target, src), true)
	if xattrsOK {
		got := listXattrs(t, filepath.Join(restoredPath(target, src), "modes", "m0444"))
		if len(got["user.cairn.large"]) != 2000 {
			t.Errorf("large xattr restored with %d bytes, want 2000", len(got["user.cairn.large"]))
		}
	}
	c.checkReadData()
}

// TestSocket backs up a directory holding a Unix socket. A socket is
// recorded as an entry (there is nothing else to read), so the backup is
// complete: it must not end with exit code 3 and a claim that input was
// skipped.
func TestSocket(t *testing.T) {
	base := t.TempDir()
	src := filepath.Join(base, "src")
	c := newCLI(t, filepath.Join(base, "repo"))
	c.init()
	writeFile(t, filepath.Join(src, "file"), []byte("data"), 0o644)
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	err = unix.Bind(fd, &unix.SockaddrUnix{Name: filepath.Join(src, "app.sock")})
	unix.Close(fd)
	if err != nil {
		t.Skipf("cannot create a socket here: %v", err)
	}
	setTimesDeep(t, src, 1700000000_000000001)
	res := c.run("backup", src)
	if res.code != 0 {
		t.Errorf("BUG: backup of a readable tree holding a socket exited %d (the socket is stored, nothing was skipped), want 0:\n%s", res.code, res)
	}
	if res.code != 0 && res.code != 3 {
		t.FailNow()
	}
	target := filepath.Join(base, "restore")
	c.ok("restore", "latest", "--target", target)
	compareTrees(t, src, restoredPath(target, src), true)
}

// ancestorsState describes the metadata of every directory above p, which
// the snapshot records for the virtual directories leading to p.
func ancestorsState(t *testing.T, p string) string {
	t.Helper()
	var b strings.Builder
	for d := filepath.Dir(p); ; d = filepath.Dir(d) {
		var st unix.Stat_t
		if err := unix.Lstat(d, &st); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s %d %d %d %o\n", d, st.Mtim.Nano(), st.Ctim.Nano(), st.Nlink, st.Mode)
		if d == "/" || d == "." {
			break
		}
	}
	return b.String()
}

// TestIncremental checks that an unchanged tree is taken from the parent
// without reading, and that a one-byte change stores about one chunk.
func TestIncremental(t *testing.T) {
	base := t.TempDir()
	src := filepath.Join(base, "src")
	c := newCLI(t, filepath.Join(base, "repo"))
	c.init()

	const bigSize = 30 << 20
	big := randomBytes(3, bigSize)
	writeFile(t, filepath.Join(src, "big.bin"), big, 0o644)
	const nSmall = 200
	for i := 0; i < nSmall; i++ {
		writeFile(t, filepath.Join(src, fmt.Sprintf("dir%02d", i%10), fmt.Sprintf("small-%03d.txt", i)),
			[]byte(fmt.Sprintf("small file %d\n%s", i, strings.Repeat("x", i*37))), 0o644)
	}
	const nFiles = nSmall + 1

	// The snapshot also records the directories above src; another process
	// creating files in /tmp changes them (and adds a small tree blob).
	anc := ancestorsState(t, src)
	s1 := c.backupJSON(src)
	if s1.FilesNew != nFiles || s1.FilesChanged != 0 || s1.FilesUnmodified != 0 || *s1.FilesRead != nFiles {
		t.Errorf("first backup: files new/changed/unmodified/read = %d/%d/%d/%d, want %d/0/0/%d",
			s1.FilesNew, s1.FilesChanged, s1.FilesUnmodified, *s1.FilesRead, nFiles, nFiles)
	}
	if s1.DataAdded < bigSize {
		t.Errorf("first backup: data_added %d < %d bytes of random input", s1.DataAdded, bigSize)
	}
	c.checkReadData()

	s2 := c.backupJSON(src)
	if s2.FilesNew != 0 || s2.FilesChanged != 0 || s2.FilesUnmodified != nFiles {
		t.Errorf("unchanged backup: files new/changed/unmodified = %d/%d/%d, want 0/0/%d", s2.FilesNew, s2.FilesChanged, s2.FilesUnmodified, nFiles)
	}
	if *s2.FilesRead != 0 {
		t.Errorf("unchanged backup read %d files, want 0", *s2.FilesRead)
	}
	if s2.DataAdded != 0 {
		if anc2 := ancestorsState(t, src); anc2 != anc {
			// Something else changed a directory above src between the
			// backups: only those directories' tree blobs may be new.
			t.Logf("directories above the source changed between the backups; data_added %d\n%s\n%s", s2.DataAdded, anc, anc2)
			if s2.DataAdded > 16<<10 {
				t.Errorf("unchanged backup added %d bytes; only small tree blobs of changed parent directories are expected", s2.DataAdded)
			}
		} else {
			t.Errorf("unchanged backup: data_added = %d, want 0", s2.DataAdded)
		}
	}
	if s2.TotalBytes < bigSize {
		t.Errorf("unchanged backup: total_bytes_processed %d, want at least %d", s2.TotalBytes, bigSize)
	}
	c.checkReadData()

	// Change one byte in the middle of the big file, keeping its size.
	bigPath := filepath.Join(src, "big.bin")
	before, err := os.Lstat(bigPath)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(bigPath, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	big[bigSize/2] ^= 0x5a
	if _, err := f.WriteAt(big[bigSize/2:bigSize/2+1], bigSize/2); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	after, err := os.Lstat(bigPath)
	if err != nil {
		t.Fatal(err)
	}
	if after.ModTime().Equal(before.ModTime()) {
		// Coarse file system clock: make the change visible.
		if err := os.Chtimes(bigPath, time.Time{}, before.ModTime().Add(time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	if after.Size() != bigSize {
		t.Fatalf("size changed to %d", after.Size())
	}

	s3 := c.backupJSON(src)
	if s3.FilesChanged != 1 || s3.FilesNew != 0 || s3.FilesUnmodified != nSmall {
		t.Errorf("after a one-byte change: files new/changed/unmodified = %d/%d/%d, want 0/1/%d", s3.FilesNew, s3.FilesChanged, s3.FilesUnmodified, nSmall)
	}
	if *s3.FilesRead != 1 {
		t.Errorf("after a one-byte change: files_read = %d, want 1", *s3.FilesRead)
	}
	if s3.DataAdded == 0 || s3.DataAdded > 16<<20 || s3.DataAdded >= bigSize/2 {
		t.Errorf("after a one-byte change in a %d-byte file: data_added = %d, want 0 < x <= 16 MiB and < half the file", bigSize, s3.DataAdded)
	}
	c.checkReadData()

	target := filepath.Join(base, "restore")
	c.ok("restore", s3.SnapshotID, "--target", target)
	got, err := os.ReadFile(filepath.Join(restoredPath(target, src), "big.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, big) {
		t.Errorf("restored big file differs from the changed source (%d vs %d bytes)", len(got), len(big))
	}
	compareTrees(t, src, restoredPath(target, src), true)
}

// TestStdinAndCommand stores streams from stdin and from a command.
func TestStdinAndCommand(t *testing.T) {
	base := t.TempDir()
	c := newCLI(t, filepath.Join(base, "repo"))
	c.init()

	input := randomBytes(4, 5<<20)
	// Make part of it text, like a dump.
	copy(input[1<<20:], bytes.Repeat([]byte("INSERT INTO t VALUES (1, 'abc');\n"), 20000))
	res := c.runIn(bytes.NewReader(input), "backup", "--stdin", "--stdin-filename", "db.sql")
	if res.code != 0 {
		t.Fatalf("backup --stdin: %s", res)
	}
	res = c.ok("dump", "latest", "/db.sql")
	if !bytes.Equal([]byte(res.stdout), input) {
		t.Errorf("dump of the stdin backup differs from the input (%d vs %d bytes)", len(res.stdout), len(input))
	}
	if n := len(c.snapshots()); n != 1 {
		t.Fatalf("%d snapshots after one backup", n)
	}

	// A failing command: exit 1, its stderr and exit status shown, no snapshot.
	res = c.run("backup", "--stdin-from-command", "--stdin-filename", "bad.bin", "--",
		"sh", "-c", "head -c 3000000 /dev/urandom; echo oops >&2; exit 3")
	if res.code != 1 {
		t.Errorf("backup of a failing command exited %d, want 1: %s", res.code, res)
	}
	if !strings.Contains(res.stderr, "oops") {
		t.Errorf("stderr does not show the command's error output:\n%s", res.stderr)
	}
	if !strings.Contains(res.stderr, "exit status 3") {
		t.Errorf("stderr does not show the command's exit status:\n%s", res.stderr)
	}
	if n := len(c.snapshots()); n != 1 {
		t.Errorf("%d snapshots after a failed command backup, want 1", n)
	}

	// A command that cannot even start.
	res = c.run("backup", "--stdin-from-command", "--", filepath.Join(base, "no-such-program"))
	if res.code != 1 {
		t.Errorf("backup of a missing program exited %d, want 1: %s", res.code, res)
	}

	// A successful command is stored exactly.
	payload := randomBytes(5, 3<<20+17)
	pf := filepath.Join(base, "payload")
	writeFile(t, pf, payload, 0o644)
	res = c.run("backup", "--stdin-from-command", "--stdin-filename", "dumps/out.bin", "--", "cat", pf)
	if res.code != 0 {
		t.Fatalf("backup --stdin-from-command cat: %s", res)
	}
	res = c.ok("dump", "latest", "/dumps/out.bin")
	if !bytes.Equal([]byte(res.stdout), payload) {
		t.Errorf("dump of the command backup differs from its output (%d vs %d bytes)", len(res.stdout), len(payload))
	}
	sns := c.snapshots()
	if len(sns) != 2 {
		t.Errorf("%d snapshots, want 2", len(sns))
	}
	c.checkReadData()
}

// TestExitCodes checks restic's exit codes.
func TestExitCodes(t *testing.T) {
	base := t.TempDir()
	c := newCLI(t, filepath.Join(base, "repo"))
	c.init()

	// Wrong password.
	wrong := *c
	wrong.password = "not the password"
	res := wrong.run("snapshots")
	if res.code != 12 {
		t.Errorf("wrong password: exit %d, want 12: %s", res.code, res)
	}
	if !strings.Contains(res.stderr, "wrong password") {
		t.Errorf("wrong password: stderr does not say so:\n%s", res.stderr)
	}

	// Missing repository.
	missing := newCLI(t, filepath.Join(base, "nothing-here"))
	res = missing.run("snapshots")
	if res.code != 10 {
		t.Errorf("missing repository: exit %d, want 10: %s", res.code, res)
	}

	// init twice fails and leaves the repository usable.
	res = c.run("init")
	if res.code == 0 {
		t.Errorf("second init succeeded: %s", res)
	}

	// Partial backup: exit 3, snapshot written.
	src := filepath.Join(base, "src")
	writeFile(t, filepath.Join(src, "readable"), []byte("fine"), 0o644)
	args := []string{"backup", src, filepath.Join(base, "does-not-exist")}
	if os.Geteuid() != 0 {
		writeFile(t, filepath.Join(src, "unreadable"), []byte("secret"), 0o000)
		args = []string{"backup", src}
	}
	res = c.run(args...)
	if res.code != 3 {
		t.Errorf("backup with unreadable input: exit %d, want 3: %s", res.code, res)
	}
	sns := c.snapshots() // also proves the repository still opens after init twice
	if len(sns) != 1 {
		t.Fatalf("partial backup: %d snapshots, want 1", len(sns))
	}
	res = c.ok("dump", sns[0].ID, filepath.Join(src, "readable"))
	if res.stdout != "fine" {
		t.Errorf("partial snapshot: readable file dumps as %q", res.stdout)
	}

	// Interrupted: SIGINT during a stdin backup exits 130 and writes nothing.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := c.command(ctx, nil, "backup", "--stdin")
	pw, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Once 8 MiB went through the pipe, the backup is running.
	if _, err := pw.Write(randomBytes(6, 8<<20)); err != nil {
		t.Fatalf("write to backup --stdin: %v (%s)", err, errb.String())
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	waitErr := make(chan error, 1)
	go func() { waitErr <- cmd.Wait() }()
	select {
	case err = <-waitErr:
	case <-time.After(10 * time.Second):
		t.Errorf("backup --stdin did not exit within 10 s of SIGINT while its input stayed open (it keeps blocking in read)")
		pw.Close()
		err = <-waitErr
	}
	pw.Close()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 130 {
		t.Errorf("interrupted backup: %v, want exit status 130; stderr:\n%s", err, errb.String())
	}
	if n := len(c.snapshots()); n != 1 {
		t.Errorf("interrupted backup: %d snapshots, want 1", n)
	}
}

type keyInfo struct {
	ID      string `json:"id"`
	Current bool   `json:"current"`
}

func (c *cli) keys() []keyInfo {
	c.t.Helper()
	res := c.ok("--json", "key", "list")
	var out []keyInfo
	if err := json.Unmarshal([]byte(res.stdout), &out); err != nil {
		c.t.Fatalf("key list --json: %v\n%s", err, res)
	}
	return out
}

// TestKeyHint: the key file that opened a repository is remembered in
// the cache directory and tried first next time; a wrong hint is only
// replaced, and --no-cache remembers nothing.
func TestKeyHint(t *testing.T) {
	base := t.TempDir()
	c := newCLI(t, filepath.Join(base, "repo"))
	c.init()
	add := *c
	add.env = []string{"CAIRN_NEW_PASSWORD=second password"}
	add.ok("key", "add")
	second := *c
	second.password = "second password"
	cacheDir := filepath.Join(base, "cache")
	second.env = []string{"CAIRN_CACHE_DIR=" + cacheDir}
	var current string
	for _, k := range second.keys() {
		if k.Current {
			current = k.ID
		}
	}
	hints, _ := filepath.Glob(filepath.Join(cacheDir, "keys", "*"))
	if len(hints) != 1 {
		t.Fatalf("%d key hints in the cache, want 1", len(hints))
	}
	if b, err := os.ReadFile(hints[0]); err != nil || strings.TrimSpace(string(b)) != current {
		t.Fatalf("key hint %q (%v), want %s", b, err, current)
	}
	writeFile(t, hints[0], []byte("no-such-key\n"), 0o600)
	second.ok("snapshots")
	if b, _ := os.ReadFile(hints[0]); strings.TrimSpace(string(b)) != current {
		t.Errorf("a wrong hint was not replaced: %q", b)
	}
	noCache := *c
	noCache.env = []string{"CAIRN_CACHE_DIR=" + filepath.Join(base, "cache2")}
	noCache.ok("--no-cache", "snapshots")
	if _, err := os.Stat(filepath.Join(base, "cache2", "keys")); err == nil {
		t.Errorf("--no-cache remembered a key")
	}
}

// TestSnapshotGoneWarning: the newest snapshot of a group that this
// machine listed and that is later gone (deleted behind its back, or the
// repository put back to an older state) is warned about once; one this
// machine forgot is not; an older one going (retention) is not.
func TestSnapshotGoneWarning(t *testing.T) {
	base := t.TempDir()
	src := filepath.Join(base, "src")
	repoDir := filepath.Join(base, "repo")
	c := newCLI(t, repoDir)
	c.env = []string{"CAIRN_CACHE_DIR=" + filepath.Join(base, "cache")}
	c.init()
	writeFile(t, filepath.Join(src, "f"), []byte("1"), 0o644)
	c.ok("backup", src)
	writeFile(t, filepath.Join(src, "f"), []byte("2"), 0o644)
	c.ok("backup", src)
	sns := c.snapshots()
	if len(sns) != 2 {
		t.Fatalf("%d snapshots", len(sns))
	}
	if res := c.ok("snapshots"); strings.Contains(res.stderr, "is gone") {
		t.Fatalf("warning without cause: %s", res)
	}
	// The newest disappears behind this machine's back.
	if err := os.Remove(filepath.Join(repoDir, "snapshots", sns[1].ID)); err != nil {
		t.Fatal(err)
	}
	res := c.ok("snapshots")
	if !strings.Contains(res.stderr, "warning: snapshot "+sns[1].ShortID) || !strings.Contains(res.stderr, "put back to an older state") {
		t.Errorf("no warning for the vanished newest snapshot: %s", res)
	}
	if res := c.ok("snapshots"); strings.Contains(res.stderr, "is gone") {
		t.Errorf("warned twice: %s", res)
	}
	// Forgotten here: no warning, for the newest or an older one.
	writeFile(t, filepath.Join(src, "f"), []byte("3"), 0o644)
	c.ok("backup", src)
	c.ok("forget", "latest")
	c.ok("forget", sns[0].ID)
	writeFile(t, filepath.Join(src, "f"), []byte("4"), 0o644)
	c.ok("backup", src)
	if res := c.ok("snapshots"); strings.Contains(res.stderr, "is gone") {
		t.Errorf("warning after forget on this machine: %s", res)
	}
}

// TestKeys manages passwords.
func TestKeys(t *testing.T) {
	base := t.TempDir()
	c := newCLI(t, filepath.Join(base, "repo"))
	c.password = "first password"
	c.init()

	add := *c
	add.env = []string{"CAIRN_NEW_PASSWORD=second password"}
	add.ok("key", "add")

	second := *c
	second.password = "second password"
	keys := second.keys() // the new password opens the repository
	if len(keys) != 2 {
		t.Fatalf("key list shows %d keys after key add, want 2: %+v", len(keys), keys)
	}
	var cur, other string
	for _, k := range keys {
		if k.Current {
			cur = k.ID
		} else {
			other = k.ID
		}
	}
	if cur == "" || other == "" {
		t.Fatalf("key list does not mark exactly one current key: %+v", keys)
	}

	// Removing the key in use is refused.
	res := second.run("key", "remove", cur)
	if res.code == 0 {
		t.Errorf("removing the key in use succeeded: %s", res)
	}
	if n := len(second.keys()); n != 2 {
		t.Errorf("%d keys after a refused remove, want 2", n)
	}
	// Removing the other one works; its password stops working.
	second.ok("key", "remove", other[:12])
	if res := c.run("snapshots"); res.code != 12 {
		t.Errorf("removed key's password: exit %d, want 12: %s", res.code, res)
	}
	// Removing the last key is refused.
	res = second.run("key", "remove", cur)
	if res.code == 0 {
		t.Errorf("removing the last key succeeded: %s", res)
	} else if !strings.Contains(res.stderr, "last key") {
		t.Errorf("removing the last key: message does not say why:\n%s", res.stderr)
	}
	// passwd changes the password.
	pass := second
	pass.env = []string{"CAIRN_NEW_PASSWORD=third password"}
	pass.ok("key", "passwd")
	if res := second.run("snapshots"); res.code != 12 {
		t.Errorf("old password after passwd: exit %d, want 12: %s", res.code, res)
	}
	third := *c
	third.password = "third password"
	if keys := third.keys(); len(keys) != 1 || !keys[0].Current {
		t.Errorf("after passwd: keys %+v, want exactly one, current", keys)
	}
}

// diffLines returns the (mark, path) pairs of a diff's text output.
func diffLines(out string) map[string]string {
	m := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) == 2 && len(f[0]) == 1 {
			m[f[1]] = f[0]
		}
	}
	return m
}

// TestSnapshotsLsDiffStats covers snapshot metadata, listing, diff, stats
// and the ways of selecting what to restore.
func TestSnapshotsLsDiffStats(t *testing.T) {
	base := t.TempDir()
	src := filepath.Join(base, "src")
	c := newCLI(t, filepath.Join(base, "repo"))
	c.init()

	files := map[string]string{
		"keep.txt":       "unchanged\n",
		"modified.txt":   "old content\n",
		"removed.txt":    "going away\n",
		"data.dat":       "binary-ish\n",
		"sub/inner.txt":  "inside\n",
		"sub/inner.dat":  "inside dat\n",
		"sub/deep/x.txt": "deeper\n",
	}
	for n, s := range files {
		writeFile(t, filepath.Join(src, n), []byte(s), 0o644)
	}
	time1 := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	time2 := time.Date(2025, 1, 3, 3, 4, 5, 0, time.UTC)
	c.ok("backup", "--tag", "nightly,db", "--tag", "authentik", "--host", "myhost", "--time", time1.Format(time.RFC3339), src)

	writeFile(t, filepath.Join(src, "added.txt"), []byte("new\n"), 0o644)
	if err := os.Remove(filepath.Join(src, "removed.txt")); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(src, "modified.txt"), []byte("new content, longer\n"), 0o644)
	c.ok("backup", "--tag", "second", "--host", "myhost", "--time", time2.Format(time.RFC3339), src)

	// snapshots --json: the raw fields.
	res := c.ok("--json", "snapshots")
	var raw []map[string]json.RawMessage
	if err := json.Unmarshal([]byte(res.stdout), &raw); err != nil {
		t.Fatalf("snapshots --json: %v\n%s", err, res.stdout)
	}
	if len(raw) != 2 {
		t.Fatalf("%d snapshots, want 2", len(raw))
	}
	for _, f := range []string{"id", "short_id", "time", "hostname", "tags", "paths", "summary"} {
		if _, ok := raw[0][f]; !ok {
			t.Errorf("snapshots --json lacks field %q: %s", f, res.stdout)
		}
	}
	var sns []snapshotInfo
	if err := json.Unmarshal([]byte(res.stdout), &sns); err != nil {
		t.Fatal(err)
	}
	s1, s2 := sns[0], sns[1]
	if !s1.Time.Equal(time1) || !s2.Time.Equal(time2) {
		t.Errorf("snapshot times %v, %v; want %v, %v", s1.Time, s2.Time, time1, time2)
	}
	if s1.Hostname != "myhost" || s2.Hostname != "myhost" {
		t.Errorf("hostnames %q, %q; want myhost", s1.Hostname, s2.Hostname)
	}
	if !slices.Equal(s1.Tags, []string{"nightly", "db", "authentik"}) || !slices.Equal(s2.Tags, []string{"second"}) {
		t.Errorf("tags %q, %q", s1.Tags, s2.Tags)
	}
	if !slices.Equal(s1.Paths, []string{src}) {
		t.Errorf("paths %q, want [%q]", s1.Paths, src)
	}
	if len(s1.ID) != 64 || !strings.HasPrefix(s1.ID, s1.ShortID) || len(s1.ShortID) < 8 || len(s1.ShortID) >= 64 {
		t.Errorf("id %q / short_id %q", s1.ID, s1.ShortID)
	}
	if len(s1.Summary) == 0 || string(s1.Summary) == "null" {
		t.Errorf("snapshot has no summary")
	}

	// ls --json of the second snapshot.
	res = c.ok("--json", "ls", s2.ShortID)
	type lsNode struct {
		Path string `json:"path"`
		Type string `json:"type"`
		Size uint64 `json:"size"`
	}
	listed := map[string]lsNode{}
	for _, l := range strings.Split(strings.TrimSpace(res.stdout), "\n") {
		var n lsNode
		if err := json.Unmarshal([]byte(l), &n); err != nil {
			t.Fatalf("ls --json line %q: %v", l, err)
		}
		listed[n.Path] = n
	}
	want := map[string]string{src: "dir", src + "/sub": "dir", src + "/sub/deep": "dir", src + "/added.txt": "file"}
	for n := range files {
		if n != "removed.txt" {
			want[src+"/"+n] = "file"
		}
	}
	for p, typ := range want {
		if n, ok := listed[p]; !ok {
			t.Errorf("ls does not list %s", p)
		} else if n.Type != typ {
			t.Errorf("ls: %s has type %q, want %q", p, n.Type, typ)
		}
	}
	if n := listed[src+"/modified.txt"]; n.Size != uint64(len("new content, longer\n")) {
		t.Errorf("ls: modified.txt size %d", n.Size)
	}
	for p := range listed {
		if strings.HasPrefix(p, src+"/") {
			if _, ok := want[p]; !ok {
				t.Errorf("ls lists unexpected %s", p)
			}
		}
	}

	// diff.
	res = c.ok("diff", s1.ID, s2.ID)
	d := diffLines(res.stdout)
	for p, mark := range map[string]string{"added.txt": "+", "removed.txt": "-", "modified.txt": "M"} {
		if got := d[src+"/"+p]; got != mark {
			t.Errorf("diff marks %s with %q, want %q:\n%s", p, got, mark, res.stdout)
		}
	}
	for _, p := range []string{"keep.txt", "sub/inner.txt", "data.dat"} {
		if got, ok := d[src+"/"+p]; ok {
			t.Errorf("diff lists unchanged %s as %q", p, got)
		}
	}

	readTree := func(root string) map[string]string {
		out := map[string]string{}
		_ = filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
			if err != nil {
				t.Errorf("walk %s: %v", p, err)
				return nil
			}
			if fi.Mode().IsRegular() {
				b, _ := os.ReadFile(p)
				rel, _ := filepath.Rel(root, p)
				out[rel] = string(b)
			}
			return nil
		})
		return out
	}
	restore := func(name string, args ...string) map[string]string {
		target := filepath.Join(base, name)
		c.ok(append([]string{"restore", "--target", target}, args...)...)
		return readTree(restoredPath(target, src))
	}
	// Short ID prefix: the first snapshot as it was.
	got := restore("r-prefix", s1.ShortID[:7])
	if len(got) != len(files) {
		t.Errorf("restore of %s: %d files, want %d: %q", s1.ShortID[:7], len(got), len(files), got)
	}
	for n, s := range files {
		if got[n] != s {
			t.Errorf("restore of the first snapshot: %s = %q, want %q", n, got[n], s)
		}
	}
	// latest: the second snapshot.
	got = restore("r-latest", "latest")
	if got["added.txt"] != "new\n" || got["modified.txt"] != "new content, longer\n" {
		t.Errorf("restore latest: %q", got)
	}
	if _, ok := got["removed.txt"]; ok {
		t.Errorf("restore latest contains removed.txt")
	}
	// --include selects only matching files.
	got = restore("r-include", "latest", "--include", "*.txt")
	wantInc := []string{"added.txt", "keep.txt", "modified.txt", "sub/deep/x.txt", "sub/inner.txt"}
	if keys := sortedKeys(got); !slices.Equal(keys, wantInc) {
		t.Errorf("restore --include '*.txt' restored %q, want %q", keys, wantInc)
	}
	// --exclude drops a whole directory.
	got = restore("r-exclude", "latest", "--exclude", "sub", "--exclude", "*.dat")
	wantExc := []string{"added.txt", "keep.txt", "modified.txt"}
	if keys := sortedKeys(got); !slices.Equal(keys, wantExc) {
		t.Errorf("restore --exclude sub --exclude '*.dat' restored %q, want %q", keys, wantExc)
	}
	if _, err := os.Lstat(filepath.Join(restoredPath(filepath.Join(base, "r-exclude"), src), "sub")); err == nil {
		t.Errorf("restore --exclude sub created the sub directory")
	}

	// stats --json counts files over both snapshots.
	res = c.ok("--json", "stats")
	var st map[string]any
	if err := json.Unmarshal([]byte(res.stdout), &st); err != nil {
		t.Fatalf("stats --json: %v\n%s", err, res.stdout)
	}
	if n, ok := st["total_file_count"].(float64); !ok || int(n) != len(files)+len(files) {
		t.Errorf("stats total_file_count = %v, want %d", st["total_file_count"], 2*len(files))
	}
}

func sortedKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// repoObjects lists the object files of one type directory (sharded or not).
func repoObjects(t *testing.T, repoDir, typ string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(filepath.Join(repoDir, typ), func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() && !strings.HasPrefix(d.Name(), ".") {
			out = append(out, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

// TestCorruption damages a repository in several ways: check --read-data
// must fail, name the damaged object and never crash; once repaired, it
// passes again.
func TestCorruption(t *testing.T) {
	base := t.TempDir()
	src := filepath.Join(base, "src")
	repoDir := filepath.Join(base, "repo")
	c := newCLI(t, repoDir)
	c.init("--pack-size", "1")
	writeFile(t, filepath.Join(src, "a.bin"), randomBytes(7, 3<<20), 0o644)
	writeFile(t, filepath.Join(src, "b.bin"), randomBytes(8, 2<<20+999), 0o644)
	for i := 0; i < 20; i++ {
		writeFile(t, filepath.Join(src, "text", fmt.Sprintf("%02d.txt", i)), []byte(strings.Repeat(fmt.Sprintf("line %d\n", i), 100+i)), 0o644)
	}
	c.ok("backup", src)
	c.checkReadData()

	dataPacks := repoObjects(t, repoDir, "data")
	treePacks := repoObjects(t, repoDir, "tree")
	indexFiles := repoObjects(t, repoDir, "index")
	snapFiles := repoObjects(t, repoDir, "snapshots")
	if len(dataPacks) < 2 || len(treePacks) < 1 || len(indexFiles) < 1 || len(snapFiles) != 1 {
		t.Fatalf("unexpected repository layout: %d data packs, %d tree packs, %d index files, %d snapshots",
			len(dataPacks), len(treePacks), len(indexFiles), len(snapFiles))
	}
	// The largest data pack holds several blobs of a big file.
	sort.Slice(dataPacks, func(i, j int) bool { return fileSize(t, dataPacks[i]) > fileSize(t, dataPacks[j]) })
	pack := dataPacks[0]
	packName := "data/" + filepath.Base(pack)

	expectDamage := func(what string, mustName ...string) result {
		t.Helper()
		res := c.run("check", "--read-data")
		if res.code != 1 {
			t.Errorf("%s: check --read-data exited %d, want 1: %s", what, res.code, res)
		}
		for _, n := range mustName {
			if !strings.Contains(res.combined(), n) {
				t.Errorf("%s: check output does not name %q:\n%s", what, n, res)
			}
		}
		return res
	}
	flip := func(p string, off int64) func() {
		t.Helper()
		orig, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		fi, _ := os.Stat(p)
		mod := bytes.Clone(orig)
		mod[off] ^= 0x01
		if err := os.WriteFile(p, mod, fi.Mode().Perm()|0o200); err != nil {
			t.Fatal(err)
		}
		return func() { restoreFile(t, p, orig, fi.Mode().Perm()) }
	}

	// One flipped byte at a time, spread over the pack, including its
	// first and last bytes (the header length).
	size := fileSize(t, pack)
	offsets := []int64{0, size - 1, size - 4, size - 40}
	for i := int64(1); len(offsets) < 10; i++ {
		offsets = append(offsets, i*size/7+i*13)
	}
	for i, off := range offsets {
		undo := flip(pack, off)
		expectDamage(fmt.Sprintf("byte %d of %d flipped in %s", off, size, packName), packName)
		if i == 5 {
			// A restore from the damaged pack fails cleanly.
			rdir := filepath.Join(base, fmt.Sprintf("restore-%d", off))
			res := c.run("restore", "latest", "--target", rdir)
			if res.code != 1 {
				t.Errorf("restore from a damaged pack exited %d, want 1: %s", res.code, res)
			}
			// A file whose content could not be written completely never
			// gets its real name: it is left as NAME.cairn-partial (when
			// some of it was written) and listed.
			_, after, _ := strings.Cut(res.stderr, "error: ")
			failed, _, _ := strings.Cut(after, ": blob")
			if _, err := os.Stat(restoredPath(rdir, failed)); failed == "" || !os.IsNotExist(err) {
				t.Errorf("the file that failed (%q) has its real name (%v): %s", failed, err, res)
			}
			if _, i, ok := strings.Cut(res.stderr, "incomplete, left as "); ok {
				partial, _, _ := strings.Cut(i, "\n")
				if partial != restoredPath(rdir, failed)+".cairn-partial" {
					t.Errorf("partial file %q, want the failed file's", partial)
				} else if _, err := os.Stat(partial); err != nil {
					t.Errorf("listed partial file: %v", err)
				}
			}
			t.Logf("restore from a damaged pack: %s", res.stderr)
		}
		undo()
	}

	// Truncated pack.
	orig, err := os.ReadFile(pack)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(pack, size/2); err != nil {
		t.Fatal(err)
	}
	expectDamage("truncated pack", packName)
	restoreFile(t, pack, orig, 0o600)

	// Deleted pack.
	if err := os.Remove(pack); err != nil {
		t.Fatal(err)
	}
	expectDamage("deleted pack", packName)
	restoreFile(t, pack, orig, 0o600)

	// Damaged tree pack.
	undo := flip(treePacks[0], fileSize(t, treePacks[0])/3)
	expectDamage("byte flipped in a tree pack", "tree/"+filepath.Base(treePacks[0]))
	undo()

	// Deleted index file (each of them in turn): the packs it listed are
	// unindexed and the snapshot's blobs are no longer found.
	for _, idx := range indexFiles {
		b, err := os.ReadFile(idx)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(idx); err != nil {
			t.Fatal(err)
		}
		res := expectDamage("deleted index file "+filepath.Base(idx), "index")
		named := false
		for _, p := range append(slices.Clone(dataPacks), treePacks...) {
			named = named || strings.Contains(res.combined(), filepath.Base(p))
		}
		if !named {
			t.Errorf("deleted index file: check does not name any of the packs that lost their index entries:\n%s", res)
		}
		restoreFile(t, idx, b, 0o600)
	}
	// Damaged index file.
	undo = flip(indexFiles[0], fileSize(t, indexFiles[0])/2)
	expectDamage("byte flipped in an index file", "index/"+filepath.Base(indexFiles[0]))
	if res := c.run("ls", "latest"); res.code != 1 || !strings.Contains(res.stderr, "run 'cairn check'") {
		t.Errorf("ls with a damaged index file does not point to check: %s", res)
	}
	undo()

	// An index that cannot be listed (here: its directory replaced by a
	// file; on S3, the network) is not damage: no advice to run check.
	indexDir := filepath.Join(repoDir, "index")
	if err := os.Rename(indexDir, indexDir+".away"); err != nil {
		t.Fatal(err)
	}
	writeFile(t, indexDir, []byte("not a directory"), 0o600)
	if res := c.run("ls", "latest"); res.code != 1 || strings.Contains(res.stderr, "cairn check") || !strings.Contains(res.stderr, "list index files") {
		t.Errorf("ls with an unlistable index: %s", res)
	}
	if err := os.Remove(indexDir); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(indexDir+".away", indexDir); err != nil {
		t.Fatal(err)
	}

	// Damaged snapshot.
	undo = flip(snapFiles[0], fileSize(t, snapFiles[0])/2)
	expectDamage("byte flipped in a snapshot", "snapshot "+filepath.Base(snapFiles[0])[:8])
	undo()

	// Everything repaired: check passes again.
	c.checkReadData()
}

func fileSize(t *testing.T, p string) int64 {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

func restoreFile(t *testing.T, p string, data []byte, perm os.FileMode) {
	t.Helper()
	_ = os.Remove(p)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, perm); err != nil {
		t.Fatal(err)
	}
}
