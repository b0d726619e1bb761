package main

import (
	"bufio"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// respConn is a minimal pipelining RESP2 client: enough to fill a server.
type respConn struct {
	c       net.Conn
	r       *bufio.Reader
	w       *bufio.Writer
	pending int
}

func dialRedis(addr string, wait time.Duration) (*respConn, error) {
	deadline := time.Now().Add(wait)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			rc := &respConn{c: c, r: bufio.NewReaderSize(c, 64<<10), w: bufio.NewWriterSize(c, 256<<10)}
			if _, err = rc.do("PING"); err == nil {
				return rc, nil
			}
			c.Close()
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("redis at %s: %w", addr, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// send queues a command; flush sends the queue and reads the replies.
func (c *respConn) send(args ...string) {
	c.w.WriteString("*" + strconv.Itoa(len(args)) + "\r\n")
	for _, a := range args {
		c.w.WriteString("$" + strconv.Itoa(len(a)) + "\r\n")
		c.w.WriteString(a)
		c.w.WriteString("\r\n")
	}
	c.pending++
}

func (c *respConn) flush() error {
	if err := c.w.Flush(); err != nil {
		return err
	}
	var first error
	for ; c.pending > 0; c.pending-- {
		if _, err := c.reply(); err != nil && first == nil {
			first = err
			var re redisError
			if !errors.As(err, &re) {
				return err // the connection is broken
			}
		}
	}
	return first
}

func (c *respConn) do(args ...string) (string, error) {
	c.send(args...)
	if err := c.w.Flush(); err != nil {
		return "", err
	}
	c.pending--
	return c.reply()
}

type redisError string

func (e redisError) Error() string { return "redis: " + string(e) }

func (c *respConn) reply() (string, error) {
	line, err := c.r.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" {
		return "", errors.New("redis: empty reply line")
	}
	switch line[0] {
	case '+', ':':
		return line[1:], nil
	case '-':
		return "", redisError(line[1:])
	case '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < 0 {
			return "", err
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(c.r, buf); err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	case '*':
		n, err := strconv.Atoi(line[1:])
		if err != nil {
			return "", err
		}
		var parts []string
		for i := 0; i < n; i++ {
			s, err := c.reply()
			if err != nil {
				return "", err
			}
			parts = append(parts, s)
		}
		return strings.Join(parts, "\n"), nil
	}
	return "", fmt.Errorf("redis: unexpected reply %q", line)
}

// redisInfo describes the Redis corpus.
type redisInfo struct {
	Keys            int     `json:"keys_day1"`
	Changed         int     `json:"keys_changed_day2"`
	Added           int     `json:"keys_added_day2"`
	Deleted         int     `json:"keys_deleted_day2"`
	RedisVersion    string  `json:"redis_version"`
	UsedMemory      string  `json:"used_memory_day1"`
	RDBBytesDay1    int64   `json:"rdb_bytes_day1"`
	RDBBytesDay2    int64   `json:"rdb_bytes_day2"`
	GenerateSeconds float64 `json:"generate_seconds"`
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

var userAgents = []string{
	"Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0",
	"Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
	"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/139.0.0.0 Safari/537.36",
}

// genRedis fills a redis-server with session hashes and cache strings (with
// TTLs), saves day 1, changes about 2% of the keys, adds 1% and deletes
// 0.5%, and saves day 2.
func (b *bench) genRedis(dir string) error {
	t0 := time.Now()
	c, stop, err := b.startRedisServer(dir)
	if err != nil {
		return err
	}
	defer stop()

	n := b.prof.RedisKeys
	info := redisInfo{Keys: n}
	rng, cc := newRand(7)
	g := &redisGen{c: c, rng: rng, cc: cc, now: time.Now().Unix()}
	save := func(file string) (int64, error) {
		if _, err := c.do("SAVE"); err != nil {
			return 0, err
		}
		p := filepath.Join(dir, file)
		if err := os.Rename(filepath.Join(dir, "dump.rdb"), p); err != nil {
			return 0, err
		}
		return fileSize(p), nil
	}
	b.logf("   redis: writing %d keys ...", n)
	keys, err := g.day1(n)
	if err != nil {
		return err
	}
	if s, err := c.do("INFO", "server"); err == nil {
		info.RedisVersion = infoField(s, "redis_version")
	}
	if s, err := c.do("INFO", "memory"); err == nil {
		info.UsedMemory = infoField(s, "used_memory_human")
	}
	if info.RDBBytesDay1, err = save("day1.rdb"); err != nil {
		return err
	}
	b.logf("   redis: day 1 saved (%s); changing keys ...", fmtBytes(info.RDBBytesDay1))
	info.Changed, info.Added, info.Deleted = n*2/100, n/100, n/200
	if err := g.day2(keys, info.Changed, info.Added, info.Deleted); err != nil {
		return err
	}
	if info.RDBBytesDay2, err = save("day2.rdb"); err != nil {
		return err
	}
	_, _ = c.do("SHUTDOWN", "NOSAVE")
	info.GenerateSeconds = time.Since(t0).Seconds()
	return writeJSONFile(filepath.Join(dir, "info.json"), info)
}

// startRedisServer starts a redis-server without persistence that saves
// into dir, and connects to it; stop ends it.
func (b *bench) startRedisServer(dir string) (c *respConn, stop func(), err error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, nil, errors.New("redis-server not found: run scripts/install-deps.sh")
	}
	port, err := freePort()
	if err != nil {
		return nil, nil, err
	}
	cmd := exec.CommandContext(b.ctx, bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", dir, "--dbfilename", "dump.rdb", "--logfile", filepath.Join(dir, "redis.log"))
	if err := cmd.Start(); err != nil {
		return nil, nil, err
	}
	kill := func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		os.Remove(filepath.Join(dir, "redis.log"))
	}
	c, err = dialRedis(net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), 10*time.Second)
	if err != nil {
		kill()
		return nil, nil, err
	}
	return c, func() { c.c.Close(); kill() }, nil
}

// redisGen writes authentik-like keys: sessions (hashes) and cache
// entries (strings), all with TTLs, pipelined in batches.
type redisGen struct {
	c   *respConn
	rng *rand.Rand
	cc  *rand.ChaCha8
	now int64
}

const (
	sessionPrefix = "authentik:session:"
	cachePrefix   = "authentik:cache:"
)

func (g *redisGen) b64(lo, hi int) string {
	return base64.StdEncoding.EncodeToString(randomBytes(g.cc, logUniform(g.rng, lo, hi)))
}

func (g *redisGen) ttl() string { return strconv.Itoa(7*86400 + g.rng.IntN(86400)) }

func (g *redisGen) newKey(prefix string) string {
	var k [16]byte
	_, _ = g.cc.Read(k[:])
	return prefix + hex.EncodeToString(k[:])
}

func (g *redisGen) setSession(key string, ts int64) {
	rng := g.rng
	g.c.send("HSET", key, "user_id", strconv.Itoa(rng.IntN(50_000)), "created", strconv.FormatInt(ts-rng.Int64N(86400), 10),
		"last_seen", strconv.FormatInt(ts, 10), "ip", fmt.Sprintf("10.%d.%d.%d", rng.IntN(256), rng.IntN(256), rng.IntN(256)),
		"ua", userAgents[rng.IntN(len(userAgents))], "flow", "default-authentication-flow",
		"data", g.b64(120, 900))
	g.c.send("EXPIRE", key, g.ttl())
}

func (g *redisGen) setCache(key string, keepTTL bool) {
	var v string
	if g.rng.IntN(2) == 0 {
		v = string(textBytes(g.rng, logUniform(g.rng, 200, 2400)))
	} else {
		v = g.b64(150, 1000)
	}
	if keepTTL {
		g.c.send("SET", key, v, "KEEPTTL")
	} else {
		g.c.send("SET", key, v, "EX", g.ttl())
	}
}

// batch flushes the pipeline every 500 commands.
func (g *redisGen) batch(i int) error {
	if i%500 == 499 {
		return g.c.flush()
	}
	return nil
}

// day1 writes n keys, 60% sessions, and returns their names.
func (g *redisGen) day1(n int) ([]string, error) {
	keys := make([]string, n)
	for i := range n {
		if g.rng.IntN(10) < 6 {
			keys[i] = g.newKey(sessionPrefix)
			g.setSession(keys[i], g.now)
		} else {
			keys[i] = g.newKey(cachePrefix)
			g.setCache(keys[i], false)
		}
		if err := g.batch(i); err != nil {
			return nil, err
		}
	}
	return keys, g.c.flush()
}

// day2 changes, deletes and adds keys, an hour after day 1.
func (g *redisGen) day2(keys []string, changed, added, deleted int) error {
	perm := rand.New(rand.NewPCG(9, 9)).Perm(len(keys))
	for j, i := range perm[:changed] {
		k := keys[i]
		if strings.HasPrefix(k, sessionPrefix) {
			g.c.send("HSET", k, "last_seen", strconv.FormatInt(g.now+3600, 10), "data", g.b64(120, 900))
		} else {
			g.setCache(k, true)
		}
		if err := g.batch(j); err != nil {
			return err
		}
	}
	for j, i := range perm[changed : changed+deleted] {
		g.c.send("DEL", keys[i])
		if err := g.batch(j); err != nil {
			return err
		}
	}
	for j := range added {
		g.setSession(g.newKey(sessionPrefix), g.now+3600)
		if err := g.batch(j); err != nil {
			return err
		}
	}
	return g.c.flush()
}

func infoField(info, name string) string {
	for _, l := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), name+":"); ok {
			return v
		}
	}
	return ""
}

