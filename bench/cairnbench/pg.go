package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cairn-backup/cairn/internal/pgstream/pgtest"
)

// pgInfo describes the PostgreSQL corpus (stored next to the dumps).
type pgInfo struct {
	Scale           int     `json:"pgbench_scale"`
	RandomFiller    bool    `json:"random_filler"`
	EventsDay1      int     `json:"events_day1"`
	EventsAppended  int     `json:"events_appended_day2"`
	Transactions    int     `json:"pgbench_transactions"`
	ServerVersion   string  `json:"server_version"`
	DBBytesDay1     int64   `json:"database_bytes_day1"`
	DBBytesDay2     int64   `json:"database_bytes_day2"`
	DumpBytesDay1   int64   `json:"dump_bytes_day1"`
	DumpBytesDay2   int64   `json:"dump_bytes_day2"`
	GenerateSeconds float64 `json:"generate_seconds"`
	// Filled in by each run.
	Live []pgLiveInfo `json:"live,omitempty"`
}

// pgLiveInfo describes a live database of the cairn --pg rows.
type pgLiveInfo struct {
	Day             string  `json:"day"`
	RestoreSeconds  float64 `json:"pg_restore_seconds"`
	PgDumpSeconds   float64 `json:"pg_dump_alone_seconds"` // to a file
	PgDumpMaxRSSKiB int64   `json:"pg_dump_alone_max_rss_kib"`
	PgDumpBytes     int64   `json:"pg_dump_bytes"`
	// pg_dump alone as cairn runs it, writing to /dev/null: the floor of
	// cairn --pg's time.
	PgDumpNullSeconds   float64 `json:"pg_dump_to_dev_null_seconds"`
	PgDumpNullMaxRSSKiB int64   `json:"pg_dump_to_dev_null_max_rss_kib"`
	DatabaseBytesLive   int64   `json:"database_bytes"`
}

// pgServer starts a throw-away PostgreSQL server tuned for bulk work;
// conf lines are added to its postgresql.conf.
func (b *bench) pgServer(conf ...string) (*pgtest.Server, func(), error) {
	s, err := pgtest.New(pgtest.Options{SharedBuffers: "256MB", Conf: append([]string{
		"max_wal_size = '4GB'", "checkpoint_timeout = '30min'", "maintenance_work_mem = '256MB'",
	}, conf...)})
	if err != nil {
		return nil, nil, fmt.Errorf("start PostgreSQL: %w", err)
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			s.Stop()
		}
	}
	b.cleanups = append(b.cleanups, stop)
	return s, stop, nil
}

// pgDumpToNull times pg_dump alone writing database bench to /dev/null,
// with the binary and the options cairn --pg runs it with (pgstream: the
// custom format uncompressed, --no-password, standard output); only
// cairn's --snapshot is left out, since pg_dump then takes its own.
func (b *bench) pgDumpToNull(s *pgtest.Server) (secs float64, rssKiB int64, err error) {
	syscall.Sync() // as before every measured phase
	secs, rssKiB, _, err = b.execMeasured(filepath.Join(s.BinDir, "pg_dump"),
		[]string{"--no-password", "--format=custom", "--compress=0", "bench"}, s.Env(), "", os.DevNull)
	if err != nil {
		return 0, 0, fmt.Errorf("pg_dump to /dev/null: %w", err)
	}
	return secs, rssKiB, nil
}

func psql(s *pgtest.Server, db, sql string) (string, error) {
	out, err := s.ClientErr("psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", db, "-c", sql)
	return strings.TrimSpace(out), err
}

func dbSize(s *pgtest.Server) int64 {
	out, err := psql(s, "bench", "SELECT pg_database_size('bench')")
	if err != nil {
		return 0
	}
	n, _ := strconv.ParseInt(out, 10, 64)
	return n
}

const eventsSQL = `INSERT INTO events (at, kind, payload)
SELECT timestamptz '2026-01-01 00:00:00+00' + g * interval '3 seconds' + random() * interval '3 seconds',
  (ARRAY['login','logout','token_refresh','authorize','password_change','mfa_challenge','consent','session_expired'])[1 + floor(random() * 8)::int],
  jsonb_build_object('user', md5(random()::text), 'session', md5(random()::text),
    'ip', format('10.%%s.%%s.%%s', floor(random() * 256)::int, floor(random() * 256)::int, floor(random() * 256)::int),
    'ua', (ARRAY['Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0', 'Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 Safari/18.1', 'curl/8.14.1'])[1 + floor(random() * 3)::int],
    'flow', 'default-authentication-flow', 'detail', md5(random()::text) || md5(random()::text), 'ok', random() < 0.9)
FROM generate_series(%d, %d) g`

