// Package pruner frees space: it finds the blobs no snapshot uses, repacks
// packs that are mostly unused, and deletes unused packs in two phases so a
// backup running at the same time never loses data it deduplicated against.
//
// Phase one marks a pack obsolete in a new index file (with the time); its
// blobs stay readable but new backups no longer deduplicate against them.
// Phase two, in a later prune at least the grace period after the mark,
// deletes the pack unless a snapshot written meanwhile uses one of its
// blobs, in which case the pack is made live again.
package pruner

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/cairn-backup/cairn/crypto"
	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/repo/backend"
	"github.com/cairn-backup/cairn/tree"
)

// Options tune a prune run.
type Options struct {
	// MaxUnused is the share of unused bytes above which a pack is
	// repacked; 0 means the default 0.05, a tiny positive value "any".
	MaxUnused float64
	// Grace is how long a pack stays obsolete before it is deleted. It
	// must exceed the longest backup that may run concurrently.
	Grace time.Duration
	// DryRun computes and reports without changing the repository.
	DryRun bool
	// Now is the clock (tests); zero means time.Now.
	Now time.Time
	// Log receives progress lines; may be nil.
	Log func(format string, args ...any)
}

// Stats report what prune did (or would do, with DryRun).
type Stats struct {
	Snapshots        int
	UsedBlobs        int
	PacksKept        int
	PacksRepacked    int
	PacksMarked      int // newly obsolete (phase one)
	PacksPending     int // obsolete, grace period not over
	PacksResurrected int
	PacksDeleted     int // phase two
	StrayPacks       int // in storage but in no index
	BlobsRepacked    int
	BytesRepacked    int64
	BytesFreed       int64
	BytesPending     int64 // held by obsolete packs not yet deleted
	IndexFilesIn     int
	IndexFilesOut    int
}

// ErrUnsafe is wrapped when prune refuses to run because the repository is
// damaged (a snapshot needs data that is not there).
var ErrUnsafe = errors.New("prune refused: the repository is damaged")

// usedBlobs walks every snapshot and returns the set of blobs they need.
func usedBlobs(ctx context.Context, r *repo.Repository, sns []*repo.Snapshot) (map[crypto.ID]struct{}, error) {
	used := make(map[crypto.ID]struct{})
	// A subtree seen once (in this snapshot or an earlier one) is not
	// walked again.
	walk := func(root crypto.ID) error {
		if _, ok := used[root]; ok {
			return nil
		}
		used[root] = struct{}{}
		err := tree.Walk(ctx, r, root, "/", func(_ string, n *tree.Node) error {
			for _, b := range n.Content {
				used[b] = struct{}{}
			}
			if n.Type == tree.Dir {
				if _, ok := used[n.Subtree]; ok {
					return tree.SkipDir
				}
				used[n.Subtree] = struct{}{}
			}
			return nil
		})
		if err != nil && ctx.Err() == nil {
			return fmt.Errorf("%w: %v (run 'cairn check', then 'cairn repair')", ErrUnsafe, err)
		}
		return err
	}
	for _, sn := range sns {
		if err := walk(sn.Tree); err != nil {
			return nil, fmt.Errorf("snapshot %s: %w", sn.ID.Short(), err)
		}
	}
	return used, nil
}

// addBases adds to used the bases of its delta blobs (docs/format.md §7.1):
// a delta is readable only with its base. Every indexed copy of a used blob
// counts, since which copy a reader finds is not fixed.
func addBases(used map[crypto.ID]struct{}, state *repo.IndexState) {
	bases := map[crypto.ID][]crypto.ID{}
	note := func(p index.PackEntry) {
		for _, b := range p.Blobs {
			if b.IsDelta() {
				bases[b.ID] = append(bases[b.ID], b.Base)
			}
		}
	}
	for _, p := range state.Live {
		note(p)
	}
	for _, o := range state.Obsolete {
		note(o.Pack)
	}
	if len(bases) == 0 {
		return
	}
	var work []crypto.ID
	for id := range used {
		work = append(work, id)
	}
	for len(work) > 0 {
		id := work[len(work)-1]
		work = work[:len(work)-1]
		for _, b := range bases[id] {
			if _, ok := used[b]; !ok {
				used[b] = struct{}{}
				work = append(work, b)
			}
		}
	}
}

