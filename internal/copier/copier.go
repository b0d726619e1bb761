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
	var mu sync.Mutex
	err = src.ReadBlobs(ctx, need, repo.ReadOptions{Sealed: true, Downloads: opts.Downloads}, func(i int, sealed []byte, err error) error {
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
			c.Blobs++
			c.Stored += int64(n)
			mu.Unlock()
		}
		return nil
	})
	if err != nil {
		return c, err
	}
	// The data is durable and indexed before the snapshot names it.
	if err := dst.Flush(ctx); err != nil {
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

// missingBlobs walks the snapshot's trees in the source and returns the
// blobs (trees, file contents and the bases of delta blobs) that the
// destination does not hold, in the source's pack order.
func missingBlobs(ctx context.Context, dst, src *repo.Repository, root crypto.ID, entries map[crypto.ID]entry) ([]crypto.ID, error) {
	want := map[crypto.ID]bool{}
	add := func(id crypto.ID) error {
		for !want[id] {
			if _, ok := dst.Lookup(id); ok {
				return nil
			}
			en, ok := entries[id]
			if !ok {
				return fmt.Errorf("blob %s: %w in the source (run 'cairn check' there)", id.Short(), repo.ErrBlobNotFound)
			}
			want[id] = true
			if en.e.Base.IsNull() {
				return nil
			}
			id = en.e.Base // a delta needs its base in the destination too
		}
		return nil
	}
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
	ids := make([]crypto.ID, 0, len(want))
	for id := range want {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, func(a, b crypto.ID) int {
		ea, eb := entries[a], entries[b]
		la, _ := src.Lookup(a)
		lb, _ := src.Lookup(b)
		if c := la.Pack.Compare(lb.Pack); c != 0 {
			return c
		}
		return int(ea.e.Offset) - int(eb.e.Offset)
	})
	return ids, nil
}
