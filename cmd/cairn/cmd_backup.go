package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/cairn-backup/cairn/archiver"
	"github.com/cairn-backup/cairn/crypto"
	"github.com/cairn-backup/cairn/internal/backup"
	"github.com/cairn-backup/cairn/internal/profile"
	"github.com/cairn-backup/cairn/internal/retention"
	"github.com/cairn-backup/cairn/internal/source"
	"github.com/cairn-backup/cairn/internal/source/command"
	"github.com/cairn-backup/cairn/pathmatch"
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/repo/backend"
)

type backupFlags struct {
	stdin            bool
	stdinFilename    string
	stdinFromCommand bool
	stdinKind        string
	tags             []string
	host             string
	timeStr          string
	excludes         []string
	parent           string
	config           string
	profile          *profile.Profile // with --config, once loaded
	metricsFile      string
	noDelta          bool
	// sources are the databases and caches; each registers its flags.
	sources []source.Source
}

func splitTags(in []string) []string {
	var out []string
	for _, t := range in {
		for _, x := range strings.Split(t, ",") {
			if x = strings.TrimSpace(x); x != "" {
				out = append(out, x)
			}
		}
	}
	return out
}

func (a *app) backupCommand() *cobra.Command {
	f := backupFlags{sources: newSources()}
	cmd := &cobra.Command{
		Use:   "backup [flags] PATH... | --stdin | --stdin-from-command -- CMD ARGS...",
		Short: "Create a snapshot of files, directories or a stream",
		RunE: func(cmd *cobra.Command, args []string) error {
			start := time.Now()
			var res *backup.Result
			var notify *pinger
			err := func() (err error) {
				if f.config != "" {
					args, err = a.applyBackupProfile(cmd, &f, args)
				}
				// A profile that names a URL but fails its own checks (a
				// missing path) still reports the failure.
				if f.profile != nil {
					notify = newPinger(f.profile.Notify.URL, func(err error) { fmt.Fprintf(a.stderr, "warning: %v\n", err) })
				}
				if err != nil {
					return err
				}
				notify.start(cmd.Context())
				res, err = a.runBackup(cmd.Context(), f, args)
				return err
			}()
			notify.finish(cmd.Context(), exitCode(cmd.Context(), err), err)
			if f.metricsFile != "" {
				m := backupMetrics{Start: start, Duration: time.Since(start), ExitCode: exitCode(cmd.Context(), err), Result: res}
				if f.profile != nil {
					m.Profile = f.profile.Name
				}
				if merr := writeMetricsFile(f.metricsFile, m); merr != nil {
					fmt.Fprintf(a.stderr, "warning: %v\n", merr)
				}
			}
			return err
		},
	}
	fl := cmd.Flags()
	fl.BoolVar(&f.stdin, "stdin", false, "read the content of one file from standard input")
	fl.StringVar(&f.stdinFilename, "stdin-filename", "stdin", "`name` of the file stored from --stdin or --stdin-from-command")
	fl.BoolVar(&f.stdinFromCommand, "stdin-from-command", false, "store the standard output of the command given after --; no snapshot unless it exits 0")
	fl.StringVar(&f.stdinKind, "stdin-kind", repo.ChunkingAuto, "chunking of the stream: files (about 1 MiB chunks), database (about 256 KiB, and changed chunks stored as deltas: for dumps that change in scattered rows) or auto (database for a pg_dump or Redis RDB stream, else files)")
	fl.StringArrayVar(&f.tags, "tag", nil, "add `tags` (comma-separated, repeatable)")
	fl.StringVar(&f.host, "host", "", "record `hostname` instead of this machine's")
	fl.StringVar(&f.timeStr, "time", "", "record `time` as the snapshot time instead of now (RFC 3339, or local 2026-01-06 03:00[:00] or 2026-01-06)")
	fl.StringArrayVarP(&f.excludes, "exclude", "e", nil, "exclude paths matching `pattern` (repeatable)")
	fl.StringVar(&f.parent, "parent", "", "use snapshot `ID` as parent instead of the newest of the same host and paths")
	fl.StringVar(&f.config, "config", "", "back up every source of the deployment profile `file` (TOML) into one snapshot")
	fl.StringVar(&f.metricsFile, "metrics-file", os.Getenv("CAIRN_METRICS_FILE"), "after the backup, write its outcome in Prometheus text format to `file` (for node_exporter's textfile collector), replaced atomically; env CAIRN_METRICS_FILE")
	fl.BoolVar(&f.noDelta, "no-delta", false, "store changed chunks of database streams in full, not as deltas against the parent snapshot")
	for _, s := range f.sources {
		s.BackupFlags(fl)
	}
	return cmd
}

