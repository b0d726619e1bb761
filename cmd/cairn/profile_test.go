package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
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
	for _, f := range []string{"data/media/logo.png", "certs/tls.key", ".env", "blueprints/flow.yaml"} {
		want, _ := os.ReadFile(filepath.Join(data, f))
		have, err := os.ReadFile(filepath.Join(restoreDir, data, f))
		if err != nil || string(have) != string(want) {
			t.Fatalf("%s not restored: %v", f, err)
		}
	}

	// Restoring over the live database needs --in-place.
	live := filepath.Join(root, "live.toml")
	body, _ := os.ReadFile(cfg)
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
	// A required source that fails: no snapshot, exit 1.
	required := profile("redis://127.0.0.1:1", false)
	if res := c.run("backup", "--config", required); res.code != 1 {
		t.Fatalf("required source down: %s", res)
	}
	if n := len(c.snapshots()); n != 3 {
		t.Fatalf("a failed required source wrote a snapshot (%d)", n)
	}
	// Retention from the profile.
	c.ok("forget", "--config", cfg, "--dry-run")
}
