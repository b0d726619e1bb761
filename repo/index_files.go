package repo

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cairn-backup/cairn/crypto"
	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/repo/backend"
)

// SaveIndexFile seals and stores an index file, returning its name.
func (r *Repository) SaveIndexFile(ctx context.Context, f *index.File) (crypto.ID, error) {
	data := sealFile(r.key, r.cfg.Version, adIndex, f.Encode())
	id := crypto.Hash(data)
	if err := r.be.Save(ctx, backend.Handle{Type: backend.Index, Name: id.String()}, data); err != nil {
		return id, fmt.Errorf("save index %s: %w", id.Short(), err)
	}
	return id, nil
}

// ErrIndexDamaged is wrapped when an index file was read but is not what
// its name promises (wrong hash, failed decryption, malformed content); a
// failure to read it at all (network, permissions) is not damage.
var ErrIndexDamaged = errors.New("index file is damaged")

// LoadIndexFile loads, verifies and decodes one index file.
func (r *Repository) LoadIndexFile(ctx context.Context, name string) (*index.File, error) {
	data, err := r.be.Load(ctx, backend.Handle{Type: backend.Index, Name: name}, 0, 0)
	if err != nil {
		return nil, fmt.Errorf("load index %s: %w", ShortName(name), err)
	}
	if crypto.Hash(data).String() != name {
		return nil, fmt.Errorf("index %s: %w: content does not match its name", ShortName(name), ErrIndexDamaged)
	}
	plain, err := openFile(r.key, r.cfg.Version, adIndex, data)
	if err != nil {
		return nil, fmt.Errorf("index %s: %w: %w", ShortName(name), ErrIndexDamaged, err)
	}
	f, err := index.DecodeFile(plain)
	if err != nil {
		return nil, fmt.Errorf("index %s: %w: %w", ShortName(name), ErrIndexDamaged, err)
	}
	return f, nil
}

// IndexState is the merged content of a repository's index files.
type IndexState struct {
	// InEffect are the index files not superseded by another; All are
	// every index file that was listed.
	InEffect, All []crypto.ID
	// Live maps each live pack to its blobs (merged across files).
	Live map[crypto.ID]index.PackEntry
	// Obsolete packs await deletion; a pack live in any file is not here.
	Obsolete map[crypto.ID]index.ObsoletePack
}

// ReadIndexState reads every index file. With onError nil, the first
// unreadable file fails the call; otherwise onError is told and the file is
// skipped (check uses that to report every damaged file).
func (r *Repository) ReadIndexState(ctx context.Context, onError func(name string, err error)) (*IndexState, error) {
	// A prune running meanwhile may remove index files between the listing
	// and the reading, after writing the files that supersede them: read
	// again, the new listing holds those.
	for attempt := 0; ; attempt++ {
		st, vanished, err := r.readIndexState(ctx, onError, attempt < 5)
		if !vanished {
			return st, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Duration(50*(attempt+1)) * time.Millisecond):
		}
	}
}

func (r *Repository) readIndexState(ctx context.Context, onError func(name string, err error), retry bool) (*IndexState, bool, error) {
	var names []string
	if err := r.be.List(ctx, backend.Index, func(fi backend.FileInfo) error {
		names = append(names, fi.Name)
		return nil
	}); err != nil {
		return nil, false, fmt.Errorf("list index files: %w", err)
	}
	files := make([]*index.File, len(names))
	errs := make([]error, len(names))
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for i, n := range names {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			files[i], errs[i] = r.LoadIndexFile(ctx, n)
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, false, err
	}
	if retry {
		for _, err := range errs {
			if backend.IsNotFound(err) {
				return nil, true, nil
			}
		}
	}
	st := &IndexState{Live: map[crypto.ID]index.PackEntry{}, Obsolete: map[crypto.ID]index.ObsoletePack{}}
	superseded := make(map[crypto.ID]bool)
	for i, f := range files {
		if errs[i] != nil {
			if onError == nil {
				return nil, false, errs[i]
			}
			onError(names[i], errs[i])
			continue
		}
		for _, s := range f.Supersedes {
			superseded[s] = true
		}
	}
	for i, f := range files {
		id, err := crypto.ParseID(names[i])
		if err != nil {
			if onError == nil {
				return nil, false, fmt.Errorf("index file name %q is not an ID", names[i])
			}
			onError(names[i], fmt.Errorf("index file name is not an ID"))
			continue
		}
		st.All = append(st.All, id)
		if f == nil || superseded[id] {
			continue
		}
		st.InEffect = append(st.InEffect, id)
		for _, p := range f.Packs {
			if prev, ok := st.Live[p.ID]; ok {
				if len(prev.Blobs) < len(p.Blobs) {
					st.Live[p.ID] = p
				}
			} else {
				st.Live[p.ID] = p
			}
		}
		for _, o := range f.Obsolete {
			if prev, ok := st.Obsolete[o.Pack.ID]; !ok || o.Since < prev.Since {
				st.Obsolete[o.Pack.ID] = o
			}
		}
	}
	for id := range st.Obsolete {
		if _, ok := st.Live[id]; ok {
			delete(st.Obsolete, id) // live anywhere means live
		}
	}
	return st, false, nil
}

