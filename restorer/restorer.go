// Package restorer rebuilds files from a snapshot tree: file contents are
// read pack by pack in streamed windows with several in flight
// (repo.ReadBlobs) and written out of order, relative to their open
// directory, while directories, empty files and symlinks are made as the
// first packs arrive; then hardlinks and metadata, directories last. Dump
// streams one file in order the same way.
package restorer

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/cairn-backup/cairn/crypto"
	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/internal/fsmeta"
	"github.com/cairn-backup/cairn/pathmatch"
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/tree"
)

// Options configure a restore.
type Options struct {
	Target   string
	Includes pathmatch.List // empty: everything
	Excludes pathmatch.List
	// Chown restores ownership (only works as root).
	Chown bool
	// Warn receives per-entry failures, possibly from several goroutines
	// at once; the restore goes on.
	Warn func(path string, err error)
	// Workers decode blobs and write files in parallel (default: see
	// repo.ReadOptions.Decoders).
	Workers int
	// Downloads is the number of pack ranges read at once (default 4).
	Downloads int
	// BytesWritten, when set, is advanced as content is written.
	BytesWritten *atomic.Int64
	// MaxEntries bounds the entries the restore plans (0:
	// tree.DefaultMaxEntries); a snapshot with more fails before anything
	// is written, with a *tree.TooManyEntriesError.
	MaxEntries int
	// Delete removes what the target holds, in the directories restored,
	// that the snapshot does not (and the filters select): the target
	// then equals the snapshot instead of a merge of both.
	Delete bool
}

// Stats describe a finished restore: what was written (Files and Bytes
// count only files restored completely) and what failed.
type Stats struct {
	Files, Dirs, Links, Special int
	Bytes                       uint64
	// FilesFailed are files not restored, or not completely; Warnings
	// count every failure reported to Options.Warn. Partial lists the
	// files left incomplete under PartialName, in tree order.
	FilesFailed int
	Partial     []string
	Warnings    int
	// Deleted counts entries removed with Options.Delete.
	Deleted int
}

type entry struct {
	node   *tree.Node
	target string // absolute path in the target directory
	snap   string // path in the snapshot
	depth  int
	linkTo string     // for hardlinks: the first restored path of the inode
	dir    *dirHandle // files: the directory they are written in
	state  *fileState // files: how far their content is
	// contents is, for a directory holding files, the handle they are
	// written through: made once the directory is.
	contents *dirHandle
	// partial is the name (in dir) a file is written under until its
	// content is complete (freePartialName).
	partial string
}

// freePartialName returns the name a file called name in directory t is
// written under: NAME.cairn-partial, unless the snapshot has an entry of
// that name there, which writing the file would replace; then the first
// of NAME.cairn-partial-2, -3, ... that it has not.
func freePartialName(t *tree.Tree, name string) string {
	p := PartialName(name)
	if t.Find(p) == nil {
		return p
	}
	for k := 2; ; k++ {
		if alt := p + "-" + strconv.Itoa(k); t.Find(alt) == nil {
			return alt
		}
	}
}

// dirHandle is a directory that files are being written into, open while
// any of them is unfinished: files are created and renamed relative to
// it, which spares the kernel a walk of the whole path twice per file
// (about a fifth of the system time of a tree of small files), and no
// path component can be swapped under a file once its directory is open.
type dirHandle struct {
	path       string
	mu         sync.Mutex
	fd         int // -1 until first used, and again once closed
	unfinished int // files not yet done
	// made is closed once the directory exists (or could not be made):
	// its files' content is not written before.
	made     chan struct{}
	madeOnce sync.Once
}

// markMade lets the directory's files be written.
func (d *dirHandle) markMade() { d.madeOnce.Do(func() { close(d.made) }) }

// open returns the directory's descriptor, opening it at first use.
func (d *dirHandle) open() (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.fd < 0 {
		fd, err := unix.Open(d.path, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return -1, &fs.PathError{Op: "open", Path: d.path, Err: err}
		}
		d.fd = fd
	}
	return d.fd, nil
}

