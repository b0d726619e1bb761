package repo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"
	"sync"

	"github.com/cairn-backup/cairn/crypto"
	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/repo/backend"
)

// Reading many blobs (restore, dump) is planned pack-wise: the blobs and
// the delta bases they need become windows, ranges of packs read with one
// request each and streamed, so blobs are decoded as they arrive while
// other windows are still downloading. Windows are started in the order
// their blobs are needed, several at a time, within a memory budget.

// ReadOptions tune ReadBlobs; zero values take defaults.
type ReadOptions struct {
	// Downloads is the number of windows streamed at once (default 4).
	Downloads int
	// Decoders is the number of goroutines that decrypt, decompress,
	// rebuild deltas and call fn (default GOMAXPROCS+2, at least 4: fn
	// often waits on the file system).
	Decoders int
	// Ordered calls fn once at a time in the order of the IDs (dump);
	// otherwise fn is called from several goroutines as blobs are ready.
	Ordered bool
	// Sealed gives fn each blob's stored bytes as they are, neither
	// opened nor decoded, and reads no delta bases (copy).
	Sealed bool
	// Locations, when set, holds where each of the IDs is (what Lookup
	// returns for it): a caller that looked them up to order its reads
	// spares the reader a second lookup of each.
	Locations []index.Location
	// Budget bounds the memory of the windows: read ahead of decoding,
	// being decoded, or kept for reuse (default 16 MiB per download, a
	// pack each, at least 32 MiB). The window that the oldest unfinished
	// blob needs is always started, so the bound may be exceeded by one
	// window.
	Budget int64
}

// The shape of windows: a hole of up to maxReadGap between two needed
// blobs is read through rather than paid with another request (about what
// a remote store delivers in one round trip); a window spans at most
// maxWindow bytes, a whole pack of the largest size init writes.
const (
	maxReadGap = 4 << 20
	maxWindow  = MaxInitPackSize + 1<<20
)

func (o ReadOptions) withDefaults() ReadOptions {
	if o.Downloads <= 0 {
		o.Downloads = 4
	}
	if o.Decoders <= 0 {
		o.Decoders = max(4, runtime.GOMAXPROCS(0)+2)
	}
	if o.Budget <= 0 {
		o.Budget = max(32<<20, int64(o.Downloads)*16<<20)
	}
	return o
}

// segment is one stored blob to read: part of exactly one window.
type segment struct {
	id    crypto.ID
	loc   index.Location
	w     *window
	refs  int // uses not yet finished
	ready chan struct{}
	data  []byte // the sealed blob once ready (in its window's buffer)
	err   error
}

// window is a range of one pack read with one request. Its segments are
// copied, without the gaps between them, into one buffer of at least their
// size, which goes back to the free list (or the collector) when the last
// of them has been used.
type window struct {
	h          backend.Handle
	start, end int64
	segs       []*segment // in pack order
	bytes      int64      // sum of the segments' lengths (its buffer may be larger)
	firstUse   int
	live       int // segments not yet released
	buf        []byte
}

// blobUse is one blob to deliver: its own stored bytes and, for a delta,
// its base's.
type blobUse struct {
	target, base *segment
	err          error
}

type blobReader struct {
	r    *Repository
	ctx  context.Context
	opts ReadOptions
	ids  []crypto.ID
	fn   func(i int, plain []byte, err error) error

	uses    []blobUse
	windows []*window

	mu       sync.Mutex
	cond     *sync.Cond
	nextWin  int      // next window to start
	held     int64    // buffer capacity of started windows not yet released
	free     [][]byte // window buffers to reuse
	freeCap  int64    // their capacity, also within the budget
	largest  int64    // the largest window's bytes
	peak     int64    // the most window memory (held and free) at once
	nextUse  int      // next use a decoder takes
	done     []bool
	lowest   int // every use below is finished
	turn     int // Ordered: the use whose fn call is next
	failed   error
	cancel   context.CancelCauseFunc
	cancelMu sync.Once
}

// ReadBlobs reads the blobs ids and calls fn with each one's plaintext,
// or with the error that kept it from being read (missing, damaged,
// unreadable pack); fn decides whether to go on. A non-nil return from fn
// stops the read and is returned. plain is only valid during the call.
func (r *Repository) ReadBlobs(parent context.Context, ids []crypto.ID, opts ReadOptions, fn func(i int, plain []byte, err error) error) error {
	_, err := r.readBlobs(parent, ids, opts, fn)
	return err
}

