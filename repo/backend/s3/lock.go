package s3

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/cairn-backup/cairn/repo/backend"
)

// purgeWorkers bounds the deletions Purge has in flight: each is one
// request, and a prune may purge hundreds of packs.
const purgeWorkers = 16

// UseObjectLock makes every later Save carry the retention l
// (backend.Locker).
func (b *Backend) UseObjectLock(l backend.ObjectLock) { b.lock.Store(&l) }

// CheckObjectLock fails unless the bucket was created with object locking.
func (b *Backend) CheckObjectLock(ctx context.Context) error {
	var enabled string
	err := b.retry(ctx, "check object lock", func(a *attempt) error {
		var err error
		enabled, _, _, _, err = b.client.GetObjectLockConfig(a.ctx, b.cfg.Bucket)
		if resp := minio.ToErrorResponse(err); resp.Code == "ObjectLockConfigurationNotFoundError" {
			enabled, err = "", nil
		}
		return err
	})
	if err != nil {
		return b.fail("check object lock", "", err)
	}
	if enabled != "Enabled" {
		return fmt.Errorf("s3 bucket %q has no object locking: it must be created with it (cairn init creates a missing bucket so; S3 cannot add it to an existing bucket)", b.cfg.Bucket)
	}
	return nil
}

// Retain sets the retain-until date of h's current version to until. A
// date already later (set by another process) is left as it is.
func (b *Backend) Retain(ctx context.Context, h backend.Handle, until time.Time) error {
	lock := b.lock.Load()
	if lock == nil {
		return errors.New("retain " + h.String() + ": object lock not in use")
	}
	key, err := b.key(h)
	if err != nil {
		return err
	}
	mode := minio.RetentionMode(lock.Mode)
	err = b.retry(ctx, "retain "+h.String(), func(a *attempt) error {
		return b.client.PutObjectRetention(a.ctx, b.cfg.Bucket, key, minio.PutObjectRetentionOptions{Mode: &mode, RetainUntilDate: &until})
	})
	if err != nil && kindOf(err) != kindNotFound {
		// S3 refuses to move a date earlier; that is no failure here.
		if cur, cerr := b.retainedUntil(ctx, key, ""); cerr == nil && !cur.Before(until) {
			return nil
		}
	}
	if err != nil {
		return b.fail("retain", h.String(), err)
	}
	return nil
}

// RetainedUntil returns the retain-until date of h's current version.
func (b *Backend) RetainedUntil(ctx context.Context, h backend.Handle) (time.Time, error) {
	key, err := b.key(h)
	if err != nil {
		return time.Time{}, err
	}
	t, err := b.retainedUntil(ctx, key, "")
	if err != nil {
		return time.Time{}, b.fail("get retention", h.String(), err)
	}
	return t, nil
}

func (b *Backend) retainedUntil(ctx context.Context, key, version string) (time.Time, error) {
	var until time.Time
	err := b.retry(ctx, "get retention "+key, func(a *attempt) error {
		_, t, err := b.client.GetObjectRetention(a.ctx, b.cfg.Bucket, key, version)
		if resp := minio.ToErrorResponse(err); resp.Code == "NoSuchObjectLockConfiguration" {
			return nil // no retention
		}
		if err == nil && t != nil {
			until = *t
		}
		return err
	})
	return until, err
}

// handleOf maps an object key back to its handle.
func (b *Backend) handleOf(key string) (backend.Handle, bool) {
	if ck, _ := b.key(backend.Handle{Type: backend.Config}); key == ck {
		return backend.Handle{Type: backend.Config}, true
	}
	for _, t := range backend.AllTypes()[1:] {
		if name, ok := b.nameOf(t, key); ok {
			return backend.Handle{Type: t, Name: name}, true
		}
	}
	return backend.Handle{}, false
}

