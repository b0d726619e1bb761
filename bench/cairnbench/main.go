// Command cairnbench compares cairn with restic on the same machine, in the
// same run, on six data sets:
//
//   - pg: a pair of PostgreSQL dumps (pg_dump -Fc -Z0) of a pgbench database
//     (day 1; day 2 after a fixed pgbench run and appended event rows), backed
//     up by both tools from the same saved files through standard input, then
//     restored. Extra rows measure cairn's own PostgreSQL source (cairn backup
//     --pg against a live server holding the same data), which cuts the dump
//     into the smaller "database" chunks.
//   - redis: a pair of Redis RDB files (day 2: about 2% of the keys changed
//     and some added), backed up through standard input by both tools; extra
//     rows use cairn's --redis-rdb-file (database chunking).
//   - files: a tree of small files (100 B to 32 KiB, text and random) and a
//     few large ones: first backup, unchanged second backup, day-2 backup
//     after 1% of the small files were rewritten and one large file grew,
//     then a restore.
//   - s3: both tools against a MinIO server on loopback behind a proxy
//     that adds a fixed delay to every request (-s3-delay, default 30ms),
//     like a remote bucket: a production-like tree (a copy of /usr/share
//     and 300 random files of 1-5 MiB; first, unchanged and day-2 backups,
//     then restores with a warm and a cold local cache) and the pg dump
//     pair through standard input. Each phase also counts the S3 requests
//     by class (s3.go, bench/latencyproxy).
//   - pgnights: a series of nightly dumps (-nights, default 8) of an
//     authentik-like database (pgbench tables plus jsonb-heavy users, events
//     and sessions tables), changed every day like an application changes
//     it, backed up night after night through standard input by both
//     tools, then the last and a middle night restored with dump
//     (pgnights.go).
//   - realtree: the s3 data set's tree (a copy of /usr/share and 300 random
//     files) on local repositories: first, unchanged and day-2 backups and
//     a restore (realtree.go).
//
// Both tools encrypt with their default compression (restic: repository
// version 2, --compression auto) into repositories in a temporary work
// directory (the s3 data set: into buckets), in /dev/shm when it has room
// (workdir.go) so that the disk does not blur the figures. Every phase runs
// cairn first, then restic, and measures wall time, peak RSS (the child's
// rusage), the repository size after the phase and, where the input size is
// known, throughput. It prints a table
// and writes the same as JSON, together with the index memory per blob
// reported by the index package's BenchmarkIndexMemory.
//
// The corpus is generated once and cached under
// ${CAIRN_CACHE:-$HOME/.cache/cairn}/bench-corpus (one directory per set of
// parameters), so reruns start measuring at once. The page cache cannot be
// dropped reliably without privileges, so both tools see warm inputs: every
// input is read (generated or copied) just before the phases, and each phase
// runs in the same order for both tools.
//
// Usage (from the repository root; scripts/bench.sh builds cairn and installs
// restic first):
//
//	go run ./bench/cairnbench [-quick] [-datasets pg,redis,files,s3,pgnights,realtree,pitr] [-nights 8] [-s3-delay 30ms] [-json PATH] [-keep] [-work DIR]
//
// -quick uses a small corpus (pgbench -s 5, 5,000 files, 3 nights of a
// 100 MB database) as a smoke test that finishes in a few minutes once the
// corpus is cached. The s3 data set needs the MinIO binary of
// scripts/minio.sh (scripts/bench.sh runs it).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// profile holds the corpus parameters of a run.
type profile struct {
	Name string `json:"name"`
	// pg
	PgScale        int  `json:"pg_scale"`
	PgEvents1      int  `json:"pg_events_day1"`
	PgEvents2      int  `json:"pg_events_day2_appended"`
	PgTransactions int  `json:"pg_transactions_per_client"`
	PgClients      int  `json:"pg_clients"`
	PgRandomFiller bool `json:"pg_random_filler"`
	// redis
	RedisKeys int `json:"redis_keys"`
	// files
	SmallFiles     int `json:"small_files"`
	LargeFiles     int `json:"large_files"`
	LargeFileBytes int `json:"large_file_bytes"`
	AppendBytes    int `json:"day2_append_bytes"`
	// s3: files of /usr/share (0: all of it), random files of 1-5 MiB,
	// and the fewest files the tree may have.
	S3UsrShareFiles int `json:"s3_usr_share_files"`
	S3LargeFiles    int `json:"s3_large_files"`
	S3MinFiles      int `json:"s3_min_files"`
	// pgnights: the database, then what every day changes (pgnights.go).
	Nights nightsProfile `json:"pgnights"`
	// WorkNeed is the free space the work directory should have: /dev/shm
	// is used only when it has that much (workdir.go).
	WorkNeed int64 `json:"work_dir_bytes_needed"`
}

