// Package repair rebuilds what check found broken: the index from the pack
// headers, and snapshots that refer to lost data (damaged files and
// directories are kept, renamed and emptied, so the rest restores).
package repair

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

// IndexStats report what repair index did.
type IndexStats struct {
	Packs, Blobs  int
	BadPacks      []string // packs whose header could not be read
	OldIndexFiles int
	NewIndexFiles int
}

// Index rebuilds the index from the headers of every stored pack and
// replaces all existing index files. Packs that prune had marked unused
// become live again; the next prune marks them anew.
func Index(ctx context.Context, r *repo.Repository, log func(string, ...any)) (IndexStats, error) {
	var st IndexStats
	if log == nil {
		log = func(string, ...any) {}
	}
	be := r.Backend()
	var old []crypto.ID
	if err := be.List(ctx, backend.Index, func(fi backend.FileInfo) error {
		if id, err := crypto.ParseID(fi.Name); err == nil {
			old = append(old, id)
		}
		return nil
	}); err != nil {
		return st, fmt.Errorf("list index files: %w", err)
	}
	st.OldIndexFiles = len(old)
	var packs []index.PackEntry
	var stored []repo.StoredPack
	if err := r.ListPacks(ctx, func(p repo.StoredPack) error {
		if !p.ID.IsNull() {
			stored = append(stored, p)
		}
		return nil
	}); err != nil {
		return st, err
	}
	for _, sp := range stored {
		t, id := sp.Type, sp.ID
		if err := ctx.Err(); err != nil {
			return st, err
		}
		bt, blobs, err := r.LoadPackHeader(ctx, t, id)
		if err != nil {
			log("pack %s: %v (its blobs are lost; run 'cairn repair snapshots')", id.Short(), err)
			st.BadPacks = append(st.BadPacks, string(t)+"/"+id.String())
			continue
		}
		packs = append(packs, index.PackEntry{ID: id, Type: bt, Blobs: blobs})
		st.Packs++
		st.Blobs += len(blobs)
	}
	sort.Slice(packs, func(i, j int) bool { return packs[i].ID.Compare(packs[j].ID) < 0 })
	// Bounded index files; the last one supersedes every old file, so the
	// old ones stay in effect until all new files exist.
	var files []*index.File
	cur := &index.File{}
	n := 0
	for _, p := range packs {
		if n+len(p.Blobs) > 100000 && n > 0 {
			files = append(files, cur)
			cur, n = &index.File{}, 0
		}
		cur.Packs = append(cur.Packs, p)
		n += len(p.Blobs)
	}
	files = append(files, cur)
	files[len(files)-1].Supersedes = old
	for _, f := range files {
		if _, err := r.SaveIndexFile(ctx, f); err != nil {
			return st, err
		}
	}
	st.NewIndexFiles = len(files)
	for _, id := range old {
		if err := r.Remove(ctx, backend.Handle{Type: backend.Index, Name: id.String()}); err != nil {
			return st, fmt.Errorf("remove old index file: %w", err)
		}
	}
	return st, nil
}

// SnapshotStats report what repair snapshots did.
type SnapshotStats struct {
	Checked, Repaired int
	DamagedFiles      []string
	DamagedDirs       []string
	Removed           int // old snapshots forgotten (with Forget)
}

// DamagedSuffix is appended to the name of a file or directory whose data
// was lost.
const DamagedSuffix = ".damaged"

// SnapshotOptions tune repair snapshots.
type SnapshotOptions struct {
	DryRun bool
	// Forget removes each original snapshot after its repaired copy is saved.
	Forget bool
	Log    func(string, ...any)
}

type snapRepairer struct {
	r       *repo.Repository
	ctx     context.Context
	stored  map[crypto.ID]bool
	st      *SnapshotStats
	opts    SnapshotOptions
	rewrite map[crypto.ID]crypto.ID // old tree -> repaired tree (memo)
	intact  map[crypto.ID]bool
}

