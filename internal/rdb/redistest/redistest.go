// Package redistest starts throwaway redis-server processes for tests and
// compares their data sets key by key. It speaks RESP with its own small
// client, independent of the code under test.
package redistest

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Server is a running redis-server bound to 127.0.0.1.
type Server struct {
	Addr     string // 127.0.0.1:PORT
	Port     int
	Dir      string // its working directory (dump.rdb lives here)
	Password string // the --requirepass argument, if any
	cmd      *exec.Cmd
	exited   chan struct{}
	conn     *Conn
}

// Start runs redis-server --port P --bind 127.0.0.1 --save "" --appendonly no
// --dir TEMPDIR followed by args (which may override them, e.g. --dir), waits
// until it answers, and stops it when the test ends. Without redis-server
// the test is skipped, or fails when CI=true.
func Start(t testing.TB, args ...string) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		msg := "redis-server is not installed: run scripts/install-deps.sh (Debian package redis-server)"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	dir := t.TempDir()
	for attempt := 0; ; attempt++ {
		s, err := start(t, bin, dir, args)
		if err == nil {
			return s
		}
		if attempt == 3 {
			t.Fatal(err)
		}
	}
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func start(t testing.TB, bin, dir string, extra []string) (*Server, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	s := &Server{Addr: fmt.Sprintf("127.0.0.1:%d", port), Port: port, Dir: dir, exited: make(chan struct{})}
	args := []string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", dir, "--logfile", filepath.Join(dir, "redis.log")}
	args = append(args, extra...)
	for i, a := range extra {
		if i+1 < len(extra) {
			switch a {
			case "--requirepass":
				s.Password = extra[i+1]
			case "--dir":
				s.Dir = extra[i+1]
			}
		}
	}
	s.cmd = exec.Command(bin, args...)
	if err := s.cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		_ = s.cmd.Wait()
		close(s.exited)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if s.ping() {
			break
		}
		select {
		case <-s.exited:
			return nil, fmt.Errorf("redis-server %s exited at start:\n%s", strings.Join(args, " "), s.Log())
		default:
		}
		if time.Now().After(deadline) {
			s.Kill()
			return nil, fmt.Errorf("redis-server on port %d did not answer within 10 s:\n%s", port, s.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Cleanup(func() {
		if s.conn != nil {
			s.conn.Close()
		}
		s.Kill()
		if t.Failed() {
			t.Logf("redis-server %s log:\n%s", s.Addr, lastLines(s.Log(), 30))
		}
	})
	return s, nil
}

// ping reports whether the server answers and has finished loading its
// data set (an authentication error counts as an answer; LOADING does not,
// since a server still loading dump.rdb refuses most commands).
func (s *Server) ping() bool {
	c, err := Dial(s.Addr, "", "")
	if err != nil {
		return false
	}
	defer c.Close()
	_, err = c.Do("PING")
	var re Error
	if errors.As(err, &re) && strings.HasPrefix(string(re), "LOADING") {
		return false
	}
	return err == nil || errors.As(err, &re)
}

// Log returns the server's log file.
func (s *Server) Log() string {
	b, _ := os.ReadFile(filepath.Join(s.Dir, "redis.log"))
	return string(b)
}

// Kill stops the server at once (SIGKILL) and waits for it.
func (s *Server) Kill() {
	if s.cmd.Process != nil {
		_ = s.cmd.Process.Kill()
	}
	<-s.exited
}

// URL is redis://[:PASSWORD@]127.0.0.1:PORT.
func (s *Server) URL() string {
	if s.Password != "" {
		return fmt.Sprintf("redis://:%s@%s", s.Password, s.Addr)
	}
	return "redis://" + s.Addr
}

// Do runs one command on a shared connection and fails the test on error.
func (s *Server) Do(t testing.TB, args ...any) any {
	t.Helper()
	if s.conn == nil {
		c, err := Dial(s.Addr, "", s.Password)
		if err != nil {
			t.Fatal(err)
		}
		s.conn = c
	}
	v, err := s.conn.Do(args...)
	if err != nil {
		t.Fatalf("redis %s: %v: %v", s.Addr, args, err)
	}
	return v
}

// Error is an error reply.
type Error string

func (e Error) Error() string { return string(e) }

// Conn is a plain RESP2 connection.
type Conn struct {
	c  net.Conn
	br *bufio.Reader
}

// Dial connects and, with a password, authenticates (as user if not empty).
func Dial(addr, user, password string) (*Conn, error) {
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	c := &Conn{c: nc, br: bufio.NewReader(nc)}
	if password != "" {
		args := []any{"AUTH", password}
		if user != "" {
			args = []any{"AUTH", user, password}
		}
		if _, err := c.Do(args...); err != nil {
			nc.Close()
			return nil, err
		}
	}
	return c, nil
}

// Close closes the connection.
func (c *Conn) Close() error { return c.c.Close() }

// Do sends a command (arguments formatted with %v, []byte as is) and returns
// its reply: string, int64, nil or []any; error replies are Error.
func (c *Conn) Do(args ...any) (any, error) {
	_ = c.c.SetDeadline(time.Now().Add(30 * time.Second))
	var b []byte
	b = fmt.Appendf(b, "*%d\r\n", len(args))
	for _, a := range args {
		var s []byte
		switch v := a.(type) {
		case []byte:
			s = v
		default:
			s = fmt.Append(nil, v)
		}
		b = fmt.Appendf(b, "$%d\r\n", len(s))
		b = append(b, s...)
		b = append(b, '\r', '\n')
	}
	if _, err := c.c.Write(b); err != nil {
		return nil, err
	}
	return c.read()
}

func (c *Conn) read() (any, error) {
	line, err := c.br.ReadString('\n')
	if err != nil {
		return nil, err
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" {
		return nil, errors.New("empty reply line")
	}
	switch line[0] {
	case '+':
		return line[1:], nil
	case '-':
		return nil, Error(line[1:])
	case ':':
		return strconv.ParseInt(line[1:], 10, 64)
	case '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < 0 {
			return nil, err
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(c.br, buf); err != nil {
			return nil, err
		}
		return string(buf[:n]), nil
	case '*':
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < 0 {
			return nil, err
		}
		out := make([]any, n)
		for i := range out {
			if out[i], err = c.read(); err != nil {
				var re Error
				if !errors.As(err, &re) {
					return nil, err
				}
				out[i] = re
			}
		}
		return out, nil
	}
	return nil, fmt.Errorf("unexpected reply %q", line)
}

// Key is one key's content in canonical form.
type Key struct {
	Type  string
	Value string // canonical text of the value (sorted where Redis has no order)
	PTTL  int64  // -1 without TTL
}

// Dump reads every key of databases 0 to 15 as "DB/NAME" -> Key, and the
// function libraries as "-/functions".
func Dump(t testing.TB, addr, password string) map[string]Key {
	t.Helper()
	c, err := Dial(addr, "", password)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	must := func(args ...any) any {
		t.Helper()
		v, err := c.Do(args...)
		if err != nil {
			t.Fatalf("redis %s: %v: %v", addr, args, err)
		}
		return v
	}
	out := map[string]Key{}
	if libs := must("FUNCTION", "LIST", "WITHCODE"); len(strs(libs)) > 0 {
		out["-/functions"] = Key{Type: "functions", Value: fmt.Sprint(libs), PTTL: -1}
	}
	for db := range 16 {
		must("SELECT", db)
		for _, k := range strs(must("KEYS", "*")) {
			typ := must("TYPE", k).(string)
			var val string
			switch typ {
			case "string":
				val = must("GET", k).(string)
			case "list":
				val = fmt.Sprintf("%q", strs(must("LRANGE", k, 0, -1)))
			case "set":
				m := strs(must("SMEMBERS", k))
				sort.Strings(m)
				val = fmt.Sprintf("%q", m)
			case "zset":
				val = fmt.Sprintf("%q", strs(must("ZRANGE", k, 0, -1, "WITHSCORES")))
			case "hash":
				kv := strs(must("HGETALL", k))
				pairs := make([]string, 0, len(kv)/2)
				for i := 0; i+1 < len(kv); i += 2 {
					pairs = append(pairs, fmt.Sprintf("%q=%q", kv[i], kv[i+1]))
				}
				sort.Strings(pairs)
				val = strings.Join(pairs, ",")
			case "stream":
				val = fmt.Sprintf("%v|groups:%v", must("XRANGE", k, "-", "+"), must("XINFO", "GROUPS", k))
			default:
				val = fmt.Sprintf("%v", must("DUMP", k))
			}
			out[fmt.Sprintf("%d/%s", db, k)] = Key{Type: typ, Value: val, PTTL: must("PTTL", k).(int64)}
		}
	}
	return out
}

func strs(v any) []string {
	a, _ := v.([]any)
	out := make([]string, len(a))
	for i, x := range a {
		out[i] = fmt.Sprint(x)
	}
	return out
}

// Compare fails the test unless got has exactly want's keys with the same
// types and values, and TTLs within slack of each other.
func Compare(t testing.TB, want, got map[string]Key, slack time.Duration) {
	t.Helper()
	if len(want) == 0 {
		t.Fatal("redistest.Compare: the reference data set is empty")
	}
	bad := 0
	report := func(format string, args ...any) {
		t.Helper()
		if bad++; bad <= 20 {
			t.Errorf(format, args...)
		}
	}
	names := make([]string, 0, len(want))
	for k := range want {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		w := want[k]
		g, ok := got[k]
		switch {
		case !ok:
			report("key %s (%s) is missing", k, w.Type)
		case g.Type != w.Type:
			report("key %s: type %s, want %s", k, g.Type, w.Type)
		case g.Value != w.Value:
			report("key %s (%s): value %q (%d bytes), want %q (%d bytes)", k, w.Type, clip(g.Value), len(g.Value), clip(w.Value), len(w.Value))
		case (g.PTTL < 0) != (w.PTTL < 0) || abs(g.PTTL-w.PTTL) > slack.Milliseconds():
			report("key %s: PTTL %d, want %d (within %s)", k, g.PTTL, w.PTTL, slack)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			report("unexpected key %s", k)
		}
	}
	if bad > 20 {
		t.Errorf("... %d differences in all", bad)
	}
}

func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

func abs(x int64) int64 {
	if x < 0 {
		return -x
	}
	return x
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Populate stores keys of every type, in databases 0, 1 and 5: binary and
// integer strings, a random (incompressible) and a repetitive value of
// large bytes each, small and large hashes, lists, sets (integers, strings)
// and sorted sets (so both the compact and the table encodings appear), a
// stream with a consumer group and pending entries, a HyperLogLog, keys
// with TTLs in seconds and milliseconds, and a function library.
func Populate(t testing.TB, s *Server, large int) {
	t.Helper()
	rng := rand.New(rand.NewChaCha8([32]byte{42}))
	random := make([]byte, large)
	for i := range random {
		random[i] = byte(rng.Uint32())
	}
	do := func(args ...any) {
		t.Helper()
		s.Do(t, args...)
	}
	many := func(cmd, key string, n int, item func(i int) []any) {
		t.Helper()
		args := []any{cmd, key}
		for i := range n {
			args = append(args, item(i)...)
		}
		do(args...)
	}
	do("SELECT", 0)
	do("SET", "str:plain", "hello")
	do("SET", "str:binary", []byte("\x00\r\n\xff binary \x01"))
	do("SET", "str:empty", "")
	do("SET", "int:small", 42)
	do("SET", "int:negative", -7)
	do("SET", "int:large", int64(1)<<40)
	do("SET", "str:large-random", random)
	do("SET", "str:large-repetitive", strings.Repeat("cairn ", large/6))
	many("HSET", "hash:small", 5, func(i int) []any { return []any{fmt.Sprint("f", i), fmt.Sprint("v", i)} })
	many("HSET", "hash:large", 1000, func(i int) []any { return []any{fmt.Sprint("field", i), strings.Repeat("x", i%100)} })
	many("RPUSH", "list:small", 5, func(i int) []any { return []any{fmt.Sprint("item", i)} })
	many("RPUSH", "list:large", 5000, func(i int) []any { return []any{fmt.Sprint(i * 7)} })
	many("SADD", "set:ints", 50, func(i int) []any { return []any{i * 3} })
	many("SADD", "set:strings", 10, func(i int) []any { return []any{fmt.Sprint("member", i)} })
	many("SADD", "set:large", 1000, func(i int) []any { return []any{fmt.Sprint("m", i)} })
	many("ZADD", "zset:small", 5, func(i int) []any { return []any{float64(i) + 0.5, fmt.Sprint("z", i)} })
	many("ZADD", "zset:large", 1000, func(i int) []any { return []any{i * 2, fmt.Sprint("member", i)} })
	for i := range 20 {
		do("XADD", "stream:events", fmt.Sprintf("%d-1", 1000+i), "n", i, "kind", "test")
	}
	do("XGROUP", "CREATE", "stream:events", "workers", "0")
	do("XREADGROUP", "GROUP", "workers", "alice", "COUNT", 3, "STREAMS", "stream:events", ">")
	do("PFADD", "hll:visitors", "a", "b", "c", "d")
	do("SET", "ttl:seconds", "expires in an hour")
	do("EXPIRE", "ttl:seconds", 3600)
	do("SET", "ttl:millis", "expires in a day")
	do("PEXPIRE", "ttl:millis", 86400000)
	many("HSET", "ttl:hash", 3, func(i int) []any { return []any{fmt.Sprint("f", i), i} })
	do("EXPIRE", "ttl:hash", 7200)

	// A function library: stored in the RDB by an opcode of its own.
	do("FUNCTION", "LOAD", "REPLACE", "#!lua name=cairntest\nredis.register_function('cairn_answer', function() return 42 end)")

	do("SELECT", 1)
	do("SET", "db1:a", "one")
	many("RPUSH", "db1:list", 3, func(i int) []any { return []any{i} })
	do("SET", "db1:ttl", "soon-ish")
	do("EXPIRE", "db1:ttl", 600)

	do("SELECT", 5)
	many("ZADD", "db5:zset", 3, func(i int) []any { return []any{i, fmt.Sprint("m", i)} })
	do("SELECT", 0)
}
