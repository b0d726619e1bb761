// Package walarchive keeps a PostgreSQL server's write-ahead log in a
// repository: it stores WAL files pushed by archive_command (wal-push),
// writes them back for restore_command (wal-fetch), and reads the archive
// as a whole: the range archived per server and timeline, the gaps in it,
// and which files no kept base backup needs any more (forget).
package walarchive

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/cairn-backup/cairn/chunk"
	"github.com/cairn-backup/cairn/crypto"
	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/internal/pgwal"
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/repo/backend"
)

// KindBase is the snapshot source kind of a physical base backup; its
// details are a BaseBackup.
const KindBase = "pg-base"

// BaseBackup is what a snapshot records of a physical base backup: enough
// to pick it for a recovery target and to know the WAL it needs.
type BaseBackup struct {
	SystemID      string    `json:"system_id"`
	Timeline      uint32    `json:"timeline"`
	StartLSN      string    `json:"start_lsn"`
	StopLSN       string    `json:"stop_lsn"`
	StartSegment  string    `json:"start_segment"` // the first WAL file it needs
	StartTime     time.Time `json:"start_time"`
	StopTime      time.Time `json:"stop_time"`
	SegmentSize   int64     `json:"segment_size"`
	ServerVersion string    `json:"server_version,omitempty"`
	// Path is the tar stream of the data directory in the snapshot.
	Path string `json:"path"`
}

// ErrConflict is wrapped when a file is archived already with other
// content: PostgreSQL must not be told it is archived.
var ErrConflict = errors.New("archived already with different content")

// PushResult is what became of one file.
type PushResult struct {
	Name    string
	Path    string
	Stored  bool // newly archived
	Present bool // archived before with the same content
	Err     error
}

// Pusher archives WAL files of one server.
type Pusher struct {
	Repo     *repo.Repository
	SystemID uint64
	Hostname string
	Now      func() time.Time
}

// Push archives the files at paths (the first is the one PostgreSQL asked
// for, the others ready ones taken along). Each file is checked against
// the server (its page header's system identifier) and against what is
// archived; new ones are stored as blobs, made durable (packs and index),
// and only then recorded. A result's Err is set for a file that was not
// archived; the error is for the repository as a whole.
func (p *Pusher) Push(ctx context.Context, paths []string) ([]PushResult, error) {
	r := p.Repo
	sys := strconv.FormatUint(p.SystemID, 10)
	res := make([]PushResult, len(paths))
	var records []*repo.WALFile
	pool := &chunk.BufferPool{}
	for i, path := range paths {
		name := filepath.Base(path)
		res[i] = PushResult{Name: name, Path: path}
		f, err := p.prepare(ctx, sys, path, pool)
		switch {
		case errors.Is(err, errPresent):
			res[i].Present = true
			continue
		case err != nil && ctx.Err() == nil && !isRepoError(err):
			res[i].Err = err
			continue
		case err != nil:
			return res, err
		}
		records = append(records, f)
		res[i].Stored = true
	}
	if len(records) == 0 {
		return res, nil
	}
	if err := r.Flush(ctx); err != nil {
		return res, fmt.Errorf("store WAL: %w", err)
	}
	for _, f := range records {
		if err := r.SaveWALFile(ctx, f); err != nil {
			return res, err
		}
	}
	// Records are written once: if another push of the same name won a
	// race, the stored record is not ours, and this one must not pass.
	for i := range res {
		if !res[i].Stored {
			continue
		}
		f, err := r.LoadWALFile(ctx, sys, res[i].Name)
		if err != nil {
			return res, err
		}
		for _, mine := range records {
			if mine.Name == f.Name && mine.Hash != f.Hash {
				res[i].Stored, res[i].Err = false, fmt.Errorf("%s of system %s: %w (archived at the same moment by %s)", f.Name, sys, ErrConflict, f.Hostname)
			}
		}
	}
	return res, nil
}

var errPresent = errors.New("present")

// repoError marks failures of the repository (not of one file).
type repoError struct{ err error }

func (e *repoError) Error() string { return e.err.Error() }
func (e *repoError) Unwrap() error { return e.err }

func isRepoError(err error) bool {
	var re *repoError
	return errors.As(err, &re)
}

