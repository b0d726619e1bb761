// Package redis is the Redis source: it backs up a server's data set as
// its RDB, fetched over the replication protocol (or a saved RDB file),
// validated while it streams, with the key counts in the snapshot's
// details (the rdb package speaks the protocol); it restores the RDB as a
// dump.rdb file or by loading it into a running server, then compares the
// key counts with the backup's.
package redis

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

	"github.com/cairn-backup/cairn/archiver"
	"github.com/cairn-backup/cairn/internal/rdb"
	"github.com/cairn-backup/cairn/internal/source"
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/restorer"
	"github.com/cairn-backup/cairn/tree"
)

// Path is where a snapshot stores the RDB; Kind names its record.
const (
	Path = "/redis/dump.rdb"
	Kind = "redis"
)

// passwordEnv supplies the password of a Redis URL that has none.
const passwordEnv = "CAIRN_REDIS_PASSWORD"

// ConnOptions say how to reach a server (to back up or restore into).
type ConnOptions struct {
	CAFile   string // CA certificates for rediss://
	Insecure bool   // skip TLS verification
	Timeout  time.Duration
}

// BackupOptions say what to back up: a server (URL) or a saved RDB file.
type BackupOptions struct {
	URL      string
	RDBFile  string
	Optional bool // a failing source is recorded as skipped
	Conn     ConnOptions
}

// Enabled reports whether a server or file is given.
func (f BackupOptions) Enabled() bool { return f.URL != "" || f.RDBFile != "" }

// RestoreOptions say where the RDB goes: a directory (dump.rdb for a
// stopped server) and/or a running server.
type RestoreOptions struct {
	RDBDir string
	Target string
	Listen string // where cairn serves the RDB to Target
	Conn   ConnOptions
}

// Enabled reports whether a destination is given.
func (f RestoreOptions) Enabled() bool { return f.RDBDir != "" || f.Target != "" }