// genPG builds the database and saves the two dumps into dir.
func (b *bench) genPG(dir string) error {
	p := b.prof
	info := pgInfo{Scale: p.PgScale, RandomFiller: p.PgRandomFiller, EventsDay1: p.PgEvents1, EventsAppended: p.PgEvents2,
		Transactions: p.PgTransactions * p.PgClients}
	t0 := time.Now()
	s, stop, err := b.pgServer()
	if err != nil {
		return err
	}
	defer stop()
	step := func(what string, fn func() error) error {
		if err := b.ctx.Err(); err != nil {
			return err
		}
		t := time.Now()
		b.logf("   pg: %s ...", what)
		if err := fn(); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		b.logf("   pg: %s done in %s", what, time.Since(t).Round(100*time.Millisecond))
		return nil
	}
	sqlStep := func(what, sql string) error {
		return step(what, func() error { _, err := psql(s, "bench", sql); return err })
	}
	dump := func(file string) error {
		_, err := s.ClientErr("pg_dump", "-Fc", "-Z0", "-f", filepath.Join(dir, file), "bench")
		return err
	}
	info.ServerVersion, _ = psql(s, "postgres", "SHOW server_version")
	if _, err := psql(s, "postgres", "CREATE DATABASE bench"); err != nil {
		return err
	}
	if err := step(fmt.Sprintf("pgbench -i -s %d", p.PgScale), func() error {
		_, err := s.ClientErr("pgbench", "-i", "-q", "-s", strconv.Itoa(p.PgScale), "bench")
		return err
	}); err != nil {
		return err
	}
	if err := sqlStep(fmt.Sprintf("events table, %d rows", p.PgEvents1),
		"CREATE TABLE events (id bigserial PRIMARY KEY, at timestamptz NOT NULL, kind text NOT NULL, payload jsonb NOT NULL);"+
			fmt.Sprintf(eventsSQL, 1, p.PgEvents1)); err != nil {
		return err
	}
	if p.PgRandomFiller {
		if err := sqlStep("random filler", `UPDATE pgbench_accounts SET filler = md5(random()::text) || md5(random()::text);
UPDATE pgbench_tellers SET filler = md5(random()::text) || md5(random()::text);
UPDATE pgbench_branches SET filler = md5(random()::text) || md5(random()::text)`); err != nil {
			return err
		}
	}
	if err := sqlStep("VACUUM ANALYZE", "VACUUM ANALYZE"); err != nil {
		return err
	}
	info.DBBytesDay1 = dbSize(s)
	if err := step("pg_dump day 1", func() error { return dump("day1.pgdump") }); err != nil {
		return err
	}
	if err := step(fmt.Sprintf("pgbench -t %d -c %d --no-vacuum", p.PgTransactions, p.PgClients), func() error {
		_, err := s.ClientErr("pgbench", "--no-vacuum", "-t", strconv.Itoa(p.PgTransactions), "-c", strconv.Itoa(p.PgClients), "-j", "2", "bench")
		return err
	}); err != nil {
		return err
	}
	if err := sqlStep(fmt.Sprintf("append %d events", p.PgEvents2), fmt.Sprintf(eventsSQL, p.PgEvents1+1, p.PgEvents1+p.PgEvents2)); err != nil {
		return err
	}
	info.DBBytesDay2 = dbSize(s)
	if err := step("pg_dump day 2", func() error { return dump("day2.pgdump") }); err != nil {
		return err
	}
	stop()
	info.DumpBytesDay1 = fileSize(filepath.Join(dir, "day1.pgdump"))
	info.DumpBytesDay2 = fileSize(filepath.Join(dir, "day2.pgdump"))
	info.GenerateSeconds = time.Since(t0).Seconds()
	return writeJSONFile(filepath.Join(dir, "info.json"), info)
}

