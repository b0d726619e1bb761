package redis

import (
	"bytes"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/internal/rdb"
	"github.com/cairn-backup/cairn/internal/source"
	"github.com/cairn-backup/cairn/repo"
)

// The server tests (real redis-server processes) drive the cairn binary:
// see cmd/cairn/redis_test.go.

func TestKeyspaceFormat(t *testing.T) {
	ks := map[int]rdb.DBKeys{0: {Keys: 3, Expires: 1}, 12: {Keys: 1}}
	if s := FormatKeyspace(ks); s != "db0:keys=3,expires=1 db12:keys=1,expires=0" {
		t.Errorf("FormatKeyspace: %q", s)
	}
	// Details survive the JSON round trip; INFO counts are the fallback.
	var src repo.Source
	setDetails(&src, &Details{Method: "replication", Keyspace: ks, RDBVersion: 10})
	d, err := DetailsOf(src)
	if err != nil || !maps.Equal(d.ExpectedKeys(), ks) || src.Meta["keyspace"] != FormatKeyspace(ks) {
		t.Errorf("details %+v %v, meta %v", d, err, src.Meta)
	}
}

// A database whose key count differs from the backup's fails the restore.
func TestReportDifference(t *testing.T) {
	var out, errb bytes.Buffer
	o := source.Out{Stdout: &out, Stderr: &errb}
	res := &rdb.LoadResult{Keys: map[int]rdb.DBKeys{0: {Keys: 3, Expires: 1}, 2: {Keys: 1}}, RDB: &rdb.Info{Size: 100}}
	want := map[int]rdb.DBKeys{0: {Keys: 3, Expires: 1}, 1: {Keys: 4}}
	err := report(o, "127.0.0.1:1", res, want, time.Second)
	if err == nil || !strings.Contains(err.Error(), "2 database(s) differ") {
		t.Errorf("error %v", err)
	}
	for _, w := range []string{"db0", "db1", "db2", "DIFFERS"} {
		if !strings.Contains(out.String(), w) {
			t.Errorf("table lacks %q:\n%s", w, out.String())
		}
	}
	if err := report(o, "127.0.0.1:1", res, res.Keys, time.Second); err != nil {
		t.Errorf("equal counts: %v", err)
	}
}

func TestConnOptions(t *testing.T) {
	f := ConnOptions{CAFile: "/nonexistent", Timeout: time.Second}
	if _, err := f.Options("redis://h:1"); err == nil || !strings.Contains(err.Error(), "rediss://") {
		t.Errorf("CA file with redis://: %v", err)
	}
	if _, err := f.Options("rediss://h:1"); err == nil || !strings.Contains(err.Error(), "--redis-ca-file") {
		t.Errorf("missing CA file: %v", err)
	}
	f = ConnOptions{Insecure: true, Timeout: time.Second}
	o, err := f.Options("rediss://u:p@h:1")
	if err != nil || !o.TLS.InsecureSkipVerify || o.User != "u" || o.Password != "p" || o.Timeout != time.Second {
		t.Errorf("options %+v %v", o, err)
	}
}