// readBlobs is ReadBlobs, returning the reader for tests to inspect.
func (r *Repository) readBlobs(parent context.Context, ids []crypto.ID, opts ReadOptions, fn func(i int, plain []byte, err error) error) (*blobReader, error) {
	if len(ids) == 0 {
		return nil, parent.Err()
	}
	ctx, cancel := context.WithCancelCause(parent)
	defer cancel(nil)
	br := &blobReader{r: r, ctx: ctx, opts: opts.withDefaults(), ids: ids, fn: fn, cancel: cancel, done: make([]bool, len(ids))}
	br.cond = sync.NewCond(&br.mu)
	br.plan()
	// Wake waiters when the read is canceled from outside.
	stop := context.AfterFunc(ctx, func() {
		br.mu.Lock()
		br.cond.Broadcast()
		br.mu.Unlock()
	})
	defer stop()
	var wg sync.WaitGroup
	for range min(br.opts.Downloads, len(br.windows)) {
		wg.Go(br.downloader)
	}
	var dwg sync.WaitGroup
	for range min(br.opts.Decoders, len(ids)) {
		dwg.Go(br.decoder)
	}
	dwg.Wait()
	br.abort(nil) // no more uses: stop downloads that are no longer needed
	wg.Wait()
	if br.failed != nil {
		return br, br.failed
	}
	return br, parent.Err()
}

// plan turns the IDs into uses and windows, in the order blobs are needed:
// a delta's base comes just before the delta.
func (br *blobReader) plan() {
	br.uses = make([]blobUse, len(br.ids))
	segs := make(map[crypto.ID]*segment, len(br.ids))
	open := map[crypto.ID]*window{} // the latest window of each pack
	var slab []segment              // segments are made a thousand at a time
	access := func(id crypto.ID, use int, located bool) (*segment, error) {
		if s := segs[id]; s != nil {
			s.refs++
			return s, nil
		}
		var loc index.Location
		ok := located
		if located {
			loc = br.opts.Locations[use]
		} else {
			loc, ok = br.r.Lookup(id)
		}
		if !ok {
			return nil, fmt.Errorf("load blob %s: %w", id.Short(), ErrBlobNotFound)
		}
		if len(slab) == cap(slab) {
			slab = make([]segment, 0, 1024)
		}
		slab = append(slab, segment{id: id, loc: loc, refs: 1, ready: make(chan struct{})})
		s := &slab[len(slab)-1]
		segs[id] = s
		off, end := int64(loc.Offset), int64(loc.Offset)+int64(loc.Length)
		// Blobs written by parallel workers sit in their pack only roughly
		// in the order of the stream: a window takes any blob of its pack
		// near its range, before or after it.
		w := open[loc.Pack]
		if w == nil || off-w.end > maxReadGap || w.start-end > maxReadGap || max(end, w.end)-min(off, w.start) > maxWindow {
			w = &window{h: backend.Handle{Type: PackType(loc.Type), Name: loc.Pack.String()}, start: off, end: end, firstUse: use}
			br.windows = append(br.windows, w)
			open[loc.Pack] = w
		}
		w.segs = append(w.segs, s)
		w.live++
		s.w = w
		w.start, w.end = min(w.start, off), max(w.end, end)
		w.bytes += int64(loc.Length)
		return s, nil
	}
	located := len(br.opts.Locations) == len(br.ids)
	for i, id := range br.ids {
		u := &br.uses[i]
		if base, ok := br.r.DeltaBase(id); ok && !br.opts.Sealed {
			if u.base, u.err = access(base, i, false); u.err != nil {
				u.err = fmt.Errorf("blob %s: base: %w", id.Short(), u.err)
				continue
			}
		}
		if u.target, u.err = access(id, i, located); u.err != nil && u.base != nil {
			u.base.refs++ // never released: the window's buffer goes back at the end
			u.base = nil
		}
	}
	for _, w := range br.windows {
		br.largest = max(br.largest, w.bytes)
		slices.SortFunc(w.segs, func(a, b *segment) int { return int(a.loc.Offset) - int(b.loc.Offset) })
	}
}

