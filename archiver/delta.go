package archiver

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"sort"
	"sync"

	"github.com/cairn-backup/cairn/chunk"
	"github.com/cairn-backup/cairn/crypto"
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/tree"
)

// deltaRef finds, for each new chunk of a stream, the chunks of the
// previous version it most likely replaced: candidates for a delta blob
// (docs/format.md §7.1). Two signals, both cheap:
//
//   - Content: chunk boundaries depend on content only, so a changed chunk
//     usually starts with the same bytes as the old chunk it replaced. The
//     previous version's tree node lists the head of each of its chunks
//     (tree.ChunkHead), and a new chunk looks its own up. A version stored
//     before heads were recorded is read instead, by a background walk that
//     decodes the start of each old chunk.
//   - Position: failing that, a changed chunk starts near where an old one
//     started, shifted by what was inserted or deleted before it. That
//     shift is learned from the chunks already placed (an exact match, or a
//     good delta).
//
// Blob workers call it concurrently, roughly in stream order.
type deltaRef struct {
	old    []crypto.ID
	sizes  []uint32
	starts []int64 // starts[i] is the offset of old[i] in the previous version
	pos    map[crypto.ID]int

	mu sync.Mutex
	// The latest placed chunk: the new chunk at offset anchorNew began
	// where the old one at anchorOld did.
	anchorNew, anchorOld int64
	heads                map[uint64]int // chunk head -> old chunk index

	// The walk over the old chunks starts with the first chunk that needs
	// a base, so an unchanged stream reads nothing of the old one.
	startWalk sync.Once
	walk      func()
	stop      context.CancelFunc
	stopped   chan struct{}
}

// newDeltaRef returns nil when prev has no content to take deltas from.
// The walk that records the old chunks' heads starts with the first call
// to candidates; close stops it.
func newDeltaRef(ctx context.Context, r *repo.Repository, prev *tree.Node) *deltaRef {
	if prev == nil || prev.Type != tree.File || len(prev.Content) == 0 || len(prev.ChunkSizes) != len(prev.Content) {
		return nil
	}
	d := &deltaRef{old: prev.Content, sizes: prev.ChunkSizes, starts: make([]int64, len(prev.Content)), pos: make(map[crypto.ID]int, len(prev.Content)),
		heads: make(map[uint64]int, len(prev.Content)), stopped: make(chan struct{})}
	var off int64
	for i, id := range prev.Content {
		d.starts[i] = off
		off += int64(prev.ChunkSizes[i])
		if _, ok := d.pos[id]; !ok {
			d.pos[id] = i
		}
	}
	ctx, d.stop = context.WithCancel(ctx)
	if len(prev.ChunkHeads) == len(prev.Content) {
		for i, h := range prev.ChunkHeads {
			if _, ok := d.heads[h]; !ok {
				d.heads[h] = i
			}
		}
		d.walk = func() { close(d.stopped) }
		return d
	}
	d.walk = func() { go d.indexHeads(ctx, r) }
	return d
}

// indexHeads records the head of every old chunk, in order. An unreadable
// chunk is skipped: it only cannot be found by content.
func (d *deltaRef) indexHeads(ctx context.Context, r *repo.Repository) {
	defer close(d.stopped)
	for i, id := range d.old {
		if ctx.Err() != nil {
			return
		}
		head, err := r.BlobHead(ctx, id, tree.HeadLen)
		if err != nil {
			continue
		}
		h := tree.ChunkHead(head)
		d.mu.Lock()
		if _, ok := d.heads[h]; !ok {
			d.heads[h] = i
		}
		d.mu.Unlock()
	}
}

// close stops the walk over the old chunks and waits for it.
func (d *deltaRef) close() {
	if d == nil {
		return
	}
	d.stop()
	d.startWalk.Do(func() { close(d.stopped) }) // never started
	<-d.stopped
}

// candidates returns up to four old chunks for the new chunk at off that
// starts with head: the old chunk with the same head, then the one whose
// start is nearest the predicted old offset, then its neighbours.
func (d *deltaRef) candidates(off int64, head []byte) []crypto.ID {
	d.startWalk.Do(d.walk)
	h := tree.ChunkHead(head)
	d.mu.Lock()
	pred := off - d.anchorNew + d.anchorOld
	byHead, found := d.heads[h]
	d.mu.Unlock()
	out := make([]crypto.ID, 0, 4)
	if found {
		out = append(out, d.old[byHead])
	}
	i := sort.Search(len(d.starts), func(i int) bool { return d.starts[i] > pred }) - 1
	if i < 0 {
		i = 0
	}
	if i+1 < len(d.starts) && d.starts[i+1]-pred < pred-d.starts[i] {
		i++
	}
	for _, j := range []int{i, i + 1, i - 1} {
		if j >= 0 && j < len(d.old) && !(found && j == byHead) {
			out = append(out, d.old[j])
		}
	}
	return out
}

// knownChunk reports whether the stream, whose bytes not yet cut are rest,
// continues with an old chunk unchanged: the old chunk with rest's head,
// which ends at a cut point and hashes to its ID. The chunker can then take
// it without searching for its cut point (the search would find the same
// one: it restarts at every cut). The old stream's last chunk ended with
// the stream, not at a cut point, so it never qualifies.
func (d *deltaRef) knownChunk(c *chunk.Chunker, rest []byte, key *crypto.Key) (int, crypto.ID, bool) {
	if d == nil || len(rest) < tree.HeadLen {
		return 0, crypto.ID{}, false
	}
	d.mu.Lock()
	j, ok := d.heads[tree.ChunkHead(rest)]
	d.mu.Unlock()
	if !ok || j == len(d.old)-1 {
		return 0, crypto.ID{}, false
	}
	n := int(d.sizes[j])
	if !c.CutsAt(n) {
		return 0, crypto.ID{}, false // a changed chunk usually changed its length
	}
	id := key.BlobID(rest[:n])
	if id != d.old[j] {
		return 0, crypto.ID{}, false
	}
	return n, id, true
}

// place records that the new chunk at off replaced (or equals) old chunk
// id; later chunks are predicted from the latest placement.
func (d *deltaRef) place(off int64, id crypto.ID) {
	i, ok := d.pos[id]
	if !ok {
		return
	}
	d.mu.Lock()
	if off >= d.anchorNew {
		d.anchorNew, d.anchorOld = off, d.starts[i]
	}
	d.mu.Unlock()
}

// isDumpStart reports whether a stream starts like a database dump:
// pg_dump's custom format ("PGDMP"), its plain SQL output, pg_dumpall's, or
// a Redis RDB file. Such streams change in scattered rows, so they get the
// database chunking and deltas.
func isDumpStart(head []byte) bool {
	for _, m := range []string{"PGDMP", "--\n-- PostgreSQL database dump", "--\n-- PostgreSQL database cluster dump", "REDIS00"} {
		if bytes.HasPrefix(head, []byte(m)) {
			return true
		}
	}
	return false
}

// sniffKind reads the start of a stream (without consuming it) and returns
// its chunking kind and a reader that still yields the whole stream.
func sniffKind(rd io.Reader) (string, io.Reader) {
	br := bufio.NewReaderSize(rd, 4096)
	head, _ := br.Peek(64) // a read error comes back on the first real read
	if isDumpStart(head) {
		return repo.ChunkingDatabase, br
	}
	return repo.ChunkingFiles, br
}