// done marks one of the directory's files finished; after the last one the
// directory is closed.
func (d *dirHandle) done() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.unfinished--
	if d.unfinished == 0 && d.fd >= 0 {
		unix.Close(d.fd)
		d.fd = -1
	}
}

// close closes the directory whatever is unfinished (end of a restore).
func (d *dirHandle) close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.fd >= 0 {
		unix.Close(d.fd)
		d.fd = -1
	}
}

type fileState struct {
	mu        sync.Mutex
	created   bool
	fd        int // open descriptor while blobs are written; -1 when closed
	remaining int
	failed    bool
	metaDone  bool // metadata applied through fd after the last write
}

type restorer struct {
	r        *repo.Repository
	owners   *fsmeta.Owners // nil: ownership is not restored
	opts     Options
	warnings atomic.Int64
	dirs     []*entry
	files    []*entry
	links    []*entry // symlinks and special files (with the directories), hardlinks (after content)
	// dirHandles are the directories files are written into.
	dirHandles []*dirHandle
	stats      Stats
	// trees holds the snapshot's trees, loaded in parallel before the
	// plan walks them.
	trees map[crypto.ID]*tree.Tree
	// treeFailed is set when the directories could not be made (a symlink
	// in the way): the writes stop, and makeTree's error is the restore's.
	treeFailed atomic.Bool
}

func (rs *restorer) warn(p string, err error) {
	rs.warnings.Add(1)
	if rs.opts.Warn != nil {
		rs.opts.Warn(p, err)
	}
}

// CheckWritable checks, without changing anything, that a restore can
// write below dir: dir, or its nearest existing ancestor when it is still
// to be created, is a directory this process may write into (the kernel's
// answer, so a read-only mount or an immutable directory counts for root
// too). Restores run it before anything else, so that an unwritable target
// fails before anything was written anywhere.
func CheckWritable(dir string) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	p := abs
	for {
		fi, err := os.Stat(p)
		if err == nil {
			if !fi.IsDir() {
				return fmt.Errorf("%s is not a directory", p)
			}
			break
		}
		if !errors.Is(err, fs.ErrNotExist) || p == filepath.Dir(p) {
			return err
		}
		p = filepath.Dir(p)
	}
	if err := unix.Access(p, unix.W_OK|unix.X_OK); err != nil {
		if p == abs {
			return fmt.Errorf("%s is not writable: %w", abs, err)
		}
		return fmt.Errorf("%s cannot be created: %s is not writable: %w", abs, p, err)
	}
	return nil
}

// Restore writes the tree rootID (of a snapshot) below opts.Target.
func Restore(ctx context.Context, r *repo.Repository, rootID crypto.ID, opts Options) (Stats, error) {
	target, err := filepath.Abs(opts.Target)
	if err != nil {
		return Stats{}, fmt.Errorf("restore target: %w", err)
	}
	if err := os.MkdirAll(target, 0o700); err != nil {
		return Stats{}, fmt.Errorf("create restore target: %w", err)
	}
	if fi, err := os.Lstat(target); err != nil || !fi.IsDir() {
		return Stats{}, fmt.Errorf("restore target %s is not a directory", target)
	}
	opts.Target = target
	if opts.MaxEntries <= 0 {
		opts.MaxEntries = tree.DefaultMaxEntries
	}
	rs := &restorer{r: r, opts: opts}
	if opts.Chown {
		rs.owners = fsmeta.NewOwners()
	}
	rs.trees = tree.Preload(ctx, r, rootID, runtime.GOMAXPROCS(0), func(dir string, n *tree.Node) bool {
		include, descend := rs.selected(childPath(dir, n.Name), true)
		return include || descend
	})
	if err := rs.plan(ctx, rootID, "/", target, nil, 0, map[[2]uint64]string{}); err != nil {
		return Stats{}, err
	}
	if err := rs.checkSpace(target); err != nil {
		return Stats{}, err
	}
	if opts.Delete {
		rs.deleteExtra(target)
	}
	if err := rs.writeContents(ctx); err != nil {
		return Stats{}, err
	}
	rs.makeLinksAndMeta(ctx, true)
	rs.countFiles()
	rs.stats.Warnings = int(rs.warnings.Load())
	return rs.stats, ctx.Err()
}

