// Package checker verifies a repository: that its index, packs and snapshots
// agree (structure), and optionally that every stored byte decrypts and
// hashes to what its name promises (read-data).
package checker

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cairn-backup/cairn/crypto"
	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/internal/walarchive"
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/repo/backend"
	"github.com/cairn-backup/cairn/tree"
)

// Options select how deep check goes.
type Options struct {
	// ReadData reads every pack and verifies every blob.
	ReadData bool
	// SubsetN/SubsetM, when SubsetM > 0, restrict ReadData to packs whose
	// first ID byte modulo M equals N-1, so M runs cover every pack.
	SubsetN, SubsetM int
	// Workers reading packs in parallel (default 4).
	Workers int
	// PacksRead, when set, is advanced as each pack has been read (for
	// progress reports).
	PacksRead *atomic.Int64
}

// Severity of a finding.
type Severity int

// Findings are errors (the repository is damaged) or notes (harmless, such
// as packs left by an interrupted backup).
const (
	Error Severity = iota
	Note
)

// Finding is one problem or note.
type Finding struct {
	Severity Severity
	Object   string // e.g. "data/3fa2..." or "snapshot 1a2b3c4d"
	Message  string
}

func (f Finding) String() string {
	if f.Object == "" {
		return f.Message
	}
	return f.Object + ": " + f.Message
}

// Result summarizes a check.
type Result struct {
	Findings     []Finding
	Snapshots    int
	WALFiles     int
	IndexFiles   int
	Packs        int
	PacksRead    int
	BlobsChecked int
}

// Errors counts the error findings.
func (r *Result) Errors() int {
	n := 0
	for _, f := range r.Findings {
		if f.Severity == Error {
			n++
		}
	}
	return n
}

type checker struct {
	r    *repo.Repository
	opts Options
	mu   sync.Mutex
	res  Result
	// packs indexed: pack ID -> expected blobs
	indexed map[crypto.ID]index.PackEntry
	// packs awaiting deletion by prune
	obsolete      map[crypto.ID]index.ObsoletePack
	snapshotNames []string
	wal           []*repo.WALFile
	stored        map[crypto.ID]int64 // packs in the backend -> size
}

func (c *checker) add(sev Severity, obj, format string, args ...any) {
	c.mu.Lock()
	c.res.Findings = append(c.res.Findings, Finding{Severity: sev, Object: obj, Message: fmt.Sprintf(format, args...)})
	c.mu.Unlock()
}

// Check verifies r. It loads the index into r as a side effect. The returned
// error is for failures to run the check at all (such as cancellation);
// problems found are in Result.Findings.
func Check(ctx context.Context, r *repo.Repository, opts Options) (*Result, error) {
	if opts.Workers <= 0 {
		opts.Workers = 4
	}
	if opts.SubsetM < 0 || (opts.SubsetM > 0 && (opts.SubsetN < 1 || opts.SubsetN > opts.SubsetM)) {
		return nil, fmt.Errorf("invalid subset %d/%d", opts.SubsetN, opts.SubsetM)
	}
	c := &checker{r: r, opts: opts, indexed: make(map[crypto.ID]index.PackEntry), stored: make(map[crypto.ID]int64)}
	// Snapshots are listed first and the index read after: a snapshot is
	// written after its index files, so a backup running meanwhile cannot
	// make check see a snapshot without its index.
	steps := []func(context.Context) error{c.listSnapshots, c.listWAL, c.checkKeys, c.loadIndex, c.listPacks, c.checkSnapshots, c.checkWAL}
	if opts.ReadData {
		steps = append(steps, c.readData)
	}
	for _, step := range steps {
		if err := step(ctx); err != nil {
			return &c.res, err
		}
	}
	sort.SliceStable(c.res.Findings, func(i, j int) bool { return c.res.Findings[i].Severity < c.res.Findings[j].Severity })
	return &c.res, nil
}

func (c *checker) checkKeys(ctx context.Context) error {
	be := c.r.Backend()
	return be.List(ctx, backend.Key, func(fi backend.FileInfo) error {
		data, err := be.Load(ctx, backend.Handle{Type: backend.Key, Name: fi.Name}, 0, 0)
		if err != nil {
			c.add(Error, "keys/"+fi.Name, "unreadable: %v", err)
			return ctx.Err()
		}
		if crypto.Hash(data).String() != fi.Name {
			c.add(Error, "keys/"+fi.Name, "content does not match its name")
			return nil
		}
		if _, err := crypto.ParseKeyFile(data); err != nil {
			c.add(Error, "keys/"+fi.Name, "%v", err)
		}
		return nil
	})
}

