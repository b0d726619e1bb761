// Package archiver turns directories and streams into a snapshot tree in a
// repository: it walks, chunks, deduplicates and saves, reusing unchanged
// files from a parent snapshot without reading them.
package archiver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cairn-backup/cairn/chunk"
	"github.com/cairn-backup/cairn/crypto"
	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/internal/fsmeta"
	"github.com/cairn-backup/cairn/pathmatch"
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/tree"
)

// Stream is a named input read to its end, such as stdin or a command's output.
type Stream struct {
	// Path is where the stream appears in the snapshot, e.g. "/stdin" or
	// "/postgres/app.pgdump". Missing parent directories are created.
	Path   string
	Reader io.Reader
	// Chunking is the stream's chunking profile (repo.ChunkingFiles,
	// repo.ChunkingDatabase; repo.ChunkingAuto picks by content).
	Chunking string
	// Mode of the stored file node (default 0600).
	Mode uint32
}

// Options configure an archiver run.
type Options struct {
	Excludes pathmatch.List
	// Parent is the snapshot unchanged files are taken from; may be nil.
	Parent *repo.Snapshot
	// Warn receives non-fatal problems (unreadable files, xattrs).
	Warn func(path string, err error)
	// FileWorkers bounds files read at once (default 4); BlobWorkers bounds
	// chunks hashed, compressed and encrypted at once (default GOMAXPROCS).
	FileWorkers, BlobWorkers int
	// Progress, when set, is updated as the backup goes.
	Progress *Progress
	// NoDelta stores every changed chunk in full, never as a delta
	// against the parent snapshot's version of a database stream.
	NoDelta bool
	// StreamPrev names, by stream path, a snapshot holding the stream's
	// previous version, for streams the parent does not hold.
	StreamPrev map[string]*repo.Snapshot
}

// Progress counters, safe to read concurrently while a backup runs.
type Progress struct {
	Files      atomic.Int64
	Bytes      atomic.Int64
	TotalFiles atomic.Int64 // set by a scanner when known
	TotalBytes atomic.Int64
	ScanDone   atomic.Bool
}

// Result is what Run produced.
type Result struct {
	Tree     crypto.ID
	Summary  repo.Summary
	Warnings int
	// StreamSizes maps stream paths to their lengths.
	StreamSizes map[string]uint64
	// PathSizes maps each backed-up file system path to its bytes.
	PathSizes map[string]uint64
	// FilesRead counts files whose contents were read (not taken from the parent).
	FilesRead int64
}

type archiver struct {
	repo   *repo.Repository
	opts   Options
	names  *fsmeta.Names
	pool   chunk.BufferPool
	ctx    context.Context
	cancel context.CancelCauseFunc
	// chunkers are reused across files, per chunking kind: each holds
	// buffers of the largest chunk, which a file of many chunks would
	// otherwise allocate anew.
	chunkers map[string]*sync.Pool

	blobJobs  chan blobJob
	producers sync.WaitGroup // goroutines that may send on blobJobs
	fileSem   chan struct{}

	warnings        atomic.Int64
	filesNew        atomic.Uint64
	filesChanged    atomic.Uint64
	filesUnmodified atomic.Uint64
	filesRead       atomic.Int64
	dirsNew         atomic.Uint64
	dirsChanged     atomic.Uint64
	dirsUnmodified  atomic.Uint64
	dataBlobs       atomic.Uint64
	deltaBlobs      atomic.Uint64
	treeBlobs       atomic.Uint64
	dataAdded       atomic.Uint64
	dataAddedPacked atomic.Uint64
	totalFiles      atomic.Uint64
	totalBytes      atomic.Uint64

	streamMu    sync.Mutex
	streamSizes map[string]uint64
	rootSizes   map[string]*atomic.Uint64 // bytes per backed-up path; filled before the walk
}

// rootCounter returns the byte counter of a backed-up path.
func (a *archiver) rootCounter(p string) *atomic.Uint64 {
	a.streamMu.Lock()
	defer a.streamMu.Unlock()
	c := a.rootSizes[p]
	if c == nil {
		c = new(atomic.Uint64)
		a.rootSizes[p] = c
	}
	return c
}

