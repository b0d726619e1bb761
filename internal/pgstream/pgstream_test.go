package pgstream

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/internal/pgstream/pgtest"
)

func TestPgParseConnURL(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want map[string]string
	}{
		{"postgres://u:p%40ss@db.example:6432/app?sslmode=require&application_name=x",
			map[string]string{"user": "u", "password": "p@ss", "host": "db.example", "port": "6432", "dbname": "app", "sslmode": "require", "application_name": "x"}},
		{"postgresql:///app?host=/var/run/postgresql", map[string]string{"dbname": "app", "host": "/var/run/postgresql"}},
		{"postgresql://%2Ftmp%2Fsock/db", map[string]string{"host": "/tmp/sock", "dbname": "db"}},
		{"postgres://a:1,b:2/x", map[string]string{"host": "a,b", "port": "1,2", "dbname": "x"}},
		{"postgres://[::1]:5433/x?ssl=true", map[string]string{"host": "::1", "port": "5433", "dbname": "x", "sslmode": "require"}},
		{"postgres://user@h", map[string]string{"user": "user", "host": "h"}},
	} {
		c, err := ParseConn(tc.in)
		if err != nil {
			t.Fatalf("%s: %v", tc.in, err)
		}
		if tc.want == nil {
			continue
		}
		if len(c.params) != len(tc.want) {
			t.Errorf("%s: got %v, want %v", tc.in, c.params, tc.want)
		}
		for k, v := range tc.want {
			if c.params[k] != v {
				t.Errorf("%s: %s = %q, want %q", tc.in, k, c.params[k], v)
			}
		}
	}
	c, err := ParseConn(`host=/tmp dbname='my db' password='it\'s' user=x`)
	if err != nil {
		t.Fatal(err)
	}
	if c.Get("dbname") != "my db" || c.Get("password") != "it's" || c.Get("host") != "/tmp" {
		t.Errorf("keyword form parsed as %v", c.params)
	}
	for _, bad := range []string{"mysql://x", "app", "postgres://h/db?foo=bar", "postgres://h:12a/db", "host='x"} {
		_, err := ParseConn(bad)
		if err == nil {
			t.Errorf("%s: accepted", bad)
		}
	}
	// Errors about bad connection strings never show the password.
	_, err = ParseConn("postgres://u:hunter22@h/db?foo=bar")
	if err == nil {
		t.Fatal("unknown parameter accepted")
	}
	_, err = ParseConn("postgres://u:hunter22@h:bad/db")
	if err == nil || strings.Contains(err.Error(), "hunter22") {
		t.Errorf("error %v", err)
	}
}

func TestPgConnRedaction(t *testing.T) {
	c, err := ParseConn("postgres://app:s3cr%2Ft!@db:5432/app?sslmode=verify-full")
	if err != nil {
		t.Fatal(err)
	}
	s := c.String()
	if strings.Contains(s, "s3cr") || s != "postgresql://app:xxxxx@db:5432/app?sslmode=verify-full" {
		t.Errorf("String() = %q", s)
	}
	if got := c.Redact(`FATAL: password "s3cr/t!" or s3cr%2Ft%21 failed`); strings.Contains(got, "s3cr") {
		t.Errorf("Redact left the password: %q", got)
	}
	env := strings.Join(c.Env(), "\n")
	for _, want := range []string{"PGPASSWORD=s3cr/t!", "PGHOST=db", "PGPORT=5432", "PGUSER=app", "PGDATABASE=app", "PGSSLMODE=verify-full"} {
		if !strings.Contains(env, "\n"+want+"\n") && !strings.HasSuffix(env, "\n"+want) {
			t.Errorf("Env() lacks %s", want)
		}
	}
	if got := redactString("postgres://u:pw@h/x"); got != "postgres://u:xxxxx@h/x" {
		t.Errorf("redactString = %q", got)
	}
	if got := redactString("host=h password=pw user=u"); strings.Contains(got, "pw") {
		t.Errorf("redactString = %q", got)
	}
}

func TestPgParseToolVersion(t *testing.T) {
	for _, tc := range []struct {
		in    string
		text  string
		num   int
		major string
	}{
		{"pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n", "15.18", 150018, "15"},
		{"pg_dump (PostgreSQL) 9.6.24\n", "9.6.24", 90624, "9.6"},
		{"pg_restore (PostgreSQL) 17devel", "17devel", 170000, "17"},
		{"psql (PostgreSQL) 16.1", "16.1", 160001, "16"},
	} {
		v, err := parseToolVersion(tc.in)
		if err != nil || v.Text != tc.text || v.Num != tc.num || v.Major() != tc.major {
			t.Errorf("%q: %+v %v (major %s)", tc.in, v, err, v.Major())
		}
	}
	if _, err := parseToolVersion("hello"); err == nil {
		t.Error("garbage accepted")
	}
	old, _ := parseToolVersion("(PostgreSQL) 14.9")
	srv := Version{Text: "15.2", Num: 150002}
	if old.majorNum() >= srv.majorNum() {
		t.Error("14.9 not older than 15.2")
	}
	same, _ := parseToolVersion("(PostgreSQL) 15.1")
	if same.majorNum() < srv.majorNum() {
		t.Error("15.1 considered older than server 15.2")
	}
}