var fullProfile = profile{
	Name: "full", PgScale: 35, PgEvents1: 200_000, PgEvents2: 100_000, PgTransactions: 20_000, PgClients: 4,
	RedisKeys:  300_000,
	SmallFiles: 50_000, LargeFiles: 5, LargeFileBytes: 50 << 20, AppendBytes: 10 << 20,
	S3LargeFiles: 300, S3MinFiles: 40_000,
	Nights: nightsProfile{
		Nights: 8, Scale: 24, Users: 230_000, Events: 220_000, EventsPerDay: 22_000, SessionsPerDay: 6_000,
		Transactions: 4_000, UserUpdates: 3_000, NewUsers: 50, SessionUpdates: 3_000,
	},
	WorkNeed: 12 << 30,
}

var quickProfile = profile{
	Name: "quick", PgScale: 5, PgEvents1: 20_000, PgEvents2: 10_000, PgTransactions: 2_000, PgClients: 4,
	RedisKeys:  30_000,
	SmallFiles: 5_000, LargeFiles: 2, LargeFileBytes: 10 << 20, AppendBytes: 2 << 20,
	S3UsrShareFiles: 5_000, S3LargeFiles: 20, S3MinFiles: 4_000,
	Nights: nightsProfile{
		Nights: 3, Scale: 3, Users: 20_000, Events: 20_000, EventsPerDay: 2_000, SessionsPerDay: 800,
		Transactions: 500, UserUpdates: 300, NewUsers: 5, SessionUpdates: 300,
	},
	WorkNeed: 3 << 30,
}

type options struct {
	quick        bool
	datasets     map[string]bool
	jsonPath     string
	keep         bool
	cairn        string
	restic       string
	cache        string
	work         string
	randomFiller bool
	skipIndex    bool
	s3Delay      time.Duration
	nights       int // 0: the profile's
	treeSource   string
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "cairnbench:", err)
		os.Exit(1)
	}
}

func run() error {
	root, err := repoRoot()
	if err != nil {
		return err
	}
	o, prof, datasets, err := parseOptions(root)
	if err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	b, err := newBench(ctx, root, o, prof)
	if err != nil {
		return err
	}
	defer b.close()

	b.logf("cairnbench: profile %s, data sets %s", prof.Name, datasets)
	b.logf("work dir %s (%s)", b.work, b.workWhy)
	b.logf("%s | %s | %d CPUs | load %s", b.res.CairnVersion, b.res.ResticVersion, runtime.NumCPU(), loadAvg())

	failed := b.runDatasets(root)
	b.finish()
	fmt.Println()
	b.printTable(os.Stdout)
	if o.jsonPath != "" {
		if err := b.writeJSON(o.jsonPath); err != nil {
			return err
		}
		b.logf("results written to %s", o.jsonPath)
	}
	if ctx.Err() != nil {
		return errors.New("interrupted")
	}
	if len(failed) > 0 {
		return fmt.Errorf("data sets failed: %s", strings.Join(failed, ", "))
	}
	if len(b.res.Errors) > 0 {
		return errors.New(strings.Join(b.res.Errors, "; "))
	}
	return nil
}