type blobJob struct {
	buf  *[]byte
	dst  *crypto.ID
	done *sync.WaitGroup
	// ref, when set, offers the previous version's chunks as delta
	// bases; off is the chunk's offset in its stream.
	ref *deltaRef
	off int64
	// id, when not null, is the chunk's ID, already computed (an old
	// chunk the stream continues with).
	id crypto.ID
}

// Run backs up the file system paths (absolute) and streams, returning the
// root tree. It saves blobs but does not flush or write a snapshot.
func Run(ctx context.Context, r *repo.Repository, paths []string, streams []Stream, opts Options) (_ *Result, retErr error) {
	if opts.FileWorkers <= 0 {
		opts.FileWorkers = 4
	}
	if opts.BlobWorkers <= 0 {
		opts.BlobWorkers = runtime.GOMAXPROCS(0)
	}
	if opts.Warn == nil {
		opts.Warn = func(string, error) {}
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	a := &archiver{
		repo: r, opts: opts, names: fsmeta.NewNames(), ctx: ctx, cancel: cancel,
		blobJobs:    make(chan blobJob, 2*opts.BlobWorkers),
		chunkers:    map[string]*sync.Pool{repo.ChunkingFiles: {}, repo.ChunkingDatabase: {}},
		fileSem:     make(chan struct{}, opts.FileWorkers),
		streamSizes: map[string]uint64{},
		rootSizes:   map[string]*atomic.Uint64{},
	}
	var workers sync.WaitGroup
	for i := 0; i < opts.BlobWorkers; i++ {
		workers.Go(a.blobWorker)
	}
	defer func() {
		// Chunk producers (file readers, streams) hand work to the blob
		// workers; the channel closes only after the last of them stopped.
		// After a failure a producer may still sit in a Read that only the
		// caller can end (closing its stream), so Run does not wait then.
		if retErr == nil {
			a.producers.Wait()
			close(a.blobJobs)
			workers.Wait()
			return
		}
		go func() {
			a.producers.Wait()
			close(a.blobJobs)
		}()
	}()

	root, err := buildTrie(paths, streams)
	if err != nil {
		return nil, err
	}
	var parentRoot *tree.Tree
	if opts.Parent != nil {
		parentRoot = a.loadTree(opts.Parent.Tree)
	}
	var fut *future
	if root.fsPath != "" {
		// The whole file system root is backed up: its tree is the root.
		fut = a.saveFSPath(a.rootCounter(root.fsPath), root.fsPath, "/", "/", nil, parentRoot)
	} else {
		var prevRoot *tree.Node
		if opts.Parent != nil {
			prevRoot = &tree.Node{Type: tree.Dir, Subtree: opts.Parent.Tree}
		}
		fut = a.saveVirtualDir(root, "/", prevRoot, parentRoot, time.Now())
	}
	<-fut.done
	if err := context.Cause(ctx); err != nil {
		return nil, err
	}
	if fut.err != nil {
		return nil, fut.err
	}
	pathSizes := map[string]uint64{}
	for p, c := range a.rootSizes {
		pathSizes[p] = c.Load()
	}
	res := &Result{
		PathSizes:   pathSizes,
		Tree:        fut.node.Subtree,
		Warnings:    int(a.warnings.Load()),
		StreamSizes: a.streamSizes,
		FilesRead:   a.filesRead.Load(),
		Summary: repo.Summary{
			FilesNew:            a.filesNew.Load(),
			FilesChanged:        a.filesChanged.Load(),
			FilesUnmodified:     a.filesUnmodified.Load(),
			DirsNew:             a.dirsNew.Load(),
			DirsChanged:         a.dirsChanged.Load(),
			DirsUnmodified:      a.dirsUnmodified.Load(),
			DataBlobs:           a.dataBlobs.Load(),
			DeltaBlobs:          a.deltaBlobs.Load(),
			TreeBlobs:           a.treeBlobs.Load(),
			DataAdded:           a.dataAdded.Load(),
			DataAddedPacked:     a.dataAddedPacked.Load(),
			TotalFilesProcessed: a.totalFiles.Load(),
			TotalBytesProcessed: a.totalBytes.Load(),
		},
	}
	return res, nil
}

func (a *archiver) fail(err error) { a.cancel(err) }

func (a *archiver) warn(p string, err error) {
	a.warnings.Add(1)
	a.opts.Warn(p, err)
}

func (a *archiver) blobWorker() {
	for j := range a.blobJobs {
		if a.ctx.Err() == nil {
			data := *j.buf
			res, err := a.saveBlob(j, data)
			if err != nil {
				a.fail(err)
			} else {
				*j.dst = res.ID
				if !res.Known {
					a.dataBlobs.Add(1)
					a.dataAdded.Add(uint64(len(data)))
					a.dataAddedPacked.Add(uint64(res.Stored))
					if !res.Base.IsNull() {
						a.deltaBlobs.Add(1)
					}
				}
			}
		}
		a.pool.Put(j.buf)
		j.done.Done()
	}
}

// saveBlob saves one chunk, as a delta against the previous version of its
// stream when the job offers one.
func (a *archiver) saveBlob(j blobJob, data []byte) (repo.SaveResult, error) {
	if j.ref == nil {
		return a.repo.SaveBlob(a.ctx, index.DataBlob, data)
	}
	id := j.id
	if id.IsNull() {
		id = a.repo.Key().BlobID(data)
	}
	res, err := a.repo.SaveDataBlob(a.ctx, id, data, func() []crypto.ID { return j.ref.candidates(j.off, data) })
	switch {
	case err != nil:
	case res.Known:
		j.ref.place(j.off, id)
	case !res.BaseFrom.IsNull():
		j.ref.place(j.off, res.BaseFrom)
	}
	return res, err
}

// findNode returns the node at slash path p in snapshot sn, or nil (the
// backup then has no previous version of it).
func (a *archiver) findNode(sn *repo.Snapshot, p string) *tree.Node {
	if sn == nil {
		return nil
	}
	n, err := tree.Find(a.ctx, a.repo, sn.Tree, p)
	if err != nil {
		return nil
	}
	return n
}

// loadTree loads a parent tree, returning nil when it cannot be read (the
// backup then simply reads everything below it).
func (a *archiver) loadTree(id crypto.ID) *tree.Tree {
	if id.IsNull() {
		return nil
	}
	t, err := tree.Load(a.ctx, a.repo, id)
	if err != nil {
		return nil
	}
	return t
}

// trie is the skeleton of the snapshot tree above the backed-up paths.
type trie struct {
	children map[string]*trie
	fsPath   string  // a file system path backed up here
	stream   *Stream // or a stream stored here
}

func buildTrie(paths []string, streams []Stream) (*trie, error) {
	root := &trie{children: map[string]*trie{}}
	insert := func(p string) (*trie, error) {
		p = path.Clean("/" + filepath.ToSlash(p))
		t := root
		if p == "/" {
			return t, nil
		}
		for _, c := range strings.Split(p[1:], "/") {
			if t.stream != nil {
				return nil, fmt.Errorf("%s is below the stream %s", p, t.stream.Path)
			}
			next := t.children[c]
			if next == nil {
				next = &trie{children: map[string]*trie{}}
				t.children[c] = next
			}
			t = next
		}
		return t, nil
	}
	for _, p := range paths {
		if !filepath.IsAbs(p) {
			return nil, fmt.Errorf("path %q is not absolute", p)
		}
		t, err := insert(p)
		if err != nil {
			return nil, err
		}
		t.fsPath = filepath.Clean(p)
	}
	for i := range streams {
		s := &streams[i]
		t, err := insert(s.Path)
		if err != nil {
			return nil, err
		}
		if t.fsPath != "" || t.stream != nil || len(t.children) > 0 || t == root {
			return nil, fmt.Errorf("stream %s collides with another input", s.Path)
		}
		t.stream = s
	}
	// A path below another backed-up path is covered by it.
	var prune func(t *trie)
	prune = func(t *trie) {
		if t.fsPath != "" {
			t.children = nil
			return
		}
		for _, c := range t.children {
			prune(c)
		}
	}
	prune(root)
	return root, nil
}

type future struct {
	done chan struct{}
	node tree.Node
	skip bool // nothing to store (excluded or unreadable, already warned)
	err  error
}

func resolved(n tree.Node, skip bool) *future {
	f := &future{done: make(chan struct{}), node: n, skip: skip}
	close(f.done)
	return f
}

func findIn(t *tree.Tree, name string) *tree.Node {
	if t == nil {
		return nil
	}
	return t.Find(name)
}

// saveVirtualDir saves a directory of the trie, whose children are more
// trie directories, streams or file system paths. prev is the parent
// snapshot's tree for this directory.
func (a *archiver) saveVirtualDir(t *trie, snapPath string, prevDir *tree.Node, prev *tree.Tree, start time.Time) *future {
	names := make([]string, 0, len(t.children))
	for n := range t.children {
		names = append(names, n)
	}
	sort.Strings(names)
	futures := make([]*future, 0, len(names))
	for _, name := range names {
		c := t.children[name]
		childPath := path.Join(snapPath, name)
		prevNode := findIn(prev, name)
		switch {
		case c.stream != nil:
			futures = append(futures, a.saveStream(c.stream, name, prevNode))
		case c.fsPath != "":
			var prevSub *tree.Tree
			if prevNode != nil && prevNode.Type == tree.Dir {
				prevSub = a.loadTree(prevNode.Subtree)
			}
			futures = append(futures, a.saveFSPath(a.rootCounter(c.fsPath), c.fsPath, childPath, name, prevNode, prevSub))
		default:
			var sub *tree.Tree
			if prevNode != nil && prevNode.Type == tree.Dir {
				sub = a.loadTree(prevNode.Subtree)
			}
			futures = append(futures, a.saveVirtualDir(c, childPath, prevNode, sub, start))
		}
	}
	// Parents of backed-up paths take their metadata from the real
	// directory; directories that only hold streams are synthesized.
	name := path.Base(snapPath)
	var node tree.Node
	if n, _, err := a.names.NodeFromLstat(filepath.FromSlash(snapPath), name); err == nil && n.Type == tree.Dir && !t.onlyStreams() {
		node = n
		node.Xattrs = nil
	} else {
		now := start.UnixNano()
		node = tree.Node{Name: name, Type: tree.Dir, Mode: 0o700, ModTime: now, ChangeTime: now,
			UID: uint32(os.Getuid()), GID: uint32(os.Getgid())}
	}
	return a.finishDir(node, futures, prevDir)
}

func (t *trie) onlyStreams() bool {
	if t.stream != nil {
		return true
	}
	if t.fsPath != "" {
		return false
	}
	for _, c := range t.children {
		if !c.onlyStreams() {
			return false
		}
	}
	return len(t.children) > 0
}

// finishDir waits for the children, then saves the directory's tree blob.
func (a *archiver) finishDir(node tree.Node, children []*future, prev *tree.Node) *future {
	f := &future{done: make(chan struct{})}
	go func() {
		defer close(f.done)
		t := &tree.Tree{Nodes: make([]tree.Node, 0, len(children))}
		for _, c := range children {
			select {
			case <-c.done:
			case <-a.ctx.Done():
				f.err = context.Cause(a.ctx)
				return
			}
			if c.err != nil {
				f.err = c.err
				return
			}
			if !c.skip {
				t.Nodes = append(t.Nodes, c.node)
			}
		}
		t.Sort()
		raw, err := t.Encode()
		if err != nil {
			f.err = err
			a.fail(err)
			return
		}
		res, err := a.repo.SaveBlob(a.ctx, index.TreeBlob, raw)
		if err != nil {
			f.err = err
			a.fail(err)
			return
		}
		if !res.Known {
			a.treeBlobs.Add(1)
			a.dataAdded.Add(uint64(len(raw)))
			a.dataAddedPacked.Add(uint64(res.Stored))
		}
		switch {
		case prev == nil || prev.Type != tree.Dir:
			a.dirsNew.Add(1)
		case prev.Subtree == res.ID:
			a.dirsUnmodified.Add(1)
		default:
			a.dirsChanged.Add(1)
		}
		f.node = node
		f.node.Subtree = res.ID
	}()
	return f
}

// saveFSPath backs up one file system entry (not following links). prev is
// the entry in the parent snapshot and prevTree its subtree for directories.
func (a *archiver) saveFSPath(size *atomic.Uint64, fsPath, snapPath, name string, prev *tree.Node, prevTree *tree.Tree) *future {
	if a.ctx.Err() != nil {
		return &future{done: closedChan(), err: context.Cause(a.ctx)}
	}
	if a.opts.Excludes.Match(snapPath) {
		return resolved(tree.Node{}, true)
	}
	node, xerr, err := a.names.NodeFromLstat(fsPath, name)
	if err != nil {
		a.warn(fsPath, err)
		return resolved(tree.Node{}, true)
	}
	if xerr != nil {
		a.warn(fsPath, xerr)
	}
	switch node.Type {
	case tree.File:
		return a.saveFile(size, fsPath, node, prev)
	case tree.Dir:
		return a.saveDir(size, fsPath, snapPath, node, prev, prevTree)
	}
	return resolved(node, false)
}

func closedChan() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}