// Options parses a Redis URL and applies the TLS options.
func (f ConnOptions) Options(rawURL string) (rdb.Options, error) {
	o, err := rdb.ParseURL(rawURL, passwordEnv)
	if err != nil {
		return o, err
	}
	o.Timeout = f.Timeout
	if o.TLS == nil {
		if f.CAFile != "" || f.Insecure {
			return o, errors.New("--redis-ca-file and --redis-insecure-skip-verify need a rediss:// URL")
		}
		return o, nil
	}
	o.TLS.InsecureSkipVerify = f.Insecure
	if f.CAFile != "" {
		pem, err := os.ReadFile(f.CAFile)
		if err != nil {
			return o, fmt.Errorf("--redis-ca-file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return o, fmt.Errorf("--redis-ca-file %s: no PEM certificate found", f.CAFile)
		}
		o.TLS.RootCAs = pool
	}
	return o, nil
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

// Details is what a backup records about the RDB, as the source's
// Details (JSON); setDetails repeats a few facts in Meta for people.
type Details struct {
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

// ExpectedKeys are the key counts a restore must reproduce, or nil.
func (d *Details) ExpectedKeys() map[int]rdb.DBKeys {
	if d.RDBKeyspace != nil {
		return d.RDBKeyspace
	}
	return d.Keyspace
}

func setDetails(s *repo.Source, d *Details) {
	js, _ := json.Marshal(d)
	s.Details = js
	s.Meta = meta(d)
	s.Meta["rdb_version"] = strconv.Itoa(d.RDBVersion)
	if ks := d.ExpectedKeys(); ks != nil {
		s.Meta["keyspace"] = FormatKeyspace(ks)
	}
}

// meta is where the RDB came from, for people.
func meta(d *Details) map[string]string {
	m := map[string]string{"method": d.Method}
	for k, v := range map[string]string{"server": d.Server, "file": d.File, "redis_version": d.RedisVersion} {
		if v != "" {
			m[k] = v
		}
	}
	return m
}

// DetailsOf reads what setDetails stored (nil if nothing).
func DetailsOf(s repo.Source) (*Details, error) {
	if len(s.Details) == 0 {
		return nil, nil
	}
	var d Details
	if err := json.Unmarshal(s.Details, &d); err != nil {
		return nil, fmt.Errorf("%s: details: %w", s.Name, err)
	}
	return &d, nil
}

// start returns the capture of the server (or saved RDB file) to back up. A
// server that refuses at once fails here (or, with --redis-optional, in
// finish); the RDB itself streams while the archiver reads it, and finish
// returns the validation verdict.
func start(ctx context.Context, f BackupOptions, o source.Out) ([]source.Capture, error) {
	if !f.Enabled() {
		return nil, nil
	}
	if f.URL != "" && f.RDBFile != "" {
		return nil, errors.New("--redis and --redis-rdb-file exclude each other")
	}
	det := &Details{}
	srcs := []repo.Source{{Kind: Kind, Name: Path, Status: repo.SourceOK}}
	src := source.Capture{Records: srcs, Optional: f.Optional}
	var rs redisStream
	var err error
	if f.RDBFile != "" {
		rs, err = openRDBFile(f.RDBFile, det)
	} else {
		rs, err = startSync(ctx, f, det)
	}
	srcs[0].Meta = meta(det)
	if err != nil {
		if !f.Optional {
			return nil, err
		}
		src.Finish = func(*archiver.Result) error { return err }
		return []source.Capture{src}, nil
	}
	var r io.Reader = rs
	if f.Optional {
		r = &softReader{r: rs, ctx: ctx}
	}
	src.Streams = []archiver.Stream{{Path: Path, Reader: r, Chunking: repo.ChunkingDatabase}}
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
			o.Warnf("Redis RDB: %v", info.CountErr)
		}
		setDetails(&srcs[0], det)
		return nil
	}
	return []source.Capture{src}, nil
}

func openRDBFile(path string, det *Details) (redisStream, error) {
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

// startSync records the server's version and keyspace, then starts a
// replication sync on a second connection.
func startSync(ctx context.Context, f BackupOptions, det *Details) (redisStream, error) {
	o, err := f.Conn.Options(f.URL)
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
		return nil, fmt.Errorf("redis %s needs a password: give it in the URL (redis://:PASSWORD@host:port or redis://USER:PASSWORD@...) or in %s", o.Addr, passwordEnv)
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
			if f.Optional {
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

// FormatKeyspace writes key counts as INFO keyspace does, space-separated:
// "db0:keys=3,expires=1 db2:keys=1,expires=0".
func FormatKeyspace(ks map[int]rdb.DBKeys) string {
	dbs := slices.Sorted(maps.Keys(ks))
	parts := make([]string, 0, len(dbs))
	for _, db := range dbs {
		parts = append(parts, fmt.Sprintf("db%d:keys=%d,expires=%d", db, ks[db].Keys, ks[db].Expires))
	}
	return strings.Join(parts, " ")
}

// CheckRestore checks, without changing anything, that Restore can run
// with f now: the snapshot holds an RDB, the RDB directory can be written
// and the target server answers (and accepts the credentials).
func CheckRestore(ctx context.Context, rs source.Restore, f RestoreOptions) (string, error) {
	if _, _, err := snapshotRDB(ctx, rs.Repo, rs.Snapshot); err != nil {
		return "", err
	}
	var notes []string
	if f.RDBDir != "" {
		if err := restorer.CheckWritable(f.RDBDir); err != nil {
			return "", fmt.Errorf("RDB directory: %w", err)
		}
		notes = append(notes, "dump.rdb written to "+f.RDBDir)
	}
	if f.Target != "" {
		o, err := f.Conn.Options(f.Target)
		if err != nil {
			return "", err
		}
		c, err := rdb.Dial(ctx, o)
		if err != nil {
			return "", err
		}
		c.Close()
		notes = append(notes, "the data set of "+o.Addr+" is replaced")
	}
	return strings.Join(notes, "; "), nil
}

// Restore writes the snapshot's RDB to f.RDBDir and/or loads it into the
// server f.Target; it does nothing without either.
func Restore(ctx context.Context, rs source.Restore, f RestoreOptions) error {
	if !f.Enabled() {
		return nil
	}
	det, node, err := snapshotRDB(ctx, rs.Repo, rs.Snapshot)
	if err != nil {
		return err
	}
	if f.RDBDir != "" {
		if err := writeRDBDir(ctx, rs, node, f.RDBDir); err != nil {
			return err
		}
	}
	if f.Target != "" {
		return loadTarget(ctx, rs, node, det, f)
	}
	return nil
}

// snapshotRDB finds the stored RDB and what the backup recorded about it
// (empty details for an RDB stored otherwise, e.g. with --stdin).
func snapshotRDB(ctx context.Context, r *repo.Repository, sn *repo.Snapshot) (*Details, *tree.Node, error) {
	name, det := Path, &Details{}
	found := false
	for _, s := range sn.Sources {
		if s.Kind != Kind {
			continue
		}
		if s.Status == repo.SourceSkipped {
			return nil, nil, fmt.Errorf("snapshot %s has no Redis data: the optional Redis source was skipped at backup (%s)", sn.ID.Short(), s.Error)
		}
		d, err := DetailsOf(s)
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
			return nil, nil, fmt.Errorf("snapshot %s has no Redis data (no redis source, no %s)", sn.ID.Short(), Path)
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
func writeRDBDir(ctx context.Context, rs source.Restore, node *tree.Node, dir string) (err error) {
	a := rs.Out
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
	werr := rs.DumpNode(ctx, node, io.MultiWriter(tmp, v))
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
	if a.JSON {
		return a.PrintJSON(rdbWrittenJSON{MessageType: "redis_rdb_written", Path: dst, Size: info.Size, Replaced: replaced,
			RDBVersion: info.Version, Keyspace: info.Keys, AOFPresent: aof})
	}
	a.Printf("wrote %s (%s, RDB version %d", dst, source.FormatBytes(uint64(info.Size)), info.Version)
	if info.Keys != nil {
		a.Printf(", %s", FormatKeyspace(info.Keys))
	}
	if replaced {
		a.Printf("; it replaced the dump.rdb that was there")
	}
	a.Printf(")\nstart redis-server with this directory (dir %s, dbfilename dump.rdb) and appendonly no for the first start: with appendonly yes Redis loads its AOF, not dump.rdb\n", dir)
	if len(aof) > 0 {
		fmt.Fprintf(a.Stderr, "warning: %s also holds %s: a server with appendonly yes would load that instead of dump.rdb; start it once with appendonly no (then CONFIG SET appendonly yes rewrites the AOF from the restored data)\n", dir, strings.Join(aof, " and "))
	}
	return nil
}

// loadTarget loads the RDB into a live server and compares its key
// counts with those recorded at backup.
func loadTarget(ctx context.Context, rs source.Restore, node *tree.Node, det *Details, f RestoreOptions) error {
	a, sn := rs.Out, rs.Snapshot
	o, err := f.Conn.Options(f.Target)
	if err != nil {
		return err
	}
	c, err := rdb.Dial(ctx, o)
	if err != nil {
		return err
	}
	defer c.Close()
	want := det.ExpectedKeys()
	if !a.JSON {
		a.Printf("loading the RDB of snapshot %s (%s) into redis %s, replacing its data set\n", sn.ID.Short(), source.FormatBytes(node.Size), o.Addr)
	}
	start := time.Now()
	res, err := rdb.Load(ctx, c, rdb.LoadOptions{
		Listen:  f.Listen,
		Size:    int64(node.Size),
		Write:   func(ctx context.Context, w io.Writer) error { return rs.DumpNode(ctx, node, w) },
		Version: det.RDBVersion,
		Timeout: f.Conn.Timeout,
		Log: func(format string, args ...any) {
			if !a.JSON {
				a.Printf(format+"\n", args...)
			}
		},
	})
	if err != nil {
		return fmt.Errorf("redis restore into %s: %w", o.Addr, err)
	}
	if res.Denied > 0 {
		a.Warnf("%d connection(s) to cairn's port asked for the RDB without the one-time password and got nothing: something on the network tried to take it", res.Denied)
	}
	if want == nil {
		want = res.RDB.Keys // recorded nothing: what the RDB itself holds
	}
	return report(a, o.Addr, res, want, time.Since(start))
}

// report prints the key counts per database, at backup and in
// the target, and fails on any difference.
func report(a source.Out, addr string, res *rdb.LoadResult, want map[int]rdb.DBKeys, d time.Duration) error {
	dbs := map[int]bool{}
	for db := range want {
		dbs[db] = true
	}
	for db := range res.Keys {
		dbs[db] = true
	}
	var rows []dbKeysJSON
	bad := 0
	for _, db := range slices.Sorted(maps.Keys(dbs)) {
		w, g := want[db], res.Keys[db]
		rw := dbKeysJSON{DB: db, KeysBackup: w.Keys, KeysRestored: g.Keys, ExpiresBackup: w.Expires, ExpiresRestored: g.Expires, OK: w == g}
		if !rw.OK {
			bad++
		}
		rows = append(rows, rw)
	}
	if want == nil {
		bad = 0 // nothing to compare with
	}
	if a.JSON {
		if err := a.PrintJSON(restoreJSON{MessageType: "redis_restore", Target: addr, ServedFrom: res.Advertised,
			Bytes: res.RDB.Size, Databases: rows, Verified: want != nil, OK: bad == 0, TotalDuration: d.Seconds()}); err != nil {
			return err
		}
	} else {
		a.Printf("%-6s %12s %13s %15s %16s\n", "DB", "KEYS BACKUP", "KEYS RESTORED", "WITH TTL BACKUP", "WITH TTL RESTORED")
		for _, rw := range rows {
			mark := "ok"
			if !rw.OK {
				mark = "DIFFERS"
			}
			a.Printf("db%-4d %12d %13d %15d %17d  %s\n", rw.DB, rw.KeysBackup, rw.KeysRestored, rw.ExpiresBackup, rw.ExpiresRestored, mark)
		}
		a.Printf("restored %s into redis %s in %s; it is a master again\n", source.FormatBytes(uint64(res.RDB.Size)), addr, d.Round(time.Millisecond))
	}
	if want == nil {
		fmt.Fprintln(a.Stderr, "warning: the snapshot records no key counts and the RDB's could not be counted: the restore is not verified")
	}
	if bad > 0 {
		return fmt.Errorf("redis restore into %s: %d database(s) differ from the key counts recorded at backup", addr, bad)
	}
	return nil
}

// The --json messages of a Redis restore.

type rdbWrittenJSON struct {
	MessageType string             `json:"message_type"` // "redis_rdb_written"
	Path        string             `json:"path"`
	Size        int64              `json:"size"`
	Replaced    bool               `json:"replaced"` // a dump.rdb was there
	RDBVersion  int                `json:"rdb_version"`
	Keyspace    map[int]rdb.DBKeys `json:"keyspace"`
	AOFPresent  []string           `json:"aof_present"` // AOF files Redis would load instead
}

type dbKeysJSON struct {
	DB              int   `json:"db"`
	KeysBackup      int64 `json:"keys_backup"`
	KeysRestored    int64 `json:"keys_restored"`
	ExpiresBackup   int64 `json:"expires_backup"`
	ExpiresRestored int64 `json:"expires_restored"`
	OK              bool  `json:"ok"`
}

type restoreJSON struct {
	MessageType   string       `json:"message_type"` // "redis_restore"
	Target        string       `json:"target"`
	ServedFrom    string       `json:"served_from"`
	Bytes         int64        `json:"bytes"`
	Databases     []dbKeysJSON `json:"databases"`
	Verified      bool         `json:"verified"` // the backup had key counts to compare
	OK            bool         `json:"ok"`
	TotalDuration float64      `json:"total_duration"` // seconds
}