// abort stops the read: err (nil for a normal end) is what ReadBlobs
// returns.
func (br *blobReader) abort(err error) {
	br.mu.Lock()
	if err != nil && br.failed == nil {
		br.failed = err
	}
	br.cond.Broadcast()
	br.mu.Unlock()
	br.cancelMu.Do(func() { br.cancel(err) })
}

// downloader starts windows in order while the budget allows (or the
// oldest unfinished use needs the window) and streams them.
func (br *blobReader) downloader() {
	for {
		br.mu.Lock()
		for br.nextWin < len(br.windows) && br.ctx.Err() == nil {
			w := br.windows[br.nextWin]
			if br.held+w.bytes <= br.opts.Budget || w.firstUse <= br.lowest {
				break
			}
			br.cond.Wait()
		}
		if br.nextWin == len(br.windows) || br.ctx.Err() != nil {
			br.mu.Unlock()
			return
		}
		w := br.windows[br.nextWin]
		br.nextWin++
		w.buf = br.takeBuffer(int(w.bytes))
		br.held += int64(cap(w.buf))
		br.dropIdle()
		br.peak = max(br.peak, br.held+br.freeCap)
		br.mu.Unlock()
		br.download(w)
	}
}

// download streams one window, handing out each segment as it arrives.
func (br *blobReader) download(w *window) {
	segs := w.segs
	fail := func(err error) {
		for _, s := range segs {
			s.err = err
			close(s.ready)
		}
	}
	rc, err := br.r.be.Open(br.ctx, w.h, w.start, w.end-w.start)
	if err != nil {
		fail(fmt.Errorf("read pack %s: %w", ShortName(w.h.Name), err))
		return
	}
	defer rc.Close()
	pos := w.start
	buf := w.buf
	for len(segs) > 0 {
		s := segs[0]
		off := int64(s.loc.Offset)
		if off > pos {
			if _, err := io.CopyN(io.Discard, rc, off-pos); err != nil {
				fail(readErr(w, err))
				return
			}
		}
		data := buf[:s.loc.Length:s.loc.Length]
		if _, err := io.ReadFull(rc, data); err != nil {
			fail(readErr(w, err))
			return
		}
		s.data, buf = data, buf[s.loc.Length:]
		close(s.ready)
		pos = off + int64(s.loc.Length)
		segs = segs[1:]
	}
}

// takeBuffer returns a buffer of n bytes, reusing the smallest freed
// window's that fits. A new buffer for a window of more than half the
// largest is made the largest's size, so that every buffer fits every
// such window: windows of whole packs differ by a few blobs, and buffers
// of their exact sizes were dropped and made again all through a restore,
// each new one a step towards the collector's next cycle. Called with
// br.mu held.
func (br *blobReader) takeBuffer(n int) []byte {
	best := -1
	for i, b := range br.free {
		// Not one more than twice the size: a small window in a large
		// buffer would take the large one's budget.
		if cap(b) >= n && cap(b) <= 2*n && (best < 0 || cap(b) < cap(br.free[best])) {
			best = i
		}
	}
	if best < 0 {
		size := n
		if int64(n) > br.largest/2 {
			size = int(br.largest)
		}
		return make([]byte, n, size)
	}
	b := br.free[best]
	br.free = append(br.free[:best], br.free[best+1:]...)
	br.freeCap -= int64(cap(b))
	return b[:n]
}

// keepBuffer puts a released window's buffer on the free list, for the
// windows to come, while the windows' memory stays within the budget: idle
// buffers count too, since they hold the heap as much as busy ones (8 idle
// 16 MiB buffers on S3 once held 176 of a 250 MB heap). Called with br.mu
// held.
func (br *blobReader) keepBuffer(b []byte) {
	if b == nil || br.held+br.freeCap+int64(cap(b)) > br.opts.Budget {
		return
	}
	br.free = append(br.free, b[:0])
	br.freeCap += int64(cap(b))
}

// dropIdle lets go of the smallest idle buffers while the windows' memory
// is over the budget. Called with br.mu held.
func (br *blobReader) dropIdle() {
	for len(br.free) > 0 && br.held+br.freeCap > br.opts.Budget {
		small := 0
		for i, b := range br.free {
			if cap(b) < cap(br.free[small]) {
				small = i
			}
		}
		br.freeCap -= int64(cap(br.free[small]))
		br.free = append(br.free[:small], br.free[small+1:]...)
	}
}

