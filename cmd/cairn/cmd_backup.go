package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/cairn-backup/cairn/tailbuf"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/cairn-backup/cairn/archiver"
	"github.com/cairn-backup/cairn/crypto"
	"github.com/cairn-backup/cairn/pathmatch"
	"github.com/cairn-backup/cairn/repo"
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
	noDelta          bool
	// Flags of the database and cache sources, registered by their files.
	pg    pgBackupFlags
	redis redisBackupFlags
}

// backupSource is one non-file input of a backup: its streams, the source
// records for the snapshot, and finish, which runs after the streams were
// read and returns an error if the source failed (then no snapshot is
// written unless the source is optional).
type backupSource struct {
	streams  []archiver.Stream
	sources  []repo.Source
	finish   func(res *archiver.Result) error
	optional bool
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
	var f backupFlags
	cmd := &cobra.Command{
		Use:   "backup [flags] PATH... | --stdin | --stdin-from-command -- CMD ARGS...",
		Short: "Create a snapshot of files, directories or a stream",
		RunE: func(cmd *cobra.Command, args []string) error {
			if f.config != "" {
				var err error
				if args, err = a.applyBackupProfile(cmd, &f, args); err != nil {
					return err
				}
			}
			return a.runBackup(cmd.Context(), f, args)
		},
	}
	fl := cmd.Flags()
	fl.BoolVar(&f.stdin, "stdin", false, "read the content of one file from standard input")
	fl.StringVar(&f.stdinFilename, "stdin-filename", "stdin", "`name` of the file stored from --stdin or --stdin-from-command")
	fl.BoolVar(&f.stdinFromCommand, "stdin-from-command", false, "store the standard output of the command given after --; no snapshot unless it exits 0")
	fl.StringVar(&f.stdinKind, "stdin-kind", repo.ChunkingAuto, "chunking of the stream: files (about 1 MiB chunks), database (about 256 KiB, and changed chunks stored as deltas: for dumps that change in scattered rows) or auto (database for a pg_dump or Redis RDB stream, else files)")
	fl.StringArrayVar(&f.tags, "tag", nil, "add `tags` (comma-separated, repeatable)")
	fl.StringVar(&f.host, "host", "", "record `hostname` instead of this machine's")
	fl.StringVar(&f.timeStr, "time", "", "record `time` (RFC3339) as the snapshot time instead of now")
	fl.StringArrayVarP(&f.excludes, "exclude", "e", nil, "exclude paths matching `pattern` (repeatable)")
	fl.StringVar(&f.parent, "parent", "", "use snapshot `ID` as parent instead of the newest of the same host and paths")
	fl.StringVar(&f.config, "config", "", "back up every source of the deployment profile `file` (TOML) into one snapshot")
	fl.BoolVar(&f.noDelta, "no-delta", false, "store changed chunks of database streams in full, not as deltas against the parent snapshot")
	registerPgBackupFlags(fl, &f.pg)
	registerRedisBackupFlags(fl, &f.redis)
	return cmd
}