func (a *archiver) saveDir(size *atomic.Uint64, fsPath, snapPath string, node tree.Node, prev *tree.Node, prevTree *tree.Tree) *future {
	if prev != nil && prev.Type != tree.Dir {
		prev, prevTree = nil, nil
	} else if prev != nil && prevTree == nil {
		prevTree = a.loadTree(prev.Subtree)
	}
	d, err := os.Open(fsPath)
	if err != nil {
		a.warn(fsPath, err)
		return resolved(tree.Node{}, true)
	}
	names, err := d.Readdirnames(-1)
	d.Close()
	if err != nil {
		a.warn(fsPath, fmt.Errorf("read directory: %w", err))
		return resolved(tree.Node{}, true)
	}
	sort.Strings(names)
	futures := make([]*future, 0, len(names))
	for _, n := range names {
		childSnap := snapPath + "/" + n
		if snapPath == "/" {
			childSnap = "/" + n
		}
		futures = append(futures, a.saveFSPath(size, filepath.Join(fsPath, n), childSnap, n, findIn(prevTree, n), nil))
	}
	return a.finishDir(node, futures, prev)
}

// unchanged reports whether the file can be taken from the parent snapshot.
func (a *archiver) unchanged(node tree.Node, prev *tree.Node) bool {
	if prev == nil || prev.Type != tree.File || prev.Size != node.Size || prev.ModTime != node.ModTime ||
		prev.ChangeTime != node.ChangeTime || prev.Inode != node.Inode {
		return false
	}
	idx := a.repo.Index()
	for _, id := range prev.Content {
		if !idx.Has(id) {
			return false
		}
	}
	return true
}