// checkSpace fails the restore before it writes anything when the file
// system of target has less room than the files need. A file being
// replaced frees its room when its new content takes its name, so all
// replaced files but the few largest (written at the same time) count as
// room.
func (rs *restorer) checkSpace(target string) error {
	var need uint64
	for _, e := range rs.files {
		need += e.node.Size
	}
	if CheckSpace(target, need) == nil {
		return nil
	}
	var replaced []uint64
	for _, e := range rs.files {
		if fi, err := os.Lstat(e.target); err == nil && fi.Mode().IsRegular() {
			replaced = append(replaced, min(e.node.Size, uint64(fi.Size())))
		}
	}
	sort.Slice(replaced, func(i, j int) bool { return replaced[i] < replaced[j] })
	for _, n := range replaced[:max(0, len(replaced)-8)] {
		need -= n
	}
	return CheckSpace(target, need)
}

// CheckSpace reports an error when the file system that holds dir (or its
// nearest existing ancestor) has fewer than need bytes free for this
// process. Where that cannot be known, it says nothing.
func CheckSpace(dir string, need uint64) error {
	p, err := filepath.Abs(dir)
	if err != nil {
		return nil
	}
	for {
		if _, err := os.Stat(p); err == nil || p == filepath.Dir(p) {
			break
		}
		p = filepath.Dir(p)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(p, &st); err != nil {
		return nil
	}
	free := st.Bavail * uint64(st.Bsize)
	if need > free {
		return fmt.Errorf("not enough space for the restore in %s: it writes %d bytes, %d are free", dir, need, free)
	}
	return nil
}

// deleteExtra removes, from the target root and every directory the
// restore writes, the entries the snapshot does not have there, unless
// the filters leave them out of the restore.
func (rs *restorer) deleteExtra(target string) {
	planned := map[string]bool{}
	for _, list := range [][]*entry{rs.dirs, rs.files, rs.links} {
		for _, e := range list {
			planned[e.target] = true
		}
	}
	type dir struct{ target, snap string }
	dirs := []dir{{target, "/"}}
	for _, d := range rs.dirs {
		dirs = append(dirs, dir{d.target, d.snap})
	}
	for _, d := range dirs {
		ents, err := os.ReadDir(d.target)
		if err != nil {
			continue // not there yet: nothing to delete
		}
		for _, ent := range ents {
			p := filepath.Join(d.target, ent.Name())
			snap := path.Join(d.snap, ent.Name())
			if planned[p] {
				continue
			}
			if include, _ := rs.selected(snap, ent.IsDir()); !include {
				continue
			}
			if err := os.RemoveAll(p); err != nil {
				rs.warn(snap, fmt.Errorf("delete: %w", err))
				continue
			}
			rs.stats.Deleted++
		}
	}
}

// countFiles counts the files written completely, and the others.
func (rs *restorer) countFiles() {
	rs.stats.Files, rs.stats.Bytes, rs.stats.FilesFailed = 0, 0, 0
	for _, e := range rs.files {
		if st := e.state; st != nil && st.failed {
			rs.stats.FilesFailed++
			if st.created {
				rs.stats.Partial = append(rs.stats.Partial, childPath(e.dir.path, e.partial))
			}
			continue
		}
		rs.stats.Files++
		rs.stats.Bytes += e.node.Size
	}
}

func (rs *restorer) selected(snap string, isDir bool) (include, descend bool) {
	if rs.opts.Excludes.Match(snap) {
		return false, false
	}
	if len(rs.opts.Includes) == 0 || rs.opts.Includes.Match(snap) {
		return true, isDir
	}
	if isDir && rs.opts.Includes.MatchPrefix(snap) {
		return false, true
	}
	return false, false
}

// plan walks the tree and records every entry to restore. targetEntry is
// the entry of targetDir (nil for the target itself, which exists).
func (rs *restorer) plan(ctx context.Context, id crypto.ID, snapDir, targetDir string, targetEntry *entry, depth int, hardlinks map[[2]uint64]string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	t := rs.trees[id]
	if t == nil {
		var err error
		if t, err = tree.Load(ctx, rs.r, id); err != nil {
			return fmt.Errorf("tree of %s: %w", snapDir, err)
		}
	}
	var dir *dirHandle // made for the first file of the directory
	for i := range t.Nodes {
		n := &t.Nodes[i]
		// tree.Decode rejects names that are empty, hold '/' or are "."
		// or "..": the names cannot leave the target, and joining them
		// needs no cleaning.
		snap := childPath(snapDir, n.Name)
		tgt := childPath(targetDir, n.Name)
		include, descend := rs.selected(snap, n.Type == tree.Dir)
		if !include && !descend {
			continue
		}
		if len(rs.dirs)+len(rs.files)+len(rs.links) >= rs.opts.MaxEntries {
			return &tree.TooManyEntriesError{Max: rs.opts.MaxEntries}
		}
		e := &entry{node: n, target: tgt, snap: snap, depth: depth + 1}
		switch n.Type {
		case tree.Dir:
			before := len(rs.dirs)
			rs.dirs = append(rs.dirs, e)
			if err := rs.plan(ctx, n.Subtree, snap, tgt, e, depth+1, hardlinks); err != nil {
				return err
			}
			if !include && len(rs.dirs) == before+1 && !rs.hasChildren(tgt) {
				rs.dirs = rs.dirs[:before] // only descended, nothing inside matched
			}
		case tree.File:
			if n.Links > 1 {
				key := [2]uint64{n.Device, n.Inode}
				if first, ok := hardlinks[key]; ok {
					e.linkTo = first
					rs.links = append(rs.links, e)
					continue
				}
				hardlinks[key] = tgt
			}
			if dir == nil {
				dir = &dirHandle{path: targetDir, fd: -1, made: make(chan struct{})}
				rs.dirHandles = append(rs.dirHandles, dir)
				if targetEntry == nil {
					dir.markMade()
				} else {
					targetEntry.contents = dir
				}
			}
			dir.unfinished++
			e.dir = dir
			e.partial = freePartialName(t, n.Name)
			rs.files = append(rs.files, e)
		default:
			rs.links = append(rs.links, e)
		}
	}
	return nil
}

// childPath is path.Join(dir, name) (and filepath.Join) for a clean dir
// and a name that tree.Decode accepted, without the cleaning.
func childPath(dir, name string) string {
	if strings.HasSuffix(dir, "/") {
		return dir + name
	}
	return dir + "/" + name
}

// hasChildren reports whether any planned entry lies below dir.
func (rs *restorer) hasChildren(dir string) bool {
	prefix := dir + string(filepath.Separator)
	for _, list := range [][]*entry{rs.files, rs.links} {
		if len(list) > 0 && len(list[len(list)-1].target) > len(prefix) && list[len(list)-1].target[:len(prefix)] == prefix {
			return true
		}
	}
	return false
}

// checkDir makes sure p is a real directory (not a symlink planted in the
// target) before anything is written into it.
func checkDir(p string) error {
	fi, err := os.Lstat(p)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s exists and is not a directory (symlinks are never followed)", p)
	}
	return nil
}

