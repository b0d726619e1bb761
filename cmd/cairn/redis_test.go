package main

// Redis source tests: real redis-server processes (rdb/redistest) and a
// scripted fake master, driven through the cairn binary.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/internal/clitest"
	"github.com/cairn-backup/cairn/internal/rdb"
	"github.com/cairn-backup/cairn/internal/rdb/redistest"
	"github.com/cairn-backup/cairn/internal/source/redis"
	"github.com/cairn-backup/cairn/repo"
)

// redisCLI runs cairn against one repository.
type redisCLI struct {
	t    *testing.T
	repo string
	env  []string
}

func newRedisCLI(t *testing.T) *redisCLI {
	c := &redisCLI{t: t, repo: filepath.Join(t.TempDir(), "repo")}
	c.ok("init")
	return c
}

func (c *redisCLI) run(args ...string) result {
	c.t.Helper()
	r := (&clitest.Runner{Bin: cairnBin, Repo: c.repo, Env: append([]string{"CAIRN_PASSWORD=redis test password"}, c.env...), Timeout: 2 * time.Minute}).Run(c.t, nil, args...)
	return result{stdout: r.Stdout, stderr: r.Stderr, code: r.Code}
}

func (c *redisCLI) ok(args ...string) result {
	c.t.Helper()
	res := c.run(args...)
	if res.code != 0 {
		c.t.Fatalf("cairn %q: %s", args, res)
	}
	return res
}

// fails runs cairn, wants exit code code and stderr containing every want,
// and (for exit 1) no new snapshot.
func (c *redisCLI) fails(code int, want []string, args ...string) result {
	c.t.Helper()
	before := 0
	if code == 1 {
		before = len(c.snapshots())
	}
	res := c.run(args...)
	if res.code != code {
		c.t.Errorf("cairn %q: exit %d, want %d: %s", args, res.code, code, res)
	}
	for _, w := range want {
		if !strings.Contains(res.stderr, w) {
			c.t.Errorf("cairn %q: stderr lacks %q:\n%s", args, w, res.stderr)
		}
	}
	if after := len(c.snapshots()); code == 1 && after != before {
		c.t.Errorf("cairn %q failed but the snapshot count went from %d to %d", args, before, after)
	}
	return res
}

type redisSnap struct {
	ID      string        `json:"id"`
	Sources []repo.Source `json:"sources"`
}

func (c *redisCLI) snapshots() []redisSnap {
	c.t.Helper()
	var out []redisSnap
	res := c.ok("--json", "snapshots")
	if err := json.Unmarshal([]byte(res.stdout), &out); err != nil {
		c.t.Fatalf("snapshots --json: %v\n%s", err, res.stdout)
	}
	return out
}

// redisSource is the newest snapshot's redis source.
func (c *redisCLI) redisSource() repo.Source {
	c.t.Helper()
	sns := c.snapshots()
	if len(sns) == 0 {
		c.t.Fatal("no snapshot")
	}
	for _, s := range sns[len(sns)-1].Sources {
		if s.Kind == "redis" {
			return s
		}
	}
	c.t.Fatalf("the newest snapshot has no redis source: %+v", sns[len(sns)-1])
	return repo.Source{}
}

// keyspaceOf is INFO keyspace of a server.
func keyspaceOf(t *testing.T, s *redistest.Server) map[int]rdb.DBKeys {
	t.Helper()
	c, err := rdb.Dial(context.Background(), rdb.Options{Addr: s.Addr, Password: s.Password})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	info, err := c.Info("keyspace")
	if err != nil {
		t.Fatal(err)
	}
	return rdb.Keyspace(info)
}

// details decodes a source's recorded details.
func details(t *testing.T, s repo.Source) *redis.Details {
	t.Helper()
	d, err := redis.DetailsOf(s)
	if err != nil || d == nil {
		t.Fatalf("source %s: details %v (%v)", s.Name, d, err)
	}
	return d
}