func (a *app) runBackup(ctx context.Context, f backupFlags, args []string) (*backup.Result, error) {
	start := time.Now()
	p, argv, err := backupPlan(f, args)
	if err != nil {
		return nil, err
	}
	name := strings.Trim(filepath.ToSlash(f.stdinFilename), "/")

	a.memoryBase = backupMemoryBase
	r, err := a.openRepo(ctx, true, backend.Snapshot)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	if f.parent != "" {
		if p.Parent, err = findSnapshot(ctx, r, f.parent, ""); err != nil {
			return nil, fmt.Errorf("--parent: %w", err)
		}
	}
	if p.Captures, err = a.startSources(ctx, &f, argv, name); err != nil {
		return nil, err
	}
	progress := &archiver.Progress{}
	var errorCount atomic.Int64
	stopProgress := a.startProgress(ctx, progress, &errorCount, p.Paths, p.Excludes)
	p.Progress = progress
	p.Unreadable = func(path string, err error) {
		errorCount.Add(1)
		stopProgress(false)
		if a.jsonOutput {
			_ = a.printJSONTo(a.stderr, newErrorJSON(unwrapPath(err), "archival", path))
			return
		}
		fmt.Fprintf(a.stderr, "warning: %s: %v\n", path, unwrapPath(err))
	}
	p.SourceSkipped = func(err error) { fmt.Fprintf(a.stderr, "warning: optional source skipped: %v\n", err) }
	res, err := backup.Run(ctx, r, p)
	stopProgress(true)
	if err != nil {
		return nil, err
	}
	a.checkBaseWAL(ctx, r, res.Snapshot)
	// Offsite copies come before the summary, which --json prints last.
	var offsiteErr error
	if f.profile != nil && len(f.profile.Offsite) > 0 {
		offsiteErr = a.copyOffsite(ctx, r, res.ID, f.profile)
	}
	a.printBackupSummary(res.ID, res.Archive, res.Parent, time.Since(start))
	if offsiteErr != nil {
		return res, offsiteErr
	}
	if res.Unreadable > 0 || res.Skipped > 0 {
		return res, fmt.Errorf("%w: %d file(s) or directories and %d source(s) were skipped", errPartial, res.Unreadable, res.Skipped)
	}
	return res, nil
}

// backupPlan checks the flags and turns them into a plan (without its
// sources); argv is the command of --stdin-from-command.
func backupPlan(f backupFlags, args []string) (p backup.Plan, argv []string, err error) {
	paths := args
	if f.stdinFromCommand {
		argv, paths = args, nil
		if len(argv) == 0 {
			return p, nil, errors.New("--stdin-from-command needs a command after --")
		}
	}
	switch {
	case f.stdinKind != repo.ChunkingFiles && f.stdinKind != repo.ChunkingDatabase && f.stdinKind != repo.ChunkingAuto:
		return p, nil, fmt.Errorf("invalid --stdin-kind %q: want files, database or auto", f.stdinKind)
	case f.stdin && f.stdinFromCommand:
		return p, nil, errors.New("--stdin and --stdin-from-command exclude each other")
	case len(paths) == 0 && !f.stdin && !f.stdinFromCommand && !slices.ContainsFunc(f.sources, source.Source.BackupEnabled):
		hints := []string{"paths", "--stdin", "--stdin-from-command"}
		for _, s := range f.sources {
			b, _ := s.Hints()
			hints = append(hints, b)
		}
		return p, nil, fmt.Errorf("nothing to back up: give %s or %s", strings.Join(hints[:len(hints)-1], ", "), hints[len(hints)-1])
	}
	if f.timeStr != "" {
		// The forms of restore --at: RFC 3339 or local time.
		if p.Time, err = retention.ParseAt(f.timeStr, time.Local); err != nil {
			return p, nil, fmt.Errorf("--time: %w", err)
		}
	}
	p.Host = f.host
	if p.Host == "" {
		p.Host, _ = os.Hostname()
	}
	if p.Excludes, err = pathmatch.ParseList(f.excludes); err != nil {
		return p, nil, err
	}
	for _, path := range paths {
		ap, err := filepath.Abs(path)
		if err != nil {
			return p, nil, fmt.Errorf("path %s: %w", path, err)
		}
		p.Paths = append(p.Paths, ap)
	}
	if name := strings.Trim(filepath.ToSlash(f.stdinFilename), "/"); name == "" || strings.Contains(name, "..") {
		return p, nil, fmt.Errorf("invalid --stdin-filename %q", f.stdinFilename)
	}
	p.Tags, p.NoDelta, p.ProgramVersion = splitTags(f.tags), f.noDelta, "cairn "+version
	if f.profile != nil {
		p.Group = f.profile.Tag()
	}
	return p, argv, nil
}

