package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/internal/pgstream/pgtest"
	"github.com/cairn-backup/cairn/internal/rdb/redistest"
)

// TestProfileWholeDeployment backs up a deployment (PostgreSQL, Redis and
// files) from one profile into one snapshot, then rebuilds it as of a time
// into a fresh database, Redis and directory, each verified.
func TestProfileWholeDeployment(t *testing.T) {
	pg := pgtest.Start(t)
	pg.CreateDB(t, "authentik")
	pg.Exec(t, "authentik", `CREATE TABLE events (id serial PRIMARY KEY, kind text, at timestamptz DEFAULT now());
		INSERT INTO events (kind) SELECT 'login' FROM generate_series(1, 3000);
		CREATE TABLE users (id int PRIMARY KEY, name text); INSERT INTO users VALUES (1, 'akadmin'), (2, 'ünïcode');`)
	rsrc := redistest.Start(t)
	redistest.Populate(t, rsrc, 1<<20)
	rdst := redistest.Start(t)

	root := t.TempDir()
	data := filepath.Join(root, "authentik")
	writeFile(t, filepath.Join(data, "data", "media", "logo.png"), randomBytes(3, 300<<10), 0o644)
	writeFile(t, filepath.Join(data, "certs", "tls.key"), []byte("-----BEGIN KEY-----\n"), 0o600)
	writeFile(t, filepath.Join(data, "custom-templates", "login.html"), []byte("<html>"), 0o644)
	writeFile(t, filepath.Join(data, "blueprints", "flow.yaml"), []byte("version: 1\n"), 0o644)
	writeFile(t, filepath.Join(data, ".env"), []byte("AUTHENTIK_SECRET_KEY=s3cret\n"), 0o600)

	c := newCLI(t, filepath.Join(root, "repo"))
	c.init()
	restoreDir := filepath.Join(root, "restored")
	profile := func(redisURL string, redisOptional bool) string {
		p := filepath.Join(root, "authentik.toml")
		body := fmt.Sprintf(`name = "authentik"
tags = ["nightly"]
[postgres]
databases = [%q]
[redis]
url = %q
optional = %v
[files]
paths = [%q, %q, %q, %q, %q]
[retention]
keep_daily = 7
[restore]
target_dir = %q
postgres_create = true
redis_target = %q
[restore.postgres_target]
authentik = %q
`, pg.URL("authentik"), redisURL, redisOptional,
			filepath.Join(data, "data"), filepath.Join(data, "certs"), filepath.Join(data, "custom-templates"),
			filepath.Join(data, "blueprints"), filepath.Join(data, ".env"),
			restoreDir, rdst.URL(), pg.URL("authentik_restored"))
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cfg := profile(rsrc.URL(), false)
	pgSums := pg.Checksums(t, "authentik")
	redisWant := redistest.Dump(t, rsrc.Addr, rsrc.Password)

	c.ok("backup", "--config", cfg, "--time", "2026-11-24T03:00:00Z")
	// A later night: the database changed; restore --at must pick the first.
	pg.Exec(t, "authentik", `DELETE FROM events WHERE id > 100`)
	c.ok("backup", "--config", cfg, "--time", "2026-11-25T03:00:00Z")

	// snapshots --config shows every source with its size.
	out := c.ok("snapshots", "--config", cfg).stdout
	for _, want := range []string{"/postgres/authentik.pgdump", "/redis/dump.rdb", "postgres", "redis", filepath.Join(data, ".env"), "2 snapshots"} {
		if !strings.Contains(out, want) {
			t.Fatalf("snapshots --config lacks %q:\n%s", want, out)
		}
	}

	// The plan, as of Tuesday 03:30: the first snapshot.
	plan := c.ok("restore", "--config", cfg, "--at", "2026-11-24T03:30:00Z", "--dry-run").stdout
	for _, want := range []string{"authentik_restored", restoreDir, rdst.Addr, "dry run"} {
		if !strings.Contains(plan, want) {
			t.Fatalf("plan lacks %q:\n%s", want, plan)
		}
	}
	if strings.Contains(plan, pg.Password) {
		t.Fatal("the plan prints the database password")
	}
	res := c.ok("restore", "--config", cfg, "--at", "2026-11-24T03:30:00Z")
	if !strings.Contains(res.stdout, "verified") {
		t.Fatalf("restore printed no verification:\n%s", res)
	}
	got := pg.Checksums(t, "authentik_restored")
	for table, sum := range pgSums {
		if got[table] != sum {
			t.Fatalf("table %s differs after the profile restore", table)
		}
	}
	redistest.Compare(t, redisWant, redistest.Dump(t, rdst.Addr, rdst.Password), 2*time.Minute)

	// The plan checks every target first, dry run or not: the database
	// restored above is not empty any more, so both refuse alike.
	for _, extra := range [][]string{{"--dry-run"}, nil} {
		res := c.run(append([]string{"restore", "--config", cfg, "--at", "2026-11-24T03:30:00Z"}, extra...)...)
		if res.code != 1 || !strings.Contains(res.stderr, "is not empty") || strings.Contains(res.stdout, "will be created") {
			t.Fatalf("restore %v into a database that is no longer empty: %s", extra, res)
		}
	}
	// An unwritable redis_rdb_dir is found before the database is touched:
	// nothing is restored, not half a deployment.
	roDir := filepath.Join(root, "ro-rdb")
	if err := os.Mkdir(roDir, 0o755); err != nil {
		t.Fatal(err)
	}
	readOnlyDir(t, roDir)
	body, _ := os.ReadFile(cfg)
	variant := filepath.Join(root, "variant.toml")
	vs := strings.Replace(string(body), fmt.Sprintf("redis_target = %q", rdst.URL()), fmt.Sprintf("redis_rdb_dir = %q", roDir), 1)
	vs = strings.Replace(vs, pg.URL("authentik_restored"), pg.URL("authentik_second"), 1)
	writeFile(t, variant, []byte(vs), 0o600)
	dry := c.run("restore", "--config", variant, "--dry-run")
	if dry.code != 1 || !strings.Contains(dry.stderr, "RDB directory") || !strings.Contains(dry.stdout, "will be created") {
		t.Fatalf("dry run with an unwritable redis_rdb_dir: %s", dry)
	}
	if res := c.run("restore", "--config", variant); res.code != 1 || !strings.Contains(res.stderr, "RDB directory") {
		t.Fatalf("restore with an unwritable redis_rdb_dir: %s", res)
	}
	// The same without a profile: the targets given as flags are checked
	// before the database is created.
	if res := c.run("restore", "latest", "--pg-target", pg.URL("authentik_third"), "--pg-create", "--redis-rdb-dir", roDir); res.code != 1 ||
		!strings.Contains(res.stderr, "RDB directory") {
		t.Fatalf("plain restore with an unwritable --redis-rdb-dir: %s", res)
	}
	var n int
	if err := pg.Conn(t, "postgres").QueryRow(context.Background(),
		"SELECT count(*) FROM pg_database WHERE datname IN ('authentik_second', 'authentik_third')").Scan(&n); err != nil || n != 0 {
		t.Fatalf("a refused restore created a database (%d, %v)", n, err)
	}
	for _, f := range []string{"data/media/logo.png", "certs/tls.key", ".env", "blueprints/flow.yaml"} {
		want, _ := os.ReadFile(filepath.Join(data, f))
		have, err := os.ReadFile(filepath.Join(restoreDir, data, f))
		if err != nil || string(have) != string(want) {
			t.Fatalf("%s not restored: %v", f, err)
		}
	}

	// Restoring over the live database needs --in-place.
	live := filepath.Join(root, "live.toml")
	body, _ = os.ReadFile(cfg)
	s := strings.Replace(string(body), pg.URL("authentik_restored"), pg.URL("authentik"), 1)
	os.WriteFile(live, []byte(s), 0o600)
	if res := c.run("restore", "--config", live); res.code != 1 || !strings.Contains(res.stderr, "--in-place") {
		t.Fatalf("restore over live data without --in-place: %s", res)
	}

	// An optional Redis that is down: snapshot written, source skipped, exit 3.
	down := profile("redis://127.0.0.1:1", true)
	if res := c.run("backup", "--config", down); res.code != 3 {
		t.Fatalf("optional source down: %s", res)
	}
	sns := c.snapshots()
	if len(sns) != 3 {
		t.Fatalf("%d snapshots after the optional failure, want 3", len(sns))
	}
	if out := c.ok("snapshots", "--config", down).stdout; !strings.Contains(out, "skipped") {
		t.Fatalf("skipped source not shown:\n%s", out)
	}
	// The night with the skipped source continues the profile's series:
	// its parent is the night before (its files were not read again), and
	// the next complete night's parent is the skipped one.
	if sns[2].Parent != sns[1].ID {
		t.Fatalf("the night with a skipped source has parent %q, want the previous night %s", sns[2].Parent, sns[1].ID)
	}
	var sum struct {
		FilesUnmodified int `json:"files_unmodified"`
	}
	if err := json.Unmarshal(sns[2].Summary, &sum); err != nil || sum.FilesUnmodified == 0 {
		t.Fatalf("the night with a skipped source read every file again: %s", sns[2].Summary)
	}
	cfg = profile(rsrc.URL(), false) // the one file, rewritten
	c.ok("backup", "--config", cfg)
	if sns = c.snapshots(); sns[3].Parent != sns[2].ID {
		t.Fatalf("the night after a skipped source has parent %q, want %s", sns[3].Parent, sns[2].ID)
	}
	// forget --config keeps them in one group (retention per profile and
	// host, not per set of paths that happened to succeed).
	var groups []struct {
		Keep, Remove []json.RawMessage
	}
	out = c.ok("--json", "forget", "--config", cfg, "--dry-run").stdout
	if err := json.Unmarshal([]byte(out), &groups); err != nil || len(groups) != 1 || len(groups[0].Keep)+len(groups[0].Remove) != 4 {
		t.Fatalf("forget --config does not treat the profile's 4 snapshots as one group: %v\n%s", err, out)
	}
	c.ok("forget", "--config", cfg, "--dry-run", "--keep-last", "10")
	// A required source that fails: no snapshot, exit 1.
	required := profile("redis://127.0.0.1:1", false)
	if res := c.run("backup", "--config", required); res.code != 1 {
		t.Fatalf("required source down: %s", res)
	}
	if n := len(c.snapshots()); n != 4 {
		t.Fatalf("a failed required source wrote a snapshot (%d)", n)
	}
	// Retention from the profile.
	c.ok("forget", "--config", cfg, "--dry-run")

	// Mistakes that would lose data night after night fail loudly: a path
	// that does not exist (exit 1, no snapshot), and forget without a
	// policy (exit 1, not "nothing to do").
	good := profile(rsrc.URL(), false)
	body, _ = os.ReadFile(good)
	missing := filepath.Join(root, "missing.toml")
	writeFile(t, missing, []byte(strings.Replace(string(body), filepath.Join(data, "certs"), filepath.Join(data, "no-such-dir"), 1)), 0o600)
	if res := c.run("backup", "--config", missing); res.code != 1 || !strings.Contains(res.stderr, "files.paths") || !strings.Contains(res.stderr, "no-such-dir") {
		t.Fatalf("a profile path that does not exist: %s", res)
	}
	if n := len(c.snapshots()); n != 4 {
		t.Fatalf("a profile with a missing path wrote a snapshot (%d)", n)
	}
	noPolicy := filepath.Join(root, "nopolicy.toml")
	writeFile(t, noPolicy, []byte(strings.Replace(string(body), "keep_daily = 7", "", 1)), 0o600)
	if res := c.run("forget", "--config", noPolicy); res.code != 1 || !strings.Contains(res.stderr, "no [retention] policy") {
		t.Fatalf("forget --config without a policy: %s", res)
	}
}

// TestExampleProfileAsShipped runs docs/examples/authentik.toml with only
// its addresses and directories pointed at the test's servers: the
// database is dumped as authentik's own role (not a superuser), the
// passwords come from where the example says (a .pgpass file,
// CAIRN_REDIS_PASSWORD), and the nightly backup exits 0.
func TestExampleProfileAsShipped(t *testing.T) {
	pg := pgtest.Start(t)
	pg.Exec(t, "postgres", "CREATE ROLE authentik LOGIN PASSWORD 'authentik-pw'")
	pg.Exec(t, "postgres", "CREATE DATABASE authentik OWNER authentik")
	pg.Exec(t, "authentik", `SET ROLE authentik;
		CREATE TABLE authentik_core_user (id serial PRIMARY KEY, username text, attributes jsonb);
		INSERT INTO authentik_core_user (username, attributes) SELECT 'user' || g, jsonb_build_object('n', g) FROM generate_series(1, 500) g;`)
	rd := redistest.Start(t, "--requirepass", "redis-pw")
	redistest.Populate(t, rd, 256<<10)

	root := t.TempDir()
	data := filepath.Join(root, "opt", "authentik")
	writeFile(t, filepath.Join(data, "data", "media", "logo.png"), randomBytes(5, 100<<10), 0o644)
	writeFile(t, filepath.Join(data, "data", "cache", "junk.bin"), randomBytes(6, 1<<10), 0o644)
	writeFile(t, filepath.Join(data, "certs", "tls.key"), []byte("-----BEGIN KEY-----\n"), 0o600)
	writeFile(t, filepath.Join(data, "custom-templates", "login.html"), []byte("<html>"), 0o644)
	writeFile(t, filepath.Join(data, "blueprints", "flow.yaml"), []byte("version: 1\n"), 0o644)
	writeFile(t, filepath.Join(data, ".env"), []byte("AUTHENTIK_SECRET_KEY=s3cret\n"), 0o600)

	example, err := os.ReadFile(filepath.Join("..", "..", "docs", "examples", "authentik.toml"))
	if err != nil {
		t.Fatal(err)
	}
	pgAddr := fmt.Sprintf("%s:%d", pg.Host, pg.Port)
	restoreDir := filepath.Join(root, "srv", "authentik-restore")
	cfg := strings.NewReplacer("127.0.0.1:5432", pgAddr, "127.0.0.1:6379", rd.Addr,
		"/opt/authentik", data, "/srv/authentik-restore", restoreDir).Replace(string(example))
	cfgPath := filepath.Join(root, "authentik.toml")
	writeFile(t, cfgPath, []byte(cfg), 0o600)
	pgpass := filepath.Join(root, "pgpass")
	writeFile(t, pgpass, []byte(fmt.Sprintf("%s:%d:*:authentik:authentik-pw\n%s:%d:*:%s:%s\n",
		pg.Host, pg.Port, pg.Host, pg.Port, pg.User, pg.Password)), 0o600)

	// The profile names an S3 repository and a password file; the
	// environment (as in a test of the profile) points elsewhere.
	c := newCLI(t, filepath.Join(root, "repo"))
	c.env = []string{"PGPASSFILE=" + pgpass, "CAIRN_REDIS_PASSWORD=redis-pw"}
	c.init()
	res := c.run("backup", "--config", cfgPath, "--time", "2026-11-24 03:00") // --time takes --at's forms
	if res.code != 0 {
		t.Fatalf("the example profile's backup: %s", res)
	}
	sns := c.snapshots()
	if want := time.Date(2026, 11, 24, 3, 0, 0, 0, time.Local); !sns[0].Time.Equal(want) {
		t.Fatalf("--time in local form: snapshot time %v, want %v", sns[0].Time, want)
	}
	if len(sns) != 1 || !slices.Contains(sns[0].Paths, "/postgres/authentik.pgdump") || !slices.Contains(sns[0].Paths, "/redis/dump.rdb") ||
		slices.Contains(sns[0].Paths, "/postgres/globals.sql") {
		t.Fatalf("the example's snapshot holds %v", sns)
	}
	if out := c.ok("ls", "latest").stdout; strings.Contains(out, "junk.bin") || !strings.Contains(out, "logo.png") {
		t.Fatalf("the example's excludes: %s", out)
	}
	c.ok("restore", "--config", cfgPath)
	if want, got := pg.Checksums(t, "authentik"), pg.Checksums(t, "authentik_restored"); fmt.Sprint(want) != fmt.Sprint(got) {
		t.Fatalf("restored database differs: %v, want %v", got, want)
	}
	compareTrees(t, filepath.Join(data, "certs"), filepath.Join(restoreDir, data, "certs"), false)

	// Every command finds the repository through the profile.
	withRepo := strings.Replace(cfg, "s3:https://s3.example.com/backups/authentik", c.repo, 1)
	writeFile(t, cfgPath, []byte(withRepo), 0o600)
	bare := newCLI(t, "")
	bare.env = c.env
	if res := bare.run("check"); res.code != 1 || !strings.Contains(res.stderr, "no repository") {
		t.Fatalf("check without a repository: %s", res)
	}
	for _, args := range [][]string{{"check"}, {"stats"}, {"ls", "latest"}, {"key", "list"}, {"prune", "--dry-run"}, {"diff", "latest", "latest"}} {
		bare.ok(append(args, "--config", cfgPath)...)
	}
}

// TestProfileNotify: a profile's [notify] url is pinged as healthchecks.io
// expects (URL/start, then URL or URL/fail with the error), by a real HTTP
// server in the test.
func TestProfileNotify(t *testing.T) {
	var mu sync.Mutex
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		got = append(got, r.Method+" "+r.URL.Path+" "+string(body))
		mu.Unlock()
	}))
	defer srv.Close()
	root := t.TempDir()
	data := filepath.Join(root, "data")
	writeFile(t, filepath.Join(data, "a.txt"), []byte("a\n"), 0o644)
	cfg := filepath.Join(root, "p.toml")
	write := func(paths ...string) {
		var q []string
		for _, p := range paths {
			q = append(q, fmt.Sprintf("%q", p))
		}
		writeFile(t, cfg, []byte(fmt.Sprintf("name = \"p\"\n[files]\npaths = [%s]\n[notify]\nurl = %q\n", strings.Join(q, ", "), srv.URL+"/ping/abc")), 0o600)
	}
	c := newCLI(t, filepath.Join(root, "repo"))
	c.init()
	write(data)
	c.ok("backup", "--config", cfg)
	write(data, filepath.Join(root, "media"))
	if res := c.run("backup", "--config", cfg); res.code != 1 {
		t.Fatalf("backup with a missing path: %s", res)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 3 || got[0] != "POST /ping/abc/start " || got[1] != "POST /ping/abc " ||
		!strings.HasPrefix(got[2], "POST /ping/abc/fail exit 1: ") || !strings.Contains(got[2], "does not exist") {
		t.Fatalf("pings: %q", got)
	}
}