// TestRedisRoundTrip backs up a server holding every data type through
// both transfer forms, and restores it both ways: a dump.rdb a fresh server
// starts from, and a live load into a running server. Every key's type,
// value and TTL must come back.
func TestRedisRoundTrip(t *testing.T) {
	for _, c := range []struct {
		form string
		args []string
	}{
		{rdb.FormLength, []string{"--repl-diskless-sync", "no"}},
		{rdb.FormEOF, []string{"--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0"}},
	} {
		t.Run(c.form, func(t *testing.T) {
			src := redistest.Start(t, c.args...)
			redistest.Populate(t, src, 3<<20)
			want := redistest.Dump(t, src.Addr, "")
			keyspace := keyspaceOf(t, src)
			cli := newRedisCLI(t)

			cli.ok("backup", "--redis", src.URL(), "--tag", "redis")
			s := cli.redisSource()
			if s.Status != "ok" || s.Name != "/redis/dump.rdb" || s.Size < 3<<20 {
				t.Errorf("source %+v", s)
			}
			d := details(t, s)
			if d.Transfer != c.form || d.Sync != "psync" || d.Method != "replication" || d.Server != src.Addr || d.RDBVersion < 9 ||
				!strings.HasPrefix(d.RedisVersion, "7.") || len(d.CRC64) != 16 || d.Size != int64(s.Size) || d.Aux["redis-ver"] != d.RedisVersion {
				t.Errorf("recorded %+v", d)
			}
			if !maps.Equal(d.Keyspace, keyspace) || !maps.Equal(d.RDBKeyspace, keyspace) || keyspace[5].Keys != 1 {
				t.Errorf("keyspace %v, RDB keyspace %v, want %v", d.Keyspace, d.RDBKeyspace, keyspace)
			}
			if s.Meta["keyspace"] != redis.FormatKeyspace(keyspace) || s.Meta["server"] != src.Addr || s.Meta["rdb_version"] != fmt.Sprint(d.RDBVersion) {
				t.Errorf("meta %v", s.Meta)
			}
			// The stored bytes are a valid RDB.
			dump := cli.ok("dump", "latest", "/redis/dump.rdb")
			if info, err := rdb.Validate(strings.NewReader(dump.stdout)); err != nil || !maps.Equal(info.Keys, keyspace) {
				t.Errorf("dump of the stored RDB: %v %v", info, err)
			}

			// A dump.rdb for a server to start from.
			dir := filepath.Join(t.TempDir(), "redis-data")
			res := cli.ok("restore", "latest", "--redis-rdb-dir", dir)
			if !strings.Contains(res.stdout, "appendonly") {
				t.Errorf("restore --redis-rdb-dir does not mention the appendonly caveat:\n%s", res.stdout)
			}
			fromFile := redistest.Start(t, "--dir", dir)
			redistest.Compare(t, want, redistest.Dump(t, fromFile.Addr, ""), time.Minute)

			// A live server, holding other data, loaded over replication.
			target := redistest.Start(t)
			target.Do(t, "SET", "stale", "must go")
			res = cli.ok("restore", "latest", "--redis-target", target.URL())
			for _, w := range []string{"KEYS BACKUP", "db0", "db1", "db5", "master again"} {
				if !strings.Contains(res.stdout, w) {
					t.Errorf("restore --redis-target output lacks %q:\n%s", w, res.stdout)
				}
			}
			if strings.Contains(res.stdout, "DIFFERS") {
				t.Errorf("key counts differ:\n%s", res.stdout)
			}
			redistest.Compare(t, want, redistest.Dump(t, target.Addr, ""), time.Minute)
			if role := target.Do(t, "ROLE").([]any)[0]; role != "master" {
				t.Errorf("target role %v after the restore", role)
			}
		})
	}
}

