package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/internal/pgstream"
	"github.com/cairn-backup/cairn/internal/pgstream/pgtest"
	"github.com/cairn-backup/cairn/internal/pgwal"
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/repo/backend/local"
	"github.com/cairn-backup/cairn/repo/backend/s3/s3test"
)

// pitrEnv is what a PITR test shares with the PostgreSQL server it
// starts: a directory the server's user owns, holding a copy of cairn,
// the password file, the cache directory and (local) the repository;
// archive_command is a script in it that runs cairn wal-push.
type pitrEnv struct {
	t        *testing.T
	dir      string
	cairn    string
	repo     string
	env      []string // AWS_* for S3
	runAs    string   // the server's user when the tests run as root
	srv      *pgtest.Server
	password string
}

func newPITREnv(t *testing.T, repoLoc string, env []string) *pitrEnv {
	t.Helper()
	dir, err := os.MkdirTemp("", "cairn-pitr-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	e := &pitrEnv{t: t, dir: dir, cairn: filepath.Join(dir, "cairn"), repo: repoLoc, env: env, password: "pitr password"}
	if e.repo == "" {
		e.repo = filepath.Join(dir, "repo")
	}
	bin, err := os.ReadFile(cairnBin)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, e.cairn, bin, 0o755)
	writeFile(t, filepath.Join(dir, "password"), []byte(e.password+"\n"), 0o600)
	var exports string
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		exports += "export " + k + "=" + shellQuote(v) + "\n"
	}
	script := "#!/bin/sh\n" + exports + "exec " + e.cairn + " -r " + shellQuote(e.repo) + " --password-file " + filepath.Join(dir, "password") +
		" --cache-dir " + filepath.Join(dir, "cache") + " wal-push \"$1\"\n"
	writeFile(t, filepath.Join(dir, "archive.sh"), []byte(script), 0o755)
	if os.Geteuid() == 0 {
		e.runAs = "postgres"
		uid, gid, err := pgstream.UserIDs(e.runAs)
		if err == nil {
			err = pgstream.ChownTree(dir, uid, gid)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	e.srv = pgtest.StartWith(t, pgtest.Options{Conf: []string{
		"wal_level = replica", "archive_mode = on", "archive_command = '" + filepath.Join(dir, "archive.sh") + " %p'", "max_wal_senders = 4",
	}})
	return e
}

// cairnAs runs the copy of cairn as the server's user (so that the files
// it writes in a local repository are the server's too), with the
// password file and stdin empty.
func (e *pitrEnv) cairnAs(args ...string) result {
	e.t.Helper()
	full := append([]string{"-r", e.repo, "--password-file", filepath.Join(e.dir, "password"), "--cache-dir", filepath.Join(e.dir, "cache")}, args...)
	var cmd *exec.Cmd
	if e.runAs != "" {
		cmd = exec.Command("runuser", append([]string{"-u", e.runAs, "--", e.cairn}, full...)...)
	} else {
		cmd = exec.Command(e.cairn, full...)
	}
	cmd.Env = append(os.Environ(), e.env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	res := result{stdout: out.String(), stderr: errb.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		res.code = ee.ExitCode()
	} else if err != nil {
		e.t.Fatal(err)
	}
	if strings.Contains(res.stderr, "goroutine ") || strings.Contains(res.stderr, "panic:") {
		e.t.Fatalf("cairn %v panicked: %s", args, res)
	}
	return res
}

func (e *pitrEnv) ok(args ...string) result {
	e.t.Helper()
	res := e.cairnAs(args...)
	if res.code != 0 {
		e.t.Fatalf("cairn %v: %s", args, res)
	}
	return res
}

// query runs one statement and returns the first column of the first row.
func (e *pitrEnv) query(db, sql string) string {
	e.t.Helper()
	conn := e.srv.Conn(e.t, db)
	defer conn.Close(context.Background())
	var v any
	if err := conn.QueryRow(context.Background(), sql).Scan(&v); err != nil {
		e.t.Fatalf("%s: %v", sql, err)
	}
	if tm, ok := v.(time.Time); ok {
		return tm.Format(time.RFC3339Nano)
	}
	return fmt.Sprint(v)
}

// switchAndWait ends the current WAL segment and waits until the server
// archived it.
func (e *pitrEnv) switchAndWait() string {
	e.t.Helper()
	seg := e.query("postgres", "SELECT pg_walfile_name(pg_switch_wal())")
	deadline := time.Now().Add(90 * time.Second)
	for {
		last := e.query("postgres", "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")
		if last >= seg {
			return seg
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("segment %s not archived after 90 s (last %q); archiver: %s", seg, last,
				e.query("postgres", "SELECT failed_count || ' failed, last ' || coalesce(last_failed_wal, '') FROM pg_stat_archiver"))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// pitrScenario takes a base backup, inserts three batches of rows with a
// WAL switch after each, and recovers to a time between the second and
// the third: the recovered server must hold batches 1 and 2 only.
func pitrScenario(t *testing.T, e *pitrEnv) {
	e.srv.CreateDB(t, "shop")
	e.srv.Exec(t, "shop", "CREATE TABLE orders (batch int, at timestamptz DEFAULT clock_timestamp())")
	e.switchAndWait()
	var base struct {
		SnapshotID string `json:"snapshot_id"`
	}
	out := e.ok("--json", "backup", "--pg-base", e.srv.URL("postgres"), "--pg-bin", e.srv.BinDir)
	if lines := strings.Split(strings.TrimSpace(out.stdout), "\n"); json.Unmarshal([]byte(lines[len(lines)-1]), &base) != nil || base.SnapshotID == "" {
		t.Fatalf("backup --pg-base --json: %s", out)
	}
	if strings.Contains(out.stderr, "warning") {
		t.Errorf("base backup warns: %s", out)
	}
	insert := func(batch int) {
		e.srv.Exec(t, "shop", fmt.Sprintf("INSERT INTO orders (batch) SELECT %d FROM generate_series(1, 100)", batch))
	}
	insert(1)
	e.switchAndWait()
	insert(2)
	e.query("postgres", "SELECT pg_create_restore_point('before_batch_3')::text")
	lsn := e.query("postgres", "SELECT pg_current_wal_insert_lsn()::text")
	e.switchAndWait()
	time.Sleep(1100 * time.Millisecond)
	between := e.query("postgres", "SELECT clock_timestamp()")
	time.Sleep(1100 * time.Millisecond)
	insert(3)
	e.switchAndWait()

	// As root, the restore gives the data directory its parent's owner
	// (the server's user) and runs the temporary server as that user.
	for i, how := range [][]string{{"--at", between}, {base.SnapshotID[:8], "--target-name", "before_batch_3"}, {"--lsn", lsn}} {
		recoverTo(t, e, filepath.Join(e.dir, fmt.Sprintf("restored-%d", i)), how...)
	}
	// A base backup into a repository the server does not archive to
	// warns that its WAL is not there.
	other := filepath.Join(e.dir, "other-repo")
	e.ok("-r", other, "init")
	if r := e.ok("-r", other, "backup", "--pg-base", e.srv.URL("postgres"), "--pg-bin", e.srv.BinDir); !strings.Contains(r.stderr, "is not in this repository") {
		t.Errorf("a base backup whose WAL goes elsewhere: no warning: %s", r)
	}
	// A target after the last archived WAL is refused, naming it.
	later := time.Now().Add(time.Hour).Format(time.RFC3339)
	if r := e.cairnAs("restore", "--pg-pitr", "--at", later, "--target", filepath.Join(e.dir, "later")); r.code == 0 || !strings.Contains(r.stderr, "archived at") {
		t.Errorf("a target after the archive: %s", r)
	}
}

// recoverTo runs restore --pg-pitr --verify with the target how and
// checks that batches 1 and 2 are back and batch 3 is not.
func recoverTo(t *testing.T, e *pitrEnv, target string, how ...string) {
	t.Helper()
	res := e.ok(append(append([]string{"--json", "restore", "--pg-pitr"}, how...), "--target", target, "--verify", "--pg-bin", e.srv.BinDir)...)
	var out struct {
		MessageType string                          `json:"message_type"`
		Verified    bool                            `json:"verified"`
		Tables      map[string][]pgwalTableRowsJSON `json:"tables"`
	}
	lines := strings.Split(strings.TrimSpace(res.stdout), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &out); err != nil || out.MessageType != "pitr_restore" || !out.Verified {
		t.Fatalf("restore --pg-pitr --verify: %v %s", err, res)
	}
	var rows int64 = -1
	for _, tb := range out.Tables["shop"] {
		if tb.Name == "orders" {
			rows = tb.Rows
		}
	}
	if rows != 200 {
		t.Fatalf("recovered to %v: orders has %d rows, want 200 (batches 1 and 2, not 3): %s", how, rows, res)
	}
}

type pgwalTableRowsJSON struct {
	Name string `json:"name"`
	Rows int64  `json:"rows"`
}

// TestPITR: PostgreSQL 15 archiving into a local repository with cairn
// wal-push; a base backup; recovery to a time between two batches of rows;
// wal-push's answers to a duplicate, to different content and to a
// repository that is gone (PostgreSQL retries); check finding a gap.
func TestPITR(t *testing.T) {
	e := newPITREnv(t, "", nil)
	e.ok("init")
	pitrScenario(t, e)

	// An offsite copy with the WAL: a second copy moves nothing, and the
	// copy recovers on its own (its restore_command reads the copy).
	offsite := filepath.Join(e.dir, "offsite")
	pw := filepath.Join(e.dir, "password")
	e.ok("-r", offsite, "init", "--from-repo", e.repo, "--from-password-file", pw)
	var sum struct {
		Copied    int `json:"snapshots_copied"`
		WALCopied int `json:"wal_files_copied"`
	}
	res := e.ok("-r", offsite, "--json", "copy", "--from-repo", e.repo, "--from-password-file", pw, "--wal")
	if err := json.Unmarshal([]byte(lastLine(res.stdout)), &sum); err != nil || sum.Copied != 1 || sum.WALCopied < 5 {
		t.Fatalf("copy --wal: %v %s", err, res)
	}
	res = e.ok("-r", offsite, "--json", "copy", "--from-repo", e.repo, "--from-password-file", pw, "--wal")
	sum.Copied, sum.WALCopied = 0, 0 // omitted when nothing was copied
	if err := json.Unmarshal([]byte(lastLine(res.stdout)), &sum); err != nil || sum.Copied != 0 || sum.WALCopied != 0 {
		t.Fatalf("second copy --wal moved something: %v %s", err, res)
	}
	e.ok("-r", offsite, "check")
	if r := e.ok("-r", offsite, "--json", "restore", "--pg-pitr", "latest", "--target", filepath.Join(e.dir, "from-offsite"), "--verify", "--pg-bin", e.srv.BinDir); !strings.Contains(r.stdout, `"verified":true`) {
		t.Fatalf("recovery from the offsite copy: %s", r)
	}

	var status []struct {
		SystemID  string `json:"system_id"`
		Timelines []struct {
			Segments int              `json:"segments"`
			Gaps     []map[string]any `json:"gaps"`
			First    string           `json:"first_segment"`
			Last     string           `json:"last_segment"`
		} `json:"timelines"`
		BaseBackups []map[string]any `json:"base_backups"`
	}
	res = e.ok("--json", "wal-status")
	if err := json.Unmarshal([]byte(res.stdout), &status); err != nil || len(status) != 1 || len(status[0].Timelines) != 1 || len(status[0].BaseBackups) != 1 {
		t.Fatalf("wal-status: %v %s", err, res)
	}
	tl := status[0].Timelines[0]
	if tl.Segments < 5 || len(tl.Gaps) != 0 {
		t.Fatalf("wal-status: %+v", tl)
	}
	sys := status[0].SystemID
	dataDir := filepath.Join(e.srv.Dir, "data")

	// A segment archived already, pushed again: identical content exits 0,
	// different content fails loudly. (A fresh cache directory, so that
	// the repository is asked, not this machine's acknowledgements.)
	work := filepath.Join(e.dir, "work")
	if err := os.Mkdir(work, 0o700); err != nil {
		t.Fatal(err)
	}
	if e.runAs != "" {
		if out, err := exec.Command("chown", e.runAs, work).CombinedOutput(); err != nil {
			t.Fatalf("chown: %v %s", err, out)
		}
	}
	segment := filepath.Join(work, tl.Last)
	e.ok("wal-fetch", "--pg-data", dataDir, tl.Last, segment)
	fresh := []string{"--cache-dir", filepath.Join(e.dir, "cache2")}
	if r := e.cairnAs(append(fresh, "wal-push", "--pg-data", dataDir, segment)...); r.code != 0 {
		t.Errorf("pushing an archived segment again: %s", r)
	}
	data, err := os.ReadFile(segment)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0xff
	if err := os.WriteFile(segment, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if r := e.cairnAs(append(fresh, "wal-push", "--pg-data", dataDir, segment)...); r.code != 1 || !strings.Contains(r.stderr, "different content") {
		t.Errorf("pushing different content under an archived name: want exit 1 naming the conflict: %s", r)
	}
	if r := e.cairnAs("wal-fetch", "--pg-data", dataDir, "0000000100000000000000F0", filepath.Join(work, "none")); r.code != 1 {
		t.Errorf("wal-fetch of a segment never archived: want exit 1: %s", r)
	}

	// The repository gone: archiving fails (PostgreSQL counts failures
	// and retries), and catches up once it is back.
	failedBefore, _ := strconv.Atoi(e.query("postgres", "SELECT failed_count FROM pg_stat_archiver"))
	moved := e.repo + ".away"
	if err := os.Rename(e.repo, moved); err != nil {
		t.Fatal(err)
	}
	e.srv.Exec(t, "shop", "INSERT INTO orders (batch) VALUES (4)") // a switch needs WAL written since the last
	seg := e.query("postgres", "SELECT pg_walfile_name(pg_switch_wal())")
	deadline := time.Now().Add(60 * time.Second)
	for {
		failed, _ := strconv.Atoi(e.query("postgres", "SELECT failed_count FROM pg_stat_archiver"))
		if failed > failedBefore {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("PostgreSQL saw no archive failure with the repository gone")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := os.Rename(moved, e.repo); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(120 * time.Second) // the archiver waits a minute between rounds of retries
	for e.query("postgres", "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver") < seg {
		if time.Now().After(deadline) {
			t.Fatalf("%s not archived after the repository came back", seg)
		}
		// New WAL wakes the archiver, which retries the failed segment.
		e.srv.Exec(t, "shop", "INSERT INTO orders (batch) VALUES (5)")
		e.srv.Exec(t, "postgres", "SELECT pg_switch_wal()")
		time.Sleep(500 * time.Millisecond)
	}
	e.ok("check")

	// A WAL record deleted from the middle: check reports the gap.
	r, err := repo.Open(context.Background(), mustLocal(t, e.repo), e.password, repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	first, _ := pgwal.ParseName(tl.First)
	middle := pgwal.SegmentName(1, first.SegmentNo(pgwal.DefaultSegmentSize)+2, pgwal.DefaultSegmentSize)
	obj := filepath.Join(e.repo, "wal", r.WALObjectName(sys, middle))
	r.Close()
	if err := os.Remove(obj); err != nil {
		t.Fatalf("remove the record of %s: %v", middle, err)
	}
	if r := e.cairnAs("check"); r.code != 1 || !strings.Contains(r.stdout+r.stderr, "missing between") {
		t.Errorf("check with a WAL segment deleted: want exit 1 and the gap: %s", r)
	}

	// A second base backup; forgetting the first drops the WAL only it
	// needed (the gap with it), so check passes again.
	e.ok("backup", "--pg-base", e.srv.URL("postgres"), "--pg-bin", e.srv.BinDir)
	if r := e.ok("forget", "--keep-last", "1"); !strings.Contains(r.stdout, "archived WAL files older than every kept base backup") {
		t.Errorf("forget of the first base backup left its WAL: %s", r)
	}
	res = e.ok("--json", "wal-status")
	if err := json.Unmarshal([]byte(res.stdout), &status); err != nil || len(status) != 1 || len(status[0].BaseBackups) != 1 {
		t.Fatalf("wal-status after forget: %v %s", err, res)
	}
	if start := status[0].BaseBackups[0]["start_segment"]; status[0].Timelines[0].First != start {
		t.Errorf("after forget the archive starts at %s, want the kept base backup's %v", status[0].Timelines[0].First, start)
	}
	e.ok("check")
}

func mustLocal(t *testing.T, dir string) *local.Backend {
	t.Helper()
	be, err := local.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	return be
}

// TestPITRS3 is TestPITR's recovery against a repository on MinIO.
func TestPITRS3(t *testing.T) {
	srv := s3test.StartT(t)
	e := newPITREnv(t, "s3:"+srv.URL()+"/cairn-pitr/repo", []string{"AWS_ACCESS_KEY_ID=" + srv.User, "AWS_SECRET_ACCESS_KEY=" + srv.Password})
	e.ok("init")
	pitrScenario(t, e)
}

// TestWALCommandsDieBySignal: wal-fetch and wal-push stopped by SIGTERM
// die by it (PostgreSQL's shutdown) instead of exiting 130, which
// PostgreSQL takes for a failure that aborts recovery.
func TestWALCommandsDieBySignal(t *testing.T) {
	dir := t.TempDir()
	c := newCLI(t, filepath.Join(dir, "repo"))
	c.init()
	data := filepath.Join(dir, "data")
	writeFile(t, filepath.Join(data, "global", "pg_control"), []byte{1, 2, 3, 4, 5, 6, 7, 8}, 0o600)
	seg := filepath.Join(dir, "000000010000000000000001")
	writeFile(t, seg, []byte("x"), 0o600)
	for _, args := range [][]string{
		{"wal-fetch", "--pg-data", data, "000000010000000000000001", filepath.Join(dir, "out")},
		{"wal-push", "--pg-data", data, seg},
	} {
		cmd := c.command(context.Background(), nil, append([]string{"--password-command", "sleep 3"}, args...)...)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(500 * time.Millisecond) // waiting for the password
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		err := cmd.Wait() // returns once the password command's output closes
		ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
		if !ws.Signaled() || ws.Signal() != syscall.SIGTERM {
			t.Errorf("%s stopped by SIGTERM: %v (exit %d), want death by SIGTERM", args[0], err, cmd.ProcessState.ExitCode())
		}
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
