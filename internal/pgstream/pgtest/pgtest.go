// Package pgtest starts throw-away PostgreSQL servers for tests: initdb and
// pg_ctl in a temporary directory, listening on 127.0.0.1 with a password.
package pgtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Options tune a server.
type Options struct {
	// SharedBuffers is postgresql.conf's shared_buffers (default 32MB).
	SharedBuffers string
	// Conf lines are appended to postgresql.conf.
	Conf []string
}

// Server is a running test server. Its superuser is "postgres" with
// Password, reached over TCP on Host:Port (scram-sha-256 authentication).
type Server struct {
	BinDir   string // initdb, pg_ctl, postgres and the client programs
	Dir      string // the temporary directory holding everything
	Host     string
	Port     int
	User     string
	Password string

	dataDir string
	runAs   string // "postgres" when the tests run as root
}

// findBinDir finds the server programs: /usr/lib/postgresql/15/bin, then the
// newest /usr/lib/postgresql/*/bin, then pg_config --bindir.
func findBinDir() (string, error) {
	cands := []string{"/usr/lib/postgresql/15/bin"}
	if ms, _ := filepath.Glob("/usr/lib/postgresql/*/bin"); len(ms) > 0 {
		for i := len(ms) - 1; i >= 0; i-- {
			cands = append(cands, ms[i])
		}
	}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		cands = append(cands, strings.TrimSpace(string(out)))
	}
	for _, d := range cands {
		if isExec(filepath.Join(d, "initdb")) && isExec(filepath.Join(d, "pg_ctl")) {
			return d, nil
		}
	}
	return "", errors.New("PostgreSQL server programs (initdb, pg_ctl) not found in /usr/lib/postgresql/*/bin or pg_config --bindir: run scripts/install-deps.sh")
}

func isExec(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0
}

// Start starts a server for the test and stops it at cleanup. Without the
// server programs the test is skipped, or fails when CI=true.
func Start(t testing.TB) *Server { return StartWith(t, Options{}) }

// StartWith is Start with options.
func StartWith(t testing.TB, o Options) *Server {
	t.Helper()
	require(t)
	s, err := New(o)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() { s.Stop() })
	return s
}

// require skips the test when the server programs are missing, or fails
// it when CI=true (CI must test PostgreSQL).
func require(t testing.TB) {
	t.Helper()
	if _, err := findBinDir(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("pgtest: %v (CI=true: PostgreSQL tests must run)", err)
		}
		t.Skipf("pgtest: %v", err)
	}
}

