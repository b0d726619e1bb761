package main

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/cairn-backup/cairn/archiver"
	"github.com/cairn-backup/cairn/internal/source"
	"github.com/cairn-backup/cairn/rdb"
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/tree"
)

// redisPath is where a snapshot stores the Redis RDB.
const redisPath = "/redis/dump.rdb"

// redisPasswordEnv supplies the password of a Redis URL that has none.
const redisPasswordEnv = "CAIRN_REDIS_PASSWORD"

// redisConnFlags say how to reach a Redis server (backup source or target).
type redisConnFlags struct {
	caFile   string
	insecure bool
	timeout  time.Duration
}

func registerRedisConnFlags(fl *pflag.FlagSet, f *redisConnFlags) {
	fl.StringVar(&f.caFile, "redis-ca-file", "", "verify the Redis server's TLS certificate (rediss://) against the CA certificates in `file`")
	fl.BoolVar(&f.insecure, "redis-insecure-skip-verify", false, "do not verify the Redis server's TLS certificate (rediss://)")
	fl.DurationVar(&f.timeout, "redis-timeout", rdb.DefaultTimeout, "give up when Redis makes no progress for `duration`")
}

// options parses a Redis URL and applies the TLS flags.
func (f *redisConnFlags) options(rawURL string) (rdb.Options, error) {
	o, err := rdb.ParseURL(rawURL, redisPasswordEnv)
	if err != nil {
		return o, err
	}
	o.Timeout = f.timeout
	if o.TLS == nil {
		if f.caFile != "" || f.insecure {
			return o, errors.New("--redis-ca-file and --redis-insecure-skip-verify need a rediss:// URL")
		}
		return o, nil
	}
	o.TLS.InsecureSkipVerify = f.insecure
	if f.caFile != "" {
		pem, err := os.ReadFile(f.caFile)
		if err != nil {
			return o, fmt.Errorf("--redis-ca-file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return o, fmt.Errorf("--redis-ca-file %s: no PEM certificate found", f.caFile)
		}
		o.TLS.RootCAs = pool
	}
	return o, nil
}

// redisBackupFlags are the Redis source's backup flags.
type redisBackupFlags struct {
	url      string
	rdbFile  string
	optional bool
	conn     redisConnFlags
}

func (f *redisBackupFlags) enabled() bool { return f.url != "" || f.rdbFile != "" }

func registerRedisBackupFlags(fl *pflag.FlagSet, f *redisBackupFlags) {
	fl.StringVar(&f.url, "redis", "", "store the RDB of the Redis server at `URL` (redis://[user:password@]host:port, rediss:// for TLS; password also from "+redisPasswordEnv+") as "+redisPath+", fetched over the replication protocol")
	fl.StringVar(&f.rdbFile, "redis-rdb-file", "", "store this saved RDB `file` (e.g. after BGSAVE) as "+redisPath+" instead, for servers that refuse replication")
	fl.BoolVar(&f.optional, "redis-optional", false, "if the Redis source fails, write the snapshot without it and exit with 3")
	registerRedisConnFlags(fl, &f.conn)
}

// redisStream is an RDB being read and validated: a replication sync or a file.
type redisStream interface {
	io.Reader
	Result() (*rdb.Info, error)
	Close() error
}

type rdbFileStream struct {
	*rdb.Reader
	f *os.File
}

func (s *rdbFileStream) Read(p []byte) (int, error) {
	n, err := s.Reader.Read(p)
	return n, s.name(err)
}

func (s *rdbFileStream) Result() (*rdb.Info, error) {
	info, err := s.Reader.Result()
	return info, s.name(err)
}

// name says which file a validation error is about.
func (s *rdbFileStream) name(err error) error {
	var fe *rdb.FormatError
	if errors.As(err, &fe) {
		return fmt.Errorf("--redis-rdb-file %s: %w", s.f.Name(), err)
	}
	return err
}

func (s *rdbFileStream) Close() error {
	s.Reader.Close()
	return s.f.Close()
}

// softReader ends an optional source's stream early instead of failing the
// whole backup; finish then reports the problem and the source is skipped.
type softReader struct {
	r   io.Reader
	ctx context.Context
}

func (s *softReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && err != io.EOF && s.ctx.Err() == nil {
		return n, io.EOF
	}
	return n, err
}

// redisDetails is what a backup records about the RDB, as the source's
// Details (JSON); setRedisDetails repeats a few facts in Meta for people.
type redisDetails struct {
	Method       string `json:"method"`             // "replication" or "file"
	Server       string `json:"server,omitempty"`   // host:port
	File         string `json:"file,omitempty"`     // --redis-rdb-file, absolute
	Sync         string `json:"sync,omitempty"`     // "psync" or "sync"
	Transfer     string `json:"transfer,omitempty"` // "length" or "eof-mark"
	RedisVersion string `json:"redis_version,omitempty"`
	RDBVersion   int    `json:"rdb_version"`
	Size         int64  `json:"size"`
	CRC64        string `json:"crc64"` // "0000000000000000": the server wrote no checksum
	// Keyspace is INFO keyspace just before the sync (database -> counts);
	// RDBKeyspace is counted in the RDB itself, the restore's reference.
	Keyspace    map[int]rdb.DBKeys `json:"keyspace,omitempty"`
	RDBKeyspace map[int]rdb.DBKeys `json:"rdb_keyspace,omitempty"`
	CountError  string             `json:"count_error,omitempty"` // why RDBKeyspace is missing
	Aux         map[string]string  `json:"aux,omitempty"`         // the RDB's AUX fields (redis-ver, ctime, ...)
}

// expectedKeys are the key counts a restore must reproduce, or nil.
func (d *redisDetails) expectedKeys() map[int]rdb.DBKeys {
	if d.RDBKeyspace != nil {
		return d.RDBKeyspace
	}
	return d.Keyspace
}

func setRedisDetails(s *repo.Source, d *redisDetails) {
	js, _ := json.Marshal(d)
	s.Details = js
	s.Meta = redisMeta(d)
	s.Meta["rdb_version"] = strconv.Itoa(d.RDBVersion)
	if ks := d.expectedKeys(); ks != nil {
		s.Meta["keyspace"] = formatKeyspace(ks)
	}
}

// redisMeta is where the RDB came from, for people.
func redisMeta(d *redisDetails) map[string]string {
	m := map[string]string{"method": d.Method}
	for k, v := range map[string]string{"server": d.Server, "file": d.File, "redis_version": d.RedisVersion} {
		if v != "" {
			m[k] = v
		}
	}
	return m
}

// redisDetailsOf reads what setRedisDetails stored (nil if nothing).
func redisDetailsOf(s repo.Source) (*redisDetails, error) {
	if len(s.Details) == 0 {
		return nil, nil
	}
	var d redisDetails
	if err := json.Unmarshal(s.Details, &d); err != nil {
		return nil, fmt.Errorf("%s: details: %w", s.Name, err)
	}
	return &d, nil
}

// redisBackupSources returns the --redis or --redis-rdb-file source. A
// server that refuses at once fails here (or, with --redis-optional, in
// finish); the RDB itself streams while the archiver reads it, and finish
// returns the validation verdict.
func (a *app) redisBackupSources(ctx context.Context, bf *backupFlags) ([]source.Capture, error) {
	f := &bf.redis
	if !f.enabled() {
		return nil, nil
	}
	if f.url != "" && f.rdbFile != "" {
		return nil, errors.New("--redis and --redis-rdb-file exclude each other")
	}
	det := &redisDetails{}
	srcs := []repo.Source{{Kind: "redis", Name: redisPath, Status: repo.SourceOK}}
	src := source.Capture{Records: srcs, Optional: f.optional}
	var rs redisStream
	var err error
	if f.rdbFile != "" {
		rs, err = openRDBFile(f.rdbFile, det)
	} else {
		rs, err = startRedisSync(ctx, f, det)
	}
	srcs[0].Meta = redisMeta(det)
	if err != nil {
		if !f.optional {
			return nil, err
		}
		src.Finish = func(*archiver.Result) error { return err }
		return []source.Capture{src}, nil
	}
	var r io.Reader = rs
	if f.optional {
		r = &softReader{r: rs, ctx: ctx}
	}
	src.Streams = []archiver.Stream{{Path: redisPath, Reader: r, Chunking: repo.ChunkingDatabase}}
	src.Finish = func(*archiver.Result) error {
		defer rs.Close()
		info, err := rs.Result()
		switch {
		case errors.Is(err, rdb.ErrIncomplete):
			return nil // the archiver stopped first and reports why
		case err != nil:
			return err
		}
		if s, ok := rs.(*rdb.Sync); ok {
			det.Transfer = s.Form
		}
		det.RDBVersion, det.Size, det.Aux = info.Version, info.Size, info.Aux
		det.CRC64 = fmt.Sprintf("%016x", info.Checksum)
		if det.RedisVersion == "" {
			det.RedisVersion = info.Aux["redis-ver"]
		}
		det.RDBKeyspace = info.Keys
		if info.CountErr != nil {
			det.CountError = info.CountErr.Error()
			fmt.Fprintf(a.stderr, "warning: Redis RDB: %v\n", info.CountErr)
		}
		setRedisDetails(&srcs[0], det)
		return nil
	}
	return []source.Capture{src}, nil
}

func openRDBFile(path string, det *redisDetails) (redisStream, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	det.Method, det.File = "file", abs
	f, err := os.Open(abs)
	if err != nil {
		return nil, fmt.Errorf("--redis-rdb-file: %w", err)
	}
	return &rdbFileStream{Reader: rdb.NewReader(f), f: f}, nil
}

// startRedisSync records the server's version and keyspace, then starts a
// replication sync on a second connection.
func startRedisSync(ctx context.Context, f *redisBackupFlags, det *redisDetails) (redisStream, error) {
	o, err := f.conn.options(f.url)
	if err != nil {
		return nil, err
	}
	det.Method, det.Server = "replication", o.Addr
	c, err := rdb.Dial(ctx, o)
	if err != nil {
		return nil, err
	}
	info, err := c.Info("server")
	if err == nil {
		det.RedisVersion = info["redis_version"]
		if info, err = c.Info("keyspace"); err == nil {
			det.Keyspace = rdb.Keyspace(info)
		}
	}
	c.Close()
	var se *rdb.ServerError
	if errors.As(err, &se) && se.Code() == "NOAUTH" {
		return nil, fmt.Errorf("redis %s needs a password: give it in the URL (redis://:PASSWORD@host:port or redis://USER:PASSWORD@...) or in %s", o.Addr, redisPasswordEnv)
	}
	if err != nil && se == nil {
		return nil, err
	}
	// INFO refused (NOPERM) only costs the recorded keyspace.
	c, err = rdb.Dial(ctx, o)
	if err != nil {
		return nil, err
	}
	s, err := c.StartSync()
	if err != nil {
		c.Close()
		var re *rdb.RefusedError
		if errors.As(err, &re) {
			hint := " or add --redis-optional"
			if f.optional {
				hint = ""
			}
			return nil, fmt.Errorf("%w. cairn fetches the RDB as a replica does: the user needs +psync +sync +replconf (ACL SETUSER ... +psync +sync +replconf +ping +info). "+
				"Managed services (ElastiCache, Azure Cache, Memorystore, ...) often forbid replication: save an RDB there (BGSAVE) and back it up with --redis-rdb-file%s", err, hint)
		}
		return nil, err
	}
	det.Sync = s.Method
	return s, nil
}

// formatKeyspace writes key counts as INFO keyspace does, space-separated:
// "db0:keys=3,expires=1 db2:keys=1,expires=0".
func formatKeyspace(ks map[int]rdb.DBKeys) string {
	dbs := slices.Sorted(maps.Keys(ks))
	parts := make([]string, 0, len(dbs))
	for _, db := range dbs {
		parts = append(parts, fmt.Sprintf("db%d:keys=%d,expires=%d", db, ks[db].Keys, ks[db].Expires))
	}
	return strings.Join(parts, " ")
}

// redisRestoreFlags are the Redis source's restore flags.
type redisRestoreFlags struct {
	rdbDir string
	target string
	listen string
	conn   redisConnFlags
}

func (f *redisRestoreFlags) enabled() bool { return f.rdbDir != "" || f.target != "" }

func registerRedisRestoreFlags(fl *pflag.FlagSet, f *redisRestoreFlags) {
	fl.StringVar(&f.rdbDir, "redis-rdb-dir", "", "write the snapshot's Redis RDB as `dir`/dump.rdb for a stopped server to load (with appendonly yes Redis loads its AOF instead)")
	fl.StringVar(&f.target, "redis-target", "", "load the snapshot's Redis RDB into the running server at `URL`, replacing its whole data set (it briefly replicates from cairn)")
	fl.StringVar(&f.listen, "redis-listen", "", "with --redis-target: `host:port` where cairn serves the RDB to the target (default: this machine's address facing the target, a free port)")
	registerRedisConnFlags(fl, &f.conn)
}

// redisRestore restores the snapshot's RDB when a Redis destination is given.
func (a *app) redisRestore(ctx context.Context, r *repo.Repository, sn *repo.Snapshot, f *redisRestoreFlags) error {
	if !f.enabled() {
		return nil
	}
	det, node, err := snapshotRDB(ctx, r, sn)
	if err != nil {
		return err
	}
	if f.rdbDir != "" {
		if err := a.writeRDBDir(ctx, r, node, f.rdbDir); err != nil {
			return err
		}
	}
	if f.target != "" {
		return a.loadRedisTarget(ctx, r, sn, node, det, f)
	}
	return nil
}

// snapshotRDB finds the stored RDB and what the backup recorded about it
// (empty details for an RDB stored otherwise, e.g. with --stdin).
func snapshotRDB(ctx context.Context, r *repo.Repository, sn *repo.Snapshot) (*redisDetails, *tree.Node, error) {
	name, det := redisPath, &redisDetails{}
	found := false
	for _, s := range sn.Sources {
		if s.Kind != "redis" {
			continue
		}
		if s.Status == repo.SourceSkipped {
			return nil, nil, fmt.Errorf("snapshot %s has no Redis data: the optional Redis source was skipped at backup (%s)", sn.ID.Short(), s.Error)
		}
		d, err := redisDetailsOf(s)
		if err != nil {
			return nil, nil, err
		}
		if d != nil {
			det = d
		}
		name, found = s.Name, true
	}
	node, err := tree.Find(ctx, r, sn.Tree, name)
	if err != nil {
		if !found {
			return nil, nil, fmt.Errorf("snapshot %s has no Redis data (no redis source, no %s)", sn.ID.Short(), redisPath)
		}
		return nil, nil, err
	}
	if node.Type != tree.File {
		return nil, nil, fmt.Errorf("%s in snapshot %s is a %s, not an RDB file", name, sn.ID.Short(), node.Type)
	}
	return det, node, nil
}

// writeRDBDir writes DIR/dump.rdb atomically (temp file, fsync, rename),
// validating it on the way, owned like DIR when cairn runs as root.
func (a *app) writeRDBDir(ctx context.Context, r *repo.Repository, node *tree.Node, dir string) (err error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("--redis-rdb-dir: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".dump.rdb.cairn-*")
	if err != nil {
		return fmt.Errorf("--redis-rdb-dir: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	v := rdb.NewValidator()
	werr := a.dumpFile(ctx, r, node, io.MultiWriter(tmp, v))
	info, verr := v.Close()
	var fe *rdb.FormatError
	switch {
	case werr != nil && !errors.As(werr, &fe):
		return fmt.Errorf("write %s: %w", tmp.Name(), werr)
	case verr != nil:
		return fmt.Errorf("the stored RDB does not validate: %w", verr)
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if os.Geteuid() == 0 {
		if fi, err := os.Stat(dir); err == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				if err := os.Chown(tmp.Name(), int(st.Uid), int(st.Gid)); err != nil {
					return err
				}
			}
		}
	}
	dst := filepath.Join(dir, "dump.rdb")
	_, statErr := os.Stat(dst)
	replaced := statErr == nil
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return err
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	var aof []string
	for _, name := range []string{"appendonlydir", "appendonly.aof"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
			aof = append(aof, name)
		}
	}
	if a.jsonOutput {
		return a.printJSON(map[string]any{"message_type": "redis_rdb_written", "path": dst, "size": info.Size, "replaced": replaced,
			"rdb_version": info.Version, "keyspace": info.Keys, "aof_present": aof})
	}
	a.printf("wrote %s (%s, RDB version %d", dst, formatBytes(uint64(info.Size)), info.Version)
	if info.Keys != nil {
		a.printf(", %s", formatKeyspace(info.Keys))
	}
	if replaced {
		a.printf("; it replaced the dump.rdb that was there")
	}
	a.printf(")\nstart redis-server with this directory (dir %s, dbfilename dump.rdb) and appendonly no for the first start: with appendonly yes Redis loads its AOF, not dump.rdb\n", dir)
	if len(aof) > 0 {
		fmt.Fprintf(a.stderr, "warning: %s also holds %s: a server with appendonly yes would load that instead of dump.rdb; start it once with appendonly no (then CONFIG SET appendonly yes rewrites the AOF from the restored data)\n", dir, strings.Join(aof, " and "))
	}
	return nil
}

// loadRedisTarget loads the RDB into a live server and compares its key
// counts with those recorded at backup.
func (a *app) loadRedisTarget(ctx context.Context, r *repo.Repository, sn *repo.Snapshot, node *tree.Node, det *redisDetails, f *redisRestoreFlags) error {
	o, err := f.conn.options(f.target)
	if err != nil {
		return err
	}
	c, err := rdb.Dial(ctx, o)
	if err != nil {
		return err
	}
	defer c.Close()
	want := det.expectedKeys()
	if !a.jsonOutput {
		a.printf("loading the RDB of snapshot %s (%s) into redis %s, replacing its data set\n", sn.ID.Short(), formatBytes(node.Size), o.Addr)
	}
	start := time.Now()
	res, err := rdb.Load(ctx, c, rdb.LoadOptions{
		Listen:  f.listen,
		Size:    int64(node.Size),
		Write:   func(ctx context.Context, w io.Writer) error { return a.dumpFile(ctx, r, node, w) },
		Version: det.RDBVersion,
		Timeout: f.conn.timeout,
		Log: func(format string, args ...any) {
			if !a.jsonOutput {
				a.printf(format+"\n", args...)
			}
		},
	})
	if err != nil {
		return fmt.Errorf("redis restore into %s: %w", o.Addr, err)
	}
	if want == nil {
		want = res.RDB.Keys // recorded nothing: what the RDB itself holds
	}
	return a.reportRedisRestore(o.Addr, res, want, time.Since(start))
}

// reportRedisRestore prints the key counts per database, at backup and in
// the target, and fails on any difference.
func (a *app) reportRedisRestore(addr string, res *rdb.LoadResult, want map[int]rdb.DBKeys, d time.Duration) error {
	dbs := map[int]bool{}
	for db := range want {
		dbs[db] = true
	}
	for db := range res.Keys {
		dbs[db] = true
	}
	type row struct {
		DB              int   `json:"db"`
		KeysBackup      int64 `json:"keys_backup"`
		KeysRestored    int64 `json:"keys_restored"`
		ExpiresBackup   int64 `json:"expires_backup"`
		ExpiresRestored int64 `json:"expires_restored"`
		OK              bool  `json:"ok"`
	}
	var rows []row
	bad := 0
	for _, db := range slices.Sorted(maps.Keys(dbs)) {
		w, g := want[db], res.Keys[db]
		rw := row{DB: db, KeysBackup: w.Keys, KeysRestored: g.Keys, ExpiresBackup: w.Expires, ExpiresRestored: g.Expires, OK: w == g}
		if !rw.OK {
			bad++
		}
		rows = append(rows, rw)
	}
	if want == nil {
		bad = 0 // nothing to compare with
	}
	if a.jsonOutput {
		if err := a.printJSON(map[string]any{"message_type": "redis_restore", "target": addr, "served_from": res.Advertised,
			"bytes": res.RDB.Size, "databases": rows, "verified": want != nil, "ok": bad == 0, "total_duration": d.Seconds()}); err != nil {
			return err
		}
	} else {
		a.printf("%-6s %12s %13s %15s %16s\n", "DB", "KEYS BACKUP", "KEYS RESTORED", "WITH TTL BACKUP", "WITH TTL RESTORED")
		for _, rw := range rows {
			mark := "ok"
			if !rw.OK {
				mark = "DIFFERS"
			}
			a.printf("db%-4d %12d %13d %15d %17d  %s\n", rw.DB, rw.KeysBackup, rw.KeysRestored, rw.ExpiresBackup, rw.ExpiresRestored, mark)
		}
		a.printf("restored %s into redis %s in %s; it is a master again\n", formatBytes(uint64(res.RDB.Size)), addr, d.Round(time.Millisecond))
	}
	if want == nil {
		fmt.Fprintln(a.stderr, "warning: the snapshot records no key counts and the RDB's could not be counted: the restore is not verified")
	}
	if bad > 0 {
		return fmt.Errorf("redis restore into %s: %d database(s) differ from the key counts recorded at backup", addr, bad)
	}
	return nil
}
