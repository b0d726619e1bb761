package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cairn-backup/cairn/repo/backend/s3/s3test"
)

// TestS3EveryCommand runs the commands of a local repository against a
// real MinIO server: the same behaviour, through the S3 backend.
func TestS3EveryCommand(t *testing.T) {
	srv := s3test.StartT(t)
	c := newCLI(t, "s3:"+srv.URL()+"/cairn-e2e/nightly")
	c.env = []string{"AWS_ACCESS_KEY_ID=" + srv.User, "AWS_SECRET_ACCESS_KEY=" + srv.Password}

	// A missing repository is exit 10 on S3 too (the bucket does not exist yet).
	if res := c.run("snapshots"); res.code != 10 {
		t.Fatalf("snapshots before init: %s", res)
	}
	c.init("--pack-size", "1")
	if res := c.run("init"); res.code == 0 {
		t.Fatal("init over an existing S3 repository succeeded")
	}

	src := t.TempDir()
	writeFile(t, filepath.Join(src, "big.bin"), randomBytes(11, 6<<20), 0o644)
	writeFile(t, filepath.Join(src, "sub", "small.txt"), []byte("hello s3\n"), 0o600)
	if err := os.Symlink("sub/small.txt", filepath.Join(src, "link")); err != nil {
		t.Fatal(err)
	}
	s1 := c.backupJSON(src, "--tag", "first")
	c.checkReadData()
	writeFile(t, filepath.Join(src, "sub", "new.txt"), []byte("added\n"), 0o644)
	s2 := c.backupJSON(src, "--tag", "second")
	if s2.FilesUnmodified == 0 {
		t.Fatalf("the second backup on S3 was not incremental: %+v", s2)
	}
	c.ok("backup", "--stdin", "--stdin-filename", "stream.sql")

	sns := c.snapshots()
	if len(sns) != 3 {
		t.Fatalf("%d snapshots on S3, want 3", len(sns))
	}
	if out := c.ok("ls", s1.SnapshotID, "-l").stdout; !strings.Contains(out, "big.bin") || !strings.Contains(out, "-> sub/small.txt") {
		t.Fatalf("ls: %s", out)
	}
	if out := c.ok("diff", s1.SnapshotID, s2.SnapshotID).stdout; !strings.Contains(out, "+    "+filepath.Join(src, "sub", "new.txt")) {
		t.Fatalf("diff: %s", out)
	}
	if got := c.ok("dump", s1.SnapshotID, filepath.Join(src, "sub", "small.txt")).stdout; got != "hello s3\n" {
		t.Fatalf("dump: %q", got)
	}
	target := t.TempDir()
	c.ok("restore", s2.SnapshotID, "--target", target)
	compareTrees(t, src, restoredPath(target, src), false)
	if out := c.ok("stats", "--json").stdout; !strings.Contains(out, "total_file_count") {
		t.Fatalf("stats: %s", out)
	}

	// Keys, forget, prune and repair work on S3 exactly as locally.
	c.env = append(c.env, "CAIRN_NEW_PASSWORD=second password")
	c.ok("key", "add")
	if n := len(c.keys()); n != 2 {
		t.Fatalf("%d keys", n)
	}
	c.ok("forget", s1.SnapshotID)
	c.ok("prune", "--grace", "0s")
	c.checkReadData()
	c.ok("repair", "index")
	c.checkReadData()
	target2 := t.TempDir()
	c.ok("restore", "latest", "--target", target2, "--include", "/stream.sql")
	if b, err := os.ReadFile(filepath.Join(target2, "stream.sql")); err != nil || len(b) != 0 {
		t.Fatalf("restored stream: %q %v", b, err)
	}
	c.ok("restore", s2.SnapshotID, "--target", t.TempDir())
	deltaRoundTrip(t, c) // deltas, their bases read through pack windows, on S3

	// Wrong credentials: one clear line, exit 1, no stack trace.
	bad := newCLI(t, c.repo)
	bad.env = []string{"AWS_ACCESS_KEY_ID=" + srv.User, "AWS_SECRET_ACCESS_KEY=wrong-secret"}
	res := bad.run("snapshots")
	if res.code != 1 || strings.Count(strings.TrimSpace(res.stderr), "\n") > 0 || !strings.Contains(res.stderr, "cairn-e2e") {
		t.Fatalf("wrong S3 secret: %s", res)
	}
}