func (c *checker) loadIndex(ctx context.Context) error {
	st, err := c.r.ReadIndexState(ctx, func(name string, err error) {
		c.add(Error, "index/"+name, "%v", err)
	})
	if err != nil {
		return err
	}
	c.res.IndexFiles = len(st.All)
	c.indexed = st.Live
	c.obsolete = st.Obsolete
	c.r.UseIndexState(st)
	return nil
}

func (c *checker) listPacks(ctx context.Context) error {
	types := map[crypto.ID]backend.FileType{}
	err := c.r.ListPacks(ctx, func(p repo.StoredPack) error {
		if p.ID.IsNull() {
			c.add(Error, string(p.Type)+"/"+p.Name, "object name is not a pack ID")
			return nil
		}
		c.stored[p.ID] = p.Size
		types[p.ID] = p.Type
		return nil
	})
	if err != nil {
		return err
	}
	c.res.Packs = len(c.stored)
	for id, p := range c.indexed {
		obj := string(repo.PackType(p.Type)) + "/" + id.String()
		size, ok := c.stored[id]
		if !ok {
			c.add(Error, obj, "pack is referenced by the index but missing (%d blobs lost; run 'cairn repair index', then 'cairn repair snapshots')", len(p.Blobs))
			continue
		}
		if types[id] != repo.PackType(p.Type) {
			c.add(Error, obj, "pack is stored as %s but indexed as %s", types[id], repo.PackType(p.Type))
		}
		for _, b := range p.Blobs {
			if int64(b.Offset)+int64(b.Length)+4 > size {
				c.add(Error, obj, "blob %s extends past the end of the %d-byte pack (truncated?)", b.ID.Short(), size)
				break
			}
		}
	}
	c.checkBases()
	for id, t := range types {
		if _, ok := c.indexed[id]; ok {
			continue
		}
		if o, ok := c.obsolete[id]; ok {
			c.add(Note, string(t)+"/"+id.String(), "pack is unused since %s and awaits deletion by prune", time.Unix(o.Since, 0).UTC().Format(time.RFC3339))
			continue
		}
		c.add(Note, string(t)+"/"+id.String(), "pack is not in any index (left by an interrupted backup; prune removes it)")
	}
	return nil
}

// checkBases checks that every delta blob's base (docs/format.md §7.1) is
// indexed, stored, and a full blob: without it the delta cannot be read.
func (c *checker) checkBases() {
	deltaIn := map[crypto.ID]map[crypto.ID]bool{} // blob -> packs holding it as a delta
	note := func(p index.PackEntry) {
		for _, b := range p.Blobs {
			if b.IsDelta() {
				if deltaIn[b.ID] == nil {
					deltaIn[b.ID] = map[crypto.ID]bool{}
				}
				deltaIn[b.ID][p.ID] = true
			}
		}
	}
	for _, p := range c.indexed {
		note(p)
	}
	for _, o := range c.obsolete {
		note(o.Pack)
	}
	check := func(p index.PackEntry) {
		obj := string(repo.PackType(p.Type)) + "/" + p.ID.String()
		for _, b := range p.Blobs {
			if !b.IsDelta() {
				continue
			}
			loc, ok := c.r.Lookup(b.Base)
			switch {
			case !ok:
				c.add(Error, obj, "delta blob %s needs base %s, which is not in the index", b.ID.Short(), b.Base.Short())
			case deltaIn[b.Base][loc.Pack]:
				c.add(Error, obj, "delta blob %s has base %s, which is itself a delta", b.ID.Short(), b.Base.Short())
			default:
				if _, ok := c.stored[loc.Pack]; !ok {
					c.add(Error, obj, "delta blob %s needs base %s, which is in missing pack %s", b.ID.Short(), b.Base.Short(), loc.Pack.Short())
				}
			}
		}
	}
	for _, p := range c.indexed {
		check(p)
	}
	for _, o := range c.obsolete {
		check(o.Pack)
	}
}

func (c *checker) listSnapshots(ctx context.Context) error {
	return c.r.Backend().List(ctx, backend.Snapshot, func(fi backend.FileInfo) error {
		c.snapshotNames = append(c.snapshotNames, fi.Name)
		return nil
	})
}

// listWAL reads the records of archived WAL (before the index, like the
// snapshots: a record is written after its blobs' index file).
func (c *checker) listWAL(ctx context.Context) error {
	files, err := c.r.ListWALFiles(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		c.add(Error, "wal", "%v", err)
	}
	c.wal = files
	c.res.WALFiles = len(files)
	return nil
}

