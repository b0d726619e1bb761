package repo

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cairn-backup/cairn/crypto"
	"github.com/cairn-backup/cairn/repo/backend"
)

// retainWorkers bounds the retention updates in flight: one request each.
const retainWorkers = 16

// ErrNoObjectLock is returned by the object lock operations of a
// repository made without --s3-object-lock.
var ErrNoObjectLock = errors.New("the repository does not lock its objects (init --s3-object-lock)")

// locker returns the storage's Locker for a repository with object lock.
func (r *Repository) locker() (backend.Locker, *ObjectLockConfig, error) {
	l := r.cfg.ObjectLock
	if l == nil {
		return nil, nil, ErrNoObjectLock
	}
	locker, ok := backend.AsLocker(r.be)
	if !ok {
		return nil, nil, fmt.Errorf("%s: the storage cannot lock objects", r.be.Location())
	}
	return locker, l, nil
}

// ExtendRetention sets the retain-until date of every object of the
// repository (config, keys, index files, snapshots and packs) to now plus
// the retention period, one request per object, and returns how many it
// extended and the new date. progress, if set, is called after each.
func (r *Repository) ExtendRetention(ctx context.Context, now time.Time, progress func(done, total int)) (int, time.Time, error) {
	locker, l, err := r.locker()
	if err != nil {
		return 0, time.Time{}, err
	}
	until := now.Add(l.Lock().Period)
	be := backend.Unwrap(r.be)
	handles := []backend.Handle{{Type: backend.Config}}
	for _, t := range backend.AllTypes()[1:] {
		err := be.List(ctx, t, func(fi backend.FileInfo) error {
			handles = append(handles, backend.Handle{Type: t, Name: fi.Name})
			return nil
		})
		if err != nil {
			return 0, time.Time{}, fmt.Errorf("list %s: %w", t, err)
		}
	}
	var (
		mu       sync.Mutex
		done     int
		firstErr error
		wg       sync.WaitGroup
		work     = make(chan backend.Handle)
	)
	for range min(retainWorkers, len(handles)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for h := range work {
				err := locker.Retain(ctx, h, until)
				if backend.IsNotFound(err) {
					err = nil // removed meanwhile (prune, forget)
				}
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = fmt.Errorf("extend retention of %v: %w", h, err)
				}
				done++
				if progress != nil {
					progress(done, len(handles))
				}
				mu.Unlock()
			}
		}()
	}
	for _, h := range handles {
		mu.Lock()
		failed := firstErr != nil
		mu.Unlock()
		if failed || ctx.Err() != nil {
			break
		}
		work <- h
	}
	close(work)
	wg.Wait()
	if firstErr == nil {
		firstErr = ctx.Err()
	}
	if firstErr != nil {
		return done, time.Time{}, firstErr
	}
	return len(handles), until, nil
}

// PurgeLocked deletes what cairn removed (Remove's records) from a
// repository with object lock once its retention has passed (before that
// a removal only hides an object), and makes visible again any hidden
// object that no removal record names, or a pack the index still lists:
// someone else hid it.
// passStart and passUntil describe the last retention extension known
// (zero if none; backend.PurgeOptions).
func (r *Repository) PurgeLocked(ctx context.Context, now, passStart, passUntil time.Time) (backend.PurgeStats, error) {
	locker, _, err := r.locker()
	if err != nil {
		return backend.PurgeStats{}, err
	}
	st, err := r.ReadIndexState(ctx, nil)
	if err != nil {
		return backend.PurgeStats{}, err
	}
	keep := func(h backend.Handle) bool {
		if h.Type != backend.DataPack && h.Type != backend.TreePack {
			return false
		}
		id, err := crypto.ParseID(h.Name)
		if err != nil {
			return false
		}
		_, live := st.Live[id]
		_, obsolete := st.Obsolete[id]
		return live || obsolete
	}
	removed, err := r.removedObjects(ctx)
	if err != nil {
		// Unreadable records: bring hidden objects back rather than guess.
		return backend.PurgeStats{}, fmt.Errorf("purge: %w", err)
	}
	return locker.Purge(ctx, backend.PurgeOptions{Now: now, Keep: keep, PassStart: passStart, PassUntil: passUntil,
		Removed: func(h backend.Handle) bool { return removed[h.String()] }})
}
