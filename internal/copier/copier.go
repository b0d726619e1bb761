// Package copier copies snapshots from one repository to another made from
// it (init --from-repo): only the blobs the destination lacks, read pack
// by pack from the source, moved sealed (opened with the source's key and
// sealed again with the destination's, never decompressed or rebuilt),
// then the index, then each snapshot, which records its original's ID.
// Interrupted, it leaves no snapshot that names missing data, and the
// next run skips what arrived.
package copier

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/cairn-backup/cairn/crypto"
	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/repo/backend"
	"github.com/cairn-backup/cairn/tree"
)

// Options tune Copy.
type Options struct {
	// Downloads is the number of source pack reads in flight
	// (repo.ReadOptions).
	Downloads int
	// Copied, when set, is called after each snapshot is copied.
	Copied func(Copied)
}

// Copied is one snapshot copied.
type Copied struct {
	From, To crypto.ID
	Blobs    int   // blobs the destination did not have
	Stored   int64 // their stored bytes
}

// Result is what Copy did.
type Result struct {
	Copied []Copied
	// Present are the selected snapshots the destination already had.
	Present []crypto.ID
}

// Copy copies the snapshots sns of src (oldest first) that dst does not
// hold yet: a snapshot of dst is src's when it records src's ID as its
// origin, is src's snapshot itself, or has the same tree, time, host,
// paths and tags (src migrated since, which changed its IDs).
func Copy(ctx context.Context, dst, src *repo.Repository, sns []*repo.Snapshot, opts Options) (*Result, error) {
	if dst.Key().IDKey() != src.Key().IDKey() {
		return nil, repo.ErrOtherIDs
	}
	have, err := dst.ListSnapshots(ctx)
	if err != nil {
		return nil, fmt.Errorf("destination: %w", err)
	}
	copies := map[crypto.ID]crypto.ID{} // source ID -> destination ID
	same := map[string]crypto.ID{}      // sameKey -> destination ID
	for _, sn := range have {
		copies[sn.ID] = sn.ID
		if sn.CopiedFrom != nil {
			copies[*sn.CopiedFrom] = sn.ID
		}
		same[sameKey(sn)] = sn.ID
	}
	entries, err := sourceEntries(ctx, src)
	if err != nil {
		return nil, err
	}
	res := &Result{}
	for _, sn := range sns {
		if _, ok := copies[sn.ID]; ok {
			res.Present = append(res.Present, sn.ID)
			continue
		}
		// The same snapshot under another ID: the source was migrated
		// (IDs change), or the copy's record was lost.
		if id, ok := same[sameKey(sn)]; ok {
			copies[sn.ID] = id
			res.Present = append(res.Present, sn.ID)
			continue
		}
		c, err := copySnapshot(ctx, dst, src, sn, entries, copies, opts)
		if err != nil {
			return res, fmt.Errorf("copy snapshot %s: %w", sn.ID.Short(), err)
		}
		copies[sn.ID] = c.To
		res.Copied = append(res.Copied, c)
		if opts.Copied != nil {
			opts.Copied(c)
		}
	}
	return res, nil
}

// sameKey identifies a snapshot by what it holds and when, not by its ID:
// repositories made one from the other name the same tree alike.
func sameKey(sn *repo.Snapshot) string {
	return fmt.Sprintf("%s|%d|%s|%q|%q", sn.Tree, sn.Time.UnixNano(), sn.Hostname, sn.Paths, sn.Tags)
}

// sourceEntries reads the source's index: every live blob with its pack
// type and place.
func sourceEntries(ctx context.Context, src *repo.Repository) (map[crypto.ID]entry, error) {
	st, err := src.ReadIndexState(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("source: read index: %w", err)
	}
	entries := map[crypto.ID]entry{}
	for _, p := range st.Live {
		for _, b := range p.Blobs {
			entries[b.ID] = entry{p.Type, b}
		}
	}
	return entries, nil
}

// entry is a blob as the source's index lists it.
type entry struct {
	t index.BlobType
	e index.BlobEntry
}

func copySnapshot(ctx context.Context, dst, src *repo.Repository, sn *repo.Snapshot, entries map[crypto.ID]entry, copies map[crypto.ID]crypto.ID, opts Options) (Copied, error) {
	need, err := missingBlobs(ctx, dst, src, sn.Tree, entries)
	if err != nil {
		return Copied{}, err
	}
	c := Copied{From: sn.ID}
	// The data is durable and indexed before the snapshot names it.
	if c.Blobs, c.Stored, err = importBlobs(ctx, dst, src, need, entries, opts); err != nil {
		return c, err
	}
	out := *sn
	from := sn.ID
	out.ID, out.CopiedFrom, out.Parent = crypto.ID{}, &from, nil
	if sn.Parent != nil {
		if p, ok := copies[*sn.Parent]; ok {
			out.Parent = &p
		}
	}
	if c.To, err = dst.SaveSnapshot(ctx, &out); err != nil {
		return c, err
	}
	return c, nil
}

