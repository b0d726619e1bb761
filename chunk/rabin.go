package chunk

import (
	"github.com/restic/chunker"
)

// The cut-point search of restic/chunker (v0.4), reimplemented on byte
// slices: the same polynomial arithmetic, window and rules, so it cuts at
// exactly the same places (TestCutsMatchRestic, FuzzCutsMatchRestic) and
// repositories keep deduplicating against what earlier versions stored.
// Working on a slice lets the caller look at a chunk before deciding to cut
// it (a chunk the parent snapshot already holds needs no search at all),
// and copies each byte once instead of twice.

// windowSize is the rolling hash's window, as in restic/chunker.
const windowSize = 64

// rabinTables are the precomputed tables of one polynomial.
type rabinTables struct {
	out [256]uint64 // out[b]: hash of b followed by windowSize-1 zero bytes
	mod [256]uint64 // reduction of the 8 bits that overflow the degree
}

// newRabinTables computes the tables of pol (about a millisecond; chunkers
// are reused, so few are made).
func newRabinTables(pol chunker.Pol) *rabinTables {
	t := &rabinTables{}
	appendByte := func(h chunker.Pol, b byte) chunker.Pol { return ((h << 8) | chunker.Pol(b)).Mod(pol) }
	for b := 0; b < 256; b++ {
		h := appendByte(0, byte(b))
		for i := 0; i < windowSize-1; i++ {
			h = appendByte(h, 0)
		}
		t.out[b] = uint64(h)
	}
	k := uint(pol.Deg())
	for b := 0; b < 256; b++ {
		t.mod[b] = uint64((chunker.Pol(b) << k).Mod(pol) | chunker.Pol(b)<<k)
	}
	return t
}

// cutter finds content-defined cut points.
type cutter struct {
	tab       *rabinTables
	polShift  uint
	splitMask uint64
	min, max  int
}

func newCutter(tab *rabinTables, pol chunker.Pol, p Params) cutter {
	return cutter{tab: tab, polShift: uint(pol.Deg() - 8), splitMask: 1<<uint(p.AvgBits) - 1, min: int(p.Min), max: int(p.Max)}
}

// cut returns the length of the chunk that starts at buf[0]. buf must hold
// at least max bytes, unless it holds the rest of the stream; when no cut
// point is found in a shorter buf, the chunk is all of it.
//
// restic/chunker starts each chunk with a window of the byte 1 and zeros
// and hashes nothing of the first min-64 bytes, and it cuts only after min
// bytes: by then exactly the 64 bytes before the cut have been hashed and
// the initial byte has slid out. So whether a cut may fall after byte i
// depends only on the 64 bytes ending there (the window's hash), which is
// what search computes, reading the byte that leaves the window from buf.
func (c *cutter) cut(buf []byte) int {
	if c.min > len(buf) {
		return len(buf)
	}
	end := min(len(buf), c.max)
	if n, ok := c.search(buf[:end], c.min); ok {
		return n
	}
	return end
}

// laneBlock is how many positions each of the two lanes of search tests
// before the lanes' results are looked at: past the first cut, search
// wastes at most two blocks of hashing (a few percent of a chunk).
const laneBlock = 8 << 10

// search returns the length up to the first cut point after at least from
// bytes (from >= windowSize), or false if b has none.
//
// The window hash is a chain of dependent table lookups, so one chain runs
// at the latency of a lookup per byte. Since the hash at a position depends
// only on the 64 bytes before it, search runs two chains at once, over two
// neighbouring blocks of positions, each started 64 bytes before its block:
// the processor overlaps them, and the first cut is the first one found in
// the earlier block, else in the later one.
func (c *cutter) search(b []byte, from int) (int, bool) {
	if from > len(b) {
		return 0, false
	}
	if c.polShift != 53-8 || from <= windowSize {
		return c.searchSlow(b, from)
	}
	// Test positions are indexes of a window's last byte.
	for p := from - 1; p < len(b); p += 2 * laneBlock {
		a0, a1 := p, min(p+laneBlock, len(b))
		b0, b1 := a1, min(a1+laneBlock, len(b))
		hitA, hitB := c.lanes(b, a0, b0, b1-b0)
		if hitA < 0 && a1-a0 > b1-b0 {
			hitA = c.lane(b, a0+(b1-b0), a1) // the earlier block's tail
		}
		switch {
		case hitA >= 0:
			return hitA + 1, true
		case hitB >= 0:
			return hitB + 1, true
		}
	}
	return 0, false
}

// window returns the fingerprint of a 64-byte window.
func (c *cutter) window(w []byte) uint64 {
	mod := &c.tab.mod
	shift := c.polShift & 63
	var digest uint64
	for _, x := range w[:windowSize] {
		digest = (digest<<8 | uint64(x)) ^ mod[byte(digest>>shift)]
	}
	return digest
}

// warm returns the hash of the 64 bytes before position p.
func (c *cutter) warm(b []byte, p int) uint64 {
	mod := &c.tab.mod
	var digest uint64
	for _, x := range b[p-windowSize : p] {
		digest = (digest<<8 | uint64(x)) ^ mod[digest>>(53-8)]
	}
	return digest
}

// lanes tests n positions from a0 and n from b0 at once; it returns the
// first cut position of each (-1: none). It stops early once the first
// lane has one.
func (c *cutter) lanes(b []byte, a0, b0, n int) (hitA, hitB int) {
	hitA, hitB = -1, -1
	if n == 0 {
		return hitA, hitB
	}
	mask := c.splitMask
	out, mod := &c.tab.out, &c.tab.mod
	da, db := c.warm(b, a0), c.warm(b, b0)
	inA, outA := b[a0:][:n], b[a0-windowSize:][:n]
	inB, outB := b[b0:][:n], b[b0-windowSize:][:n]
	for j := range n {
		da ^= out[outA[j]]
		db ^= out[outB[j]]
		da = (da<<8 | uint64(inA[j])) ^ mod[da>>(53-8)]
		db = (db<<8 | uint64(inB[j])) ^ mod[db>>(53-8)]
		if da&mask == 0 {
			return a0 + j, hitB
		}
		if db&mask == 0 && hitB < 0 {
			hitB = b0 + j
		}
	}
	return hitA, hitB
}

// lane tests positions [p, q) alone.
func (c *cutter) lane(b []byte, p, q int) int {
	if p >= q {
		return -1
	}
	mask := c.splitMask
	out, mod := &c.tab.out, &c.tab.mod
	digest := c.warm(b, p)
	in, leaving := b[p:q], b[p-windowSize:][:q-p]
	for j, x := range in {
		digest ^= out[leaving[j]]
		digest = (digest<<8 | uint64(x)) ^ mod[digest>>(53-8)]
		if digest&mask == 0 {
			return p + j
		}
	}
	return -1
}

// searchSlow is search for a polynomial of another degree.
func (c *cutter) searchSlow(b []byte, from int) (int, bool) {
	shift := c.polShift & 63
	mask := c.splitMask
	out, mod := &c.tab.out, &c.tab.mod
	var digest uint64
	for i := from - windowSize; i < len(b); i++ {
		if i >= from {
			digest ^= out[b[i-windowSize]]
		}
		digest = (digest<<8 | uint64(b[i])) ^ mod[byte(digest>>shift)]
		if i >= from-1 && digest&mask == 0 {
			return i + 1, true
		}
	}
	return 0, false
}