// makeTree makes the directories, each letting its files' content be
// written once it exists, then the empty files and the symlinks and
// special files (not hardlinks, whose files may not be written yet).
func (rs *restorer) makeTree(ctx context.Context, empty []*entry) error {
	err := rs.makeDirs()
	if err != nil {
		rs.treeFailed.Store(true)
	}
	for _, d := range rs.dirHandles {
		d.markMade() // those whose directory failed, and all after an error
	}
	if err != nil {
		return err
	}
	for _, e := range empty {
		fd, err := createFile(e.dir, e.node.Name)
		e.dir.done()
		if err != nil {
			rs.warn(e.snap, err)
			e.state.failed = true
			continue
		}
		if err := unix.Close(fd); err != nil {
			rs.warn(e.snap, err)
		}
	}
	rs.makeLinksAndMeta(ctx, false)
	return nil
}

// makeDirs makes the directories, parents first. One that exists already
// must be a real directory (not a symlink planted in the target), checked
// before anything is made in it; one it makes is.
func (rs *restorer) makeDirs() error {
	for _, d := range rs.dirs {
		switch err := os.Mkdir(d.target, 0o700); {
		case errors.Is(err, fs.ErrExist):
			if err := checkDir(d.target); err != nil {
				return fmt.Errorf("refusing to restore into %s: %w", d.target, err)
			}
		case err != nil:
			rs.warn(d.snap, err)
			continue
		}
		rs.stats.Dirs++
		if d.contents != nil {
			d.contents.markMade()
		}
	}
	return nil
}

