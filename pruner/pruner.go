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

// UsedBlobs walks every snapshot and returns the set of blobs they need.
func UsedBlobs(ctx context.Context, r *repo.Repository, sns []*repo.Snapshot) (map[crypto.ID]struct{}, error) {
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

// AddBases adds to used the bases of its delta blobs (docs/format.md §7.1):
// a delta is readable only with its base. Every indexed copy of a used blob
// counts, since which copy a reader finds is not fixed.
func AddBases(used map[crypto.ID]struct{}, state *repo.IndexState) {
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

// indexFileBlobs bounds the blobs per index file prune writes.
const indexFileBlobs = 100000

// Prune runs one prune pass over r (which must not have pending writes).
func Prune(ctx context.Context, r *repo.Repository, opts Options) (Stats, error) {
	var st Stats
	if opts.MaxUnused == 0 {
		opts.MaxUnused = 0.05
	}
	now := opts.Now
	if now.IsZero() {
		now = time.Now()
	}
	logf := opts.Log
	if logf == nil {
		logf = func(string, ...any) {}
	}
	be := r.Backend()

	// Snapshots are listed before the index is read: a snapshot is written
	// after its index files, so every snapshot seen here finds its data in
	// the index read next, even while backups run.
	sns, err := r.ListSnapshots(ctx)
	if err != nil {
		return st, fmt.Errorf("%w: %v", ErrUnsafe, err)
	}
	state, err := r.ReadIndexState(ctx, nil)
	if err != nil {
		return st, fmt.Errorf("%w: %v (run 'cairn repair index')", ErrUnsafe, err)
	}
	st.IndexFilesIn = len(state.All)
	r.UseIndexState(state)
	st.Snapshots = len(sns)
	logf("finding data used by %d snapshots", len(sns))
	used, err := UsedBlobs(ctx, r, sns)
	if err != nil {
		return st, err
	}
	AddBases(used, state)
	st.UsedBlobs = len(used)

	stored := map[crypto.ID]int64{}
	if err := r.ListPacks(ctx, func(p repo.StoredPack) error {
		if !p.ID.IsNull() {
			stored[p.ID] = p.Size
		}
		return nil
	}); err != nil {
		return st, err
	}

	// Where each used blob will be read from: the live index, or an
	// obsolete pack that must then come back to life.
	idx := r.Index()
	resurrect := map[crypto.ID]bool{}
	for id := range used {
		if loc, ok := idx.Lookup(id); ok {
			if _, ok := stored[loc.Pack]; !ok {
				return st, fmt.Errorf("%w: blob %s is in missing pack %s (run 'cairn check')", ErrUnsafe, id.Short(), loc.Pack.Short())
			}
			continue
		}
		loc, ok := r.Lookup(id)
		if !ok {
			return st, fmt.Errorf("%w: blob %s used by a snapshot is not in the index (run 'cairn check')", ErrUnsafe, id.Short())
		}
		if _, ok := stored[loc.Pack]; !ok {
			return st, fmt.Errorf("%w: blob %s is in deleted pack %s", ErrUnsafe, id.Short(), loc.Pack.Short())
		}
		resurrect[loc.Pack] = true
	}
	isChosen := func(id, pack crypto.ID) bool {
		if _, ok := used[id]; !ok {
			return false
		}
		if loc, ok := idx.Lookup(id); ok {
			return loc.Pack == pack
		}
		loc, ok := r.Lookup(id)
		return ok && loc.Pack == pack
	}

	var keep []index.PackEntry
	var obsolete []index.ObsoletePack
	var toDelete []backend.Handle
	var toRepack []index.PackEntry

	for id, p := range state.Live {
		size, ok := stored[id]
		if !ok {
			continue // already gone; nothing used is in it (checked above)
		}
		var usedBytes, total int64
		for _, b := range p.Blobs {
			total += int64(b.Length)
			if isChosen(b.ID, id) {
				usedBytes += int64(b.Length)
			}
		}
		switch {
		case usedBytes == 0:
			obsolete = append(obsolete, index.ObsoletePack{Pack: p, Since: now.Unix()})
			st.PacksMarked++
			st.BytesPending += size
		case total > 0 && float64(total-usedBytes)/float64(total) > opts.MaxUnused:
			toRepack = append(toRepack, p)
		default:
			keep = append(keep, p)
		}
	}
	for id, o := range state.Obsolete {
		size, ok := stored[id]
		if !ok {
			continue // deleted by an earlier prune
		}
		if resurrect[id] {
			keep = append(keep, o.Pack)
			st.PacksResurrected++
			continue
		}
		if now.Sub(time.Unix(o.Since, 0)) >= opts.Grace {
			toDelete = append(toDelete, backend.Handle{Type: repo.PackType(o.Pack.Type), Name: id.String()})
			st.PacksDeleted++
			st.BytesFreed += size
		} else {
			obsolete = append(obsolete, o)
			st.PacksPending++
			st.BytesPending += size
		}
	}
	// Packs in no index were left by interrupted backups (or belong to one
	// still running): they start their grace period now.
	for id, size := range stored {
		if _, ok := state.Live[id]; ok {
			continue
		}
		if _, ok := state.Obsolete[id]; ok {
			continue
		}
		st.StrayPacks++
		t := index.DataBlob
		if _, err := be.Stat(ctx, backend.Handle{Type: backend.TreePack, Name: id.String()}); err == nil {
			t = index.TreeBlob
		}
		obsolete = append(obsolete, index.ObsoletePack{Pack: index.PackEntry{ID: id, Type: t}, Since: now.Unix()})
		st.BytesPending += size
	}
	st.PacksKept = len(keep)
	st.PacksRepacked = len(toRepack)
	for _, p := range toRepack {
		for _, b := range p.Blobs {
			if isChosen(b.ID, p.ID) {
				st.BlobsRepacked++
				st.BytesRepacked += int64(b.Length)
			}
		}
	}
	logf("%d packs kept, %d to repack, %d newly unused, %d awaiting deletion, %d to delete now, %d brought back",
		st.PacksKept, st.PacksRepacked, st.PacksMarked, st.PacksPending, st.PacksDeleted, st.PacksResurrected)
	if opts.DryRun {
		return st, nil
	}
	if st.PacksMarked+st.PacksRepacked+st.PacksDeleted+st.PacksResurrected+st.StrayPacks == 0 && len(state.All) <= 1 {
		return st, nil // nothing to change
	}

	// Repack: copy the used blobs of mostly-unused packs into new packs,
	// then treat the old packs as newly obsolete.
	sort.Slice(toRepack, func(i, j int) bool { return toRepack[i].ID.Compare(toRepack[j].ID) < 0 })
	for _, p := range toRepack {
		h := backend.Handle{Type: repo.PackType(p.Type), Name: p.ID.String()}
		data, err := be.Load(ctx, h, 0, 0)
		if err != nil {
			return st, fmt.Errorf("repack %v: %w", h, err)
		}
		for _, b := range p.Blobs {
			if !isChosen(b.ID, p.ID) {
				continue
			}
			if int64(b.Offset)+int64(b.Length) > int64(len(data)) {
				return st, fmt.Errorf("repack %v: pack is shorter than its index says", h)
			}
			sealed := data[b.Offset : b.Offset+b.Length]
			if _, err := r.DecodeBlob(ctx, b.ID, sealed, nil); err != nil {
				return st, fmt.Errorf("repack %v: %w (run 'cairn check --read-data')", h, err)
			}
			if err := r.CopyBlob(ctx, p.Type, b, sealed); err != nil {
				return st, fmt.Errorf("repack %v: %w", h, err)
			}
		}
		obsolete = append(obsolete, index.ObsoletePack{Pack: p, Since: now.Unix()})
		st.BytesPending += stored[p.ID]
	}
	// New packs and their index file are durable before anything that
	// pointed at the old copies goes away.
	if err := r.Flush(ctx); err != nil {
		return st, fmt.Errorf("write repacked data: %w", err)
	}

	// Without a grace period nothing can be running that needs the packs
	// (the caller says so): phase two happens at once.
	if opts.Grace == 0 {
		for _, o := range obsolete {
			toDelete = append(toDelete, backend.Handle{Type: repo.PackType(o.Pack.Type), Name: o.Pack.ID.String()})
			st.PacksDeleted++
			st.BytesFreed += stored[o.Pack.ID]
		}
		obsolete = nil
		st.PacksPending, st.BytesPending = 0, 0
	}
	// Write the new index: the superseding list goes in the last file, so
	// until every new file exists the old ones stay in effect.
	files := splitIndex(keep, obsolete)
	files[len(files)-1].Supersedes = state.All
	for _, f := range files {
		if _, err := r.SaveIndexFile(ctx, f); err != nil {
			return st, err
		}
	}
	st.IndexFilesOut = len(files)
	for _, id := range state.All {
		if err := be.Remove(ctx, backend.Handle{Type: backend.Index, Name: id.String()}); err != nil {
			return st, fmt.Errorf("remove superseded index: %w", err)
		}
	}
	for _, h := range toDelete {
		if err := be.Remove(ctx, h); err != nil {
			return st, fmt.Errorf("delete unused pack: %w", err)
		}
	}
	return st, nil
}

// splitIndex spreads packs over index files of bounded size; it always
// returns at least one file.
func splitIndex(live []index.PackEntry, obsolete []index.ObsoletePack) []*index.File {
	sort.Slice(live, func(i, j int) bool { return live[i].ID.Compare(live[j].ID) < 0 })
	sort.Slice(obsolete, func(i, j int) bool { return obsolete[i].Pack.ID.Compare(obsolete[j].Pack.ID) < 0 })
	files := []*index.File{{}}
	n := 0
	next := func(blobs int) *index.File {
		if n+blobs > indexFileBlobs && n > 0 {
			files = append(files, &index.File{})
			n = 0
		}
		n += blobs
		return files[len(files)-1]
	}
	for _, p := range live {
		f := next(len(p.Blobs))
		f.Packs = append(f.Packs, p)
	}
	for _, o := range obsolete {
		f := next(len(o.Pack.Blobs) + 1)
		f.Obsolete = append(f.Obsolete, o)
	}
	return files
}