func (a *archiver) saveFile(size *atomic.Uint64, fsPath string, node tree.Node, prev *tree.Node) *future {
	a.totalFiles.Add(1)
	if a.unchanged(node, prev) {
		size.Add(node.Size)
		node.Content, node.ChunkSizes = prev.Content, prev.ChunkSizes
		a.filesUnmodified.Add(1)
		a.totalBytes.Add(node.Size)
		if p := a.opts.Progress; p != nil {
			p.Files.Add(1)
			p.Bytes.Add(int64(node.Size))
		}
		return resolved(node, false)
	}
	select {
	case a.fileSem <- struct{}{}:
	case <-a.ctx.Done():
		return &future{done: closedChan(), err: context.Cause(a.ctx)}
	}
	f := &future{done: make(chan struct{})}
	a.producers.Add(1)
	go func() {
		defer a.producers.Done()
		defer close(f.done)
		defer func() { <-a.fileSem }()
		content, sizes, n, err := a.readFile(fsPath, node)
		if err != nil {
			if a.ctx.Err() != nil {
				f.err = context.Cause(a.ctx)
				return
			}
			a.warn(fsPath, err)
			f.skip = true
			return
		}
		node.Content, node.ChunkSizes, node.Size = content, sizes, n
		if prev != nil {
			a.filesChanged.Add(1)
		} else {
			a.filesNew.Add(1)
		}
		a.filesRead.Add(1)
		a.totalBytes.Add(n)
		size.Add(n)
		if p := a.opts.Progress; p != nil {
			p.Files.Add(1)
		}
		f.node = node
	}()
	return f
}