// checkWAL checks that every archived WAL file's blobs are stored, and
// reports gaps in the sequence of segments of each timeline: a recovery
// cannot replay across one.
func (c *checker) checkWAL(ctx context.Context) error {
	for _, f := range c.wal {
		obj := "WAL " + f.Name + " of system " + f.SystemID
		for _, b := range f.Blobs {
			l, ok := c.r.Lookup(b)
			switch {
			case !ok:
				c.add(Error, obj, "data blob %s is not in the index", b.Short())
			default:
				if _, ok := c.stored[l.Pack]; !ok {
					c.add(Error, obj, "data blob %s is in missing pack %s", b.Short(), l.Pack.Short())
				}
			}
		}
	}
	for _, s := range walarchive.Summarize(c.wal) {
		for _, t := range s.Timelines {
			for _, g := range t.Gaps {
				c.add(Error, "WAL of system "+s.SystemID, "timeline %d: %d segment(s) missing between %s and %s: recovery cannot replay past %s",
					t.Timeline, g.Missing, g.After, g.Before, g.After)
			}
		}
	}
	return ctx.Err()
}

func (c *checker) checkSnapshots(ctx context.Context) error {
	be := c.r.Backend()
	names := c.snapshotNames
	c.res.Snapshots = len(names)
	seenTrees := map[crypto.ID]bool{}
	idx := c.r.Index()
	for _, n := range names {
		if err := ctx.Err(); err != nil {
			return err
		}
		obj := "snapshot " + repo.ShortName(n)
		data, err := be.Load(ctx, backend.Handle{Type: backend.Snapshot, Name: n}, 0, 0)
		if backend.IsNotFound(err) {
			c.res.Snapshots--
			continue // forgotten since it was listed
		}
		if err != nil {
			c.add(Error, obj, "unreadable: %v", err)
			continue
		}
		sn, err := c.r.DecodeSnapshot(n, data)
		if err != nil {
			c.add(Error, obj, "%v", err)
			continue
		}
		var walk func(id crypto.ID, path string) error
		walk = func(id crypto.ID, path string) error {
			if seenTrees[id] {
				return nil
			}
			seenTrees[id] = true
			if err := ctx.Err(); err != nil {
				return err
			}
			loc, ok := idx.Lookup(id)
			if !ok {
				if loc, ok = c.r.Lookup(id); ok {
					c.add(Note, obj, "tree %s of %q is in pack %s, which prune marked unused; the next prune keeps it", id.Short(), path, loc.Pack.Short())
				} else {
					c.add(Error, obj, "tree %s of %q is not in the index", id.Short(), path)
					return nil
				}
			}
			if _, ok := c.stored[loc.Pack]; !ok {
				c.add(Error, obj, "tree %s of %q is in missing pack %s", id.Short(), path, loc.Pack.Short())
				return nil
			}
			t, err := tree.Load(ctx, c.r, id)
			if err != nil {
				c.add(Error, obj, "tree of %q: %v", path, err)
				return ctx.Err()
			}
			for _, node := range t.Nodes {
				p := path + "/" + node.Name
				if path == "/" {
					p = "/" + node.Name
				}
				for _, b := range node.Content {
					l, ok := idx.Lookup(b)
					if !ok {
						if l, ok = c.r.Lookup(b); ok {
							c.add(Note, obj, "data blob %s of %q is in pack %s, which prune marked unused; the next prune keeps it", b.Short(), p, l.Pack.Short())
						}
					}
					switch {
					case !ok:
						c.add(Error, obj, "data blob %s of %q is not in the index", b.Short(), p)
					default:
						if _, ok := c.stored[l.Pack]; !ok {
							c.add(Error, obj, "data blob %s of %q is in missing pack %s", b.Short(), p, l.Pack.Short())
						}
					}
				}
				if node.Type == tree.Dir {
					if err := walk(node.Subtree, p); err != nil {
						return err
					}
				}
			}
			return nil
		}
		if err := walk(sn.Tree, "/"); err != nil {
			return err
		}
	}
	return nil
}

func (c *checker) readData(ctx context.Context) error {
	type job struct {
		id   crypto.ID
		t    backend.FileType
		size int64
	}
	var jobs []job
	for id, size := range c.stored {
		if c.opts.SubsetM > 0 && int(id[0])%c.opts.SubsetM != c.opts.SubsetN-1 {
			continue
		}
		t := backend.DataPack
		if p, ok := c.indexed[id]; ok {
			t = repo.PackType(p.Type)
		} else if c.isTreePack(ctx, id) {
			t = backend.TreePack
		}
		jobs = append(jobs, job{id, t, size})
	}
	sort.Slice(jobs, func(i, j int) bool { return jobs[i].id.Compare(jobs[j].id) < 0 })
	ch := make(chan job)
	var wg sync.WaitGroup
	for w := 0; w < c.opts.Workers; w++ {
		wg.Go(func() {
			for j := range ch {
				n := c.readPack(ctx, j.id, j.t)
				c.mu.Lock()
				c.res.PacksRead++
				c.res.BlobsChecked += n
				c.mu.Unlock()
				if c.opts.PacksRead != nil {
					c.opts.PacksRead.Add(1)
				}
			}
		})
	}
	for _, j := range jobs {
		select {
		case ch <- j:
		case <-ctx.Done():
		}
	}
	close(ch)
	wg.Wait()
	return ctx.Err()
}