// TestRedisAuth: passwords, ACL users with and without the replication
// permissions, the optional source, and a target with a password.
func TestRedisAuth(t *testing.T) {
	src := redistest.Start(t, "--requirepass", "s3cret", "--repl-diskless-sync", "no")
	redistest.Populate(t, src, 64<<10)
	src.Do(t, "ACL", "SETUSER", "backup", "on", ">backup-pw", "-@all", "+psync", "+sync", "+replconf", "+ping", "+info")
	src.Do(t, "ACL", "SETUSER", "app", "on", ">app-pw", "~*", "+@all", "-psync", "-sync")
	want := redistest.Dump(t, src.Addr, src.Password)
	cli := newRedisCLI(t)
	addr := src.Addr

	cli.ok("backup", "--redis", "redis://:s3cret@"+addr)
	cli.ok("backup", "--redis", "redis://backup:backup-pw@"+addr)
	if d := details(t, cli.redisSource()); len(d.Keyspace) == 0 || !maps.Equal(d.RDBKeyspace, d.Keyspace) {
		t.Errorf("ACL user backup: recorded %+v", d)
	}
	withEnv := *cli
	withEnv.env = []string{"CAIRN_REDIS_PASSWORD=s3cret"}
	withEnv.ok("backup", "--redis", "redis://"+addr)

	cli.fails(1, []string{"needs a password", "CAIRN_REDIS_PASSWORD"}, "backup", "--redis", "redis://"+addr)
	cli.fails(1, []string{"WRONGPASS"}, "backup", "--redis", "redis://:wrong@"+addr)
	cli.fails(1, []string{"refused to send its RDB", "NOPERM", "+psync", "--redis-rdb-file", "--redis-optional"},
		"backup", "--redis", "redis://app:app-pw@"+addr)

	// Optional: the snapshot is written without Redis, exit 3.
	n := len(cli.snapshots())
	files := t.TempDir()
	if err := os.WriteFile(filepath.Join(files, "f"), []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	cli.fails(3, []string{"optional source skipped", "NOPERM"}, "backup", files, "--redis", "redis://app:app-pw@"+addr, "--redis-optional")
	if len(cli.snapshots()) != n+1 {
		t.Fatal("optional source: no snapshot written")
	}
	if s := cli.redisSource(); s.Status != "skipped" || !strings.Contains(s.Error, "NOPERM") {
		t.Errorf("skipped source recorded as %+v", s)
	}
	cli.fails(1, []string{"no Redis data", "skipped"}, "restore", "latest", "--redis-rdb-dir", t.TempDir())

	// A target with a password; the snapshot before the skipped one.
	target := redistest.Start(t, "--requirepass", "target-pw")
	sns := cli.snapshots()
	cli.ok("restore", sns[len(sns)-2].ID, "--redis-target", target.URL())
	redistest.Compare(t, want, redistest.Dump(t, target.Addr, target.Password), time.Minute)
	cli.fails(1, []string{"WRONGPASS"}, "restore", sns[0].ID, "--redis-target", "redis://:nope@"+target.Addr)
}

// TestRedisBrokenTransfers: a master that goes away, sends a corrupt or
// foreign payload, or stalls; each gives a clear error and no snapshot.
func TestRedisBrokenTransfers(t *testing.T) {
	src := redistest.Start(t)
	src.Do(t, "SET", "k", strings.Repeat("v", 5000))
	src.Do(t, "SAVE")
	good, err := os.ReadFile(filepath.Join(src.Dir, "dump.rdb"))
	if err != nil {
		t.Fatal(err)
	}
	corrupt := bytes.Clone(good)
	corrupt[len(corrupt)/2] ^= 0x20
	const mark = "cafebabecafebabecafebabecafebabecafebabe"
	full := "+FULLRESYNC " + mark + " 0\r\n"
	cli := newRedisCLI(t)
	for _, c := range []struct {
		name     string
		send     func(w *bufio.Writer)
		after    redistest.After
		want     []string
		optional bool // also try with --redis-optional
	}{
		{"length form cut", func(w *bufio.Writer) {
			fmt.Fprintf(w, "%s$%d\r\n", full, len(good))
			w.Write(good[:len(good)/2])
		}, redistest.Close, []string{"closed the connection", fmt.Sprintf("after %d of %d bytes", len(good)/2, len(good))}, true},
		{"eof form cut", func(w *bufio.Writer) {
			fmt.Fprintf(w, "%s$EOF:%s\r\n", full, mark)
			w.Write(good[:len(good)-20])
		}, redistest.Close, []string{"closed the connection", "before its end mark"}, false},
		{"length form corrupt", func(w *bufio.Writer) {
			fmt.Fprintf(w, "%s$%d\r\n", full, len(corrupt))
			w.Write(corrupt)
		}, redistest.Hold, []string{"CRC64 mismatch"}, false},
		{"eof form corrupt", func(w *bufio.Writer) {
			fmt.Fprintf(w, "%s\n\n$EOF:%s\r\n", full, mark)
			w.Write(corrupt)
			w.WriteString(mark)
		}, redistest.Hold, []string{"CRC64 mismatch"}, true},
		{"not an RDB", func(w *bufio.Writer) {
			fmt.Fprintf(w, "%s$%d\r\n%s", full, 100, strings.Repeat("x", 100))
		}, redistest.Hold, []string{"not an RDB"}, false},
		{"stalls", func(w *bufio.Writer) {
			fmt.Fprintf(w, "%s$%d\r\n", full, len(good))
			w.Write(good[:100])
		}, redistest.Hold, []string{"no answer for 1s"}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			cli.t = t
			f := redistest.StartFake(t, func(_ []string, w *bufio.Writer) redistest.After { c.send(w); return c.after })
			cli.fails(1, append(c.want, "no snapshot was written"), "backup", "--redis", f.URL(), "--redis-timeout", "1s")
			if !c.optional {
				return
			}
			// Optional: written without Redis, exit 3. (The partial stream
			// still leaves a file node in the tree; the source says skipped.)
			cli.fails(3, c.want, "backup", "--redis", f.URL(), "--redis-timeout", "1s", "--redis-optional")
			if s := cli.redisSource(); s.Status != "skipped" || !strings.Contains(s.Error, c.want[0]) {
				t.Errorf("optional broken source recorded as %+v", s)
			}
		})
	}
	cli.t = t

	// A real server killed while it sends its RDB (diskless, 50 ms per key).
	big := redistest.Start(t, "--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0", "--rdb-key-save-delay", "50000", "--rdbcompression", "no")
	for i := range 40 {
		big.Do(t, "SET", fmt.Sprint("big", i), strings.Repeat(fmt.Sprint(i), 64<<10))
	}
	stop, killed := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(killed)
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			c, err := redistest.Dial(big.Addr, "", "")
			if err != nil {
				return
			}
			info, _ := c.Do("INFO")
			c.Close()
			// The child streams the RDB to the replica while it runs.
			if s, _ := info.(string); strings.Contains(s, "slave0:") && strings.Contains(s, "rdb_bgsave_in_progress:1") {
				time.Sleep(200 * time.Millisecond)
				big.Kill()
				return
			}
		}
	}()
	cli.fails(1, []string{"closed the connection", "bytes of the RDB", "no snapshot was written"}, "backup", "--redis", big.URL())
	close(stop)
	<-killed
}

