package main

// PostgreSQL end-to-end tests: a real server (pgtest), the real cairn
// binary, pg_dump and pg_restore. Contents are compared with per-table
// ordered checksums taken right before each backup.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/internal/clitest"
	"github.com/cairn-backup/cairn/internal/pgstream/pgtest"
)

// pgCLI runs cairn against one repository and one PostgreSQL server.
type pgCLI struct {
	t    *testing.T
	repo string
	srv  *pgtest.Server
	env  []string // extra KEY=VALUE entries
}

func newPgCLI(t *testing.T, srv *pgtest.Server) *pgCLI {
	c := &pgCLI{t: t, repo: filepath.Join(t.TempDir(), "repo"), srv: srv}
	c.ok(nil, "init")
	return c
}

// runner is cairn with a clean environment: no CAIRN_ or PG variables
// but the repository password and the server's client programs.
func (c *pgCLI) runner() *clitest.Runner {
	env := append([]string{"CAIRN_PASSWORD=pg test password", "CAIRN_PG_BIN=" + c.srv.BinDir}, c.env...)
	return &clitest.Runner{Bin: cairnBin, Repo: c.repo, Env: env, Drop: []string{"PG"}}
}

func (c *pgCLI) command(ctx context.Context, args ...string) *exec.Cmd {
	return c.runner().Command(ctx, args...)
}

func (c *pgCLI) run(stdin io.Reader, args ...string) result {
	c.t.Helper()
	r := c.runner().Run(c.t, stdin, args...)
	return result{stdout: r.Stdout, stderr: r.Stderr, code: r.Code}
}

func (c *pgCLI) ok(stdin io.Reader, args ...string) result {
	c.t.Helper()
	res := c.run(stdin, args...)
	if res.code != 0 {
		c.t.Fatalf("cairn %q failed: %s", args, res)
	}
	return res
}

// fails runs cairn, wants exit 1 with every message in its output, and
// checks that no snapshot was added.
func (c *pgCLI) fails(want []string, args ...string) result {
	c.t.Helper()
	before := len(c.snapshots())
	res := c.run(nil, args...)
	if res.code != 1 {
		c.t.Fatalf("cairn %q: want exit 1, got %s", args, res)
	}
	for _, w := range want {
		if !strings.Contains(res.stdout+res.stderr, w) {
			c.t.Errorf("cairn %q: output lacks %q:\n%s", args, w, res)
		}
	}
	if n := len(c.snapshots()); n != before {
		c.t.Errorf("cairn %q failed but the repository has %d snapshots, had %d", args, n, before)
	}
	return res
}

type pgSnapshot struct {
	ID      string `json:"id"`
	Sources []struct {
		Kind    string            `json:"kind"`
		Name    string            `json:"name"`
		Status  string            `json:"status"`
		Size    uint64            `json:"size"`
		Meta    map[string]string `json:"meta"`
		Details json.RawMessage   `json:"details"`
	} `json:"sources"`
}

func (c *pgCLI) snapshots() []pgSnapshot {
	c.t.Helper()
	res := c.ok(nil, "--json", "snapshots")
	var out []pgSnapshot
	if err := json.Unmarshal([]byte(res.stdout), &out); err != nil {
		c.t.Fatalf("snapshots --json: %v\n%s", err, res)
	}
	return out
}

type pgBackupSummary struct {
	SnapshotID string `json:"snapshot_id"`
	DataAdded  uint64 `json:"data_added"`
	Stored     uint64 `json:"data_added_packed"`
	DeltaBlobs uint64 `json:"delta_blobs"`
	TotalBytes uint64 `json:"total_bytes_processed"`
}

func (c *pgCLI) backup(args ...string) pgBackupSummary {
	c.t.Helper()
	res := c.ok(nil, append([]string{"--json", "backup"}, args...)...)
	var s pgBackupSummary
	if err := json.Unmarshal(jsonSummary(c.t, res.stdout), &s); err != nil {
		c.t.Fatalf("backup --json: %v\n%s", err, res)
	}
	if strings.Contains(res.stdout+res.stderr, c.srv.Password) {
		c.t.Errorf("backup printed the database password:\n%s", res)
	}
	return s
}

