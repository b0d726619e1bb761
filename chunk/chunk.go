// Package chunk splits streams into content-defined chunks (the Rabin
// fingerprint cut points of restic/chunker, computed here on byte slices)
// and pools the buffers those chunks live in.
package chunk

import (
	"errors"
	"fmt"
	"io"
	"math/bits"
	"sync"

	"github.com/restic/chunker"
)

// Params bound chunk sizes; the average is 2^AvgBits bytes. They are
// stored in the repository's config (docs/format.md §6), hence the tags.
type Params struct {
	Min     uint `json:"min"`
	AvgBits int  `json:"avg_bits"`
	Max     uint `json:"max"`
}

// BufferPool hands out byte slices in power-of-two size classes, so chunks
// of very different sizes can share it without pinning 8 MiB per chunk.
type BufferPool struct {
	classes [28]sync.Pool
}

func class(n int) int {
	if n <= 1<<12 {
		return 12
	}
	return bits.Len(uint(n - 1))
}

// Get returns a buffer of length n.
func (p *BufferPool) Get(n int) *[]byte {
	c := class(n)
	if c < len(p.classes) {
		if v := p.classes[c].Get(); v != nil {
			bp := v.(*[]byte)
			*bp = (*bp)[:n]
			return bp
		}
	}
	b := make([]byte, n, 1<<c)
	return &b
}

// Put returns a buffer to the pool.
func (p *BufferPool) Put(bp *[]byte) {
	c := bits.Len(uint(cap(*bp))) - 1
	if c < 12 || c >= len(p.classes) || cap(*bp) != 1<<c {
		return
	}
	p.classes[c].Put(bp)
}

// Chunker cuts a stream into chunks, each copied into a pooled buffer that
// the caller owns and returns with Pool.Put. It reads the stream into a
// window that holds the next chunk whole (up to Max bytes), so a caller can
// look at what comes next (Peek) and take a chunk it already knows (Take)
// without searching for its cut point.
type Chunker struct {
	rd       io.Reader
	params   Params
	pol      chunker.Pol
	cut      cutter
	pool     *BufferPool
	buf      []byte
	want     int // the window's size for this stream
	pos, end int // buf[pos:end] is read but not yet cut
	eof      bool
}

// New returns a chunker for rd with polynomial pol. sizeHint, when known
// (a file's size; 0 for a stream), keeps the window no larger than the
// input needs.
func New(rd io.Reader, pol chunker.Pol, p Params, pool *BufferPool) *Chunker {
	c := &Chunker{params: p, pool: pool}
	c.Reset(rd, pol, 0)
	return c
}

// Reset reuses the chunker (and its window) for another stream.
func (c *Chunker) Reset(rd io.Reader, pol chunker.Pol, sizeHint uint64) {
	c.rd, c.pos, c.end, c.eof = rd, 0, 0, false
	if c.cut.tab == nil || pol != c.pol {
		c.pol, c.cut = pol, newCutter(newRabinTables(pol), pol, c.params)
	}
	// Twice the largest chunk: the window is moved up (at most once per
	// Max bytes cut) when less than a chunk is left in it. It is allocated
	// at the first read.
	c.want = 2 * int(c.params.Max)
	if sizeHint > 0 && sizeHint < uint64(c.want) {
		c.want = int(sizeHint) + 1
	}
	if cap(c.buf) < c.want {
		c.buf = nil
	}
	c.buf = c.buf[:cap(c.buf)]
}

// fill reads until the window holds a whole chunk (Max bytes) or the rest
// of the stream.
func (c *Chunker) fill() error {
	maxChunk := int(c.params.Max)
	if c.eof || c.end-c.pos >= maxChunk {
		return nil
	}
	if c.buf == nil {
		c.buf = make([]byte, c.want)
	}
	if c.pos > 0 && len(c.buf)-c.pos < maxChunk {
		c.end = copy(c.buf, c.buf[c.pos:c.end])
		c.pos = 0
	}
	for c.end-c.pos < maxChunk {
		if c.end == len(c.buf) {
			// Longer than its size hint said: grow the window.
			grown := make([]byte, 2*maxChunk)
			c.end = copy(grown, c.buf[c.pos:c.end])
			c.buf, c.pos = grown, 0
		}
		n, err := c.rd.Read(c.buf[c.end:])
		c.end += n
		if errors.Is(err, io.EOF) {
			c.eof = true
			return nil
		}
		if err != nil {
			return fmt.Errorf("chunk: %w", err)
		}
	}
	return nil
}

// Peek returns the bytes not yet cut: at least Max of them, or the rest of
// the stream. They stay valid until the next call of Next, Take or Peek.
func (c *Chunker) Peek() ([]byte, error) {
	if err := c.fill(); err != nil {
		return nil, err
	}
	return c.buf[c.pos:c.end], nil
}

// Next returns the next chunk in a pooled buffer, or io.EOF at the end.
func (c *Chunker) Next() (*[]byte, error) {
	rest, err := c.Peek()
	if err != nil {
		return nil, err
	}
	if len(rest) == 0 {
		return nil, io.EOF
	}
	return c.Take(c.cut.cut(rest)), nil
}

// CutsAt reports whether the cut-point search could end a chunk that
// starts at the current position after n bytes: the window before byte n
// has a cut fingerprint, or n is the largest chunk. It is a quick filter
// for Take: a chunk known from before that ends at such a point, with the
// same content, is what the search would find.
func (c *Chunker) CutsAt(n int) bool {
	rest := c.buf[c.pos:c.end]
	if n < c.cut.min || n > len(rest) || n > c.cut.max {
		return false
	}
	return n == c.cut.max || c.cut.window(rest[n-windowSize:n])&c.cut.splitMask == 0
}

// Take cuts the next n bytes (at most what Peek returned) as a chunk
// without searching for a cut point: for a chunk the caller recognises
// as one the same stream had before. Since the search restarts at every
// cut, what follows is cut exactly as if the chunk had been found by it,
// as long as the chunk did not end where its stream ended.
func (c *Chunker) Take(n int) *[]byte {
	bp := c.pool.Get(n)
	copy(*bp, c.buf[c.pos:c.pos+n])
	c.pos += n
	return bp
}