// Snapshots rewrites every snapshot that needs data the repository does not
// have: a file with a missing blob becomes an empty file named
// NAME.damaged, an unreadable directory becomes an empty directory named
// NAME.damaged. The repaired snapshot keeps time, host and paths, gets the
// tag "repaired", and records the original's ID. The index must be loaded.
func Snapshots(ctx context.Context, r *repo.Repository, opts SnapshotOptions) (SnapshotStats, error) {
	var st SnapshotStats
	if opts.Log == nil {
		opts.Log = func(string, ...any) {}
	}
	stored := map[crypto.ID]bool{}
	if err := r.ListPacks(ctx, func(p repo.StoredPack) error {
		if !p.ID.IsNull() {
			stored[p.ID] = true
		}
		return nil
	}); err != nil {
		return st, err
	}
	sns, err := r.ListSnapshots(ctx)
	if err != nil && len(sns) == 0 {
		return st, err
	}
	sr := &snapRepairer{r: r, ctx: ctx, stored: stored, st: &st, opts: opts, rewrite: map[crypto.ID]crypto.ID{}, intact: map[crypto.ID]bool{}}
	for _, sn := range sns {
		st.Checked++
		newRoot, changed, err := sr.tree(sn.Tree, "/")
		if errors.Is(err, errDamagedTree) {
			opts.Log("snapshot %s: its root tree is lost; nothing in it can be restored", sn.ID.Short())
			st.DamagedDirs = append(st.DamagedDirs, sn.ID.Short()+":/")
			if opts.Forget && !opts.DryRun {
				if err := r.Remove(ctx, backend.Handle{Type: backend.Snapshot, Name: sn.ID.String()}); err != nil {
					return st, err
				}
				st.Removed++
			}
			continue
		}
		if err != nil {
			return st, err
		}
		if !changed {
			continue
		}
		st.Repaired++
		opts.Log("snapshot %s: repaired", sn.ID.Short())
		if opts.DryRun {
			continue
		}
		if err := r.Flush(ctx); err != nil {
			return st, err
		}
		orig := sn.ID
		nsn := *sn
		nsn.Tree = newRoot
		nsn.Original = &orig
		nsn.Tags = append(append([]string(nil), sn.Tags...), "repaired")
		if _, err := r.SaveSnapshot(ctx, &nsn); err != nil {
			return st, err
		}
		if opts.Forget {
			if err := r.Remove(ctx, backend.Handle{Type: backend.Snapshot, Name: orig.String()}); err != nil {
				return st, err
			}
			st.Removed++
		}
	}
	return st, r.Flush(ctx)
}

// blobOK reports whether a data blob can be read: its pack, and for a
// delta its base's pack, are stored.
func (sr *snapRepairer) blobOK(id crypto.ID) bool {
	loc, ok := sr.r.Lookup(id)
	if !ok || !sr.stored[loc.Pack] {
		return false
	}
	if base, ok := sr.r.DeltaBase(id); ok {
		loc, ok := sr.r.Lookup(base)
		return ok && sr.stored[loc.Pack]
	}
	return true
}

// tree returns the repaired tree ID and whether anything changed.
func (sr *snapRepairer) tree(id crypto.ID, path string) (crypto.ID, bool, error) {
	if sr.intact[id] {
		return id, false, nil
	}
	if nid, ok := sr.rewrite[id]; ok {
		return nid, true, nil
	}
	if err := sr.ctx.Err(); err != nil {
		return id, false, err
	}
	t, err := tree.Load(sr.ctx, sr.r, id)
	if err != nil {
		if errors.Is(err, context.Canceled) {
			return id, false, err
		}
		return id, false, errDamagedTree
	}
	changed := false
	out := &tree.Tree{Nodes: make([]tree.Node, 0, len(t.Nodes))}
	for _, n := range t.Nodes {
		p := path + n.Name
		switch n.Type {
		case tree.Dir:
			nid, ch, err := sr.tree(n.Subtree, p+"/")
			if errors.Is(err, errDamagedTree) {
				sr.opts.Log("%s: directory lost", p)
				sr.st.DamagedDirs = append(sr.st.DamagedDirs, p)
				empty, err := sr.saveTree(&tree.Tree{})
				if err != nil {
					return id, false, err
				}
				n.Name += DamagedSuffix
				n.Subtree = empty
				changed = true
			} else if err != nil {
				return id, false, err
			} else if ch {
				n.Subtree = nid
				changed = true
			}
		case tree.File:
			for _, b := range n.Content {
				if !sr.blobOK(b) {
					sr.opts.Log("%s: data lost", p)
					sr.st.DamagedFiles = append(sr.st.DamagedFiles, p)
					n.Name += DamagedSuffix
					n.Content, n.ChunkSizes, n.ChunkHeads, n.Size = nil, nil, nil, 0
					changed = true
					break
				}
			}
		}
		out.Nodes = append(out.Nodes, n)
	}
	if !changed {
		sr.intact[id] = true
		return id, false, nil
	}
	out.Sort()
	// A renamed entry may now collide with an existing NAME.damaged.
	for i := 1; i < len(out.Nodes); i++ {
		if out.Nodes[i].Name == out.Nodes[i-1].Name {
			out.Nodes[i].Name += "-" + time.Now().UTC().Format("20060102T150405")
			out.Sort()
		}
	}
	nid, err := sr.saveTree(out)
	if err != nil {
		return id, false, err
	}
	sr.rewrite[id] = nid
	return nid, true, nil
}

var errDamagedTree = errors.New("tree is lost")

func (sr *snapRepairer) saveTree(t *tree.Tree) (crypto.ID, error) {
	raw, err := t.Encode()
	if err != nil {
		return crypto.ID{}, err
	}
	if sr.opts.DryRun {
		return sr.r.Key().BlobID(raw), nil
	}
	res, err := sr.r.SaveBlob(sr.ctx, index.TreeBlob, raw)
	if err != nil {
		return crypto.ID{}, err
	}
	return res.ID, nil
}
