// Package backup runs a whole backup from a plan: it reads the file system
// paths and the sources' streams into the repository (archiver), ends the
// sources, chooses the parent, and writes the snapshot, the commit point,
// only when every required source succeeded. What to back up, and how it
// is shown, is the caller's (the command line, a profile). RestorePlan is
// the way back for a whole deployment: each source of a snapshot to the
// target its profile names.
package backup

import (
	"context"
	"errors"
	"fmt"
	"os/user"
	"slices"
	"sync"
	"time"

	"github.com/cairn-backup/cairn/archiver"
	"github.com/cairn-backup/cairn/crypto"
	"github.com/cairn-backup/cairn/internal/source"
	"github.com/cairn-backup/cairn/pathmatch"
	"github.com/cairn-backup/cairn/repo"
)

// Plan is one backup.
type Plan struct {
	// Paths are the absolute file system paths to back up.
	Paths []string
	// Captures are the sources, already started; Run ends each of them
	// (Finish) whatever happens.
	Captures []source.Capture
	Excludes pathmatch.List
	Host     string
	Time     time.Time // recorded as the snapshot's time
	Tags     []string
	// Parent, when set, is the parent snapshot; else the newest snapshot
	// of the same host and Group, or without a Group, of the same paths.
	Parent *repo.Snapshot
	// Group is a tag that names the backup's series (a deployment
	// profile's), so that a night whose optional source was skipped has
	// the same parent and the next night's parent is that night.
	Group          string
	NoDelta        bool
	ProgramVersion string
	Progress       *archiver.Progress
	// Unreadable is told of each file or directory that could not be read
	// (the snapshot is still written, and its file records are partial).
	Unreadable func(path string, err error)
	// SourceSkipped is told of each optional source that failed.
	SourceSkipped func(err error)
}

// Result says what Run wrote.
type Result struct {
	ID       crypto.ID
	Snapshot *repo.Snapshot
	Archive  *archiver.Result
	Parent   *repo.Snapshot
	// Unreadable and Skipped count unreadable paths and skipped optional
	// sources: a snapshot with either is partial.
	Unreadable, Skipped int
}

// ErrNoSnapshot is wrapped by every error after which no snapshot was
// written.
var ErrNoSnapshot = errors.New("no snapshot was written")

// Run carries out the plan.
func Run(ctx context.Context, r *repo.Repository, p Plan) (*Result, error) {
	b := &run{plan: p, captures: slices.Clone(p.Captures), start: time.Now()}
	return b.run(ctx, r)
}

type run struct {
	plan     Plan
	captures []source.Capture
	start    time.Time
	mu       sync.Mutex
	warned   int
	skipped  int
}

func (b *run) run(ctx context.Context, r *repo.Repository) (*Result, error) {
	sns, err := r.ListSnapshots(ctx)
	if err != nil && ctx.Err() != nil {
		b.abort()
		return nil, ctx.Err()
	}
	paths := b.snapshotPaths()
	parent := b.plan.Parent
	if parent == nil && len(paths) > 0 {
		// Streams too: a database stream's changed chunks become deltas
		// against its version in the parent.
		if b.plan.Group != "" {
			parent = repo.FindParentInGroup(sns, b.plan.Host, b.plan.Group)
		} else {
			parent = repo.FindParent(sns, b.plan.Host, paths)
		}
	}
	var streams []archiver.Stream
	streamPrev := map[string]*repo.Snapshot{}
	for _, c := range b.captures {
		for _, st := range c.Streams {
			streams = append(streams, st)
			streamPrev[st.Path] = repo.FindStreamPrev(sns, b.plan.Host, st.Path)
		}
	}
	res, err := archiver.Run(ctx, r, b.plan.Paths, streams, archiver.Options{
		Excludes:   b.plan.Excludes,
		Parent:     parent,
		Progress:   b.plan.Progress,
		NoDelta:    b.plan.NoDelta,
		StreamPrev: streamPrev,
		Warn: func(p string, err error) {
			b.mu.Lock()
			b.warned++
			b.mu.Unlock()
			if b.plan.Unreadable != nil {
				b.plan.Unreadable(p, err)
			}
		},
	})
	if ferr := b.finish(res, err); ferr != nil {
		return nil, ferr
	}
	if err != nil {
		return nil, fmt.Errorf("backup failed: %w; %w", err, ErrNoSnapshot)
	}
	if err := r.Flush(ctx); err != nil {
		return nil, fmt.Errorf("backup failed: %w; %w", err, ErrNoSnapshot)
	}
	if err := b.dropSkipped(ctx, r, res); err != nil {
		return nil, err
	}
	for _, c := range b.captures {
		if slices.ContainsFunc(c.Records, func(s repo.Source) bool { return s.Status == repo.SourceSkipped }) {
			b.skipped++
		}
	}
	sn := b.snapshot(res, paths, parent)
	id, err := r.SaveSnapshot(ctx, sn)
	if err != nil {
		return nil, err
	}
	return &Result{ID: id, Snapshot: sn, Archive: res, Parent: parent, Unreadable: b.warned, Skipped: b.skipped}, nil
}