// TestS3HungServer stops MinIO (SIGSTOP, no signal to cairn): the backup
// gives up after its stall timeout and retries, exits 1 and says why,
// instead of reporting an interruption (exit 130) nobody asked for.
func TestS3HungServer(t *testing.T) {
	srv := s3test.StartT(t)
	c := newCLI(t, "s3:"+srv.URL()+"/cairn-hung/repo")
	c.env = []string{"AWS_ACCESS_KEY_ID=" + srv.User, "AWS_SECRET_ACCESS_KEY=" + srv.Password,
		"CAIRN_S3_STALL_TIMEOUT=1s", "CAIRN_S3_RETRY_TIME=3s"}
	c.init()
	src := t.TempDir()
	writeFile(t, filepath.Join(src, "a.txt"), []byte("nightly\n"), 0o644)
	c.ok("backup", src)

	srv.Pause()
	defer srv.Resume()
	res := c.run("backup", src)
	if res.code != 1 {
		t.Fatalf("backup against a hung server: exit %d, want 1: %s", res.code, res)
	}
	if strings.Contains(res.stderr, "interrupted") || !strings.Contains(res.stderr, "no data moved for 1s") {
		t.Fatalf("the error does not name the timeout: %s", res.stderr)
	}
	if !strings.Contains(res.stderr, "retrying in") {
		t.Fatalf("no retry was logged: %s", res.stderr)
	}
	srv.Resume()
	c.ok("backup", src)

	// The server stops answering in the middle of a backup, while packs
	// are uploaded (more data follows than the upload queue holds): the
	// stalled uploads are given up as such.
	stdin := &pausingReader{data: randomBytes(21, 200<<20), pauseAt: 24 << 20, pause: srv.Pause}
	res = c.runIn(stdin, "backup", "--stdin", "--stdin-filename", "big.bin")
	if res.code != 1 || strings.Contains(res.stderr, "interrupted") || !strings.Contains(res.stderr, "no data moved for 1s") {
		t.Fatalf("backup while the server stopped answering: %s", res)
	}
	srv.Resume()
	c.ok("backup", src)
	c.checkReadData()
}

// pausingReader reads data and calls pause once pauseAt bytes were read.
type pausingReader struct {
	data    []byte
	off     int
	pauseAt int
	pause   func()
}

func (p *pausingReader) Read(b []byte) (int, error) {
	if p.off >= len(p.data) {
		return 0, io.EOF
	}
	end := min(len(p.data), p.off+len(b))
	if p.off < p.pauseAt {
		end = min(end, p.pauseAt)
	} else if p.pause != nil {
		p.pause()
		p.pause = nil
	}
	n := copy(b, p.data[p.off:end])
	p.off += n
	return n, nil
}

// TestProfileEnvFile: the S3 keys come from the profile's env_file, not
// from the profile or the caller's environment; a file others may read is
// refused.
func TestProfileEnvFile(t *testing.T) {
	srv := s3test.StartT(t)
	dir := t.TempDir()
	loc := "s3:" + srv.URL() + "/cairn-env/repo"
	envFile := filepath.Join(dir, "authentik.env")
	writeFile(t, envFile, []byte("# S3\nexport AWS_ACCESS_KEY_ID="+srv.User+"\nAWS_SECRET_ACCESS_KEY=\""+srv.Password+"\"\n"), 0o600)
	if err := os.Chmod(envFile, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "p.toml")
	writeFile(t, cfg, []byte("name = \"p\"\nrepository = \""+loc+"\"\nenv_file = \""+envFile+"\"\n[files]\npaths = [\""+dir+"\"]\n"), 0o600)
	c := newCLI(t, "") // no -r, no AWS_* variables
	c.ok("init", "--config", cfg)
	c.ok("backup", "--config", cfg)
	if n := len(strings.Split(strings.TrimSpace(c.ok("snapshots", "--config", cfg, "--json").stdout), "},{")); n != 1 {
		t.Fatalf("%d snapshots", n)
	}
	if err := os.Chmod(envFile, 0o644); err != nil {
		t.Fatal(err)
	}
	if res := c.run("snapshots", "--config", cfg); res.code != 1 || !strings.Contains(res.stderr, "chmod 600") {
		t.Fatalf("an env_file others can read: %s", res)
	}
}
