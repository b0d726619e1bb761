package rdb

// Tests against real redis-server processes (skipped without one, failed
// when CI=true).

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/internal/rdb/redistest"
)

func dial(t *testing.T, s *redistest.Server) *Client {
	t.Helper()
	c, err := Dial(context.Background(), Options{Addr: s.Addr, Password: s.Password, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func infoKeys(t *testing.T, s *redistest.Server) map[int]DBKeys {
	t.Helper()
	c := dial(t, s)
	info, err := c.Info("keyspace")
	if err != nil {
		t.Fatal(err)
	}
	return Keyspace(info)
}

// fetchRDB runs a replication sync against a real server.
func fetchRDB(t *testing.T, s *redistest.Server) (*Sync, []byte) {
	t.Helper()
	c := dial(t, s)
	sy, err := c.StartSync()
	if err != nil {
		t.Fatal(err)
	}
	defer sy.Close()
	data, err := io.ReadAll(sy)
	if err != nil {
		t.Fatal(err)
	}
	return sy, data
}

// save runs SAVE, waiting out a background save still running.
func save(t *testing.T, s *redistest.Server) {
	t.Helper()
	c, err := redistest.Dial(s.Addr, "", s.Password)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		_, err := c.Do("SAVE")
		if err == nil {
			return
		}
		if !strings.Contains(err.Error(), "in progress") || time.Now().After(deadline) {
			t.Fatalf("SAVE: %v", err)
		}
	}
}

func TestRedisServerSync(t *testing.T) {
	for _, c := range []struct {
		form string
		args []string
	}{
		{FormLength, []string{"--repl-diskless-sync", "no"}},
		{FormEOF, []string{"--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0"}},
	} {
		t.Run(c.form, func(t *testing.T) {
			s := redistest.Start(t, c.args...)
			redistest.Populate(t, s, 1<<20)
			want := infoKeys(t, s)
			sy, data := fetchRDB(t, s)
			info, err := sy.Result()
			if err != nil {
				t.Fatal(err)
			}
			if sy.Form != c.form || sy.Method != "psync" {
				t.Errorf("form %s method %s, want %s psync", sy.Form, sy.Method, c.form)
			}
			if !maps.Equal(info.Keys, want) || info.CountErr != nil {
				t.Errorf("keys in the RDB %v (%v), INFO keyspace %v", info.Keys, info.CountErr, want)
			}
			if info.Size != int64(len(data)) || info.Checksum == 0 || info.Aux["redis-ver"] == "" {
				t.Errorf("info %+v", info)
			}
			// The same data set saved to disk validates the same way (once
			// the diskless child is gone, SAVE works).
			save(t, s)
			f, err := os.Open(filepath.Join(s.Dir, "dump.rdb"))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if info, err := Validate(f); err != nil || !maps.Equal(info.Keys, want) {
				t.Errorf("dump.rdb: %v %v", info, err)
			}
		})
	}
}

func TestRedisServerRefusesWithoutPermission(t *testing.T) {
	s := redistest.Start(t, "--requirepass", "admin")
	s.Do(t, "ACL", "SETUSER", "reader", "on", ">pw", "~*", "+@read", "+ping", "+info", "+replconf")
	c, err := Dial(context.Background(), Options{Addr: s.Addr, User: "reader", Password: "pw"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.StartSync()
	var re *RefusedError
	if !errors.As(err, &re) || !strings.HasPrefix(re.PSYNC, "NOPERM") || !strings.HasPrefix(re.SYNC, "NOPERM") {
		t.Fatalf("user without sync permission: %v", err)
	}
	// Wrong password and no password.
	if _, err := Dial(context.Background(), Options{Addr: s.Addr, User: "reader", Password: "wrong"}); err == nil || !strings.Contains(err.Error(), "WRONGPASS") {
		t.Errorf("wrong password: %v", err)
	}
	c2, err := Dial(context.Background(), Options{Addr: s.Addr})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if _, err := c2.StartSync(); err == nil || !strings.Contains(err.Error(), "NOAUTH") {
		t.Errorf("no password: %v", err)
	}
}

func TestRedisServerLoad(t *testing.T) {
	src := redistest.Start(t, "--repl-diskless-sync", "no")
	redistest.Populate(t, src, 256<<10)
	want := redistest.Dump(t, src.Addr, "")
	sy, data := fetchRDB(t, src)
	srcInfo, _ := sy.Result()

	target := redistest.Start(t, "--requirepass", "target-pw")
	target.Do(t, "SET", "old-key", "replaced by the restore")
	target.Do(t, "SELECT", 9)
	target.Do(t, "SET", "old-key-9", "also replaced")
	tc := dial(t, target)
	var logs []string
	res, err := Load(context.Background(), tc, LoadOptions{
		Size:    int64(len(data)),
		Write:   func(_ context.Context, w io.Writer) error { _, err := w.Write(data); return err },
		Version: srcInfo.Version,
		Timeout: 10 * time.Second,
		Log:     func(f string, a ...any) { logs = append(logs, f) },
	})
	if err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(res.Keys, srcInfo.Keys) {
		t.Errorf("target keys %v, RDB keys %v", res.Keys, srcInfo.Keys)
	}
	if !strings.HasPrefix(res.Advertised, "127.0.0.1:") || res.RDB == nil || res.RDB.Size != int64(len(data)) {
		t.Errorf("result %+v", res)
	}
	redistest.Compare(t, want, redistest.Dump(t, target.Addr, target.Password), time.Minute)
	info, err := tc.Info("replication")
	if err != nil || info["role"] != "master" {
		t.Errorf("target role %q after the restore (%v)", info["role"], err)
	}
	// Writable again.
	target.Do(t, "SET", "after", "restore")
}

// TestRedisServerLoadIntruder: a client that connects to cairn's port
// before the target and asks for the RDB (with no password, or a wrong
// one) gets nothing, and the restore still succeeds.
func TestRedisServerLoadIntruder(t *testing.T) {
	src := redistest.Start(t, "--repl-diskless-sync", "no")
	redistest.Populate(t, src, 64<<10)
	sy, data := fetchRDB(t, src)
	srcInfo, _ := sy.Result()
	target := redistest.Start(t)
	tc := dial(t, target)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	listen := ln.Addr().String()
	ln.Close()

	// The intruder connects once cairn listens and before the target is
	// told to replicate (the first progress line), and asks for the RDB.
	var reply string
	intrude := func() {
		c, err := net.Dial("tcp", listen)
		if err != nil {
			reply = "never connected: " + err.Error()
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		_, _ = io.WriteString(c, "AUTH guessed\r\nREPLCONF listening-port 1\r\nPSYNC ? -1\r\n")
		b, _ := io.ReadAll(c)
		reply = string(b)
	}
	res, err := Load(context.Background(), tc, LoadOptions{Listen: listen, Size: int64(len(data)), Version: srcInfo.Version,
		Write: func(_ context.Context, w io.Writer) error { _, err := w.Write(data); return err }, Timeout: 10 * time.Second,
		Log: func(f string, _ ...any) {
			if strings.HasPrefix(f, "cairn serves the RDB") {
				intrude()
			}
		}})
	if err != nil {
		t.Fatalf("%v\n%s", err, target.Log())
	}
	if strings.Contains(reply, "FULLRESYNC") || strings.Contains(reply, "REDIS") || !strings.Contains(reply, "NOAUTH") {
		t.Fatalf("the intruder got %q", reply)
	}
	if !maps.Equal(res.Keys, srcInfo.Keys) {
		t.Errorf("target keys %v, RDB keys %v", res.Keys, srcInfo.Keys)
	}
	if res.Denied != 1 {
		t.Errorf("denied %d connections, want 1", res.Denied)
	}
	if v, _ := tc.Do("CONFIG", "GET", "masterauth"); fmt.Sprint(v) != "[masterauth ]" {
		t.Errorf("masterauth not put back: %v", v)
	}
}

func TestRedisServerLoadRefusals(t *testing.T) {
	data := rdbFile(10, true, sample)
	write := func(_ context.Context, w io.Writer) error { _, err := w.Write(data); return err }

	// A replica is refused and left alone.
	master := redistest.Start(t)
	replica := redistest.Start(t)
	replica.Do(t, "REPLICAOF", "127.0.0.1", master.Port)
	_, err := Load(context.Background(), dial(t, replica), LoadOptions{Size: int64(len(data)), Write: write})
	var rt *RefusedTargetError
	if !errors.As(err, &rt) || !strings.Contains(err.Error(), "is a replica of 127.0.0.1") {
		t.Errorf("replica target: %v", err)
	}
	// So is a master with replicas (once the replica is connected).
	deadline := time.Now().Add(10 * time.Second)
	for {
		info, _ := dial(t, master).Info("replication")
		if info["connected_slaves"] == "1" || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	_, err = Load(context.Background(), dial(t, master), LoadOptions{Size: int64(len(data)), Write: write})
	if !errors.As(err, &rt) || !strings.Contains(err.Error(), "1 replica(s)") {
		t.Errorf("master with a replica: %v", err)
	}
	// A user without REPLICAOF.
	plain := redistest.Start(t)
	plain.Do(t, "ACL", "SETUSER", "app", "on", ">pw", "~*", "+@all", "-replicaof", "-slaveof")
	c, err := Dial(context.Background(), Options{Addr: plain.Addr, User: "app", Password: "pw"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = Load(context.Background(), c, LoadOptions{Size: int64(len(data)), Write: write})
	if err == nil || !strings.Contains(err.Error(), "NOPERM") || !strings.Contains(err.Error(), "not changed") {
		t.Errorf("user without replicaof: %v", err)
	}
}

// A stored RDB that does not validate never reaches the target whole: its
// last bytes are held back, the transfer is cut, and the target keeps its
// data (a Redis replica exits on an RDB it cannot load).
func TestRedisServerLoadCorrupt(t *testing.T) {
	src := redistest.Start(t, "--repl-diskless-sync", "no")
	redistest.Populate(t, src, 64<<10)
	_, data := fetchRDB(t, src)
	data[len(data)/2] ^= 0x40

	target := redistest.Start(t)
	target.Do(t, "SET", "keep", "me")
	tc := dial(t, target)
	_, err := Load(context.Background(), tc, LoadOptions{
		Size:    int64(len(data)),
		Write:   func(_ context.Context, w io.Writer) error { _, err := w.Write(data); return err },
		Timeout: 10 * time.Second,
	})
	if err == nil || !strings.Contains(err.Error(), "CRC64 mismatch") {
		t.Fatalf("corrupt RDB: %v", err)
	}
	if v := target.Do(t, "GET", "keep"); v != "me" {
		t.Errorf("the target lost its data: GET keep = %v", v)
	}
	if info, _ := tc.Info("replication"); info["role"] != "master" {
		t.Errorf("target role %q", info["role"])
	}
}

// A target that cannot load what it receives drops the link (and cannot
// connect again: cairn stopped listening); the restore stops and the
// target is a master again.
func TestRedisServerLoadFails(t *testing.T) {
	target := redistest.Start(t)
	tc := dial(t, target)
	info, _ := tc.Info("server")
	// A valid RDB of a newer format than the server reads.
	data := rdbFile(maxVersion, true, sample)
	if !versionLess(info["redis_version"], minServer[maxVersion]) {
		t.Skipf("redis %s reads RDB %d", info["redis_version"], maxVersion)
	}
	_, err := Load(context.Background(), tc, LoadOptions{
		Size:    int64(len(data)),
		Write:   func(_ context.Context, w io.Writer) error { _, err := w.Write(data); return err },
		Timeout: 10 * time.Second,
	})
	if err == nil || !strings.Contains(err.Error(), "could not load it") || !strings.Contains(err.Error(), "switched back to a master") {
		t.Fatalf("load of an unreadable RDB: %v", err)
	}
	if info, _ := tc.Info("replication"); info["role"] != "master" {
		t.Errorf("target role %q", info["role"])
	}
	// With the version known, the target is refused before it is touched.
	_, err = Load(context.Background(), tc, LoadOptions{Size: int64(len(data)), Version: maxVersion,
		Write: func(context.Context, io.Writer) error { return nil }})
	var rt *RefusedTargetError
	if !errors.As(err, &rt) || !strings.Contains(err.Error(), "cannot read RDB version") {
		t.Errorf("version check: %v", err)
	}
}

// TestWriteSeeds rewrites testdata/small.rdb, the real RDB the fuzz seeds
// come from (run with CAIRN_WRITE_SEEDS=1).
func TestWriteSeeds(t *testing.T) {
	if os.Getenv("CAIRN_WRITE_SEEDS") == "" {
		t.Skip("set CAIRN_WRITE_SEEDS=1 to rewrite testdata/small.rdb")
	}
	s := redistest.Start(t)
	s.Do(t, "SET", "a", "b")
	s.Do(t, "HSET", "h", "f", "v")
	s.Do(t, "RPUSH", "l", 1, 2, 3)
	s.Do(t, "EXPIRE", "a", 3600)
	s.Do(t, "XADD", "s", "1-1", "k", "v")
	s.Do(t, "SELECT", 2)
	s.Do(t, "SADD", "set", "x", "y")
	_, data := fetchRDB(t, s)
	if err := os.WriteFile(filepath.Join("testdata", "small.rdb"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(data, []byte("REDIS")) {
		t.Fatal("not an RDB")
	}
}