// Plan is what one prune pass will do, computed without changing the
// repository: its Stats are what Execute carries out (and what --dry-run
// prints).
type Plan struct {
	Stats    Stats
	now      time.Time
	grace    time.Duration
	state    *repo.IndexState
	stored   map[crypto.ID]int64 // pack -> size in storage
	used     map[crypto.ID]struct{}
	keep     []index.PackEntry
	obsolete []index.ObsoletePack
	toDelete []backend.Handle
	toRepack []index.PackEntry
	files    []*index.File // the index files that replace every current one
	noop     bool          // nothing to change
}

// Prune plans one prune pass over r (which must not have pending writes)
// and, unless opts.DryRun, executes it.
func Prune(ctx context.Context, r *repo.Repository, opts Options) (Stats, error) {
	p, err := PlanPrune(ctx, r, opts)
	if err != nil || opts.DryRun {
		if p == nil {
			return Stats{}, err
		}
		return p.Stats, err
	}
	return p.Execute(ctx, r)
}

// PlanPrune finds the blobs every snapshot uses and decides, pack by
// pack, what to keep, repack, mark obsolete, bring back or delete.
func PlanPrune(ctx context.Context, r *repo.Repository, opts Options) (*Plan, error) {
	if opts.MaxUnused == 0 {
		opts.MaxUnused = 0.05
	}
	p := &Plan{now: opts.Now, grace: opts.Grace}
	if p.now.IsZero() {
		p.now = time.Now()
	}
	logf := opts.Log
	if logf == nil {
		logf = func(string, ...any) {}
	}
	if err := p.findUsed(ctx, r, logf); err != nil {
		return p, err
	}
	resurrect, err := p.locateUsed(r)
	if err != nil {
		return p, err
	}
	p.classifyLive(r, opts.MaxUnused)
	p.classifyObsolete(resurrect)
	p.addStrays(ctx, r)
	st := &p.Stats
	st.PacksKept = len(p.keep)
	st.PacksRepacked = len(p.toRepack)
	p.noop = st.PacksMarked+st.PacksRepacked+st.PacksDeleted+st.PacksResurrected+st.StrayPacks == 0 && len(p.state.All) <= 1
	for _, pk := range p.toRepack {
		for _, b := range pk.Blobs {
			if p.chosen(r, b.ID, pk.ID) {
				st.BlobsRepacked++
				st.BytesRepacked += int64(b.Length)
			}
		}
		// Once its blobs are copied, a repacked pack is unused.
		p.obsolete = append(p.obsolete, index.ObsoletePack{Pack: pk, Since: p.now.Unix()})
		st.BytesPending += p.stored[pk.ID]
	}
	// Without a grace period nothing can be running that needs the packs
	// (the caller says so): phase two happens at once.
	if p.grace == 0 {
		for _, o := range p.obsolete {
			p.toDelete = append(p.toDelete, backend.Handle{Type: repo.PackType(o.Pack.Type), Name: o.Pack.ID.String()})
			st.PacksDeleted++
			st.BytesFreed += p.stored[o.Pack.ID]
		}
		p.obsolete = nil
		st.PacksPending, st.BytesPending = 0, 0
	}
	if !p.noop {
		// The superseding list goes in the last file, so until every new
		// file exists the old ones stay in effect.
		p.files = index.Split(p.keep, p.obsolete)
		p.files[len(p.files)-1].Supersedes = p.state.All
		st.IndexFilesOut = len(p.files)
	}
	logf("%d packs kept, %d to repack, %d newly unused, %d awaiting deletion, %d to delete now, %d brought back",
		st.PacksKept, st.PacksRepacked, st.PacksMarked, st.PacksPending, st.PacksDeleted, st.PacksResurrected)
	return p, nil
}