// blobUse is one place a blob's plaintext goes.
type blobUse struct {
	state  *fileState
	entry  *entry
	offset int64
}

type packBlob struct {
	id   crypto.ID
	loc  index.Location
	size uint32
	uses []blobUse
}

// createFile makes a new file name in the directory dir (path names it
// in errors) and returns its descriptor. Whatever is in the way is
// replaced, never written into: an existing file may be a hardlink to a
// file outside the target, or a symlink. Raw descriptors (not os.File)
// save several system calls per file on trees of many small files.
func createFile(dir *dirHandle, name string) (int, error) {
	dfd, err := dir.open()
	if err != nil {
		return -1, err
	}
	const flags = unix.O_WRONLY | unix.O_CREAT | unix.O_EXCL | unix.O_NOFOLLOW | unix.O_CLOEXEC
	fd, err := unix.Openat(dfd, name, flags, 0o600)
	if errors.Is(err, unix.EEXIST) {
		// unlinkat without AT_REMOVEDIR leaves a directory alone.
		_ = unix.Unlinkat(dfd, name, 0)
		fd, err = unix.Openat(dfd, name, flags, 0o600)
	}
	if err != nil {
		return -1, &fs.PathError{Op: "create", Path: filepath.Join(dir.path, name), Err: err}
	}
	return fd, nil
}