// pgCorpus returns the cached pair of dumps (day 1, day 2) of the profile,
// generating them first if they are missing, and their description.
func (b *bench) pgCorpus() (day1, day2 string, info *pgInfo, err error) {
	p := b.prof
	filler := "blank"
	if p.PgRandomFiller {
		filler = "random"
	}
	name := fmt.Sprintf("pg-s%d-%s-e%d+%d-t%dx%d", p.PgScale, filler, p.PgEvents1, p.PgEvents2, p.PgTransactions, p.PgClients)
	dir, err := b.corpus(name, b.genPG)
	if err != nil {
		return "", "", nil, err
	}
	info = &pgInfo{}
	if err := readJSONFile(filepath.Join(dir, "info.json"), info); err != nil {
		return "", "", nil, err
	}
	return filepath.Join(dir, "day1.pgdump"), filepath.Join(dir, "day2.pgdump"), info, nil
}

func (b *bench) runPG() error {
	day1, day2, infoP, err := b.pgCorpus()
	if err != nil {
		return err
	}
	info := *infoP
	b.res.Datasets["pg"] = &info
	b.logf("   pg: database %s on day 1, %s on day 2; dumps %s and %s", fmtBytes(info.DBBytesDay1), fmtBytes(info.DBBytesDay2),
		fmtBytes(info.DumpBytesDay1), fmtBytes(info.DumpBytesDay2))
	warm(day1, day2)

	c, r, err := b.newRepos("pg")
	if err != nil {
		return err
	}
	stdinBackup := func(repo *repoT, file string, extra ...string) inv {
		args := append([]string{"--json", "backup", "--stdin", "--stdin-filename", "db.pgdump"}, extra...)
		return inv{repo: repo, args: args, stdin: file, input: fileSize(file), backup: true}
	}
	dumpInv := func(repo *repoT, path string, size int64) inv {
		return inv{repo: repo, args: []string{"dump", "latest", path}, stdout: os.DevNull, input: size}
	}
	restoreInv := func(repo *repoT, restored string, size int64, check func(string) error) inv {
		target := filepath.Join(b.work, "restore-"+filepath.Base(repo.dir))
		return inv{repo: repo, args: []string{"restore", "latest", "--target", target}, input: size, check: func() error {
			defer os.RemoveAll(target)
			return check(filepath.Join(target, restored))
		}}
	}
	sameAsDay2 := func(p string) error { return sameFile(day2, p) }
	size2 := fileSize(day2)

	row1, err := b.pair("pg", "backup day 1", stdinBackup(c, day1), stdinBackup(r, day1))
	if err != nil {
		return err
	}
	row2, err := b.pair("pg", "backup day 2", stdinBackup(c, day2), stdinBackup(r, day2))
	if err != nil {
		return err
	}
	rowDump, err := b.pair("pg", "restore: dump", dumpInv(c, "/db.pgdump", size2), dumpInv(r, "/db.pgdump", size2))
	if err != nil {
		return err
	}
	rowRestore, err := b.pair("pg", "restore: --target", restoreInv(c, "db.pgdump", size2, sameAsDay2), restoreInv(r, "db.pgdump", size2, sameAsDay2))
	if err != nil {
		return err
	}

	if b.stdinKind {
		const v = "cairn --no-delta"
		k, err := b.newRepo("cairn", "pg-no-delta")
		if err != nil {
			return err
		}
		for _, st := range []struct {
			phase string
			in    inv
			ref   *Row
		}{
			{"backup day 1", stdinBackup(k, day1, "--no-delta"), row1},
			{"backup day 2", stdinBackup(k, day2, "--no-delta"), row2},
			{"restore: dump", dumpInv(k, "/db.pgdump", size2), rowDump},
			{"restore: --target", restoreInv(k, "db.pgdump", size2, sameAsDay2), rowRestore},
		} {
			if _, err := b.single("pg", v, st.phase, st.in, st.ref, ""); err != nil {
				return err
			}
		}
	} else {
		b.res.Notes = append(b.res.Notes, "cairn backup has no --no-delta flag: no comparison row without deltas.")
	}
	return b.runPGLive(day1, day2, &info, row1, row2, rowDump, rowRestore)
}