func (a *app) runBackup(ctx context.Context, f backupFlags, args []string) error {
	start := time.Now()
	var command []string
	paths := args
	if f.stdinFromCommand {
		command, paths = args, nil
		if len(command) == 0 {
			return errors.New("--stdin-from-command needs a command after --")
		}
	}
	if f.stdinKind != repo.ChunkingFiles && f.stdinKind != repo.ChunkingDatabase && f.stdinKind != repo.ChunkingAuto {
		return fmt.Errorf("invalid --stdin-kind %q: want files, database or auto", f.stdinKind)
	}
	if f.stdin && f.stdinFromCommand {
		return errors.New("--stdin and --stdin-from-command exclude each other")
	}
	if len(paths) == 0 && !f.stdin && !f.stdinFromCommand && !f.pg.enabled() && !f.redis.enabled() {
		return errors.New("nothing to back up: give paths, --stdin, --stdin-from-command, --pg or --redis")
	}
	snapTime := start
	if f.timeStr != "" {
		t, err := time.Parse(time.RFC3339, f.timeStr)
		if err != nil {
			return fmt.Errorf("invalid --time %q: want RFC3339 such as 2026-01-02T03:04:05Z", f.timeStr)
		}
		snapTime = t
	}
	host := f.host
	if host == "" {
		host, _ = os.Hostname()
	}
	excludes, err := pathmatch.ParseList(f.excludes)
	if err != nil {
		return err
	}
	var absPaths []string
	for _, p := range paths {
		ap, err := filepath.Abs(p)
		if err != nil {
			return fmt.Errorf("path %s: %w", p, err)
		}
		absPaths = append(absPaths, ap)
	}
	name := strings.Trim(filepath.ToSlash(f.stdinFilename), "/")
	if name == "" || strings.Contains(name, "..") {
		return fmt.Errorf("invalid --stdin-filename %q", f.stdinFilename)
	}

	a.memoryBase = backupMemoryBase
	r, err := a.openRepo(ctx, true)
	if err != nil {
		return err
	}
	defer r.Close()

	sns, listErr := r.ListSnapshots(ctx)
	if listErr != nil && ctx.Err() != nil {
		return ctx.Err()
	}
	var extra []backupSource
	switch {
	case f.stdin:
		extra = append(extra, backupSource{
			streams: []archiver.Stream{{Path: "/" + name, Reader: a.stdin, Chunking: f.stdinKind}},
			sources: []repo.Source{{Kind: "stdin", Name: "/" + name, Status: repo.SourceOK}},
		})
	case f.stdinFromCommand:
		src, err := a.commandSource(ctx, command, "/"+name, f.stdinKind)
		if err != nil {
			return err
		}
		extra = append(extra, src)
	}
	// abort stops the sources already started (it waits for their
	// commands) and returns err.
	abort := func(err error) error {
		for _, e := range extra {
			if e.finish != nil {
				_ = e.finish(nil)
			}
		}
		return err
	}
	skipped := 0
	adds := []struct {
		add      func(context.Context, *backupFlags) ([]backupSource, error)
		kind     string
		optional bool
	}{
		{a.pgBackupSources, "postgres", f.pg.optional},
		{a.redisBackupSources, "redis", f.redis.optional},
	}
	for _, s := range adds {
		srcs, err := s.add(ctx, &f)
		if err != nil {
			if s.optional && ctx.Err() == nil {
				fmt.Fprintf(a.stderr, "warning: optional source skipped: %v\n", err)
				skipped++
				extra = append(extra, backupSource{optional: true, sources: []repo.Source{{Kind: s.kind, Name: "/" + s.kind, Status: repo.SourceSkipped, Error: err.Error()}}})
				continue
			}
			return abort(fmt.Errorf("%w; no snapshot was written", err))
		}
		extra = append(extra, srcs...)
	}
	// The snapshot's paths are the backed-up paths and the streams' names,
	// so snapshots of the same sources group together.
	snapPaths := append([]string(nil), absPaths...)
	for _, e := range extra {
		for _, st := range e.streams {
			snapPaths = append(snapPaths, st.Path)
		}
	}
	var parent *repo.Snapshot
	if f.parent != "" {
		parent, err = findSnapshot(ctx, r, f.parent, "")
		if err != nil {
			return abort(fmt.Errorf("--parent: %w", err))
		}
	} else if len(snapPaths) > 0 {
		// Streams too: a database stream's changed chunks become deltas
		// against its version in the parent.
		parent = findParent(sns, host, snapPaths)
	}
	var streams []archiver.Stream
	var sources []repo.Source
	for _, e := range extra {
		streams = append(streams, e.streams...)
		sources = append(sources, e.sources...)
	}
	for _, p := range absPaths {
		sources = append(sources, repo.Source{Kind: "files", Name: p, Status: repo.SourceOK})
	}
	streamPrev := map[string]*repo.Snapshot{}
	for _, st := range streams {
		streamPrev[st.Path] = findStreamPrev(sns, host, st.Path)
	}

	var warnMu sync.Mutex
	var warned []string
	progress := &archiver.Progress{}
	stopProgress := a.startProgress(ctx, progress, absPaths, excludes)
	res, err := archiver.Run(ctx, r, absPaths, streams, archiver.Options{
		Excludes:   excludes,
		Parent:     parent,
		Progress:   progress,
		NoDelta:    f.noDelta,
		StreamPrev: streamPrev,
		Warn: func(p string, err error) {
			warnMu.Lock()
			warned = append(warned, p)
			warnMu.Unlock()
			stopProgress(false)
			fmt.Fprintf(a.stderr, "warning: %s: %v\n", p, unwrapPath(err))
		},
	})
	stopProgress(true)
	// Every source is finished (commands waited for) whatever happened.
	var sourceErrs []error
	for i, e := range extra {
		if e.finish == nil {
			continue
		}
		ferr := e.finish(res)
		if ferr == nil {
			continue
		}
		if e.optional && err == nil {
			fmt.Fprintf(a.stderr, "warning: optional source skipped: %v\n", ferr)
			skipped++
			for j := range extra[i].sources {
				extra[i].sources[j].Status, extra[i].sources[j].Error = repo.SourceSkipped, ferr.Error()
			}
			continue
		}
		sourceErrs = append(sourceErrs, ferr)
	}
	if len(sourceErrs) > 0 {
		if err != nil && !errors.Is(err, context.Canceled) {
			sourceErrs = append(sourceErrs, err)
		}
		return fmt.Errorf("%w; no snapshot was written", errors.Join(sourceErrs...))
	}
	if err != nil {
		return fmt.Errorf("backup failed: %w; no snapshot was written", err)
	}
	sources = sources[:0]
	for _, e := range extra {
		sources = append(sources, e.sources...)
	}
	for _, p := range absPaths {
		sources = append(sources, repo.Source{Kind: "files", Name: p, Status: repo.SourceOK})
	}
	if err := r.Flush(ctx); err != nil {
		return fmt.Errorf("backup failed: %w; no snapshot was written", err)
	}
	// A skipped optional source must not leave a half-read stream in the
	// tree that looks complete.
	var dropped []string
	for _, e := range extra {
		for _, src := range e.sources {
			if src.Status == repo.SourceSkipped {
				for _, st := range e.streams {
					dropped = append(dropped, st.Path)
				}
				break
			}
		}
	}
	if len(dropped) > 0 {
		root, derr := archiver.DropPaths(ctx, r, res.Tree, dropped)
		if derr != nil {
			return fmt.Errorf("backup failed: %w; no snapshot was written", derr)
		}
		res.Tree = root
		if err := r.Flush(ctx); err != nil {
			return fmt.Errorf("backup failed: %w; no snapshot was written", err)
		}
	}
	for i := range sources {
		if sz, ok := res.StreamSizes[sources[i].Name]; ok && sources[i].Status != repo.SourceSkipped {
			sources[i].Size = sz
		}
		if sz, ok := res.PathSizes[sources[i].Name]; ok && sources[i].Kind == "files" {
			sources[i].Size = sz
		}
	}
	if len(warned) > 0 {
		for i := range sources {
			if sources[i].Kind == "files" {
				sources[i].Status = repo.SourcePartial
			}
		}
	}
	u, _ := user.Current()
	end := time.Now()
	res.Summary.BackupStart, res.Summary.BackupEnd = start, end
	sn := &repo.Snapshot{
		Time: snapTime, Tree: res.Tree, Paths: snapPaths, Hostname: host,
		Tags: splitTags(f.tags), ProgramVersion: "cairn " + version, Summary: &res.Summary, Sources: sources,
	}
	if u != nil {
		sn.Username = u.Username
	}
	if parent != nil {
		pid := parent.ID
		sn.Parent = &pid
	}
	id, err := r.SaveSnapshot(ctx, sn)
	if err != nil {
		return err
	}
	a.printBackupSummary(id, res, parent, end.Sub(start))
	if len(warned) > 0 || skipped > 0 {
		return fmt.Errorf("%w: %d file(s) or directories and %d source(s) were skipped", errPartial, len(warned), skipped)
	}
	return nil
}