func (rs *restorer) writeContents(ctx context.Context) error {
	defer func() {
		for _, d := range rs.dirHandles {
			d.close()
		}
	}()
	// One allocation each for the file states, the blobs and their first
	// uses, instead of one per file and two per blob.
	refs := 0
	for _, e := range rs.files {
		refs += len(e.node.Content)
	}
	states := make([]fileState, len(rs.files))
	slab := make([]packBlob, 0, refs)
	firstUses := make([]blobUse, refs)
	byBlob := make(map[crypto.ID]*packBlob, refs)
	blobs := make([]*packBlob, 0, refs)
	var empty []*entry
	for i, e := range rs.files {
		st := &states[i]
		e.state = st
		// Files with content are created at their first write; empty ones
		// with the directories.
		st.fd = -1
		if len(e.node.Content) == 0 {
			empty = append(empty, e)
		}
		if len(e.node.ChunkSizes) != len(e.node.Content) {
			rs.warn(e.snap, errors.New("tree node lists blobs without sizes"))
			st.failed = true
			if len(e.node.Content) > 0 {
				e.dir.done()
			}
			continue
		}
		var off int64
		for j, id := range e.node.Content {
			pb := byBlob[id]
			if pb == nil {
				loc, ok := rs.r.Lookup(id)
				if !ok {
					rs.warn(e.snap, fmt.Errorf("data blob %s is missing from the repository", id.Short()))
					st.failed = true
					off += int64(e.node.ChunkSizes[j])
					continue
				}
				// Within its capacity: the pointers stay valid.
				slab = append(slab, packBlob{id: id, loc: loc, size: e.node.ChunkSizes[j], uses: firstUses[len(slab) : len(slab) : len(slab)+1]})
				pb = &slab[len(slab)-1]
				byBlob[id] = pb
				blobs = append(blobs, pb)
			}
			pb.uses = append(pb.uses, blobUse{state: st, entry: e, offset: off})
			st.remaining++
			off += int64(e.node.ChunkSizes[j])
		}
		if len(e.node.Content) > 0 && st.remaining == 0 {
			e.dir.done() // every blob missing: nothing will be written
		}
	}
	// In pack order, so that each pack is read with one request from
	// start to end; a delta's base is read just before it (repo/read.go).
	slices.SortFunc(blobs, func(x, y *packBlob) int {
		if c := x.loc.Pack.Compare(y.loc.Pack); c != 0 {
			return c
		}
		return cmp.Compare(x.loc.Offset, y.loc.Offset)
	})
	ids := make([]crypto.ID, len(blobs))
	locs := make([]index.Location, len(blobs))
	for i, b := range blobs {
		ids[i], locs[i] = b.id, b.loc
	}
	// Directories, empty files and symlinks are made while the first packs
	// are on their way: none of them waits on content. A blob is written
	// into a file once the file's directory is there.
	treeMade := make(chan struct{})
	var treeErr error
	go func() {
		defer close(treeMade)
		treeErr = rs.makeTree(ctx, empty)
	}()
	err := rs.r.ReadBlobs(ctx, ids, repo.ReadOptions{Downloads: rs.opts.Downloads, Decoders: rs.opts.Workers, Locations: locs}, func(i int, plain []byte, err error) error {
		b := blobs[i]
		for _, u := range b.uses {
			<-u.entry.dir.made
		}
		if rs.treeFailed.Load() {
			return errors.New("the directories could not be made") // replaced by why, below
		}
		switch {
		case err != nil:
			if ctx.Err() != nil {
				return ctx.Err()
			}
			rs.failBlobs([]*packBlob{b}, err)
		case len(plain) != int(b.size):
			rs.failBlobs([]*packBlob{b}, fmt.Errorf("blob %s has %d bytes, the tree says %d", b.id.Short(), len(plain), b.size))
		default:
			for _, u := range b.uses {
				rs.write(u, plain)
			}
		}
		return nil
	})
	<-treeMade
	if treeErr != nil {
		err = treeErr
	}
	// Close whatever is still open (files whose blobs failed).
	for _, e := range rs.files {
		if st := e.state; st.fd >= 0 {
			unix.Close(st.fd)
			st.fd = -1
		}
	}
	return err
}

func (rs *restorer) failBlobs(blobs []*packBlob, err error) {
	for _, b := range blobs {
		for _, u := range b.uses {
			u.state.mu.Lock()
			first := !u.state.failed
			u.state.failed = true
			u.state.remaining--
			if u.state.remaining == 0 {
				if u.state.fd >= 0 {
					unix.Close(u.state.fd)
					u.state.fd = -1
				}
				u.entry.dir.done()
			}
			u.state.mu.Unlock()
			if first {
				rs.warn(u.entry.snap, err)
			}
		}
	}
}