// Purge deletes the versions of hidden objects whose retention has passed
// (backend.Locker). It lists every version below the prefix once; a
// version still locked by its write date plus the period costs no
// request, one whose date was extended costs a refused delete and a
// retention read (to report when it unlocks).
func (b *Backend) Purge(ctx context.Context, opts backend.PurgeOptions) (backend.PurgeStats, error) {
	now := opts.Now
	var st backend.PurgeStats
	b.ahead.dropAll() // it may bring hidden objects back
	versions, err := b.listVersions(ctx)
	if err != nil {
		return st, err
	}
	var period time.Duration
	if l := b.lock.Load(); l != nil {
		period = l.Period
	}
	var (
		mu       sync.Mutex
		firstErr error
		wg       sync.WaitGroup
		sem      = make(chan struct{}, purgeWorkers)
	)
	record := func(f func()) {
		mu.Lock()
		f()
		mu.Unlock()
	}
	for key, vs := range versions {
		h, ok := b.handleOf(key)
		if !ok {
			continue // not cairn's
		}
		var latest *minio.ObjectInfo
		for i := range vs {
			if vs[i].IsLatest {
				latest = &vs[i]
			}
		}
		if latest == nil {
			continue
		}
		var doomed, markers []minio.ObjectInfo
		for _, v := range vs {
			if v.IsDeleteMarker {
				markers = append(markers, v)
			} else if v.VersionID != latest.VersionID {
				doomed = append(doomed, v)
			}
		}
		hidden := latest.LastModified // when the newest version was superseded
		restore := false
		switch {
		case !latest.IsDeleteMarker && h.Type == backend.Config:
			// Older configs were replaced by a migration: doomed as listed.
		case !latest.IsDeleteMarker:
			if len(doomed) > 0 {
				st.Overwritten++ // cairn never overwrites: keep the evidence
			}
			continue
		case len(doomed) == 0:
			// Only delete markers left: removing them finishes the purge.
		case opts.Keep != nil && opts.Keep(h):
			restore = true
		case h.Type != backend.Removals && opts.Removed != nil && !opts.Removed(h):
			// Hidden, but not by cairn: someone with delete permission.
			restore = true
			st.Foreign++
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			if restore {
				for _, m := range markers {
					if err := b.removeVersion(ctx, key, m.VersionID); err != nil {
						record(func() { firstErr = cmpErr(firstErr, err) })
						return
					}
				}
				record(func() { st.Restored++ })
				return
			}
			left := 0
			for _, v := range doomed {
				until := v.LastModified.Add(period)
				if !opts.PassStart.IsZero() && v.LastModified.Before(opts.PassStart) && hidden.After(opts.PassStart) && opts.PassUntil.After(until) {
					until = opts.PassUntil // still visible during the last extension
				}
				if period == 0 || !now.Before(until) { // else certainly locked: no request
					err := b.removeVersion(ctx, key, v.VersionID)
					if err == nil {
						record(func() { st.Deleted++; st.DeletedBytes += v.Size })
						continue
					}
					// Refused: extended by another machine, or no permission.
					t, rerr := b.retainedUntil(ctx, key, v.VersionID)
					if rerr != nil || !t.After(now) {
						record(func() { firstErr = cmpErr(firstErr, err) })
						return
					}
					until = t
				}
				left++
				record(func() {
					st.Locked++
					st.LockedBytes += v.Size
					if st.FirstUnlock.IsZero() || until.Before(st.FirstUnlock) {
						st.FirstUnlock = until
					}
					if until.After(st.LastUnlock) {
						st.LastUnlock = until
					}
				})
			}
			if left > 0 || !latest.IsDeleteMarker {
				return
			}
			for _, m := range markers {
				if err := b.removeVersion(ctx, key, m.VersionID); err != nil {
					record(func() { firstErr = cmpErr(firstErr, err) })
					return
				}
			}
		}()
	}
	wg.Wait()
	if firstErr == nil {
		firstErr = ctx.Err()
	}
	return st, firstErr
}

func cmpErr(first, err error) error {
	if first != nil {
		return first
	}
	return err
}

// listVersions returns every version (and delete marker) below the
// prefix, by key.
func (b *Backend) listVersions(ctx context.Context) (map[string][]minio.ObjectInfo, error) {
	prefix := ""
	if b.cfg.Prefix != "" {
		prefix = b.cfg.Prefix + "/"
	}
	var out map[string][]minio.ObjectInfo
	err := b.retry(ctx, "list versions", func(a *attempt) error {
		out = map[string][]minio.ObjectInfo{}
		opts := minio.ListObjectsOptions{Prefix: prefix, Recursive: true, WithVersions: true}
		for obj := range b.client.ListObjects(a.ctx, b.cfg.Bucket, opts) {
			if obj.Err != nil {
				return obj.Err
			}
			a.touch()
			out[obj.Key] = append(out[obj.Key], obj)
		}
		return a.err()
	})
	if err != nil {
		return nil, b.fail("list versions", "", err)
	}
	return out, nil
}

// removeVersion deletes one version (or delete marker) of key.
func (b *Backend) removeVersion(ctx context.Context, key, version string) error {
	err := b.retry(ctx, "remove version "+key, func(a *attempt) error {
		err := b.client.RemoveObject(a.ctx, b.cfg.Bucket, key, minio.RemoveObjectOptions{VersionID: version})
		if kindOf(err) == kindNotFound {
			return nil
		}
		return err
	})
	if err != nil {
		return b.fail("remove version", key+" "+version, err)
	}
	return nil
}