// prepare reads one file, checks it, and stores its blobs (not yet
// durable); it returns its record, errPresent, or why not.
func (p *Pusher) prepare(ctx context.Context, sys, path string, pool *chunk.BufferPool) (*repo.WALFile, error) {
	r := p.Repo
	name := filepath.Base(path)
	n, err := pgwal.ParseName(name)
	if err != nil {
		return nil, err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	var segSize int64
	if n.Kind == pgwal.Segment || n.Kind == pgwal.Partial {
		h, err := pgwal.ParseSegmentHeader(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		if h.SystemID != p.SystemID {
			return nil, fmt.Errorf("%s belongs to database system %d, not to this server's %d", name, h.SystemID, p.SystemID)
		}
		// The first segment of a new timeline is a copy of the old one's
		// up to the switch, so its first page may name an older timeline;
		// its address must still be the segment's own.
		segSize = int64(h.SegmentSize)
		if h.Timeline > n.Timeline || int64(len(data)) != segSize || uint64(h.PageAddr) != n.SegmentNo(segSize)*uint64(segSize) {
			return nil, fmt.Errorf("%s: %d bytes, but its first page says segments of %d bytes, timeline %d, address %v", name, len(data), h.SegmentSize, h.Timeline, h.PageAddr)
		}
	}
	hash := r.Key().BlobID(data)
	old, err := r.LoadWALFile(ctx, sys, name)
	switch {
	case err == nil && old.Hash == hash:
		return nil, errPresent
	case err == nil:
		return nil, fmt.Errorf("%s of system %s: %w (archived %s from %s, %d bytes; now %d bytes)", name, sys, ErrConflict,
			old.Time.Format(time.RFC3339), old.Hostname, old.Size, len(data))
	case !backend.IsNotFound(err):
		return nil, &repoError{err}
	}
	f := &repo.WALFile{SystemID: sys, Name: name, Size: int64(len(data)), Hash: hash, SegmentSize: segSize,
		Time: p.now(), Hostname: p.Hostname}
	// Cut first (the chunks are slices of data), then compress, encrypt
	// and pack them on every core.
	ch := chunk.New(bytes.NewReader(data), r.Config().Polynomial, r.Config().ChunkParams(repo.ChunkingFiles), pool)
	var chunks [][]byte
	for off := 0; ; {
		bp, err := ch.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		n := len(*bp)
		pool.Put(bp)
		chunks = append(chunks, data[off:off+n])
		off += n
	}
	f.Blobs = make([]crypto.ID, len(chunks))
	errs := make([]error, len(chunks))
	var wg sync.WaitGroup
	next := make(chan int)
	for range min(runtime.GOMAXPROCS(0), len(chunks)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				sr, err := r.SaveBlob(ctx, index.DataBlob, chunks[i])
				f.Blobs[i], errs[i] = sr.ID, err
			}
		}()
	}
	for i := range chunks {
		next <- i
	}
	close(next)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, &repoError{fmt.Errorf("store %s: %w", name, err)}
	}
	return f, nil
}

func (p *Pusher) now() time.Time {
	if p.Now != nil {
		return p.Now()
	}
	return time.Now()
}

// Fetch writes the archived files of server sys named in names into dir
// (each under its own name, through a temporary file, synced), reading
// their blobs pack by pack. It returns the names it wrote; a file that is
// not archived ends the list without an error (recovery asks for files
// that may not exist yet).
func Fetch(ctx context.Context, r *repo.Repository, sys string, names []string, dst func(name string) string, downloads int) ([]string, error) {
	var files []*repo.WALFile
	for _, name := range names {
		f, err := r.LoadWALFile(ctx, sys, name)
		if backend.IsNotFound(err) {
			break
		}
		if err != nil {
			return nil, err
		}
		files = append(files, f)
	}
	var ids []crypto.ID
	var owner []int
	for i, f := range files {
		ids = append(ids, f.Blobs...)
		for range f.Blobs {
			owner = append(owner, i)
		}
	}
	outs := make([]*os.File, len(files))
	written := make([]int64, len(files))
	defer func() {
		for _, o := range outs {
			if o != nil {
				o.Close()
				os.Remove(o.Name())
			}
		}
	}()
	for i, f := range files {
		o, err := os.CreateTemp(filepath.Dir(dst(f.Name)), ".cairn-"+f.Name+"-*")
		if err != nil {
			return nil, fmt.Errorf("write %s: %w", f.Name, err)
		}
		outs[i] = o
	}
	err := r.ReadBlobs(ctx, ids, repo.ReadOptions{Ordered: true, Downloads: downloads}, func(k int, plain []byte, err error) error {
		if err != nil {
			return fmt.Errorf("read %s: %w", files[owner[k]].Name, err)
		}
		i := owner[k]
		written[i] += int64(len(plain))
		_, err = outs[i].Write(plain)
		return err
	})
	if err != nil {
		return nil, err
	}
	var done []string
	for i, f := range files {
		if written[i] != f.Size {
			return done, fmt.Errorf("%s: rebuilt %d bytes of %d", f.Name, written[i], f.Size)
		}
		if err := outs[i].Sync(); err != nil {
			return done, err
		}
		if err := outs[i].Close(); err != nil {
			return done, err
		}
		if err := os.Rename(outs[i].Name(), dst(f.Name)); err != nil {
			return done, err
		}
		outs[i] = nil
		done = append(done, f.Name)
	}
	return done, nil
}

// NextSegments returns the names of the n segments after name on its
// timeline (none for other files).
func NextSegments(name string, n int, segSize int64) []string {
	w, err := pgwal.ParseName(name)
	if err != nil || w.Kind != pgwal.Segment {
		return nil
	}
	no := w.SegmentNo(segSize)
	var out []string
	for i := 1; i <= n; i++ {
		out = append(out, pgwal.SegmentName(w.Timeline, no+uint64(i), segSize))
	}
	return out
}