// findUsed reads the snapshots, the index and the pack listing, and the
// blobs the snapshots use (with the bases of their deltas).
func (p *Plan) findUsed(ctx context.Context, r *repo.Repository, logf func(string, ...any)) error {
	// Snapshots are listed before the index is read: a snapshot is written
	// after its index files, so every snapshot seen here finds its data in
	// the index read next, even while backups run.
	sns, err := r.ListSnapshots(ctx)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrUnsafe, err)
	}
	// Archived WAL is recorded like snapshots, after its blobs.
	wal, err := r.ListWALFiles(ctx)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrUnsafe, err)
	}
	if p.state, err = r.ReadIndexState(ctx, nil); err != nil {
		return fmt.Errorf("%w: %v (run 'cairn repair index')", ErrUnsafe, err)
	}
	p.Stats.IndexFilesIn = len(p.state.All)
	r.UseIndexState(p.state)
	p.Stats.Snapshots = len(sns)
	logf("finding data used by %d snapshots", len(sns))
	if p.used, err = usedBlobs(ctx, r, sns); err != nil {
		return err
	}
	for _, f := range wal {
		for _, b := range f.Blobs {
			p.used[b] = struct{}{}
		}
	}
	addBases(p.used, p.state)
	p.Stats.UsedBlobs = len(p.used)
	p.stored = map[crypto.ID]int64{}
	return r.ListPacks(ctx, func(sp repo.StoredPack) error {
		if !sp.ID.IsNull() {
			p.stored[sp.ID] = sp.Size
		}
		return nil
	})
}

// locateUsed checks that every used blob can be read, and returns the
// obsolete packs that hold used blobs found nowhere else: they must come
// back to life.
func (p *Plan) locateUsed(r *repo.Repository) (map[crypto.ID]bool, error) {
	idx := r.Index()
	resurrect := map[crypto.ID]bool{}
	for id := range p.used {
		if loc, ok := idx.Lookup(id); ok {
			if _, ok := p.stored[loc.Pack]; !ok {
				return nil, fmt.Errorf("%w: blob %s is in missing pack %s (run 'cairn check')", ErrUnsafe, id.Short(), loc.Pack.Short())
			}
			continue
		}
		loc, ok := r.Lookup(id)
		if !ok {
			return nil, fmt.Errorf("%w: blob %s used by a snapshot is not in the index (run 'cairn check')", ErrUnsafe, id.Short())
		}
		if _, ok := p.stored[loc.Pack]; !ok {
			return nil, fmt.Errorf("%w: blob %s is in deleted pack %s", ErrUnsafe, id.Short(), loc.Pack.Short())
		}
		resurrect[loc.Pack] = true
	}
	return resurrect, nil
}

// chosen reports whether blob id is used and read from pack: from the
// live index, else from an obsolete pack.
func (p *Plan) chosen(r *repo.Repository, id, pack crypto.ID) bool {
	if _, ok := p.used[id]; !ok {
		return false
	}
	if loc, ok := r.Index().Lookup(id); ok {
		return loc.Pack == pack
	}
	loc, ok := r.Lookup(id)
	return ok && loc.Pack == pack
}

// classifyLive keeps, repacks or marks obsolete each live pack.
func (p *Plan) classifyLive(r *repo.Repository, maxUnused float64) {
	for id, pk := range p.state.Live {
		size, ok := p.stored[id]
		if !ok {
			continue // already gone; nothing used is in it (checked above)
		}
		var usedBytes, total int64
		for _, b := range pk.Blobs {
			total += int64(b.Length)
			if p.chosen(r, b.ID, id) {
				usedBytes += int64(b.Length)
			}
		}
		switch {
		case usedBytes == 0:
			p.obsolete = append(p.obsolete, index.ObsoletePack{Pack: pk, Since: p.now.Unix()})
			p.Stats.PacksMarked++
			p.Stats.BytesPending += size
		case total > 0 && float64(total-usedBytes)/float64(total) > maxUnused:
			p.toRepack = append(p.toRepack, pk)
		default:
			p.keep = append(p.keep, pk)
		}
	}
}

