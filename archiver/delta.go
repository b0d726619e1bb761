package archiver

import (
	"bufio"
	"bytes"
	"io"
	"sort"
	"sync"

	"github.com/cairn-backup/cairn/crypto"
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/tree"
)

// deltaRef finds, for each new chunk of a stream, the chunks of the
// previous version it most likely replaced: candidates for a delta blob
// (docs/format.md §7.1). A dump changes in scattered rows, so a changed
// chunk mostly starts where an old one started, shifted by what was
// inserted or deleted before it. That shift is learned from the chunks
// already placed (an exact match, or a good delta) and applied to the next
// ones. Blob workers call it concurrently, roughly in stream order.
type deltaRef struct {
	old    []crypto.ID
	starts []int64 // starts[i] is the offset of old[i] in the previous version
	pos    map[crypto.ID]int

	mu sync.Mutex
	// The latest placed chunk: the new chunk at offset anchorNew began
	// where the old one at anchorOld did.
	anchorNew, anchorOld int64
}

// newDeltaRef returns nil when prev has no content to take deltas from.
func newDeltaRef(prev *tree.Node) *deltaRef {
	if prev == nil || prev.Type != tree.File || len(prev.Content) == 0 || len(prev.ChunkSizes) != len(prev.Content) {
		return nil
	}
	d := &deltaRef{old: prev.Content, starts: make([]int64, len(prev.Content)), pos: make(map[crypto.ID]int, len(prev.Content))}
	var off int64
	for i, id := range prev.Content {
		d.starts[i] = off
		off += int64(prev.ChunkSizes[i])
		if _, ok := d.pos[id]; !ok {
			d.pos[id] = i
		}
	}
	return d
}

// candidates returns up to three old chunks for the new chunk at off: the
// one whose start is nearest the predicted old offset, then its neighbours.
func (d *deltaRef) candidates(off int64) []crypto.ID {
	d.mu.Lock()
	pred := off - d.anchorNew + d.anchorOld
	d.mu.Unlock()
	i := sort.Search(len(d.starts), func(i int) bool { return d.starts[i] > pred }) - 1
	if i < 0 {
		i = 0
	}
	if i+1 < len(d.starts) && d.starts[i+1]-pred < pred-d.starts[i] {
		i++
	}
	out := make([]crypto.ID, 0, 3)
	for _, j := range []int{i, i + 1, i - 1} {
		if j >= 0 && j < len(d.old) {
			out = append(out, d.old[j])
		}
	}
	return out
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

// Stream beginnings that mark a database dump: pg_dump's custom and
// directory-less formats ("PGDMP"), its plain SQL output, and a Redis RDB
// file. Such streams change in scattered rows, so they get the database
// chunking and deltas.
var dumpMagics = [][]byte{
	[]byte("PGDMP"),
	[]byte("--\n-- PostgreSQL database dump"),
	[]byte("--\n-- PostgreSQL database cluster dump"),
	[]byte("REDIS00"),
}

// sniffKind reads the start of a stream (without consuming it) and returns
// its chunking kind and a reader that still yields the whole stream.
func sniffKind(rd io.Reader) (string, io.Reader) {
	br := bufio.NewReaderSize(rd, 4096)
	head, _ := br.Peek(64) // a read error comes back on the first real read
	for _, m := range dumpMagics {
		if bytes.HasPrefix(head, m) {
			return repo.KindDatabase, br
		}
	}
	return repo.KindFiles, br
}