// runPGLive loads each dump into a live server and backs it up with cairn
// --pg, which runs pg_dump itself and uses database chunking.
func (b *bench) runPGLive(day1, day2 string, info *pgInfo, row1, row2, rowDump, rowRestore *Row) error {
	const v = "cairn --pg live"
	s, stop, err := b.pgServer()
	if err != nil {
		return err
	}
	defer stop()
	k, err := b.newRepo("cairn", "pg-live")
	if err != nil {
		return err
	}
	for i, day := range []struct {
		name, file string
		ref        *Row
	}{{"day 1", day1, row1}, {"day 2", day2, row2}} {
		var li pgLiveInfo
		li.Day = day.name
		if i > 0 {
			if _, err := psql(s, "postgres", "DROP DATABASE bench"); err != nil {
				return err
			}
		}
		if _, err := psql(s, "postgres", "CREATE DATABASE bench"); err != nil {
			return err
		}
		t := time.Now()
		b.logf("   pg: loading the %s dump into a live server (pg_restore -j 2) ...", day.name)
		if _, err := s.ClientErr("pg_restore", "-j", "2", "-d", "bench", day.file); err != nil {
			return fmt.Errorf("pg_restore %s: %w", day.name, err)
		}
		if _, err := psql(s, "bench", "VACUUM ANALYZE"); err != nil {
			return err
		}
		li.RestoreSeconds = time.Since(t).Seconds()
		li.DatabaseBytesLive = dbSize(s)
		b.logf("   pg: loaded in %s; pg_dump alone to a file, then to /dev/null ...", time.Since(t).Round(time.Second))
		outFile := filepath.Join(b.work, "pg_dump-alone.out")
		secs, rss, _, err := b.execMeasured(filepath.Join(s.BinDir, "pg_dump"), []string{"-Fc", "-Z0", "-f", outFile, "bench"}, s.Env(), "", "")
		if err != nil {
			return err
		}
		li.PgDumpSeconds, li.PgDumpMaxRSSKiB, li.PgDumpBytes = secs, rss, fileSize(outFile)
		os.Remove(outFile)
		b.logf("   pg: pg_dump alone to a file: %.2fs, %s, RSS %s", secs, fmtBytes(li.PgDumpBytes), fmtRSS(rss))
		// Just before cairn, so that both find the database as warm.
		if li.PgDumpNullSeconds, li.PgDumpNullMaxRSSKiB, err = b.pgDumpToNull(s); err != nil {
			return err
		}
		b.logf("   pg: pg_dump alone to /dev/null: %.2fs, RSS %s", li.PgDumpNullSeconds, fmtRSS(li.PgDumpNullMaxRSSKiB))
		info.Live = append(info.Live, li)
		in := inv{repo: k, args: []string{"--json", "backup", "--pg", s.URL("bench"), "--pg-no-globals", "--pg-bin", s.BinDir}, backup: true}
		note := fmt.Sprintf("includes pg_dump of the live database (pg_dump alone: %.2fs to /dev/null, %.2fs to a file); the database was loaded from the same dump",
			li.PgDumpNullSeconds, secs)
		row, err := b.single("pg", v, "backup "+day.name, in, day.ref, note)
		if err != nil {
			return err
		}
		row.PgDumpAlone = li.PgDumpNullSeconds
		b.logf("   pg: cairn --pg takes %.2fx the time of pg_dump alone", row.Cairn.Seconds/li.PgDumpNullSeconds)
	}
	stop()
	size := info.Live[len(info.Live)-1].PgDumpBytes
	if _, err := b.single("pg", v, "restore: dump", inv{repo: k, args: []string{"dump", "latest", "/postgres/bench.pgdump"}, stdout: os.DevNull}, rowDump, ""); err != nil {
		return err
	}
	target := filepath.Join(b.work, "restore-pg-live")
	restore := inv{repo: k, args: []string{"restore", "latest", "--target", target}, check: func() error {
		defer os.RemoveAll(target)
		p := filepath.Join(target, "postgres", "bench.pgdump")
		if fileSize(p) == 0 {
			return fmt.Errorf("%s missing or empty after restore", p)
		}
		return nil
	}}
	// The restored size is the live day-2 dump's; fix it after the fact.
	row, err := b.single("pg", v, "restore: --target", restore, rowRestore, "")
	if err != nil {
		return err
	}
	for _, rr := range b.res.Rows[len(b.res.Rows)-2:] {
		rr.Cairn.InputBytes = size
		if rr.Cairn.Seconds > 0 {
			rr.Cairn.MBps = float64(size) / 1e6 / rr.Cairn.Seconds
		}
	}
	_ = row
	return nil
}