// snapshotPaths are the backed-up paths and the streams' names, so that
// snapshots of the same sources group together.
func (b *run) snapshotPaths() []string {
	paths := slices.Clone(b.plan.Paths)
	for _, c := range b.captures {
		for _, st := range c.Streams {
			paths = append(paths, st.Path)
		}
	}
	return paths
}

// abort ends every source after a failure before the archiver ran.
func (b *run) abort() {
	for _, c := range b.captures {
		if c.Finish != nil {
			_ = c.Finish(nil)
		}
	}
}

// finish ends every source (commands are waited for) whatever happened,
// and returns the failures of required sources. An optional source that
// failed is recorded as skipped, unless the backup failed anyway.
func (b *run) finish(res *archiver.Result, runErr error) error {
	var errs []error
	for i, c := range b.captures {
		if c.Finish == nil {
			continue
		}
		err := c.Finish(res)
		switch {
		case err == nil:
		case c.Optional && runErr == nil:
			if b.plan.SourceSkipped != nil {
				b.plan.SourceSkipped(err)
			}
			for j := range b.captures[i].Records {
				b.captures[i].Records[j].Status, b.captures[i].Records[j].Error = repo.SourceSkipped, err.Error()
			}
		default:
			errs = append(errs, err)
		}
	}
	if len(errs) == 0 {
		return nil
	}
	if runErr != nil && !errors.Is(runErr, context.Canceled) {
		errs = append(errs, runErr)
	}
	return fmt.Errorf("%w; %w", errors.Join(errs...), ErrNoSnapshot)
}

// dropSkipped removes the streams of skipped optional sources from the
// tree: a half-read stream must not look complete.
func (b *run) dropSkipped(ctx context.Context, r *repo.Repository, res *archiver.Result) error {
	var dropped []string
	for _, c := range b.captures {
		if slices.ContainsFunc(c.Records, func(s repo.Source) bool { return s.Status == repo.SourceSkipped }) {
			for _, st := range c.Streams {
				dropped = append(dropped, st.Path)
			}
		}
	}
	if len(dropped) == 0 {
		return nil
	}
	root, err := archiver.DropPaths(ctx, r, res.Tree, dropped)
	if err != nil {
		return fmt.Errorf("backup failed: %w; %w", err, ErrNoSnapshot)
	}
	res.Tree = root
	if err := r.Flush(ctx); err != nil {
		return fmt.Errorf("backup failed: %w; %w", err, ErrNoSnapshot)
	}
	return nil
}

// records are the snapshot's source records: the sources', then one per
// path, with sizes.
func (b *run) records(res *archiver.Result) []repo.Source {
	var out []repo.Source
	for _, c := range b.captures {
		out = append(out, c.Records...)
	}
	for _, p := range b.plan.Paths {
		out = append(out, repo.Source{Kind: source.KindFiles, Name: p, Status: repo.SourceOK})
	}
	for i := range out {
		if sz, ok := res.StreamSizes[out[i].Name]; ok && out[i].Status != repo.SourceSkipped {
			out[i].Size = sz
		}
		if out[i].Kind != source.KindFiles {
			continue
		}
		if sz, ok := res.PathSizes[out[i].Name]; ok {
			out[i].Size = sz
		}
		if b.warned > 0 {
			out[i].Status = repo.SourcePartial
		}
	}
	return out
}

// snapshot builds the snapshot object.
func (b *run) snapshot(res *archiver.Result, paths []string, parent *repo.Snapshot) *repo.Snapshot {
	res.Summary.BackupStart, res.Summary.BackupEnd = b.start, time.Now()
	t := b.plan.Time
	if t.IsZero() {
		t = b.start
	}
	sn := &repo.Snapshot{
		Time: t, Tree: res.Tree, Paths: paths, Hostname: b.plan.Host, Tags: b.plan.Tags,
		ProgramVersion: b.plan.ProgramVersion, Summary: &res.Summary, Sources: b.records(res),
	}
	if u, err := user.Current(); err == nil {
		sn.Username = u.Username
	}
	if parent != nil {
		pid := parent.ID
		sn.Parent = &pid
	}
	return sn
}