// startSources starts the sources the flags ask for: standard input or a
// command, then the databases and caches. A required source that cannot
// start stops the ones already started.
func (a *app) startSources(ctx context.Context, f *backupFlags, argv []string, name string) ([]source.Capture, error) {
	var captures []source.Capture
	switch {
	case f.stdin:
		captures = append(captures, source.Stdin("/"+name, a.stdin, f.stdinKind))
	case f.stdinFromCommand:
		c, err := command.Start(ctx, argv, "/"+name, f.stdinKind, a.stderr)
		if err != nil {
			return nil, err
		}
		captures = append(captures, c)
	}
	for _, s := range f.sources {
		if !s.BackupEnabled() {
			continue
		}
		cs, err := s.Start(ctx, a.out())
		if err == nil {
			captures = append(captures, cs...)
			continue
		}
		if s.Optional() && ctx.Err() == nil {
			fmt.Fprintf(a.stderr, "warning: optional source skipped: %v\n", err)
			captures = append(captures, source.Skipped(s.Name(), err))
			continue
		}
		for _, c := range captures {
			if c.Finish != nil {
				_ = c.Finish(nil)
			}
		}
		return nil, fmt.Errorf("%w; %w", err, backup.ErrNoSnapshot)
	}
	return captures, nil
}

func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s: %w", pe.Op, pe.Err)
	}
	return err
}

func (a *app) printBackupSummary(id crypto.ID, res *archiver.Result, parent *repo.Snapshot, d time.Duration) {
	s := res.Summary
	if a.jsonOutput {
		_ = a.printJSON(newBackupJSON(id, res, d.Seconds()))
		return
	}
	if parent != nil {
		a.printf("using parent snapshot %s\n", parent.ID.Short())
	}
	a.printf("Files:       %5d new, %5d changed, %5d unmodified\n", s.FilesNew, s.FilesChanged, s.FilesUnmodified)
	a.printf("Dirs:        %5d new, %5d changed, %5d unmodified\n", s.DirsNew, s.DirsChanged, s.DirsUnmodified)
	// New data is what the repository did not hold as it is; what was
	// stored for it is far less when changed chunks became deltas.
	a.printf("New data:    %s in %d chunks (before compression and deltas)\n", formatBytes(s.DataAdded), s.DataBlobs)
	if s.DeltaBlobs > 0 {
		a.printf("Stored:      %s (%d chunks as deltas against their previous version)\n", formatBytes(s.DataAddedPacked), s.DeltaBlobs)
	} else {
		a.printf("Stored:      %s\n", formatBytes(s.DataAddedPacked))
	}
	rate := float64(s.TotalBytesProcessed) / max(d.Seconds(), 1e-3) / (1 << 20)
	a.printf("processed %d files, %s in %s (%.1f MiB/s)\n", s.TotalFilesProcessed, formatBytes(s.TotalBytesProcessed), d.Round(time.Millisecond), rate)
	a.printf("snapshot %s saved\n", id.Short())
}