// TestRedisRDBFile backs up a saved dump.rdb and refuses a damaged one.
func TestRedisRDBFile(t *testing.T) {
	src := redistest.Start(t)
	redistest.Populate(t, src, 64<<10)
	src.Do(t, "SAVE")
	keyspace := keyspaceOf(t, src)
	path := filepath.Join(src.Dir, "dump.rdb")
	cli := newRedisCLI(t)
	cli.ok("backup", "--redis-rdb-file", path)
	if d := details(t, cli.redisSource()); d.Method != "file" || d.File != path || !maps.Equal(d.RDBKeyspace, keyspace) || d.Keyspace != nil || d.RedisVersion == "" {
		t.Errorf("recorded %+v, want keyspace %v", d, keyspace)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(t.TempDir(), "dump.rdb")
	data[len(data)-3] ^= 1
	if err := os.WriteFile(bad, data, 0o644); err != nil {
		t.Fatal(err)
	}
	cli.fails(1, []string{"CRC64 mismatch", "no snapshot was written"}, "backup", "--redis-rdb-file", bad)
	if err := os.WriteFile(bad, data[:len(data)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	cli.fails(1, []string{"invalid RDB"}, "backup", "--redis-rdb-file", bad)
	cli.fails(1, []string{"no such file"}, "backup", "--redis-rdb-file", filepath.Join(t.TempDir(), "missing.rdb"))
	cli.fails(1, []string{"exclude each other"}, "backup", "--redis-rdb-file", path, "--redis", src.URL())

	// Restore refusals: a replica target is left alone; a snapshot
	// without Redis has nothing to restore.
	master := redistest.Start(t)
	replica := redistest.Start(t)
	replica.Do(t, "REPLICAOF", "127.0.0.1", master.Port)
	cli.fails(1, []string{"is a replica of", "not changed"}, "restore", "latest", "--redis-target", replica.URL())
	if role := replica.Do(t, "ROLE").([]any)[0]; role != "slave" {
		t.Errorf("refused target changed its role to %v", role)
	}
	files := t.TempDir()
	cli.ok("backup", files)
	cli.fails(1, []string{"has no Redis data"}, "restore", "latest", "--redis-rdb-dir", t.TempDir())
}