// write puts one blob into one file, opening the file on first use and
// closing it after its last blob.
func (rs *restorer) write(u blobUse, data []byte) {
	st := u.state
	st.mu.Lock()
	defer st.mu.Unlock()
	// The node's name is the target's last element.
	name, partial := u.entry.node.Name, u.entry.partial
	if st.fd < 0 && !st.failed && !st.created {
		fd, err := createFile(u.entry.dir, partial)
		st.created = err == nil
		// A file of several blobs is written out of order: giving it
		// its size first lets the file system allocate it at once.
		if err == nil && len(u.entry.node.Content) > 1 {
			if terr := unix.Ftruncate(fd, int64(u.entry.node.Size)); terr != nil {
				err = &fs.PathError{Op: "truncate", Path: u.entry.target, Err: terr}
				unix.Close(fd)
			}
		}
		if err != nil {
			st.failed = true
			rs.warn(u.entry.snap, err)
		} else {
			st.fd = fd
		}
	}
	if st.fd >= 0 {
		if err := pwriteAll(st.fd, data, u.offset); err != nil {
			st.failed = true
			rs.warn(u.entry.snap, &fs.PathError{Op: "write", Path: u.entry.target, Err: err})
		} else if rs.opts.BytesWritten != nil {
			rs.opts.BytesWritten.Add(int64(len(data)))
		}
	}
	st.remaining--
	if st.remaining > 0 {
		return
	}
	defer u.entry.dir.done()
	if st.fd < 0 {
		return
	}
	// The last blob is in: set the metadata through the descriptor while
	// it is open (no path lookups), then close.
	if !st.failed {
		if err := fsmeta.ApplyFD(st.fd, u.entry.target, u.entry.node, rs.owners); err != nil {
			rs.warn(u.entry.snap, err)
		}
		st.metaDone = true
	}
	if err := unix.Close(st.fd); err != nil {
		st.failed = true
		rs.warn(u.entry.snap, err)
	}
	st.fd = -1
	if st.failed {
		return
	}
	// Complete: it takes its name. Whatever was there (a file, a symlink)
	// is replaced, never written through; rename(2) refuses to replace a
	// directory with a file. The directory is open: it cannot be closed
	// before done.
	dfd, err := u.entry.dir.open()
	if err == nil {
		err = unix.Renameat(dfd, partial, dfd, name)
	}
	if err != nil {
		st.failed = true
		rs.warn(u.entry.snap, &os.LinkError{Op: "rename", Old: childPath(u.entry.dir.path, partial), New: u.entry.target, Err: err})
	}
}

// PartialSuffix marks a file whose content a restore could not write
// completely: it keeps that name, and the real name is never given to an
// incomplete file.
const PartialSuffix = ".cairn-partial"

// PartialName is where a restore writes path until its content is
// complete.
func PartialName(path string) string { return path + PartialSuffix }

// pwriteAll writes all of data at off.
func pwriteAll(fd int, data []byte, off int64) error {
	for len(data) > 0 {
		n, err := unix.Pwrite(fd, data, off)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return err
		}
		data, off = data[n:], off+int64(n)
	}
	return nil
}

// makeLinksAndMeta makes links and special files and sets metadata. Before
// the content (final false): symlinks and special files. After it (final
// true): hardlinks, then the metadata of files that did not get it when
// their last blob was written, then of directories, deepest first,
// because creating entries changes a directory's mtime.
func (rs *restorer) makeLinksAndMeta(ctx context.Context, final bool) {
	chown := rs.owners
	if final {
		for _, e := range rs.files {
			if st := e.state; st != nil && (st.failed || st.metaDone) {
				continue
			}
			if err := fsmeta.Apply(e.target, e.node, chown); err != nil {
				rs.warn(e.snap, err)
			}
		}
	}
	for _, e := range rs.links {
		if ctx.Err() != nil {
			return
		}
		// Hardlinks need their files: they come after the content. (An
		// entry named like a file's partial name may come before: that
		// file is written under another name, freePartialName.)
		if hardlink := e.linkTo != ""; hardlink != final {
			continue
		}
		// Replace whatever is in the way; never follow it.
		if fi, err := os.Lstat(e.target); err == nil && !fi.IsDir() {
			_ = os.Remove(e.target)
		}
		var err error
		switch {
		case e.linkTo != "":
			err = os.Link(e.linkTo, e.target)
			if err == nil {
				rs.stats.Links++
				continue // shares the inode's metadata
			}
		case e.node.Type == tree.Symlink:
			err = os.Symlink(e.node.LinkTarget, e.target)
			if err == nil {
				rs.stats.Links++
			}
		default:
			err = fsmeta.Mknod(e.target, e.node)
			if err == nil {
				rs.stats.Special++
			}
		}
		if err != nil {
			rs.warn(e.snap, err)
			continue
		}
		if err := fsmeta.Apply(e.target, e.node, chown); err != nil {
			rs.warn(e.snap, err)
		}
	}
	if !final {
		return
	}
	dirs := append([]*entry(nil), rs.dirs...)
	sort.SliceStable(dirs, func(i, j int) bool { return dirs[i].depth > dirs[j].depth })
	for _, d := range dirs {
		if err := fsmeta.Apply(d.target, d.node, chown); err != nil {
			rs.warn(d.snap, err)
		}
	}
}