// New starts a server; the caller must call Stop (for TestMain).
func New(o Options) (*Server, error) {
	bin, err := findBinDir()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "cairn-pgtest-")
	if err != nil {
		return nil, err
	}
	s := &Server{BinDir: bin, Dir: dir, Host: "127.0.0.1", User: "postgres", Password: randomHex(12),
		dataDir: filepath.Join(dir, "data")}
	if os.Geteuid() == 0 {
		// initdb refuses to run as root.
		u, err := user.Lookup("postgres")
		if err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("running as root needs a postgres user for initdb: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		s.runAs = "postgres"
	}
	if err := s.init(o); err != nil {
		s.Stop()
		return nil, err
	}
	var startErr error
	for attempt := 0; attempt < 3; attempt++ {
		if startErr = s.start(); startErr == nil {
			return s, nil
		}
	}
	s.Stop()
	return nil, startErr
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// serverCmd runs a server program, as the postgres user when root.
func (s *Server) serverCmd(name string, args ...string) *exec.Cmd {
	p := filepath.Join(s.BinDir, name)
	if s.runAs != "" {
		return exec.Command("runuser", append([]string{"-u", s.runAs, "--", p}, args...)...)
	}
	return exec.Command(p, args...)
}

func (s *Server) writeOwned(name, content string) error {
	p := filepath.Join(s.Dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		return err
	}
	if s.runAs != "" {
		u, _ := user.Lookup(s.runAs)
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		return os.Chown(p, uid, gid)
	}
	return nil
}

func (s *Server) init(o Options) error {
	if err := s.writeOwned("pwfile", s.Password+"\n"); err != nil {
		return err
	}
	out, err := s.serverCmd("initdb", "-D", s.dataDir, "-U", s.User, "--pwfile="+filepath.Join(s.Dir, "pwfile"),
		"--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C", "--no-sync").CombinedOutput()
	if err != nil {
		return fmt.Errorf("initdb: %v: %s", err, out)
	}
	sb := o.SharedBuffers
	if sb == "" {
		sb = "32MB"
	}
	conf := []string{
		"listen_addresses = '127.0.0.1'",
		"unix_socket_directories = '" + s.Dir + "'",
		"fsync = off", "synchronous_commit = off", "full_page_writes = off",
		"shared_buffers = '" + sb + "'", "max_connections = 40",
		"log_min_messages = warning", "logging_collector = off",
	}
	conf = append(conf, o.Conf...)
	f, err := os.OpenFile(filepath.Join(s.dataDir, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString("\n# pgtest\n" + strings.Join(conf, "\n") + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func (s *Server) start() error {
	port, err := freePort()
	if err != nil {
		return err
	}
	s.Port = port
	logFile := filepath.Join(s.Dir, "server.log")
	out, err := s.serverCmd("pg_ctl", "-D", s.dataDir, "-l", logFile, "-w", "-t", "60",
		"-o", "-p "+strconv.Itoa(port), "start").CombinedOutput()
	if err != nil {
		log, _ := os.ReadFile(logFile)
		return fmt.Errorf("pg_ctl start: %v: %s\n%s", err, out, lastBytes(log, 2000))
	}
	return nil
}

func lastBytes(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Stop stops the server at once (pg_ctl stop -m immediate) and removes its
// directory.
func (s *Server) Stop() {
	if s.Port != 0 {
		_ = s.serverCmd("pg_ctl", "-D", s.dataDir, "-m", "immediate", "-w", "stop").Run()
	}
	os.RemoveAll(s.Dir)
}

// URL is the superuser's URL (with password) for database db.
func (s *Server) URL(db string) string {
	return s.URLFor(s.User, s.Password, db)
}

// URLFor is the URL of another user.
func (s *Server) URLFor(user, password, db string) string {
	u := url.URL{Scheme: "postgres", User: url.UserPassword(user, password), Host: net.JoinHostPort(s.Host, strconv.Itoa(s.Port)),
		Path: "/" + db, RawQuery: "sslmode=disable"}
	return u.String()
}

// Env is the environment for client programs (psql, pgbench, ...) to reach
// the server as the superuser.
func (s *Server) Env() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") {
			env = append(env, kv)
		}
	}
	return append(env, "PGHOST="+s.Host, "PGPORT="+strconv.Itoa(s.Port), "PGUSER="+s.User,
		"PGPASSWORD="+s.Password, "PGSSLMODE=disable")
}

// Client runs a client program of BinDir (psql, pgbench, pg_restore, ...)
// against the server and returns its standard output.
func (s *Server) Client(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := s.ClientErr(name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v", name, strings.Join(args, " "), err)
	}
	return out
}

// ClientErr is Client returning the error (with stderr).
func (s *Server) ClientErr(name string, args ...string) (string, error) {
	cmd := exec.Command(filepath.Join(s.BinDir, name), args...)
	cmd.Env = s.Env()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%v: %s", err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

// Conn connects to database db as the superuser; closed at cleanup.
func (s *Server) Conn(t testing.TB, db string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, s.URL(db))
	if err != nil {
		t.Fatalf("connect %s: %v", db, err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// Exec runs SQL statements in database db.
func (s *Server) Exec(t testing.TB, db string, sql string, args ...any) {
	t.Helper()
	c := s.Conn(t, db)
	if _, err := c.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("exec in %s: %v\n%s", db, err, sql)
	}
	c.Close(context.Background())
}

// CreateDB creates a database.
func (s *Server) CreateDB(t testing.TB, db string) {
	t.Helper()
	s.Exec(t, "postgres", "CREATE DATABASE "+pgx.Identifier{db}.Sanitize())
}

// Checksums returns, for every user table of database db, an md5 of its
// rows in order (md5(string_agg(t::text, ',' ORDER BY t::text))) and its
// row count, keyed by schema.table (unquoted): equal maps mean equal contents.
func (s *Server) Checksums(t testing.TB, db string) map[string]string {
	t.Helper()
	ctx := context.Background()
	c := s.Conn(t, db)
	defer c.Close(ctx)
	rows, err := c.Query(ctx, `SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\_toast%' ORDER BY 1, 2`)
	if err != nil {
		t.Fatalf("list tables of %s: %v", db, err)
	}
	var names [][2]string
	for rows.Next() {
		var ns, rel string
		if err := rows.Scan(&ns, &rel); err != nil {
			t.Fatal(err)
		}
		names = append(names, [2]string{ns, rel})
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, n := range names {
		var sum *string
		var count int64
		if err := c.QueryRow(ctx, "SELECT md5(string_agg(t::text, ',' ORDER BY t::text)), count(*) FROM ONLY "+pgx.Identifier(n[:]).Sanitize()+" t").Scan(&sum, &count); err != nil {
			t.Fatalf("checksum %s: %s.%s: %v", db, n[0], n[1], err)
		}
		v := "empty"
		if sum != nil {
			v = *sum
		}
		out[n[0]+"."+n[1]] = fmt.Sprintf("%s/%d", v, count)
	}
	return out
}