// Timeline is the archived range of one timeline of a server.
type Timeline struct {
	Timeline     uint32    `json:"timeline"`
	First        string    `json:"first_segment"`
	Last         string    `json:"last_segment"`
	Segments     int       `json:"segments"`
	Bytes        int64     `json:"bytes"`
	LastArchived time.Time `json:"last_archived"`
	Gaps         []Gap     `json:"gaps,omitempty"`
}

// Gap is a run of segments missing between two archived ones.
type Gap struct {
	After, Before string // the archived segments around it
	Missing       uint64 // segments
}

// Server is the archive of one database system.
type Server struct {
	SystemID     string     `json:"system_id"`
	Timelines    []Timeline `json:"timelines"`
	History      []string   `json:"history_files,omitempty"`
	Files        int        `json:"files"`
	Bytes        int64      `json:"bytes"`
	LastArchived time.Time  `json:"last_archived"`
}

// Summarize groups WAL records by server and timeline, with the gaps in
// each timeline's sequence of segments.
func Summarize(files []*repo.WALFile) []Server {
	bySys := map[string]*Server{}
	type seg struct {
		no   uint64
		f    *repo.WALFile
		size int64
	}
	segs := map[string]map[uint32][]seg{}
	var order []string
	for _, f := range files {
		s := bySys[f.SystemID]
		if s == nil {
			s = &Server{SystemID: f.SystemID}
			bySys[f.SystemID] = s
			segs[f.SystemID] = map[uint32][]seg{}
			order = append(order, f.SystemID)
		}
		s.Files++
		s.Bytes += f.Size
		if f.Time.After(s.LastArchived) {
			s.LastArchived = f.Time
		}
		n, err := pgwal.ParseName(f.Name)
		if err != nil {
			continue
		}
		switch n.Kind {
		case pgwal.History:
			s.History = append(s.History, f.Name)
		case pgwal.Segment:
			size := f.SegmentSize
			if size == 0 {
				size = pgwal.DefaultSegmentSize
			}
			segs[f.SystemID][n.Timeline] = append(segs[f.SystemID][n.Timeline], seg{n.SegmentNo(size), f, size})
		}
	}
	sort.Strings(order)
	var out []Server
	for _, sys := range order {
		s := bySys[sys]
		var tls []uint32
		for tl := range segs[sys] {
			tls = append(tls, tl)
		}
		sort.Slice(tls, func(i, j int) bool { return tls[i] < tls[j] })
		for _, tl := range tls {
			list := segs[sys][tl]
			sort.Slice(list, func(i, j int) bool { return list[i].no < list[j].no })
			t := Timeline{Timeline: tl, First: list[0].f.Name, Last: list[len(list)-1].f.Name, Segments: len(list)}
			for i, sg := range list {
				t.Bytes += sg.f.Size
				if sg.f.Time.After(t.LastArchived) {
					t.LastArchived = sg.f.Time
				}
				if i > 0 && sg.no > list[i-1].no+1 {
					t.Gaps = append(t.Gaps, Gap{After: list[i-1].f.Name, Before: sg.f.Name, Missing: sg.no - list[i-1].no - 1})
				}
			}
			s.Timelines = append(s.Timelines, t)
		}
		out = append(out, *s)
	}
	return out
}

// BaseOf returns the base backup a snapshot records, if it holds one.
func BaseOf(sn *repo.Snapshot) (*BaseBackup, bool) {
	for _, src := range sn.Sources {
		if src.Kind != KindBase || src.Status != repo.SourceOK {
			continue
		}
		var b BaseBackup
		if json.Unmarshal(src.Details, &b) == nil && b.SystemID != "" && b.StartSegment != "" {
			return &b, true
		}
	}
	return nil, false
}

// Unneeded returns the WAL records that no base backup among kept needs:
// of each server with at least one kept base backup, the segments (and
// backup history files) before the oldest kept base backup's first
// segment. Timeline history files are always kept, and so is the WAL of a
// server without a kept base backup.
func Unneeded(files []*repo.WALFile, kept []*repo.Snapshot) []*repo.WALFile {
	type start struct {
		no   uint64
		size int64
	}
	oldest := map[string]start{}
	for _, sn := range kept {
		b, ok := BaseOf(sn)
		if !ok {
			continue
		}
		n, err := pgwal.ParseName(b.StartSegment)
		if err != nil {
			continue
		}
		size := b.SegmentSize
		if size == 0 {
			size = pgwal.DefaultSegmentSize
		}
		no := n.SegmentNo(size)
		if cur, ok := oldest[b.SystemID]; !ok || no < cur.no {
			oldest[b.SystemID] = start{no, size}
		}
	}
	var out []*repo.WALFile
	for _, f := range files {
		first, ok := oldest[f.SystemID]
		if !ok {
			continue
		}
		n, err := pgwal.ParseName(f.Name)
		if err != nil || n.Kind == pgwal.History {
			continue
		}
		if n.SegmentNo(first.size) < first.no {
			out = append(out, f)
		}
	}
	return out
}