// classifyObsolete brings back, deletes or keeps waiting each obsolete
// pack.
func (p *Plan) classifyObsolete(resurrect map[crypto.ID]bool) {
	for id, o := range p.state.Obsolete {
		size, ok := p.stored[id]
		if !ok {
			continue // deleted by an earlier prune
		}
		switch {
		case resurrect[id]:
			p.keep = append(p.keep, o.Pack)
			p.Stats.PacksResurrected++
		case p.now.Sub(time.Unix(o.Since, 0)) >= p.grace:
			p.toDelete = append(p.toDelete, backend.Handle{Type: repo.PackType(o.Pack.Type), Name: id.String()})
			p.Stats.PacksDeleted++
			p.Stats.BytesFreed += size
		default:
			p.obsolete = append(p.obsolete, o)
			p.Stats.PacksPending++
			p.Stats.BytesPending += size
		}
	}
}

// addStrays marks the packs that no index lists: left by interrupted
// backups (or one still running), they start their grace period now.
func (p *Plan) addStrays(ctx context.Context, r *repo.Repository) {
	for id, size := range p.stored {
		if _, ok := p.state.Live[id]; ok {
			continue
		}
		if _, ok := p.state.Obsolete[id]; ok {
			continue
		}
		p.Stats.StrayPacks++
		t := index.DataBlob
		if _, err := r.Backend().Stat(ctx, backend.Handle{Type: backend.TreePack, Name: id.String()}); err == nil {
			t = index.TreeBlob
		}
		p.obsolete = append(p.obsolete, index.ObsoletePack{Pack: index.PackEntry{ID: id, Type: t}, Since: p.now.Unix()})
		p.Stats.BytesPending += size
	}
}

// Execute carries out the plan: repacks, writes the new index files,
// removes the superseded ones and deletes packs past their grace period.
// It returns the plan's Stats.
func (p *Plan) Execute(ctx context.Context, r *repo.Repository) (Stats, error) {
	if p.noop {
		return p.Stats, nil
	}
	if err := p.repack(ctx, r); err != nil {
		return p.Stats, err
	}
	for _, f := range p.files {
		if _, err := r.SaveIndexFile(ctx, f); err != nil {
			return p.Stats, err
		}
	}
	var superseded []backend.Handle
	for _, id := range p.state.All {
		superseded = append(superseded, backend.Handle{Type: backend.Index, Name: id.String()})
	}
	if err := r.Remove(ctx, superseded...); err != nil {
		return p.Stats, fmt.Errorf("remove superseded index: %w", err)
	}
	if err := r.Remove(ctx, p.toDelete...); err != nil {
		return p.Stats, fmt.Errorf("delete unused pack: %w", err)
	}
	return p.Stats, nil
}

// repack copies the used blobs of mostly-unused packs, still sealed, into
// new packs (the plan already counts the old ones obsolete). The new packs
// and their index file are durable before anything that pointed at the old
// copies goes away.
func (p *Plan) repack(ctx context.Context, r *repo.Repository) error {
	sort.Slice(p.toRepack, func(i, j int) bool { return p.toRepack[i].ID.Compare(p.toRepack[j].ID) < 0 })
	for _, pk := range p.toRepack {
		h := backend.Handle{Type: repo.PackType(pk.Type), Name: pk.ID.String()}
		data, err := r.Backend().Load(ctx, h, 0, 0)
		if err != nil {
			return fmt.Errorf("repack %v: %w", h, err)
		}
		for _, b := range pk.Blobs {
			if !p.chosen(r, b.ID, pk.ID) {
				continue
			}
			if int64(b.Offset)+int64(b.Length) > int64(len(data)) {
				return fmt.Errorf("repack %v: pack is shorter than its index says", h)
			}
			sealed := data[b.Offset : b.Offset+b.Length]
			if _, err := r.DecodeBlob(ctx, b.ID, sealed, nil); err != nil {
				return fmt.Errorf("repack %v: %w (run 'cairn check --read-data')", h, err)
			}
			if err := r.CopyBlob(ctx, pk.Type, b, sealed); err != nil {
				return fmt.Errorf("repack %v: %w", h, err)
			}
		}
	}
	if err := r.Flush(ctx); err != nil {
		return fmt.Errorf("write repacked data: %w", err)
	}
	return nil
}