func openNoFollow(p string) (*os.File, error) {
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NOATIME, 0)
	if errors.Is(err, unix.EPERM) {
		// O_NOATIME is only allowed to the owner (or root).
		fd, err = unix.Open(p, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	}
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: p, Err: err}
	}
	return os.NewFile(uintptr(fd), p), nil
}

// readFile chunks a file and saves its blobs, returning the content IDs
// and the number of bytes read.
func (a *archiver) readFile(fsPath string, node tree.Node) ([]crypto.ID, []uint32, uint64, error) {
	f, err := openNoFollow(fsPath)
	if err != nil {
		return nil, nil, 0, err
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return nil, nil, 0, fmt.Errorf("fstat: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Ino != node.Inode {
		return nil, nil, 0, errors.New("file was replaced during the backup; skipped")
	}
	content, sizes, _, n, err := a.chunkStream(f, repo.ChunkingFiles, node.Size, nil)
	return content, sizes, n, err
}

type countingReader struct {
	r io.Reader
	n uint64
	p *Progress
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n += uint64(n)
	if c.p != nil {
		c.p.Bytes.Add(int64(n))
	}
	return n, err
}

// chunker returns a chunker of kind (a key of a.chunkers) reading rd, of
// about sizeHint bytes (a file's size; 0 for a stream).
func (a *archiver) chunker(kind string, rd io.Reader, sizeHint uint64) *chunk.Chunker {
	pol := a.repo.Config().Polynomial
	c, ok := a.chunkers[kind].Get().(*chunk.Chunker)
	if !ok {
		c = chunk.New(nil, pol, a.repo.Config().ChunkParams(kind), &a.pool)
	}
	c.Reset(rd, pol, sizeHint)
	return c
}

// chunkStream cuts rd into chunks and hands them to the blob workers,
// returning the content IDs in order and the bytes read. sizeHint (the
// expected length) lets inputs smaller than one chunk skip the chunker.
//
// With ref set, changed chunks may be stored as deltas against the chunks
// of the previous version it lists. A database stream's chunks also get
// their heads (tree.ChunkHead), for the next version's deltas.
func (a *archiver) chunkStream(rd io.Reader, kind string, sizeHint uint64, ref *deltaRef) ([]crypto.ID, []uint32, []uint64, uint64, error) {
	if _, ok := a.chunkers[kind]; !ok {
		kind = repo.ChunkingFiles // what Config.ChunkParams falls back to
	}
	params := a.repo.Config().ChunkParams(kind)
	cr := &countingReader{r: rd, p: a.opts.Progress}
	var wg sync.WaitGroup
	var ids []*crypto.ID
	var sizes []uint32
	var heads []uint64
	var off int64
	submit := func(buf *[]byte, known crypto.ID) bool {
		id := new(crypto.ID)
		ids = append(ids, id)
		sizes = append(sizes, uint32(len(*buf)))
		if kind == repo.ChunkingDatabase {
			heads = append(heads, tree.ChunkHead(*buf))
		}
		job := blobJob{buf: buf, dst: id, done: &wg, ref: ref, off: off, id: known}
		off += int64(len(*buf))
		wg.Add(1)
		select {
		case a.blobJobs <- job:
			return true
		case <-a.ctx.Done():
			wg.Done()
			a.pool.Put(buf)
			return false
		}
	}
	readErr := func() error {
		var src io.Reader = cr
		if sizeHint < uint64(params.Min) {
			buf := a.pool.Get(int(sizeHint) + 1)
			n, err := io.ReadFull(cr, *buf)
			switch {
			case errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF):
				*buf = (*buf)[:n]
				if n == 0 {
					a.pool.Put(buf)
					return nil
				}
				submit(buf, crypto.ID{})
				return nil
			case err != nil:
				a.pool.Put(buf)
				return err
			}
			// The input is longer than expected (a growing file): chunk
			// what was read together with the rest.
			prefix := append([]byte(nil), *buf...)
			a.pool.Put(buf)
			src = io.MultiReader(bytes.NewReader(prefix), cr)
		}
		hint := sizeHint
		if hint >= 1<<62 {
			hint = 0 // a stream: unknown
		}
		c := a.chunker(kind, src, hint)
		defer a.chunkers[kind].Put(c)
		key := a.repo.Key()
		for {
			var buf *[]byte
			var known crypto.ID
			if ref != nil {
				rest, err := c.Peek()
				if err != nil {
					return err
				}
				if n, id, ok := ref.knownChunk(c, rest, key); ok {
					buf, known = c.Take(n), id
				}
			}
			if buf == nil {
				var err error
				if buf, err = c.Next(); errors.Is(err, io.EOF) {
					return nil
				} else if err != nil {
					return err
				}
			}
			if !submit(buf, known) {
				return context.Cause(a.ctx)
			}
		}
	}()
	wg.Wait()
	if err := context.Cause(a.ctx); err != nil {
		return nil, nil, nil, 0, err
	}
	if readErr != nil {
		return nil, nil, nil, 0, readErr
	}
	out := make([]crypto.ID, len(ids))
	for i, id := range ids {
		out[i] = *id
	}
	return out, sizes, heads, cr.n, nil
}