func TestPgFileName(t *testing.T) {
	for in, want := range map[string]string{"app": "app.pgdump", "a/b": "a%2Fb.pgdump", "..": "%2E...pgdump", "my db": "my db.pgdump"} {
		if got := FileName(in, FormatCustom); got != want {
			t.Errorf("FileName(%q) = %q, want %q", in, got, want)
		}
	}
	if got := FileName("app", FormatPlain); got != "app.sql" {
		t.Errorf("plain: %q", got)
	}
}

const sampleGlobals = `--
-- PostgreSQL database cluster dump
--

\restrict abc

SET default_transaction_read_only = off;

--
-- Roles
--

CREATE ROLE "Weird ""Role";
ALTER ROLE "Weird ""Role" WITH NOSUPERUSER INHERIT LOGIN PASSWORD 'SCRAM-SHA-256$4096:x==';
CREATE ROLE app;
ALTER ROLE app WITH NOSUPERUSER INHERIT NOLOGIN;
COMMENT ON ROLE app IS 'multi
line; with CREATE ROLE postgres;';
CREATE ROLE postgres;
ALTER ROLE postgres WITH SUPERUSER INHERIT CREATEROLE CREATEDB LOGIN REPLICATION BYPASSRLS PASSWORD 'SCRAM-SHA-256$4096:y==';
CREATE TABLESPACE fast OWNER postgres LOCATION '/srv/fast';

ALTER ROLE app SET work_mem TO '8MB';

GRANT app TO "Weird ""Role" GRANTED BY postgres;

\unrestrict abc

--
-- PostgreSQL database cluster dump complete
--
`

func TestPgRewriteGlobals(t *testing.T) {
	out, roles, spaces := rewriteGlobals(sampleGlobals, map[string]bool{"postgres": true, "app": true}, map[string]bool{"fast": true})
	if !slices.Equal(roles, []string{"app", "postgres"}) || !slices.Equal(spaces, []string{"fast"}) {
		t.Errorf("skipped roles %v, tablespaces %v", roles, spaces)
	}
	for _, gone := range []string{"CREATE ROLE postgres", "PASSWORD 'SCRAM-SHA-256$4096:y=='", "CREATE ROLE app;", "multi\nline", "SET work_mem", "LOCATION"} {
		if strings.Contains(out, gone) {
			t.Errorf("rewritten globals still contain %q:\n%s", gone, out)
		}
	}
	for _, kept := range []string{`CREATE ROLE "Weird ""Role";`, `ALTER ROLE "Weird ""Role" WITH`, `GRANT app TO "Weird ""Role"`, `\restrict abc`, `\unrestrict abc`, "SET default_transaction_read_only = off;"} {
		if !strings.Contains(out, kept) {
			t.Errorf("rewritten globals lost %q:\n%s", kept, out)
		}
	}
	same, roles, _ := rewriteGlobals(sampleGlobals, nil, nil)
	if same != sampleGlobals || len(roles) != 0 {
		t.Errorf("nothing existing: script changed:\n%s", same)
	}
	weird, roles, _ := rewriteGlobals(sampleGlobals, map[string]bool{`Weird "Role`: true}, nil)
	if strings.Contains(weird, `CREATE ROLE "Weird`) || !slices.Equal(roles, []string{`Weird "Role`}) {
		t.Errorf("quoted role not skipped: %v\n%s", roles, weird)
	}
}

func TestPgWriteChecks(t *testing.T) {
	var b bytes.Buffer
	WriteChecks(&b, []TableCheck{
		{Table: "public.a", AtBackup: 10, Restored: 10, OK: true},
		{Table: `public."Long Name"`, AtBackup: 3, Restored: 2},
		{Table: "s.gone", AtBackup: 1, Restored: -1},
	})
	want := "table                  at backup      restored  \n" +
		"public.a                      10            10  ok\n" +
		"public.\"Long Name\"             3             2  DIFF\n" +
		"s.gone                         1       missing  DIFF\n"
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
}

