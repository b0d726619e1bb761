// Package chunk splits streams into content-defined chunks (restic/chunker)
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

// Params bound chunk sizes; the average is 2^AvgBits bytes.
type Params struct {
	Min, Max uint
	AvgBits  int
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
// the caller owns and returns with Pool.Put.
type Chunker struct {
	c      *chunker.Chunker
	params Params
	buf    []byte
	pool   *BufferPool
}

// New returns a chunker for rd with polynomial pol.
func New(rd io.Reader, pol chunker.Pol, p Params, pool *BufferPool) *Chunker {
	c := chunker.NewWithBoundaries(rd, pol, p.Min, p.Max)
	c.SetAverageBits(p.AvgBits)
	return &Chunker{c: c, params: p, buf: make([]byte, p.Max), pool: pool}
}

// Reset reuses the chunker (and its buffer) for another stream.
func (c *Chunker) Reset(rd io.Reader, pol chunker.Pol) {
	c.c.ResetWithBoundaries(rd, pol, c.params.Min, c.params.Max)
	c.c.SetAverageBits(c.params.AvgBits)
}

// Next returns the next chunk in a pooled buffer, or io.EOF at the end.
func (c *Chunker) Next() (*[]byte, error) {
	ch, err := c.c.Next(c.buf)
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, io.EOF
		}
		return nil, fmt.Errorf("chunk: %w", err)
	}
	bp := c.pool.Get(len(ch.Data))
	copy(*bp, ch.Data)
	return bp, nil
}
