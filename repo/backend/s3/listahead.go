package s3

import (
	"context"
	"sync"
	"time"

	"github.com/cairn-backup/cairn/repo/backend"
)

// listings holds the listings started ahead of their use (ListAhead).
// Each is used once, by the first List of its type, and dropped as soon as
// this backend writes or removes an object of that type: a listing must
// never miss what this process itself wrote before asking for it.
type listings struct {
	mu      sync.Mutex
	pending map[backend.FileType]*listing
	wg      sync.WaitGroup
	cancel  []context.CancelFunc
}

// listing is one listing under way or done.
type listing struct {
	start time.Time
	done  chan struct{}
	infos []backend.FileInfo
	err   error
}

// ListAhead starts listing each type in the background (backend.ListAheader).
// Close stops what is still running.
func (b *Backend) ListAhead(ctx context.Context, types ...backend.FileType) {
	l := &b.ahead
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.pending == nil {
		l.pending = map[backend.FileType]*listing{}
	}
	for _, t := range types {
		if l.pending[t] != nil {
			continue
		}
		ls := &listing{start: time.Now(), done: make(chan struct{})}
		l.pending[t] = ls
		lctx, cancel := context.WithCancel(ctx)
		l.cancel = append(l.cancel, cancel)
		l.wg.Go(func() {
			defer close(ls.done)
			ls.err = b.list(lctx, t, func(fi backend.FileInfo) error {
				ls.infos = append(ls.infos, fi)
				return nil
			})
		})
	}
}

// ListedAhead returns when the listing of t started ahead began, if there
// is one that the next List will serve (backend.ListAheader).
func (b *Backend) ListedAhead(t backend.FileType) (time.Time, bool) {
	b.ahead.mu.Lock()
	defer b.ahead.mu.Unlock()
	if ls := b.ahead.pending[t]; ls != nil {
		return ls.start, true
	}
	return time.Time{}, false
}

// take returns the listing of t started ahead, if any, and forgets it.
func (l *listings) take(t backend.FileType) *listing {
	l.mu.Lock()
	defer l.mu.Unlock()
	ls := l.pending[t]
	delete(l.pending, t)
	return ls
}

// drop forgets the listing of t started ahead: this backend is about to
// change what a listing of t returns.
func (l *listings) drop(t backend.FileType) { l.take(t) }

// dropAll forgets every listing started ahead.
func (l *listings) dropAll() {
	l.mu.Lock()
	l.pending = nil
	l.mu.Unlock()
}

// stop cancels the listings still running and waits for them.
func (l *listings) stop() {
	l.mu.Lock()
	for _, c := range l.cancel {
		c()
	}
	l.cancel, l.pending = nil, nil
	l.mu.Unlock()
	l.wg.Wait()
}

// listAhead replays the listing of t started ahead, if there is one that
// ended well, and reports whether it did. A listing that failed is not
// reported: the caller lists again, with its own context and retries.
func (b *Backend) listAhead(ctx context.Context, t backend.FileType, fn func(backend.FileInfo) error) (bool, error) {
	ls := b.ahead.take(t)
	if ls == nil {
		return false, nil
	}
	select {
	case <-ls.done:
	case <-ctx.Done():
		return true, b.fail("list", string(t), ctx.Err())
	}
	if ls.err != nil {
		return false, nil
	}
	for _, fi := range ls.infos {
		if err := fn(fi); err != nil {
			return true, err
		}
	}
	return true, nil
}