func readErr(w *window, err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("pack %s: %w: pack is truncated", ShortName(w.h.Name), ErrBlobCorrupt)
	}
	return fmt.Errorf("read pack %s: %w", ShortName(w.h.Name), err)
}

// decoder takes uses in order, waits for their segments, decodes them and
// delivers the plaintext.
func (br *blobReader) decoder() {
	var out []byte
	for {
		br.mu.Lock()
		if br.nextUse == len(br.uses) || br.ctx.Err() != nil {
			br.mu.Unlock()
			return
		}
		i := br.nextUse
		br.nextUse++
		br.mu.Unlock()

		plain, inPlace, err := br.decode(i, out[:0])
		if plain != nil && !inPlace {
			out = plain // keep what the append grew
		}
		ok := br.deliver(i, plain, err)
		// Only now: plaintext decrypted in place lives in the window's
		// buffer, which the release may hand to the next download.
		br.releaseUse(i)
		if !ok {
			return
		}
	}
}

// decode waits for use i's segments and rebuilds its plaintext into dst,
// or, for a raw blob read for this use alone, decrypts it where it lies in
// its window (inPlace): no copy of the content at all.
func (br *blobReader) decode(i int, dst []byte) (plain []byte, inPlace bool, err error) {
	u := &br.uses[i]
	if u.err != nil {
		return nil, false, u.err
	}
	for _, s := range []*segment{u.base, u.target} {
		if s == nil {
			continue
		}
		select {
		case <-s.ready:
		case <-br.ctx.Done():
			return nil, false, context.Cause(br.ctx)
		}
		if s.err != nil {
			if s == u.base {
				return nil, false, fmt.Errorf("blob %s: base %s: %w", br.ids[i].Short(), s.id.Short(), s.err)
			}
			return nil, false, s.err
		}
	}
	if br.opts.Sealed {
		return u.target.data, true, nil
	}
	var sb *sealedBase
	if u.base != nil {
		sb = &sealedBase{id: u.base.id, stored: u.base.data}
	}
	if br.sole(u.target) {
		return br.r.decodeBlobInPlace(br.ctx, br.ids[i], u.target.data, dst, sb)
	}
	plain, err = br.r.decodeBlob(br.ctx, br.ids[i], u.target.data, dst, false, sb)
	return plain, false, err
}

// releaseUse ends use i's hold on its segments.
func (br *blobReader) releaseUse(i int) {
	u := &br.uses[i]
	if u.target != nil {
		br.release(u.target)
	}
	if u.base != nil {
		br.release(u.base)
	}
}

// sole reports whether s has no use left but the current one, so its
// bytes may be decrypted over.
func (br *blobReader) sole(s *segment) bool {
	br.mu.Lock()
	defer br.mu.Unlock()
	return s.refs == 1
}

// deliver calls fn for use i (in turn when Ordered) and marks it finished;
// it reports whether the read goes on.
func (br *blobReader) deliver(i int, plain []byte, err error) bool {
	if br.opts.Ordered {
		br.mu.Lock()
		for br.turn != i && br.ctx.Err() == nil {
			br.cond.Wait()
		}
		br.mu.Unlock()
	}
	if br.ctx.Err() != nil {
		return false
	}
	if ferr := br.fn(i, plain, err); ferr != nil {
		br.abort(ferr)
		return false
	}
	br.mu.Lock()
	br.done[i] = true
	for br.lowest < len(br.done) && br.done[br.lowest] {
		br.lowest++
	}
	if br.opts.Ordered {
		br.turn++
	}
	br.cond.Broadcast()
	br.mu.Unlock()
	return true
}

// release ends one use of a segment; when every segment of its window is
// done, the window's buffer and budget are freed.
func (br *blobReader) release(s *segment) {
	br.mu.Lock()
	defer br.mu.Unlock()
	s.refs--
	if s.refs > 0 {
		return
	}
	s.data = nil
	w := s.w
	w.live--
	if w.live > 0 {
		return
	}
	br.held -= int64(cap(w.buf))
	br.keepBuffer(w.buf)
	w.buf = nil
	br.cond.Broadcast()
}