// LoadIndex reads every index file into memory, skipping files superseded
// by others. Blobs of obsolete packs (awaiting deletion by prune) stay
// readable but are not used for deduplication.
func (r *Repository) LoadIndex(ctx context.Context) error {
	start := backend.ListStart(r.be, backend.Index)
	st, err := r.ReadIndexState(ctx, nil)
	if err != nil {
		return err
	}
	r.UseIndexState(st)
	r.dropUnindexedTreePacks(st, start)
	return nil
}

// treePackCache is implemented by a backend that keeps tree packs locally
// (repo/backend/cache).
type treePackCache interface {
	KeepOnly(t backend.FileType, since time.Time, keep func(name string) bool)
	Prefetch(ctx context.Context, packs []backend.Handle)
}

// dropUnindexedTreePacks removes cached tree packs that no index lists
// (pruned by another process), except ones written since start.
func (r *Repository) dropUnindexedTreePacks(st *IndexState, start time.Time) {
	c, ok := r.be.(treePackCache)
	if !ok {
		return
	}
	c.KeepOnly(backend.TreePack, start, func(name string) bool {
		id, err := crypto.ParseID(name)
		if err != nil {
			return false
		}
		_, live := st.Live[id]
		_, obsolete := st.Obsolete[id]
		return live || obsolete
	})
}

// PrefetchBlobs asks a caching backend to start fetching the packs that
// hold these blobs (trees about to be read), so the reads that follow do
// not wait on a round trip each. It does nothing for other backends.
func (r *Repository) PrefetchBlobs(ctx context.Context, ids []crypto.ID) {
	c, ok := r.be.(treePackCache)
	if !ok || len(ids) == 0 {
		return
	}
	var packs []backend.Handle
	seen := map[crypto.ID]bool{}
	for _, id := range ids {
		loc, ok := r.Lookup(id)
		if !ok || seen[loc.Pack] {
			continue
		}
		seen[loc.Pack] = true
		packs = append(packs, backend.Handle{Type: PackType(loc.Type), Name: loc.Pack.String()})
	}
	c.Prefetch(ctx, packs)
}

// UseIndexState loads a merged index state into memory.
func (r *Repository) UseIndexState(st *IndexState) {
	for _, p := range st.Live {
		r.idx.AddPack(p)
		r.noteBases(p)
	}
	r.idx.Compact()
	for _, o := range st.Obsolete {
		r.obsolete.AddPack(o.Pack)
		r.noteBases(o.Pack)
	}
	r.obsolete.Compact()
}

// noteBases remembers the bases of a pack's delta blobs.
func (r *Repository) noteBases(p index.PackEntry) {
	if !p.HasDeltas() {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.bases == nil {
		r.bases = map[crypto.ID]crypto.ID{}
	}
	for _, b := range p.Blobs {
		if b.IsDelta() {
			r.bases[b.ID] = b.Base
		}
	}
}

// DeltaBase returns the base of an indexed delta blob; ok is false for a
// full blob (or one not indexed).
func (r *Repository) DeltaBase(id crypto.ID) (base crypto.ID, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	base, ok = r.bases[id]
	return base, ok
}