func (c *checker) isTreePack(ctx context.Context, id crypto.ID) bool {
	_, err := c.r.Backend().Stat(ctx, backend.Handle{Type: backend.TreePack, Name: id.String()})
	return err == nil
}

// readPack verifies one pack completely and returns the number of blobs
// checked. The pack is streamed, never held whole: each blob is decoded as
// it passes, the whole stream is hashed, and only the header at its end is
// kept. The blobs are known beforehand from the index (one request), or
// for a pack the index does not list from its header (read first).
func (c *checker) readPack(ctx context.Context, id crypto.ID, t backend.FileType) int {
	obj := string(t) + "/" + id.String()
	// Never from the local cache: this verifies what the repository holds.
	be := backend.Unwrap(c.r.Backend())
	var want []index.BlobEntry
	if exp, ok := c.indexed[id]; ok {
		want = slices.Clone(exp.Blobs)
	} else {
		var err error
		if _, want, err = c.r.LoadPackHeader(ctx, t, id); err != nil {
			if ctx.Err() == nil {
				c.add(Error, obj, "%v", err)
			}
			return 0
		}
	}
	slices.SortFunc(want, func(a, b index.BlobEntry) int { return cmp.Compare(a.Offset, b.Offset) })
	size := c.stored[id]
	rc, err := be.Open(ctx, backend.Handle{Type: t, Name: id.String()}, 0, size)
	if err != nil {
		if ctx.Err() == nil {
			c.add(Error, obj, "unreadable: %v", err)
		}
		return 0
	}
	defer rc.Close()
	hasher := crypto.NewHasher()
	stream := io.TeeReader(rc, hasher)
	unreadable := func(err error) {
		if ctx.Err() == nil {
			c.add(Error, obj, "unreadable: %v", err)
		}
	}
	var pos int64
	var buf []byte
	checked := 0
	for _, b := range want {
		if ctx.Err() != nil {
			return checked
		}
		off, end := int64(b.Offset), int64(b.Offset)+int64(b.Length)
		if off < pos || end > size {
			c.add(Error, obj, "blob %s at %d..%d does not fit the pack (%d bytes, previous blob ends at %d)", b.ID.Short(), off, end, size, pos)
			continue
		}
		if _, err := io.CopyN(io.Discard, stream, off-pos); err != nil {
			unreadable(err)
			return checked
		}
		buf = slices.Grow(buf[:0], int(b.Length))[:b.Length]
		if _, err := io.ReadFull(stream, buf); err != nil {
			unreadable(err)
			return checked
		}
		pos = end
		if _, err := c.r.DecodeBlob(ctx, b.ID, buf, nil); err != nil {
			c.add(Error, obj, "%v", err)
		}
		checked++
	}
	// The rest is the header and its length; more than the largest header
	// is damage, hashed but not kept.
	tail, err := io.ReadAll(io.LimitReader(stream, min(size-pos, repo.MaxPackTail)))
	if err == nil {
		_, err = io.Copy(io.Discard, stream)
	}
	if err != nil {
		unreadable(err)
		return checked
	}
	if got := hasher.Sum(); got != id {
		c.add(Error, obj, "content hashes to %s, not its name (pack damaged)", got.Short())
	}
	blobType, blobs, err := repo.ReadPackTail(c.r.Key(), tail, size)
	if err != nil {
		c.add(Error, obj, "%v", err)
		return checked
	}
	if repo.PackType(blobType) != t {
		c.add(Error, obj, "header says %s blobs but the pack is stored under %s/", blobType, t)
	}
	if exp, ok := c.indexed[id]; ok {
		inHeader := make(map[crypto.ID]index.BlobEntry, len(blobs))
		for _, b := range blobs {
			inHeader[b.ID] = b
		}
		indexed := make(map[crypto.ID]bool, len(exp.Blobs))
		for _, e := range exp.Blobs {
			indexed[e.ID] = true
			h, ok := inHeader[e.ID]
			if !ok || h.Offset != e.Offset || h.Length != e.Length || h.Base != e.Base {
				c.add(Error, obj, "index entry for blob %s does not match the pack header", e.ID.Short())
			}
		}
		// Blobs the header lists and the index does not were not in the
		// stream's plan: read each on its own.
		for _, b := range blobs {
			if indexed[b.ID] || ctx.Err() != nil {
				continue
			}
			stored, err := be.Load(ctx, backend.Handle{Type: t, Name: id.String()}, int64(b.Offset), int64(b.Length))
			if err == nil {
				_, err = c.r.DecodeBlob(ctx, b.ID, stored, nil)
			}
			if err != nil && ctx.Err() == nil {
				c.add(Error, obj, "%v", err)
			}
			checked++
		}
	}
	return checked
}