// TestPgDumpRestore runs the package against a real server: a dump with its
// counts, a restore verified by them, a verification that catches a
// difference, a lock held by a migration, and a pg_dump too old.
func TestPgDumpRestore(t *testing.T) {
	srv := pgtest.Start(t)
	ctx := context.Background()
	srv.CreateDB(t, "src")
	srv.Exec(t, "src", `CREATE SCHEMA "Odd Schema";
		CREATE TABLE "Odd Schema"."T 1" (id int primary key, v text);
		INSERT INTO "Odd Schema"."T 1" SELECT g, repeat('x', g % 50) FROM generate_series(1, 1000) g;
		CREATE TABLE parent (id int, k int) PARTITION BY RANGE (k);
		CREATE TABLE part1 PARTITION OF parent FOR VALUES FROM (0) TO (10);
		CREATE TABLE part2 PARTITION OF parent FOR VALUES FROM (10) TO (20);
		INSERT INTO parent SELECT g, g % 20 FROM generate_series(1, 500) g;
		CREATE TABLE base (id int); CREATE TABLE child () INHERITS (base);
		INSERT INTO base VALUES (1), (2); INSERT INTO child VALUES (3);
		CREATE UNLOGGED TABLE scratch (x int); INSERT INTO scratch VALUES (1);`)
	conn, err := ParseConn(srv.URL("src"))
	if err != nil {
		t.Fatal(err)
	}
	tools := Tools{Dir: srv.BinDir}

	d, err := StartDump(ctx, DumpOptions{Conn: conn, Tools: tools, LockWaitTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	var dump bytes.Buffer
	if _, err := io.Copy(&dump, d.Reader); err != nil {
		t.Fatal(err)
	}
	det, err := d.Finish()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(dump.Bytes(), []byte("PGDMP")) {
		t.Fatal("not a custom dump")
	}
	counts := map[string]int64{}
	for _, tc := range det.Tables {
		counts[tc.QualifiedName()] = tc.Rows
	}
	wantCounts := map[string]int64{`"Odd Schema"."T 1"`: 1000, "public.part1": 250, "public.part2": 250, "public.base": 2, "public.child": 1, "public.scratch": 1}
	if len(counts) != len(wantCounts) {
		t.Errorf("counted %v, want %v", counts, wantCounts)
	}
	for k, v := range wantCounts {
		if counts[k] != v {
			t.Errorf("%s: %d rows recorded, want %d", k, counts[k], v)
		}
	}
	if det.Database != "src" || det.ServerVersionNum < 100000 || det.WALLSN == "" || det.Time.IsZero() || det.PgDumpVersion == "" || det.Encoding != "UTF8" {
		t.Errorf("details %+v", det)
	}
	if strings.Contains(det.Connection, srv.Password) {
		t.Error("details hold the password")
	}

	// Restore into a new database and verify.
	target, _ := ParseConn(srv.URL("copy"))
	var log bytes.Buffer
	res, err := Restore(ctx, RestoreOptions{Target: target, Tools: tools, Dump: bytes.NewReader(dump.Bytes()), Details: det, Create: true, Log: &log})
	if err != nil {
		t.Fatalf("restore: %v\n%s", err, log.String())
	}
	if !res.Created || len(res.Checks) != len(wantCounts) || res.Bytes != int64(dump.Len()) {
		t.Errorf("result %+v", res)
	}
	for _, c := range res.Checks {
		if !c.OK {
			t.Errorf("check %+v", c)
		}
	}
	if got, want := srv.Checksums(t, "copy"), srv.Checksums(t, "src"); !mapsEqual(got, want) {
		t.Errorf("restored contents differ:\n%v\n%v", got, want)
	}

	// A non-empty target is refused without Clean.
	_, err = Restore(ctx, RestoreOptions{Target: target, Tools: tools, Dump: bytes.NewReader(dump.Bytes()), Details: det})
	if err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Errorf("non-empty target: %v", err)
	}

	// Verification catches a difference.
	srv.Exec(t, "copy", `DELETE FROM "Odd Schema"."T 1" WHERE id <= 3; DROP TABLE public.scratch; CREATE TABLE extra (x int)`)
	c, err := target.connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	vres := &RestoreResult{}
	err = vres.verify(ctx, c, det)
	if !errors.Is(err, ErrVerify) || !strings.Contains(err.Error(), "2 of 6") {
		t.Errorf("verify: %v", err)
	}
	if !slices.Equal(vres.Extra, []string{"public.extra"}) {
		t.Errorf("extra tables %v", vres.Extra)
	}
	for _, ch := range vres.Checks {
		switch ch.Table {
		case `"Odd Schema"."T 1"`:
			if ch.OK || ch.Restored != 997 {
				t.Errorf("%+v", ch)
			}
		case "public.scratch":
			if ch.OK || ch.Restored != -1 {
				t.Errorf("%+v", ch)
			}
		}
	}

	// A lock held by a migration fails the dump after the timeout.
	lockConn := srv.Conn(t, "src")
	tx, err := lockConn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "LOCK TABLE base IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = StartDump(ctx, DumpOptions{Conn: conn, Tools: tools, LockWaitTimeout: 300 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "lock") || time.Since(start) > 20*time.Second {
		t.Errorf("dump under a lock: %v after %s", err, time.Since(start))
	}
	_ = tx.Rollback(ctx)

	// A pg_dump older than the server is refused before dumping.
	old := t.TempDir()
	script := "#!/bin/sh\necho 'pg_dump (PostgreSQL) 9.6.0'\n"
	if err := os.WriteFile(filepath.Join(old, "pg_dump"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err = StartDump(ctx, DumpOptions{Conn: conn, Tools: Tools{Dir: old}})
	if err == nil || !strings.Contains(err.Error(), "pg_dump 9.6.0") || !strings.Contains(err.Error(), "server_version_num 1") {
		t.Errorf("old pg_dump: %v", err)
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