func (b *bench) runRedis() error {
	dir, err := b.corpus(fmt.Sprintf("redis-k%d", b.prof.RedisKeys), b.genRedis)
	if err != nil {
		return err
	}
	var info redisInfo
	if err := readJSONFile(filepath.Join(dir, "info.json"), &info); err != nil {
		return err
	}
	b.res.Datasets["redis"] = &info
	day1, day2 := filepath.Join(dir, "day1.rdb"), filepath.Join(dir, "day2.rdb")
	b.logf("   redis: %d keys (%s in memory), RDB %s on day 1, %s on day 2", info.Keys, info.UsedMemory, fmtBytes(info.RDBBytesDay1), fmtBytes(info.RDBBytesDay2))
	warm(day1, day2)
	c, r, err := b.newRepos("redis")
	if err != nil {
		return err
	}
	backup := func(repo *repoT, file string) inv {
		return inv{repo: repo, args: []string{"--json", "backup", "--stdin", "--stdin-filename", "dump.rdb"}, stdin: file, input: fileSize(file), backup: true}
	}
	size2 := fileSize(day2)
	dump := func(repo *repoT, path string) inv {
		return inv{repo: repo, args: []string{"dump", "latest", path}, stdout: os.DevNull, input: size2}
	}
	restore := func(repo *repoT, rel string) inv {
		target := filepath.Join(b.work, "restore-"+filepath.Base(repo.dir))
		return inv{repo: repo, args: []string{"restore", "latest", "--target", target}, input: size2, check: func() error {
			defer os.RemoveAll(target)
			return sameFile(day2, filepath.Join(target, rel))
		}}
	}
	row1, err := b.pair("redis", "backup day 1", backup(c, day1), backup(r, day1))
	if err != nil {
		return err
	}
	row2, err := b.pair("redis", "backup day 2", backup(c, day2), backup(r, day2))
	if err != nil {
		return err
	}
	rowDump, err := b.pair("redis", "restore: dump", dump(c, "/dump.rdb"), dump(r, "/dump.rdb"))
	if err != nil {
		return err
	}
	rowRestore, err := b.pair("redis", "restore: --target", restore(c, "dump.rdb"), restore(r, "dump.rdb"))
	if err != nil {
		return err
	}

	// cairn's Redis source reading the saved file: database chunking, and
	// the RDB is validated (magic, version, CRC64) on the way.
	const v = "cairn --redis-rdb-file"
	k, err := b.newRepo("cairn", "redis-rdb-file")
	if err != nil {
		return err
	}
	fileBackup := func(file string) inv {
		return inv{repo: k, args: []string{"--json", "backup", "--redis-rdb-file", file}, input: fileSize(file), backup: true}
	}
	for _, st := range []struct {
		phase string
		in    inv
		ref   *Row
	}{
		{"backup day 1", fileBackup(day1), row1},
		{"backup day 2", fileBackup(day2), row2},
		{"restore: dump", dump(k, "/redis/dump.rdb"), rowDump},
		{"restore: --target", restore(k, "redis/dump.rdb"), rowRestore},
	} {
		if _, err := b.single("redis", v, st.phase, st.in, st.ref, ""); err != nil {
			return err
		}
	}
	return nil
}