// parseOptions reads the command line: the options, the corpus profile
// they select and the data sets as given.
func parseOptions(root string) (options, profile, string, error) {
	var o options
	var datasets string
	fail := func(err error) (options, profile, string, error) { return o, profile{}, "", err }
	cacheDefault := os.Getenv("CAIRN_CACHE")
	if cacheDefault == "" {
		home, _ := os.UserHomeDir()
		cacheDefault = filepath.Join(home, ".cache", "cairn")
	}
	flag.BoolVar(&o.quick, "quick", false, "small corpus (pgbench -s 5, 5k files, 3 small nights): a smoke test of a few minutes")
	flag.StringVar(&datasets, "datasets", strings.Join(allDatasets, ","), "comma-separated data sets to run: "+strings.Join(allDatasets, ", "))
	flag.StringVar(&o.jsonPath, "json", filepath.Join(root, "bench", "results", "latest.json"), "write the results as JSON to `path`")
	flag.BoolVar(&o.keep, "keep", false, "keep the temporary directory (repositories, working copies)")
	flag.StringVar(&o.cairn, "cairn", filepath.Join(root, "bin", "cairn"), "cairn `binary` (make build)")
	flag.StringVar(&o.restic, "restic", filepath.Join(cacheDefault, "bin", "restic"), "restic `binary` (v0.18.1)")
	flag.StringVar(&o.cache, "cache", filepath.Join(cacheDefault, "bench-corpus"), "corpus cache `directory`")
	flag.StringVar(&o.work, "work", "", "parent `directory` of the temporary work directory (default /dev/shm when it has room, else $TMPDIR)")
	flag.BoolVar(&o.randomFiller, "random-filler", true, "pg: fill pgbench's filler columns with random text (pgbench's blank filler compresses about 50:1, unlike real data)")
	flag.BoolVar(&o.skipIndex, "skip-index", false, "do not run the index memory benchmark (go test ./index)")
	flag.DurationVar(&o.s3Delay, "s3-delay", 30*time.Millisecond, "s3: `delay` the latency proxy adds to every request (0: none)")
	flag.StringVar(&o.treeSource, "tree-source", "/usr/share", "s3, realtree: the system `directory` whose copy is the tree (with the large random files)")
	flag.IntVar(&o.nights, "nights", 0, fmt.Sprintf("pgnights: number of nights, at least 2 (default %d, %d with -quick)", fullProfile.Nights.Nights, quickProfile.Nights.Nights))
	flag.Parse()
	if flag.NArg() > 0 {
		return fail(fmt.Errorf("unexpected arguments %q", flag.Args()))
	}
	o.datasets = map[string]bool{}
	for _, d := range strings.Split(datasets, ",") {
		d = strings.TrimSpace(d)
		switch d {
		case "":
		case "pg", "redis", "files", "s3", nightsDataset, realtreeDataset, pitrDataset:
			o.datasets[d] = true
		default:
			return fail(fmt.Errorf("-datasets: unknown data set %q (%s)", d, strings.Join(allDatasets, ", ")))
		}
	}
	if o.s3Delay < 0 {
		return fail(fmt.Errorf("-s3-delay %s: must not be negative", o.s3Delay))
	}
	prof := fullProfile
	if o.quick {
		prof = quickProfile
	}
	prof.PgRandomFiller = o.randomFiller
	if o.nights != 0 {
		if o.nights < 2 {
			return fail(fmt.Errorf("-nights %d: at least 2 (a middle night and the last one are restored)", o.nights))
		}
		prof.Nights.Nights = o.nights
	}

	return o, prof, datasets, nil
}

// runDatasets runs the chosen data sets and the index memory benchmark,
// recording errors in the results; it returns the data sets that failed.
func (b *bench) runDatasets(root string) []string {
	o, ctx := b.o, b.ctx
	var failed []string
	if err := b.runStartup(); err != nil {
		b.res.Errors = append(b.res.Errors, fmt.Sprintf("startup: %v", err))
	}
	for _, ds := range []struct {
		name string
		fn   func() error
	}{{"pg", b.runPG}, {"redis", b.runRedis}, {"files", b.runFiles}, {"s3", b.runS3},
		{nightsDataset, b.runPGNights}, {realtreeDataset, b.runRealtree}, {pitrDataset, b.runPITR}} {
		if !o.datasets[ds.name] {
			continue
		}
		if ctx.Err() != nil {
			break
		}
		t0 := time.Now()
		b.logf("== %s", ds.name)
		if err := ds.fn(); err != nil {
			b.logf("!! %s failed: %v", ds.name, err)
			b.res.Errors = append(b.res.Errors, fmt.Sprintf("%s: %v", ds.name, err))
			failed = append(failed, ds.name)
		} else {
			b.logf("== %s done in %s", ds.name, time.Since(t0).Round(time.Second))
		}
		if err := b.tidy(); err != nil {
			b.logf("!! tidy the work dir after %s: %v", ds.name, err)
		}
	}
	if !o.skipIndex && ctx.Err() == nil {
		b.logf("== index memory (go test -bench BenchmarkIndexMemory ./index)")
		im, err := indexMemory(ctx, root)
		if err != nil {
			b.logf("!! index memory: %v", err)
			b.res.Errors = append(b.res.Errors, fmt.Sprintf("index memory: %v", err))
		}
		b.res.IndexMemory = im
	}
	return failed
}

// allDatasets is the default -datasets list, in the order they run.
var allDatasets = []string{"pg", "redis", "files", "s3", nightsDataset, realtreeDataset, pitrDataset}

// repoRoot is the directory of cairn's go.mod, searched upwards from the
// working directory.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && strings.Contains(string(b), "module github.com/cairn-backup/cairn\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("run from inside the cairn repository (go.mod of github.com/cairn-backup/cairn not found)")
		}
		dir = parent
	}
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