// saveStream stores a stream as a file node; a read error fails the backup.
// A database stream's changed chunks may become deltas against prev, the
// same stream in the parent snapshot.
func (a *archiver) saveStream(s *Stream, name string, prev *tree.Node) *future {
	f := &future{done: make(chan struct{})}
	a.producers.Add(1)
	go func() {
		defer a.producers.Done()
		defer close(f.done)
		kind, rd := s.Chunking, s.Reader
		switch kind {
		case "":
			kind = repo.ChunkingFiles
		case repo.ChunkingAuto:
			kind, rd = sniffKind(rd)
		}
		var ref *deltaRef
		if kind == repo.ChunkingDatabase && !a.opts.NoDelta {
			if prev == nil {
				prev = a.findNode(a.opts.StreamPrev[s.Path], s.Path)
			}
			ref = newDeltaRef(a.ctx, a.repo, prev)
		}
		start := time.Now()
		ra := newReadAhead(rd)
		content, sizes, heads, size, err := a.chunkStream(ra, kind, 1<<62, ref)
		ra.close()
		ref.close()
		if err != nil {
			f.err = fmt.Errorf("read %s: %w", s.Path, err)
			a.fail(f.err)
			return
		}
		mode := s.Mode
		if mode == 0 {
			mode = 0o600
		}
		now := start.UnixNano()
		f.node = tree.Node{Name: name, Type: tree.File, Mode: mode, Size: size, Content: content, ChunkSizes: sizes, ChunkHeads: heads,
			ModTime: now, ChangeTime: now, UID: uint32(os.Getuid()), GID: uint32(os.Getgid()), Links: 1}
		a.filesNew.Add(1)
		a.totalFiles.Add(1)
		a.totalBytes.Add(size)
		a.streamMu.Lock()
		a.streamSizes[s.Path] = size
		a.streamMu.Unlock()
		if p := a.opts.Progress; p != nil {
			p.Files.Add(1)
		}
	}()
	return f
}