// commandSource runs a command and stores its standard output at path.
func (a *app) commandSource(ctx context.Context, command []string, path, kind string) (backupSource, error) {
	c := exec.CommandContext(ctx, command[0], command[1:]...)
	stderr := tailbuf.New(64 << 10)
	c.Stderr = io.MultiWriter(stderr, a.stderr)
	out, err := c.StdoutPipe()
	if err != nil {
		return backupSource{}, err
	}
	if err := c.Start(); err != nil {
		return backupSource{}, fmt.Errorf("start %s: %w", command[0], err)
	}
	return backupSource{
		streams: []archiver.Stream{{Path: path, Reader: out, Chunking: kind}},
		sources: []repo.Source{{Kind: "command", Name: path, Status: repo.SourceOK, Meta: map[string]string{"command": strings.Join(command, " ")}}},
		finish: func(*archiver.Result) error {
			if err := c.Wait(); err != nil {
				msg := stderr.String()
				if msg != "" {
					msg = ": " + lastLines(msg, 5)
				}
				return fmt.Errorf("command %q failed (%v)%s", strings.Join(command, " "), err, msg)
			}
			return nil
		},
	}, nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
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
		_ = a.printJSON(map[string]any{
			"message_type": "summary", "snapshot_id": id.String(),
			"files_new": s.FilesNew, "files_changed": s.FilesChanged, "files_unmodified": s.FilesUnmodified,
			"dirs_new": s.DirsNew, "dirs_changed": s.DirsChanged, "dirs_unmodified": s.DirsUnmodified,
			"data_blobs": s.DataBlobs, "delta_blobs": s.DeltaBlobs, "tree_blobs": s.TreeBlobs,
			"data_added": s.DataAdded, "data_added_packed": s.DataAddedPacked,
			"total_files_processed": s.TotalFilesProcessed, "total_bytes_processed": s.TotalBytesProcessed,
			"total_duration": d.Seconds(), "files_read": res.FilesRead,
		})
		return
	}
	if parent != nil {
		a.printf("using parent snapshot %s\n", parent.ID.Short())
	}
	a.printf("Files:       %5d new, %5d changed, %5d unmodified\n", s.FilesNew, s.FilesChanged, s.FilesUnmodified)
	a.printf("Dirs:        %5d new, %5d changed, %5d unmodified\n", s.DirsNew, s.DirsChanged, s.DirsUnmodified)
	if s.DeltaBlobs > 0 {
		a.printf("Added to the repository: %s (%s stored; %d of %d chunks as deltas)\n", formatBytes(s.DataAdded), formatBytes(s.DataAddedPacked), s.DeltaBlobs, s.DataBlobs)
	} else {
		a.printf("Added to the repository: %s (%s stored)\n", formatBytes(s.DataAdded), formatBytes(s.DataAddedPacked))
	}
	rate := float64(s.TotalBytesProcessed) / max(d.Seconds(), 1e-3) / (1 << 20)
	a.printf("processed %d files, %s in %s (%.1f MiB/s)\n", s.TotalFilesProcessed, formatBytes(s.TotalBytesProcessed), d.Round(time.Millisecond), rate)
	a.printf("snapshot %s saved\n", id.Short())
}

// startProgress prints a progress line to a terminal stderr every 250 ms
// and returns a function that clears it (and stops it for good when final).
func (a *app) startProgress(ctx context.Context, p *archiver.Progress, paths []string, ex pathmatch.List) func(final bool) {
	f, ok := a.stderr.(*os.File)
	if a.quiet || a.jsonOutput || !ok || !term.IsTerminal(int(f.Fd())) {
		return func(bool) {}
	}
	go scanTotals(ctx, p, paths, ex)
	var mu sync.Mutex
	stopped := false
	done := make(chan struct{})
	start := time.Now()
	clear := func() { fmt.Fprint(f, "\r\033[K") }
	go func() {
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			mu.Lock()
			if !stopped {
				el := time.Since(start)
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
			}
			mu.Unlock()
		}
	}()
	var once sync.Once
	return func(final bool) {
		mu.Lock()
		clear()
		mu.Unlock()
		if final {
			once.Do(func() {
				mu.Lock()
				stopped = true
				mu.Unlock()
				close(done)
			})
		}
	}
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