// pgSameTables fails unless got has want's tables with equal checksums.
func pgSameTables(t *testing.T, what string, got, want map[string]string) {
	t.Helper()
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: table %s: got %q, want %q", what, k, got[k], v)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("%s: unexpected table %s", what, k)
		}
	}
}

const pgSpecialTable = `
CREATE TABLE special (id serial PRIMARY KEY, doc jsonb, raw bytea, tags text[], nums int[], note text, at timestamptz, amount numeric(12,3));
INSERT INTO special (doc, raw, tags, nums, note, at, amount) VALUES
  ('{"a": 1, "b": [true, null, "x"], "ü": {"nested": "ß"}}', '\x00ff10', ARRAY['a', 'b c', NULL], ARRAY[1, 2, 3], 'héllo wörld ✓ 日本語 🐘', '2024-02-29 12:34:56.789+00', 1.5),
  (NULL, NULL, NULL, NULL, NULL, NULL, NULL),
  ('[]', ''::bytea, '{}', '{}', E'tab\there\nnewline, ''quote'' "dq" \\ backslash', '1970-01-01 00:00:00+00', -0.001),
  ('"just a string"', '\xdeadbeef', ARRAY['{', '}', ','], ARRAY[NULL, 7]::int[], '', 'infinity', 99999.999);
INSERT INTO special (doc, raw, tags, nums, note, at, amount)
  SELECT jsonb_build_object('i', g, 's', md5(g::text), 'l', jsonb_build_array(g, g * 2)), decode(md5(g::text), 'hex'),
         ARRAY[g::text, chr(19968 + g)], ARRAY[g, -g], repeat('ü', g % 7), timestamptz '2025-01-01' + g * interval '1 minute', g / 7.0
  FROM generate_series(1, 3000) g;
`

