package cache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/cairn-backup/cairn/crypto"
	"github.com/cairn-backup/cairn/repo/backend"
)

// Backend serves index files, snapshots and tree packs from a Cache and
// everything else from the backend it wraps. A tree pack is fetched whole
// at its first read, so the other trees in it cost nothing more.
type Backend struct {
	be backend.Backend
	c  *Cache

	mu      sync.Mutex
	fetches map[backend.Handle]*fetch
	// prefetch bounds background fetches; Close cancels them (stop) and
	// waits for them (prefetchWG).
	prefetch   chan struct{}
	prefetchWG sync.WaitGroup
	stopCtx    context.Context
	stop       context.CancelFunc
}

// fetch is one download of a whole object that concurrent readers share.
type fetch struct {
	done chan struct{}
	data []byte
	err  error
}

// Wrap returns be with c in front of it.
func Wrap(be backend.Backend, c *Cache) *Backend {
	stopCtx, stop := context.WithCancel(context.Background())
	return &Backend{be: be, c: c, fetches: map[backend.Handle]*fetch{}, prefetch: make(chan struct{}, maxPrefetch), stopCtx: stopCtx, stop: stop}
}

// Unwrap returns the backend behind the cache.
func (b *Backend) Unwrap() backend.Backend { return b.be }

// Cache returns the cache.
func (b *Backend) Cache() *Cache { return b.c }

// Location is the wrapped backend's.
func (b *Backend) Location() string { return b.be.Location() }

// Save stores data and keeps a copy of cached types.
func (b *Backend) Save(ctx context.Context, h backend.Handle, data []byte) error {
	if err := b.be.Save(ctx, h, data); err != nil {
		return err
	}
	if Cached(h.Type) && crypto.Hash(data).String() == h.Name {
		b.c.store(h, data)
	}
	return nil
}

// TempDir is the wrapped backend's, or the system's.
func (b *Backend) TempDir() string {
	if fs, ok := b.be.(backend.FileSaver); ok {
		return fs.TempDir()
	}
	return os.TempDir()
}

// SaveFile stores a file and keeps a copy of cached types (tree packs are
// written this way).
func (b *Backend) SaveFile(ctx context.Context, h backend.Handle, f *os.File, size int64) error {
	fs, ok := b.be.(backend.FileSaver)
	if !ok {
		data := make([]byte, size)
		if _, err := f.ReadAt(data, 0); err != nil {
			return fmt.Errorf("save %v: read temporary file: %w", h, err)
		}
		return b.Save(ctx, h, data)
	}
	if err := fs.SaveFile(ctx, h, f, size); err != nil {
		return err
	}
	if Cached(h.Type) {
		// The pack's name is the hash its writer computed over the same
		// file; the cache checks it again at its first read.
		b.c.storeFile(h, f, size)
	}
	return nil
}

// Load serves cached types from the cache, fetching whole objects on a miss.
func (b *Backend) Load(ctx context.Context, h backend.Handle, offset, length int64) ([]byte, error) {
	if !Cached(h.Type) || !validName(h) {
		return b.be.Load(ctx, h, offset, length)
	}
	if offset < 0 || length < 0 {
		return nil, fmt.Errorf("load %v: invalid range %d+%d", h, offset, length)
	}
	if data, ok := b.c.read(h, offset, length); ok {
		return data, nil
	}
	if !b.c.writable() {
		// Without a place to keep it, a whole tree pack per tree would
		// cost more than the ranged read.
		return b.be.Load(ctx, h, offset, length)
	}
	data, err := b.fetchWhole(ctx, h)
	if err != nil {
		return nil, err
	}
	return slice(data, offset, length), nil
}

// Open streams cached types from the cache (reading them whole first).
func (b *Backend) Open(ctx context.Context, h backend.Handle, offset, length int64) (io.ReadCloser, error) {
	if !Cached(h.Type) || !validName(h) {
		return b.be.Open(ctx, h, offset, length)
	}
	data, err := b.Load(ctx, h, offset, length)
	if err != nil {
		return nil, err
	}
	return io.NopCloser(bytes.NewReader(data)), nil
}

