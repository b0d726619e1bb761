package pgstream

// BenchmarkPgDayTwo measures what a nightly PostgreSQL backup costs, next
// to restic on the same dumps. It takes several minutes and about 3 GB of
// temporary disk; run it alone:
//
//	go test ./pgstream -run '^$' -bench PgDayTwo -benchtime 1x -timeout 60m -v
//
// Day 1: pgbench -i -s 35 (over 500 MB) plus 200k event rows. Day 2:
// pgbench -t 20000 -c 4 --no-vacuum (80k transactions) plus 100k appended
// events. Both days are backed up by `cairn backup --pg` (16 KiB database
// chunks), by `restic backup --stdin` of a pg_dump -Fc -Z0 file of the same
// state, and by `cairn backup --stdin` of that file (1 MiB file chunks).
//
// pgbench's filler column is blank, so its dumps compress about 50:1 and
// the stored sizes mostly measure compression. CAIRN_BENCH_PG_FILLER=random
// fills it with hex text first (dumps compress about 2:1, as real data);
// CAIRN_BENCH_PG_SCALE changes the pgbench scale (default 35).

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/internal/clitest"
	"github.com/cairn-backup/cairn/internal/pgstream/pgtest"
)

func BenchmarkPgDayTwo(b *testing.B) {
	restic := benchRestic(b)
	srv := pgtest.StartWith(b, pgtest.Options{SharedBuffers: "256MB", Conf: []string{"max_wal_size = '4GB'", "checkpoint_timeout = '30min'"}})
	tmp := b.TempDir()
	cairn, err := clitest.Build(tmp)
	if err != nil {
		b.Fatal(err)
	}
	env := append(srv.Env(), "CAIRN_PASSWORD=bench", "RESTIC_PASSWORD=bench", "CAIRN_PG_BIN="+srv.BinDir)
	run := func(stdinFile string, name string, args ...string) (string, time.Duration) {
		b.Helper()
		cmd := exec.Command(name, args...)
		cmd.Env = env
		if stdinFile != "" {
			f, err := os.Open(stdinFile)
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			cmd.Stdin = f
		}
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		start := time.Now()
		if err := cmd.Run(); err != nil {
			b.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, errb.String())
		}
		return out.String(), time.Since(start)
	}
	dumpTo := func(file string) (int64, time.Duration) {
		b.Helper()
		f, err := os.Create(file)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		cmd := exec.Command(filepath.Join(srv.BinDir, "pg_dump"), "-Fc", "-Z0", "bench")
		var errb bytes.Buffer
		cmd.Env, cmd.Stdout, cmd.Stderr = env, f, &errb
		start := time.Now()
		if err := cmd.Run(); err != nil {
			b.Fatalf("pg_dump: %v %s", err, errb.String())
		}
		fi, _ := f.Stat()
		return fi.Size(), time.Since(start)
	}
	type backup struct {
		Added  uint64 `json:"data_added"`
		Packed uint64 `json:"data_added_packed"`
		Blobs  uint64 `json:"data_blobs"`
		Bytes  uint64 `json:"total_bytes_processed"`
	}
	cairnBackup := func(repo string, args ...string) (backup, time.Duration) {
		out, d := run("", cairn, append([]string{"-r", repo, "--json", "backup"}, args...)...)
		var s backup
		if err := json.Unmarshal([]byte(out), &s); err != nil {
			b.Fatalf("backup --json: %v\n%s", err, out)
		}
		return s, d
	}
	cairnStdin := func(repo, file string) {
		run(file, cairn, "-r", repo, "--json", "backup", "--stdin", "--stdin-filename", "db.pgdump")
	}
	resticBackup := func(repo, file string) time.Duration {
		_, d := run(file, restic, "-r", repo, "backup", "--quiet", "--stdin", "--stdin-filename", "db.pgdump")
		return d
	}

	scale := os.Getenv("CAIRN_BENCH_PG_SCALE")
	if scale == "" {
		scale = "35"
	}
	srv.CreateDB(b, "bench")
	_, dInit := run("", filepath.Join(srv.BinDir, "pgbench"), "-i", "-s", scale, "-q", "bench")
	if os.Getenv("CAIRN_BENCH_PG_FILLER") == "random" {
		srv.Exec(b, "bench", `UPDATE pgbench_accounts SET filler = md5(aid::text) || md5((aid * 7)::text) || substr(md5((aid * 13)::text), 1, 20)`)
		srv.Exec(b, "bench", `VACUUM FULL pgbench_accounts`)
		b.Log("pgbench_accounts.filler: random hex")
	}
	srv.Exec(b, "bench", `CREATE TABLE events (id bigserial PRIMARY KEY, at timestamptz NOT NULL, kind text NOT NULL, payload jsonb);
		INSERT INTO events (at, kind, payload) SELECT timestamptz '2026-01-01' + g * interval '1 second', (ARRAY['login','logout','token','flow'])[1 + g % 4],
			jsonb_build_object('user', g % 5000, 'ip', '10.0.' || (g % 250) || '.' || (g % 200), 'ok', g % 7 <> 0) FROM generate_series(1, 200000) g`)
	dbSize := strings.TrimSpace(srv.Client(b, "psql", "-XAtq", "-d", "bench", "-c", "SELECT pg_size_pretty(pg_database_size('bench'))"))
	b.Logf("pgbench -i -s %s in %s; database %s", scale, dInit.Round(time.Second), dbSize)

	cairnRepo, resticRepo, stdinRepo := filepath.Join(tmp, "cairn-repo"), filepath.Join(tmp, "restic-repo"), filepath.Join(tmp, "cairn-stdin-repo")
	run("", cairn, "-r", cairnRepo, "init")
	run("", cairn, "-r", stdinRepo, "init")
	run("", restic, "-r", resticRepo, "init", "--quiet")

	b.ResetTimer()
	// Day 1.
	c1, dC1 := cairnBackup(cairnRepo, "--pg", srv.URL("bench"), "--pg-no-globals")
	day1 := filepath.Join(tmp, "day1.pgdump")
	size1, dDump1 := dumpTo(day1)
	dR1 := resticBackup(resticRepo, day1)
	cairnStdin(stdinRepo, day1)
	cSize1, rSize1, sSize1 := dirSize(b, cairnRepo), dirSize(b, resticRepo), dirSize(b, stdinRepo)

	// Day 2.
	_, dBench := run("", filepath.Join(srv.BinDir, "pgbench"), "-t", "20000", "-c", "4", "--no-vacuum", "bench")
	srv.Exec(b, "bench", `INSERT INTO events (at, kind, payload) SELECT timestamptz '2026-01-04' + g * interval '1 second', (ARRAY['login','logout','token','flow'])[1 + g % 4],
		jsonb_build_object('user', g % 5000, 'ip', '10.1.' || (g % 250) || '.' || (g % 200), 'ok', g % 7 <> 0) FROM generate_series(1, 100000) g`)
	b.Logf("day 2: pgbench -t 20000 -c 4 in %s, +100k events", dBench.Round(time.Second))
	c2, dC2 := cairnBackup(cairnRepo, "--pg", srv.URL("bench"), "--pg-no-globals")
	day2 := filepath.Join(tmp, "day2.pgdump")
	size2, _ := dumpTo(day2)
	dR2 := resticBackup(resticRepo, day2)
	cairnStdin(stdinRepo, day2)
	cSize2, rSize2, sSize2 := dirSize(b, cairnRepo), dirSize(b, resticRepo), dirSize(b, stdinRepo)

	// Restore day 2: cairn (pg_restore, ANALYZE, verification) and restic
	// dump | pg_restore.
	_, dCRestore := run("", cairn, "-r", cairnRepo, "restore", "latest", "--pg-target", srv.URL("restored_cairn"), "--pg-create")
	srv.CreateDB(b, "restored_restic")
	dRRestore := func() time.Duration {
		start := time.Now()
		cmd := exec.Command("sh", "-c", fmt.Sprintf("%q -r %q dump latest db.pgdump | %q --exit-on-error -d restored_restic", restic, resticRepo, filepath.Join(srv.BinDir, "pg_restore")))
		cmd.Env = env
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("restic dump | pg_restore: %v\n%s", err, out)
		}
		return time.Since(start)
	}()
	b.StopTimer()

	mb := func(n int64) float64 { return float64(n) / 1e6 }
	b.Logf("dump size: day 1 %.1f MB, day 2 %.1f MB (pg_dump -Fc -Z0 to a file: %.1f MB/s)", mb(size1), mb(size2), mb(size1)/dDump1.Seconds())
	b.Logf("cairn --pg  day 1: %.1f s, %.1f MB/s of dump, %d chunks (avg %.1f KiB), repo %.1f MB", dC1.Seconds(), mb(int64(c1.Bytes))/dC1.Seconds(), c1.Blobs, float64(c1.Bytes)/float64(max(c1.Blobs, 1))/1024, mb(cSize1))
	b.Logf("cairn --pg  day 2: %.1f s, %.1f MB/s, added %.1f MB (%.1f MB stored), repo growth %.1f MB", dC2.Seconds(), mb(int64(c2.Bytes))/dC2.Seconds(), mb(int64(c2.Added)), mb(int64(c2.Packed)), mb(cSize2-cSize1))
	b.Logf("restic      day 1: %.1f s, %.1f MB/s, repo %.1f MB; day 2: %.1f s, repo growth %.1f MB", dR1.Seconds(), mb(size1)/dR1.Seconds(), mb(rSize1), dR2.Seconds(), mb(rSize2-rSize1))
	b.Logf("cairn --stdin (1 MiB chunks): repo day 1 %.1f MB, day 2 growth %.1f MB", mb(sSize1), mb(sSize2-sSize1))
	b.Logf("day-2 growth cairn/restic: %.2f", float64(cSize2-cSize1)/float64(max(rSize2-rSize1, 1)))
	b.Logf("restore day 2 (%s database): cairn restore --pg-target %.1f s (incl. ANALYZE and row-count verification); restic dump | pg_restore %.1f s",
		dbSize, dCRestore.Seconds(), dRRestore.Seconds())
	b.ReportMetric(mb(int64(c1.Bytes))/dC1.Seconds(), "MB/s-day1")
	b.ReportMetric(mb(cSize2-cSize1), "MB-day2-growth")
	b.ReportMetric(mb(rSize2-rSize1), "MB-restic-day2-growth")
	b.ReportMetric(dCRestore.Seconds(), "s-restore")
}

// benchRestic finds restic v0.18.1 (see the benchmark's comment).
func benchRestic(b *testing.B) string {
	home, _ := os.UserHomeDir()
	p := filepath.Join(home, ".cache", "cairn", "bin", "restic")
	if _, err := os.Stat(p); err == nil {
		return p
	}
	if p, err := exec.LookPath("restic"); err == nil {
		return p
	}
	b.Skip("restic not found: GOBIN=$HOME/.cache/cairn/bin go install github.com/restic/restic/cmd/restic@v0.18.1")
	return ""
}

func dirSize(b *testing.B, dir string) int64 {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			n += fi.Size()
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	return n
}