// TestPgBackupRestoreRoundTrip backs up a pgbench database (with a table
// of awkward types) and a directory in one snapshot, changes the database,
// backs up again, and restores both snapshots: into new databases (one
// with parallel pg_restore), over an existing one with --pg-clean, and by
// hand through cairn dump | pg_restore. Each restore must equal the
// database as it was right before its backup, and print its verification.
func TestPgBackupRestoreRoundTrip(t *testing.T) {
	srv := pgtest.Start(t)
	c := newPgCLI(t, srv)
	srv.CreateDB(t, "app")
	srv.Client(t, "pgbench", "-i", "-s", "2", "-q", "app")
	srv.Exec(t, "app", pgSpecialTable)
	files := t.TempDir()
	if err := os.WriteFile(filepath.Join(files, "config.yml"), []byte("key: value\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	sums1 := srv.Checksums(t, "app")
	s1 := c.backup("--pg", srv.URL("app"), files)
	sns := c.snapshots()
	if len(sns) != 1 {
		t.Fatalf("%d snapshots", len(sns))
	}
	kinds := map[string]string{}
	for _, src := range sns[0].Sources {
		kinds[src.Name] = src.Kind
		if src.Kind == "postgres" {
			if src.Meta["database"] != "app" || src.Meta["tables"] != "5" || src.Meta["wal_lsn"] == "" || len(src.Details) == 0 || src.Size == 0 {
				t.Errorf("postgres source %+v", src)
			}
			if src.Meta["rows"] != strconv.Itoa(200000+20+2+0+3004) {
				t.Errorf("rows recorded %s", src.Meta["rows"])
			}
		}
	}
	if kinds["/postgres/app.pgdump"] != "postgres" || kinds["/postgres/globals.sql"] != "postgres-globals" || kinds[files] != "files" {
		t.Errorf("sources %v", kinds)
	}
	snapJSON := c.ok(nil, "--json", "snapshots").stdout
	if strings.Contains(snapJSON, srv.Password) {
		t.Error("the snapshot metadata holds the database password")
	}
	ls := c.ok(nil, "ls", s1.SnapshotID, "/postgres").stdout
	if !strings.Contains(ls, "/postgres/app.pgdump") || !strings.Contains(ls, "/postgres/globals.sql") {
		t.Errorf("ls /postgres:\n%s", ls)
	}
	if got := c.ok(nil, "dump", s1.SnapshotID, filepath.Join(files, "config.yml")).stdout; got != "key: value\n" {
		t.Errorf("files in the same snapshot: %q", got)
	}

	// Day 2: pgbench updates, inserts, deletes, a new table.
	srv.Client(t, "pgbench", "-t", "200", "-c", "2", "--no-vacuum", "app")
	srv.Exec(t, "app", `
		DELETE FROM pgbench_accounts WHERE aid BETWEEN 150000 AND 150400;
		UPDATE special SET doc = doc || '{"changed": true}', tags = array_append(tags, 'day2') WHERE id % 5 = 0;
		DELETE FROM special WHERE id % 11 = 0;
		INSERT INTO special (doc, note) SELECT jsonb_build_object('day2', g), 'day 2 ✓' FROM generate_series(1, 500) g;
		CREATE TABLE events (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT now(), kind text, payload jsonb);
		INSERT INTO events (kind, payload) SELECT 'login', jsonb_build_object('user', g % 100) FROM generate_series(1, 5000) g;`)
	sums2 := srv.Checksums(t, "app")
	// The password comes from a password file this time.
	passfile := filepath.Join(t.TempDir(), "pgpass")
	if err := os.WriteFile(passfile, []byte(fmt.Sprintf("%s:%d:*:%s:%s\n", srv.Host, srv.Port, srv.User, srv.Password)), 0o600); err != nil {
		t.Fatal(err)
	}
	noPass := fmt.Sprintf("postgres://%s@%s:%d/app?sslmode=disable", srv.User, srv.Host, srv.Port)
	c.env = []string{"PGPASSFILE=" + passfile}
	s2 := c.backup("--pg", noPass)
	c.env = nil
	// Day 2 changed rows here and there: changed chunks are stored as
	// deltas against day 1's (pgbench's blank filler compresses 60:1, so
	// the dump's incompressible rest, the special table, dominates).
	t.Logf("dump %d bytes; day 1 stored %d bytes, day 2 %d bytes (%d chunks as deltas)", s2.TotalBytes, s1.Stored, s2.Stored, s2.DeltaBlobs)
	if s2.DeltaBlobs == 0 || s2.Stored >= s1.Stored {
		t.Errorf("day 2 stored %d bytes (%d deltas), day 1 %d", s2.Stored, s2.DeltaBlobs, s1.Stored)
	}
	// An unchanged database differs only in pg_dump's header (its time).
	if s3 := c.backup("--pg", srv.URL("app"), "--pg-no-globals"); s3.Stored > s3.TotalBytes/100 {
		t.Errorf("a backup of an unchanged database stored %d bytes for a %d-byte dump", s3.Stored, s3.TotalBytes)
	}

	// Snapshot 1 into a new database; the password from PGPASSWORD.
	c.env = []string{"PGPASSWORD=" + srv.Password}
	res := c.ok(nil, "restore", s1.SnapshotID, "--pg-target", fmt.Sprintf("postgres://%s@%s:%d/r1?sslmode=disable", srv.User, srv.Host, srv.Port), "--pg-create")
	c.env = nil
	for _, want := range []string{"created database r1", "at backup", "public.pgbench_accounts", "200000", "verified: 5 tables"} {
		if !strings.Contains(res.stdout, want) {
			t.Errorf("restore output lacks %q:\n%s", want, res)
		}
	}
	if strings.Contains(res.stdout, "DIFF") {
		t.Errorf("restore reports differences:\n%s", res)
	}
	pgSameTables(t, "snapshot 1 restored", srv.Checksums(t, "r1"), sums1)

	// Snapshot 2 with parallel pg_restore: its spool file is removed.
	tmp := t.TempDir()
	c.env = []string{"TMPDIR=" + tmp}
	c.ok(nil, "restore", s2.SnapshotID, "--pg-target", srv.URL("r2"), "--pg-create", "--jobs", "2")
	c.env = nil
	pgSameTables(t, "snapshot 2 restored with --jobs 2", srv.Checksums(t, "r2"), sums2)
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		t.Errorf("parallel restore left %d files in TMPDIR", len(left))
	}

	// A non-empty database is refused, then restored over with --pg-clean.
	c.fails([]string{"not empty", "--pg-clean"}, "restore", s1.SnapshotID, "--pg-target", srv.URL("r2"))
	res = c.ok(nil, "restore", s1.SnapshotID, "--pg-target", srv.URL("r2"), "--pg-clean")
	if !strings.Contains(res.stdout, "were not in the backup: public.events") {
		t.Errorf("restore over a database with an extra table:\n%s", res)
	}
	got := srv.Checksums(t, "r2")
	delete(got, "public.events")
	pgSameTables(t, "snapshot 1 restored with --pg-clean", got, sums1)

	// By hand: cairn dump | pg_restore.
	srv.CreateDB(t, "r3")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dump := c.command(ctx, "dump", s2.SnapshotID, "/postgres/app.pgdump")
	restore := exec.CommandContext(ctx, filepath.Join(srv.BinDir, "pg_restore"), "--exit-on-error", "-d", "r3")
	restore.Env = srv.Env()
	pipe, err := dump.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	restore.Stdin = pipe
	var dumpErr, restoreErr bytes.Buffer
	dump.Stderr, restore.Stderr = &dumpErr, &restoreErr
	if err := dump.Start(); err != nil {
		t.Fatal(err)
	}
	if err := restore.Run(); err != nil {
		t.Fatalf("pg_restore: %v\n%s", err, restoreErr.String())
	}
	if err := dump.Wait(); err != nil {
		t.Fatalf("cairn dump: %v\n%s", err, dumpErr.String())
	}
	pgSameTables(t, "cairn dump | pg_restore", srv.Checksums(t, "r3"), sums2)
}

// pgSlowDumpDir is a --pg-bin directory whose pg_dump waits for the file
// "go" before it starts, then passes the first 300 kB on and holds the rest
// until the file "release" exists, so a test can act at each stage.
func pgSlowDumpDir(t *testing.T, binDir string) string {
	dir := t.TempDir()
	script := fmt.Sprintf(`#!/bin/bash
set -o pipefail
real=%q dir=%q
for a in "$@"; do case "$a" in --version|-V) exec "$real" "$@";; esac; done
touch "$dir/started"
while [ ! -e "$dir/go" ]; do sleep 0.02; done
"$real" "$@" | { head -c 300000; while [ ! -e "$dir/release" ]; do sleep 0.02; done; cat; }
`, filepath.Join(binDir, "pg_dump"), dir)
	if err := os.WriteFile(filepath.Join(dir, "pg_dump"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func pgWaitFile(t *testing.T, p string) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(p); err == nil {
			return
		}
	}
	t.Fatalf("%s did not appear", p)
}

func pgTouch(t *testing.T, p string) {
	t.Helper()
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
}

// pgFindDescendant waits for the process running the program exe with a
// --snapshot argument (pg_dump's dump, not its --version) below pid.
func pgFindDescendant(t *testing.T, pid int, exe string) int {
	t.Helper()
	parentOf := func(p int) int {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if err != nil {
			return 0
		}
		s := string(b)
		open, close := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || close < 0 {
			return 0
		}
		f := strings.Fields(s[close+1:])
		if len(f) < 2 {
			return 0
		}
		pp, _ := strconv.Atoi(f[1])
		return pp
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		ents, _ := os.ReadDir("/proc")
		for _, e := range ents {
			p, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			target, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", p))
			cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p))
			if target != exe || !bytes.Contains(cmdline, []byte("--snapshot=")) {
				continue
			}
			for q, depth := p, 0; q > 1 && depth < 5; depth++ {
				q = parentOf(q)
				if q == pid {
					return p
				}
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no %s process below %d", exe, pid)
	return 0
}

// pgBackupInterrupted starts a backup through pgSlowDumpDir; once cairn
// has started pg_dump's wrapper it runs prepare (if set), lets pg_dump
// start, runs act on the pg_dump process, releases the stream, and checks
// that the backup fails with the messages in want and no snapshot.
func pgBackupInterrupted(t *testing.T, c *pgCLI, url string, prepare func(), act func(pgDump int), want ...string) {
	t.Helper()
	dir := pgSlowDumpDir(t, c.srv.BinDir)
	before := len(c.snapshots())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := c.command(ctx, "backup", "--pg", url, "--pg-bin", dir, "--pg-no-globals")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pgWaitFile(t, filepath.Join(dir, "started"))
	if prepare != nil {
		prepare()
	}
	pgTouch(t, filepath.Join(dir, "go"))
	real, err := filepath.EvalSymlinks(filepath.Join(c.srv.BinDir, "pg_dump"))
	if err != nil {
		t.Fatal(err)
	}
	pid := pgFindDescendant(t, cmd.Process.Pid, real)
	// The password travels in pg_dump's environment, not its arguments.
	if args, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err != nil || bytes.Contains(args, []byte(c.srv.Password)) {
		t.Errorf("pg_dump's command line %q (%v) shows the password", args, err)
	}
	act(pid)
	pgTouch(t, filepath.Join(dir, "release"))
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("interrupted backup: %v, want exit 1\n%s", err, out.String())
	}
	for _, w := range append(want, "pg_dump failed", "no snapshot was written") {
		if !strings.Contains(out.String(), w) {
			t.Errorf("interrupted backup: output lacks %q:\n%s", w, out.String())
		}
	}
	if n := len(c.snapshots()); n != before {
		t.Errorf("interrupted backup wrote a snapshot")
	}
}

// TestPgBackupFailures: whenever pg_dump fails — wrong password, no such
// database, killed or cut off from the server mid-stream, too old for the
// server — the backup exits 1 with pg_dump's own message and writes no
// snapshot.
func TestPgBackupFailures(t *testing.T) {
	srv := pgtest.Start(t)
	c := newPgCLI(t, srv)
	srv.CreateDB(t, "app")
	srv.Exec(t, "app", `CREATE TABLE big AS SELECT g AS id, md5(g::text) AS h FROM generate_series(1, 100000) g`)

	res := c.fails([]string{"password authentication failed"}, "backup", "--pg", srv.URLFor("postgres", "wrong-password-123", "app"))
	if strings.Contains(res.stdout+res.stderr, "wrong-password-123") {
		t.Errorf("the password was printed:\n%s", res)
	}
	c.fails([]string{`database "nosuchdb" does not exist`}, "backup", "--pg", srv.URL("nosuchdb"))

	// pg_dump killed (SIGKILL) in the middle of its output.
	pgBackupInterrupted(t, c, srv.URL("app"), nil, func(pid int) {
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
	}, "exit status 137")

	// pg_dump's connection terminated by the server. To catch it for sure,
	// pg_dump is made to wait for its table lock: cairn holds ACCESS SHARE
	// on "big", a migration queues for ACCESS EXCLUSIVE behind it, and
	// pg_dump's own ACCESS SHARE request queues behind the migration.
	migration := srv.Conn(t, "app")
	locked := make(chan error, 1)
	psql := func(sql string) string {
		return strings.TrimSpace(srv.Client(t, "psql", "-XAtq", "-d", "app", "-c", sql))
	}
	waitFor := func(sql string) {
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if psql(sql) != "0" {
				return
			}
		}
		t.Fatalf("timed out waiting for %s", sql)
	}
	pgBackupInterrupted(t, c, srv.URL("app"), func() {
		go func() {
			_, err := migration.Exec(context.Background(), "BEGIN; LOCK TABLE big IN ACCESS EXCLUSIVE MODE")
			locked <- err
		}()
		waitFor("SELECT count(*) FROM pg_locks WHERE mode = 'AccessExclusiveLock' AND NOT granted")
	}, func(int) {
		waitFor("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pg_dump' AND wait_event_type = 'Lock'")
		psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'pg_dump'")
	}, "terminating connection due to administrator command")
	if err := <-locked; err != nil {
		t.Fatal(err)
	}
	if _, err := migration.Exec(context.Background(), "ROLLBACK"); err != nil {
		t.Fatal(err)
	}

	// A pg_dump older than the server is refused before dumping.
	old := t.TempDir()
	if err := os.WriteFile(filepath.Join(old, "pg_dump"), []byte("#!/bin/sh\necho 'pg_dump (PostgreSQL) 9.6.0'\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(srv.BinDir, "pg_dumpall"), filepath.Join(old, "pg_dumpall")); err != nil {
		t.Fatal(err)
	}
	c.fails([]string{"pg_dump 9.6.0", "server_version_num", "--pg-bin"}, "backup", "--pg", srv.URL("app"), "--pg-bin", old)
	c.fails([]string{"not found in"}, "backup", "--pg", srv.URL("app"), "--pg-bin", t.TempDir())
	c.fails([]string{"--pg-format", "custom"}, "backup", "--pg", srv.URL("app"), "--pg-format", "tar")
	c.fails([]string{"unsupported parameter"}, "backup", "--pg", srv.URL("app")+"&bogus=1")

	// After all that, a plain backup works.
	c.backup("--pg", srv.URL("app"))
}

// TestPgGlobalsRoundTrip: a role (with its password) and its database are
// backed up, dropped, and restored with --pg-globals; the role that exists
// (postgres) is reported and left alone. A non-superuser needs
// --pg-no-globals, and such a snapshot cannot restore globals.
func TestPgGlobalsRoundTrip(t *testing.T) {
	srv := pgtest.Start(t)
	c := newPgCLI(t, srv)
	srv.Exec(t, "postgres", `CREATE ROLE app_owner LOGIN PASSWORD 'owner-pw-42'`)
	srv.Exec(t, "postgres", `CREATE DATABASE owned OWNER app_owner`)
	srv.Exec(t, "owned", `SET ROLE app_owner; CREATE TABLE notes (id int PRIMARY KEY, body text); INSERT INTO notes SELECT g, 'note ' || g FROM generate_series(1, 100) g`)
	sums := srv.Checksums(t, "owned")

	ownerURL := srv.URLFor("app_owner", "owner-pw-42", "owned")
	c.fails([]string{"needs a superuser", "--pg-no-globals"}, "backup", "--pg", ownerURL)
	noGlobals := c.backup("--pg", ownerURL, "--pg-no-globals")
	withGlobals := c.backup("--pg", srv.URL("owned"))

	srv.Exec(t, "postgres", `DROP DATABASE owned`)
	srv.Exec(t, "postgres", `DROP ROLE app_owner`)
	c.fails([]string{"holds no globals"}, "restore", noGlobals.SnapshotID, "--pg-target", srv.URL("owned"), "--pg-create", "--pg-globals")
	res := c.ok(nil, "restore", withGlobals.SnapshotID, "--pg-target", srv.URL("owned"), "--pg-create", "--pg-globals")
	if !strings.Contains(res.stdout, "roles that already exist, left unchanged: postgres") {
		t.Errorf("restore output:\n%s", res)
	}
	pgSameTables(t, "restored with globals", srv.Checksums(t, "owned"), sums)
	// The role is back with its password, and owns its table again.
	owner := srv.Client(t, "psql", "-XAtq", "-d", "owned", "-c", "SELECT tableowner FROM pg_tables WHERE tablename = 'notes'")
	if strings.TrimSpace(owner) != "app_owner" {
		t.Errorf("notes owned by %q", owner)
	}
	cmd := exec.Command(filepath.Join(srv.BinDir, "psql"), "-XAtq", "-c", "SELECT current_user", ownerURL)
	out, err := cmd.CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "app_owner" {
		t.Errorf("log in as the restored role: %v %s", err, out)
	}
	// The superuser's password was not changed by the globals.
	srv.Client(t, "psql", "-XAtq", "-d", "postgres", "-c", "SELECT 1")
}

// TestPgPlainAndSeveralDatabases: two databases in plain SQL format in one
// snapshot; restore picks by target name or --pg-database, runs psql, and
// refuses --pg-clean for plain dumps.
func TestPgPlainAndSeveralDatabases(t *testing.T) {
	srv := pgtest.Start(t)
	c := newPgCLI(t, srv)
	srv.CreateDB(t, "alpha")
	srv.CreateDB(t, "beta")
	srv.Exec(t, "alpha", pgSpecialTable)
	srv.Exec(t, "beta", `CREATE TABLE b (id int, v text); INSERT INTO b SELECT g, 'β' || g FROM generate_series(1, 777) g;`)
	sumsA, sumsB := srv.Checksums(t, "alpha"), srv.Checksums(t, "beta")
	s := c.backup("--pg", srv.URL("alpha"), "--pg", srv.URL("beta"), "--pg-format", "plain", "--pg-no-globals")
	ls := c.ok(nil, "ls", s.SnapshotID, "/postgres").stdout
	if !strings.Contains(ls, "/postgres/alpha.sql") || !strings.Contains(ls, "/postgres/beta.sql") || strings.Contains(ls, "globals") {
		t.Errorf("ls:\n%s", ls)
	}
	if head := c.ok(nil, "dump", s.SnapshotID, "/postgres/beta.sql").stdout; !strings.Contains(head, "CREATE TABLE public.b") {
		t.Errorf("plain dump:\n%.500s", head)
	}

	c.fails([]string{"several databases", "alpha, beta", "--pg-database"}, "restore", s.SnapshotID, "--pg-target", srv.URL("gamma"), "--pg-create")
	c.fails([]string{"holds dumps of alpha, beta only"}, "restore", s.SnapshotID, "--pg-target", srv.URL("gamma"), "--pg-database", "delta")
	c.fails([]string{"does not exist", "--pg-create"}, "restore", s.SnapshotID, "--pg-target", srv.URL("gamma"), "--pg-database", "beta")
	res := c.ok(nil, "restore", s.SnapshotID, "--pg-target", srv.URL("gamma"), "--pg-database", "beta", "--pg-create")
	if !strings.Contains(res.stdout, "with psql") || !strings.Contains(res.stdout, "public.b") {
		t.Errorf("restore output:\n%s", res)
	}
	pgSameTables(t, "beta restored as gamma", srv.Checksums(t, "gamma"), sumsB)

	// The target's name picks the dump.
	srv.Exec(t, "postgres", "DROP DATABASE alpha")
	res = c.ok(nil, "--json", "restore", s.SnapshotID, "--pg-target", srv.URL("alpha"), "--pg-create")
	var js struct {
		Database string `json:"database"`
		Verified bool   `json:"verified"`
		Tables   []struct {
			Table    string `json:"table"`
			AtBackup int64  `json:"at_backup"`
			Restored int64  `json:"restored"`
			OK       bool   `json:"ok"`
		} `json:"tables"`
	}
	if err := json.Unmarshal([]byte(res.stdout), &js); err != nil {
		t.Fatalf("restore --json: %v\n%s", err, res)
	}
	if js.Database != "alpha" || !js.Verified || len(js.Tables) != 1 || js.Tables[0].Table != "public.special" || js.Tables[0].Restored != 3004 || !js.Tables[0].OK {
		t.Errorf("restore --json: %+v", js)
	}
	pgSameTables(t, "alpha restored", srv.Checksums(t, "alpha"), sumsA)
	c.fails([]string{"--pg-clean needs a custom-format dump"}, "restore", s.SnapshotID, "--pg-target", srv.URL("alpha"), "--pg-clean")
}