// importBlobs reads the blobs need from src, sealed and pack by pack, and
// stores those dst lacks; then it makes them durable (Flush). It returns
// how many it stored and their stored bytes.
func importBlobs(ctx context.Context, dst, src *repo.Repository, need []crypto.ID, entries map[crypto.ID]entry, opts Options) (int, int64, error) {
	var mu sync.Mutex
	var blobs int
	var stored int64
	err := src.ReadBlobs(ctx, need, repo.ReadOptions{Sealed: true, Downloads: opts.Downloads}, func(i int, sealed []byte, err error) error {
		if err != nil {
			return fmt.Errorf("read blob %s: %w", need[i].Short(), err)
		}
		en := entries[need[i]]
		known, n, err := dst.ImportBlob(ctx, src, en.t, en.e, sealed)
		if err != nil {
			return err
		}
		if !known {
			mu.Lock()
			blobs++
			stored += int64(n)
			mu.Unlock()
		}
		return nil
	})
	if err != nil {
		return blobs, stored, err
	}
	return blobs, stored, dst.Flush(ctx)
}

// CopiedWAL is what CopyWAL did.
type CopiedWAL struct {
	Files, Present int
	Blobs          int
	Stored         int64
}

// CopyWAL copies the archived WAL files of src (repo.WALFile) that dst
// does not hold, with their blobs, records last: point-in-time recovery
// from the copy. A file dst holds with other content is an error.
func CopyWAL(ctx context.Context, dst, src *repo.Repository, opts Options) (CopiedWAL, error) {
	var res CopiedWAL
	if dst.Key().IDKey() != src.Key().IDKey() {
		return res, repo.ErrOtherIDs
	}
	files, err := src.ListWALFiles(ctx)
	if err != nil {
		return res, fmt.Errorf("source: %w", err)
	}
	var todo []*repo.WALFile
	for _, f := range files {
		have, err := dst.LoadWALFile(ctx, f.SystemID, f.Name)
		switch {
		case err == nil && have.Hash == f.Hash:
			res.Present++
		case err == nil:
			return res, fmt.Errorf("WAL %s of system %s: the destination holds other content", f.Name, f.SystemID)
		case !backend.IsNotFound(err):
			return res, err
		default:
			todo = append(todo, f)
		}
	}
	if len(todo) == 0 {
		return res, nil
	}
	entries, err := sourceEntries(ctx, src)
	if err != nil {
		return res, err
	}
	w := newWanted(dst, entries)
	for _, f := range todo {
		for _, id := range f.Blobs {
			if err := w.add(id); err != nil {
				return res, fmt.Errorf("WAL %s: %w", f.Name, err)
			}
		}
	}
	if res.Blobs, res.Stored, err = importBlobs(ctx, dst, src, w.sorted(src), entries, opts); err != nil {
		return res, err
	}
	for _, f := range todo {
		out := *f
		if err := dst.SaveWALFile(ctx, &out); err != nil {
			return res, err
		}
		res.Files++
	}
	return res, nil
}

// wanted collects the blobs a copy needs that the destination lacks, with
// the bases of delta blobs.
type wanted struct {
	dst     *repo.Repository
	entries map[crypto.ID]entry
	want    map[crypto.ID]bool
}

func newWanted(dst *repo.Repository, entries map[crypto.ID]entry) *wanted {
	return &wanted{dst: dst, entries: entries, want: map[crypto.ID]bool{}}
}

func (w *wanted) add(id crypto.ID) error {
	for !w.want[id] {
		if _, ok := w.dst.Lookup(id); ok {
			return nil
		}
		en, ok := w.entries[id]
		if !ok {
			return fmt.Errorf("blob %s: %w in the source (run 'cairn check' there)", id.Short(), repo.ErrBlobNotFound)
		}
		w.want[id] = true
		if en.e.Base.IsNull() {
			return nil
		}
		id = en.e.Base // a delta needs its base in the destination too
	}
	return nil
}

// sorted returns the wanted blobs in the source's pack order.
func (w *wanted) sorted(src *repo.Repository) []crypto.ID {
	ids := make([]crypto.ID, 0, len(w.want))
	for id := range w.want {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, func(a, b crypto.ID) int {
		ea, eb := w.entries[a], w.entries[b]
		la, _ := src.Lookup(a)
		lb, _ := src.Lookup(b)
		if c := la.Pack.Compare(lb.Pack); c != 0 {
			return c
		}
		return int(ea.e.Offset) - int(eb.e.Offset)
	})
	return ids
}

// missingBlobs walks the snapshot's trees in the source and returns the
// blobs (trees, file contents and the bases of delta blobs) that the
// destination does not hold, in the source's pack order.
func missingBlobs(ctx context.Context, dst, src *repo.Repository, root crypto.ID, entries map[crypto.ID]entry) ([]crypto.ID, error) {
	w := newWanted(dst, entries)
	add := w.add
	if err := add(root); err != nil {
		return nil, err
	}
	seen := map[crypto.ID]bool{root: true}
	err := tree.Walk(ctx, src, root, "/", func(_ string, n *tree.Node) error {
		for _, id := range n.Content {
			if err := add(id); err != nil {
				return err
			}
		}
		if n.Type == tree.Dir {
			if seen[n.Subtree] {
				return tree.SkipDir
			}
			seen[n.Subtree] = true
			return add(n.Subtree)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return w.sorted(src), nil
}