func slice(data []byte, offset, length int64) []byte {
	if offset >= int64(len(data)) {
		return []byte{}
	}
	data = data[offset:]
	if length > 0 && length < int64(len(data)) {
		data = data[:length]
	}
	return data
}

// fetchWhole downloads an object once for all concurrent readers and
// keeps it if it matches its name. One that does not is still returned:
// the reader's own checks then report the damage as it is in the
// repository.
func (b *Backend) fetchWhole(ctx context.Context, h backend.Handle) ([]byte, error) {
	b.mu.Lock()
	f := b.fetches[h]
	leader := f == nil
	if leader {
		f = &fetch{done: make(chan struct{})}
		b.fetches[h] = f
	}
	b.mu.Unlock()
	if leader {
		// A download that finished between the caller's cache miss and
		// this registration has stored the object already.
		if data, ok := b.c.read(h, 0, 0); ok {
			f.data = data
		} else {
			f.data, f.err = b.be.Load(ctx, h, 0, 0)
			if f.err == nil && crypto.Hash(f.data).String() == h.Name {
				b.c.store(h, f.data)
			}
		}
		b.mu.Lock()
		delete(b.fetches, h)
		b.mu.Unlock()
		close(f.done)
		return f.data, f.err
	}
	select {
	case <-f.done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if f.err != nil && ctx.Err() == nil && errors.Is(f.err, context.Canceled) {
		return b.fetchWhole(ctx, h) // the leader gave up, not us
	}
	return f.data, f.err
}

// Prefetch fetches the named tree packs in the background, a few at a
// time, unless they are cached: readers that come later find them on disk
// (or join the download under way).
func (b *Backend) Prefetch(ctx context.Context, packs []backend.Handle) {
	if !b.c.writable() {
		return
	}
	for _, h := range packs {
		if !Cached(h.Type) || !validName(h) || b.c.has(h) {
			continue
		}
		b.mu.Lock()
		_, busy := b.fetches[h]
		b.mu.Unlock()
		if busy {
			continue
		}
		select {
		case b.prefetch <- struct{}{}:
		default:
			// Enough downloads are under way; a reader will fetch this
			// one when it gets there.
			continue
		}
		b.prefetchWG.Add(1)
		go func() {
			defer b.prefetchWG.Done()
			defer func() { <-b.prefetch }()
			pctx, cancel := context.WithCancel(ctx)
			defer context.AfterFunc(b.stopCtx, cancel)()
			defer cancel()
			_, _ = b.fetchWhole(pctx, h)
		}()
	}
}

// Stat is the wrapped backend's.
func (b *Backend) Stat(ctx context.Context, h backend.Handle) (backend.FileInfo, error) {
	return b.be.Stat(ctx, h)
}

// List lists the wrapped backend and, after a complete listing of a cached
// type, drops cached objects that the repository no longer has.
func (b *Backend) List(ctx context.Context, t backend.FileType, fn func(backend.FileInfo) error) error {
	if !Cached(t) {
		return b.be.List(ctx, t, fn)
	}
	start := backend.ListStart(b.be, t)
	seen := map[string]bool{}
	err := b.be.List(ctx, t, func(fi backend.FileInfo) error {
		seen[fi.Name] = true
		return fn(fi)
	})
	if err == nil {
		b.c.KeepOnly(t, start, func(name string) bool { return seen[name] })
	}
	return err
}

// Remove deletes the object from the repository and the cache.
func (b *Backend) Remove(ctx context.Context, h backend.Handle) error {
	if Cached(h.Type) {
		b.c.remove(h)
	}
	return b.be.Remove(ctx, h)
}

// KeepOnly drops cached objects of type t that keep rejects (see
// Cache.KeepOnly).
func (b *Backend) KeepOnly(t backend.FileType, since time.Time, keep func(name string) bool) {
	b.c.KeepOnly(t, since, keep)
}

// Close stops background fetches, removes a temporary cache and closes the
// wrapped backend.
func (b *Backend) Close() error {
	b.stop()
	b.prefetchWG.Wait()
	_ = b.c.Close()
	return b.be.Close()
}

// Create passes bucket or directory creation through (init).
func (b *Backend) Create(ctx context.Context) error {
	if c, ok := b.be.(interface{ Create(context.Context) error }); ok {
		return c.Create(ctx)
	}
	return nil
}