// startProgress prints a progress line to a terminal stderr every 250 ms
// and returns a function that clears it (and stops it for good when final).
func (a *app) startProgress(ctx context.Context, p *archiver.Progress, errs *atomic.Int64, paths []string, ex pathmatch.List) func(final bool) {
	f, ok := a.stderr.(*os.File)
	tty := ok && term.IsTerminal(int(f.Fd()))
	switch {
	case a.quiet:
		return func(bool) {}
	case a.jsonOutput:
		go scanTotals(ctx, p, paths, ex)
		return a.jsonStatus(p, errs, time.Second)
	case !tty:
		stop := a.logEvery("backup", func() string {
			return fmt.Sprintf("%d files, %s read", p.Files.Load(), formatBytes(uint64(p.Bytes.Load())))
		})
		return func(final bool) {
			if final {
				stop()
			}
		}
	}
	go scanTotals(ctx, p, paths, ex)
	var mu sync.Mutex
	stopped := false
	clear := func() { fmt.Fprint(f, "\r\033[K") }
	stop := every(250*time.Millisecond, func(el time.Duration) {
		mu.Lock()
		defer mu.Unlock()
		if stopped {
			return
		}
		b := p.Bytes.Load()
		rate := float64(b) / max(el.Seconds(), 1e-3)
		line := fmt.Sprintf("[%s] %d files, %s, %s/s", el.Round(time.Second), p.Files.Load(), formatBytes(uint64(b)), formatBytes(uint64(rate)))
		if p.ScanDone.Load() {
			tb, tf := p.TotalBytes.Load(), p.TotalFiles.Load()
			line += fmt.Sprintf(" of %d files, %s", tf, formatBytes(uint64(tb)))
			if rate > 0 && tb > b {
				line += fmt.Sprintf(", ETA %s", time.Duration(float64(tb-b)/rate*float64(time.Second)).Round(time.Second))
			}
		}
		clear()
		fmt.Fprint(f, line)
	})
	return func(final bool) {
		mu.Lock()
		clear()
		if final {
			stopped = true
		}
		mu.Unlock()
		if final {
			stop()
		}
	}
}

// progressLogInterval is how often a long command whose stderr is a log
// (cron, systemd) says how far it got, so that a long night is not silent
// (CAIRN_PROGRESS_INTERVAL changes it).
const progressLogInterval = 30 * time.Second

// logEvery writes "progress: what: elapsed: state()" to stderr at every
// interval when stderr is not a terminal (and not quiet), until the
// returned function is called.
func (a *app) logEvery(what string, state func() string) (stop func()) {
	if f, ok := a.stderr.(*os.File); a.quiet || ok && term.IsTerminal(int(f.Fd())) {
		return func() {}
	}
	interval := progressLogInterval
	if d := envDuration("CAIRN_PROGRESS_INTERVAL"); d > 0 {
		interval = d
	}
	return every(interval, func(elapsed time.Duration) {
		fmt.Fprintf(a.stderr, "progress: %s: %s: %s\n", what, elapsed.Round(time.Second), state())
	})
}

// jsonStatus writes a restic-style status line to stdout every interval
// until the returned function is called with final set; that call waits
// for the last line, so the summary comes after every status line.
func (a *app) jsonStatus(p *archiver.Progress, errs *atomic.Int64, interval time.Duration) func(final bool) {
	stop := every(interval, func(elapsed time.Duration) {
		_ = a.printJSON(newStatusJSON(p, errs.Load(), elapsed))
	})
	return func(final bool) {
		if final {
			stop()
		}
	}
}

// every calls fn with the time elapsed at each tick of interval until stop
// is called; stop returns once fn is no longer running.
func every(interval time.Duration, fn func(elapsed time.Duration)) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	start := time.Now()
	wg.Go(func() {
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			fn(time.Since(start))
		}
	})
	var once sync.Once
	return func() { once.Do(func() { close(done); wg.Wait() }) }
}

// scanTotals walks the paths to learn the totals for the ETA.
func scanTotals(ctx context.Context, p *archiver.Progress, paths []string, ex pathmatch.List) {
	for _, root := range paths {
		_ = filepath.WalkDir(root, func(fp string, d os.DirEntry, err error) error {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if err != nil {
				return nil
			}
			if ex.Match(filepath.ToSlash(fp)) {
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
			if d.Type().IsRegular() {
				if fi, err := d.Info(); err == nil {
					p.TotalFiles.Add(1)
					p.TotalBytes.Add(fi.Size())
				}
			}
			return nil
		})
	}
	p.ScanDone.Store(true)
}
