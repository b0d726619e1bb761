// Package delta encodes a chunk as copies from a base chunk plus literal
// bytes, and decodes it back. It is meant for a changed chunk of a database
// dump stored against an older version of the same chunk: a few rows
// inserted, deleted or changed leave most of the chunk as a handful of copies.
// Literal bytes are kept contiguous in the delta so that the zstd pass the
// caller runs afterwards compresses them well.
//
// # Wire format
//
// This encoding is part of the repository format; it must not change.
//
// A uvarint is an unsigned integer in the encoding of
// [encoding/binary.AppendUvarint]: seven bits per byte, least significant
// group first, the high bit (0x80) set on every byte but the last, at most
// ten bytes and at most 2^64-1. The encoder always writes the shortest form;
// the decoder also accepts longer (non-minimal) forms.
//
// A delta is
//
//	delta = target_len:uvarint op*
//	op    = literal_len:uvarint literal:byte*literal_len copy_off:uvarint copy_len:uvarint
//
// that is, the length of the target, then ops until the target is complete.
// Each op appends its literal_len literal bytes, which follow literal_len
// verbatim, to the output, and then appends base[copy_off:copy_off+copy_len].
// Offsets are absolute positions in the base, not relative to the previous
// copy, and the base ranges of different copies may overlap or repeat. A
// copy reads only the base, never the output produced so far.
//
// A delta is valid only if all of the following hold; Decode returns an
// error otherwise:
//
//   - target_len is at most [maxOutput]. An empty target is encoded as
//     target_len 0 and no ops, that is, the single byte 0x00.
//   - No op makes the output longer than target_len.
//   - literal_len and copy_len are not both 0.
//   - copy_off+copy_len is at most len(base).
//   - copy_len is 0 only in the last op, and then copy_off is 0 too.
//   - The op that brings the output to target_len is the last one, and the
//     delta ends with it: no op is missing or truncated, and no bytes
//     follow it.
//
// For example, with base "hello, world" the target "hello, there" can be
// encoded as the twelve bytes
//
//	0c                 target_len 12
//	00 00 07           literal_len 0, copy_off 0, copy_len 7: "hello, "
//	05 "there" 00 00   literal_len 5, the literal, copy_off 0, copy_len 0
//
// The encoder writes minimal varints and copies of at least 16 bytes, and
// ends with a copy_len 0 op only to carry trailing literal bytes. Those are
// properties of this encoder, not rules of the format: a later encoder may
// choose other copies, and every decoder following the rules above rebuilds
// the same target from the same base and delta.
package delta

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"slices"
)

// maxOutput bounds what Decode produces (64 MiB).
const maxOutput = 64 << 20

const (
	// minMatch is the shortest copy the encoder emits. A copy op costs 3
	// to 6 bytes for chunk-sized inputs, so 16 bytes always saves space
	// and is the width of the hashed window (two uint64 loads).
	minMatch = 16
	// stride is the spacing of indexed base positions for bases up to
	// smallBase bytes; larger bases use up to 4 times the spacing, since
	// indexing dominates the cost on them and their chunks are mostly long
	// copies. A match of at least minMatch+stride-1 bytes always covers an
	// indexed position (unless a hash collision evicted it), and the
	// backward extension recovers the bytes before it.
	stride    = 4
	smallBase = 64 << 10
	// The hash table has about twice as many slots as indexed positions,
	// so that collisions drop only about a fifth of them, and between
	// 2^minTableBits slots and 2^maxTableBits (16 MiB): beyond that, more
	// collisions are cheaper than a huge table.
	minTableBits = 4
	maxTableBits = 22
)

// Encoder computes deltas; it keeps its hash table between calls so that
// repeated use allocates nothing. An Encoder is not safe for concurrent use;
// callers pool them (sync.Pool is fine, the caller does that). The zero
// value is ready to use.
type Encoder struct {
	// table maps a window hash to the base position of a window with that
	// hash. Empty slots hold 0, which is just a candidate that fails
	// verification (or matches, correctly): no emptiness test to mispredict.
	table []int32
}

// Encode appends to dst the delta that turns base into target and returns it.
// It never fails; when nothing matches the delta is one literal run (slightly
// larger than target). For inputs shorter than 256 MiB the delta is never
// longer than that single literal run. A target longer than maxOutput yields
// a delta Decode refuses. dst must not overlap base or target.
func (e *Encoder) Encode(dst, base, target []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(target)))
	lit := 0
	if len(base) >= minMatch && len(target) >= minMatch {
		dst, lit = e.match(dst, base, target)
	}
	if lit < len(target) {
		dst = binary.AppendUvarint(dst, uint64(len(target)-lit))
		dst = append(dst, target[lit:]...)
		dst = append(dst, 0, 0) // copy_off 0, copy_len 0: last op
	}
	return dst
}

// match appends the ops for every copy it finds in target and returns the
// start of the trailing literal run it leaves to the caller.
func (e *Encoder) match(dst, base, target []byte) ([]byte, int) {
	// Only positions that fit in an int32 are indexed; chunks are far
	// smaller, this only keeps absurd inputs correct.
	nb := min(len(base), math.MaxInt32)
	st := stride
	for b := nb; b > smallBase && st < 4*stride; b >>= 2 {
		st *= 2
	}
	count := (nb-minMatch)/st + 1
	tbits := min(max(bits.Len(uint(count-1))+1, minTableBits), maxTableBits)
	size := 1 << tbits
	shift := uint(64 - tbits)
	if cap(e.table) < size {
		e.table = make([]int32, size)
	} else {
		e.table = e.table[:size]
		clear(e.table)
	}
	table := e.table
	mask := uint64(size - 1)
	index(table, base[:nb], shift, st)

	lit := 0  // start of the pending literal run
	diag := 0 // base position minus target position of the last copy
	last := len(target) - minMatch
	for i := 0; i <= last; {
		w := target[i : i+minMatch]
		a, b := load64(w, 0), load64(w, 8)
		var cand int
		// A row changed in place leaves the rest of the chunk on the
		// last copy's diagonal (at first, the same offset as in target);
		// try there before the hash table, which only knows every
		// stride-th base position.
		if p := i + diag; p >= 0 && p <= len(base)-minMatch &&
			load64(base, p) == a && load64(base, p+8) == b {
			cand = p
		} else if c := int(table[hash(a, b, shift)&mask]); load64(base, c) == a && load64(base, c+8) == b {
			cand = c
		} else {
			// Probe sparser as a literal run grows past 512 bytes, so
			// that unrelated data costs less. Steps stay odd so that the
			// probes still meet every residue modulo stride: any match
			// of 16+4*7 bytes is still found, and the backward extension
			// recovers the bytes skipped before it.
			i += 1 + 2*(min(i-lit, 3<<9)>>9)
			continue
		}

		// Extend backwards into the pending literal run only, so that
		// each literal byte is examined at most once more in total.
		s, p := i, cand
		for s > lit && p > 0 && target[s-1] == base[p-1] {
			s--
			p--
		}
		end := i + minMatch + matchLen(base[cand+minMatch:], target[i+minMatch:])

		dst = binary.AppendUvarint(dst, uint64(s-lit))
		dst = append(dst, target[lit:s]...)
		dst = binary.AppendUvarint(dst, uint64(p))
		dst = binary.AppendUvarint(dst, uint64(end-s))
		diag = p - s
		i, lit = end, end
	}
	return dst, lit
}

// index records in table the position of every stride-th window of base.
// It walks from the end so that the earliest position wins a collision: on
// repetitive data (runs of zeros, repeated rows) a copy from the earliest
// occurrence extends the furthest.
func index(table []int32, base []byte, shift uint, st int) {
	mask := uint64(len(table) - 1)
	for p := (len(base) - minMatch) / st * st; p >= 0; p -= st {
		w := base[p : p+minMatch]
		table[hash(load64(w, 0), load64(w, 8), shift)&mask] = int32(p)
	}
}

// hash mixes a 16-byte window given as two little-endian words into the
// top 64-shift bits. Every input bit reaches the top bits through the second
// multiply; verification makes collisions cost only a missed candidate.
func hash(a, b uint64, shift uint) uint64 {
	return (a*0x9e3779b97f4a7c15 ^ b) * 0xc2b2ae3d27d4eb4f >> (shift & 63)
}

func load64(b []byte, i int) uint64 {
	return binary.LittleEndian.Uint64(b[i:])
}

// matchLen returns the length of the common prefix of a and b: 64 bytes at
// a time through the vectorised bytes.Equal while they agree, which is most
// of a copy, then eight bytes at a time to find the first difference.
func matchLen(a, b []byte) int {
	n := 0
	for len(a) >= 64 && len(b) >= 64 && bytes.Equal(a[:64], b[:64]) {
		a, b = a[64:], b[64:]
		n += 64
	}
	for len(a) >= 8 && len(b) >= 8 {
		if x := load64(a, 0) ^ load64(b, 0); x != 0 {
			return n + bits.TrailingZeros64(x)>>3
		}
		a, b = a[8:], b[8:]
		n += 8
	}
	for i := 0; i < len(a) && i < len(b) && a[i] == b[i]; i++ {
		n++
	}
	return n
}

// Decode appends to dst the target rebuilt from base and delta. It returns an
// error, and never panics, for any delta that breaks a rule of the wire
// format in the package documentation: truncation, copies outside base,
// lengths that overflow or disagree with target_len, output larger than
// maxOutput, empty ops, trailing bytes. Non-minimal varints are accepted.
//
// dst must not overlap base or delta. On error Decode returns nil; the bytes
// of dst between its length and its capacity may have been overwritten.
func Decode(dst, base, delta []byte) ([]byte, error) {
	total, n := binary.Uvarint(delta)
	if n <= 0 || total > maxOutput {
		_, err := walk(base, delta, nil) // for its error message
		return nil, err
	}
	// Grow once, but by no more than the inputs could plausibly produce,
	// so that a few bytes claiming maxOutput cannot force a large
	// allocation before they are checked; repeated copies grow as they go.
	dst = slices.Grow(dst, int(min(total, uint64(len(base))+uint64(len(delta)))))
	start := len(dst)
	if _, err := walk(base, delta, func(p []byte) bool {
		dst = append(dst, p...)
		return true
	}); err != nil {
		return nil, err
	}
	if uint64(len(dst)-start) != total {
		// Unreachable: walk checks every op against target_len.
		return nil, fmt.Errorf("delta: produced %d bytes, want %d", len(dst)-start, total)
	}
	return dst, nil
}

// Verify reports whether delta is valid and rebuilds exactly target from
// base, without writing the output: one comparing pass instead of a decode
// and a comparison.
func Verify(base, delta, target []byte) error {
	pos := 0
	total, err := walk(base, delta, func(p []byte) bool {
		if len(p) > len(target)-pos || !bytes.Equal(p, target[pos:pos+len(p)]) {
			return false
		}
		pos += len(p)
		return true
	})
	switch {
	case err != nil:
		return err
	case total != uint64(len(target)) || pos != len(target):
		return fmt.Errorf("delta: rebuilds %d bytes, want %d", total, len(target))
	}
	return nil
}

// errDiffers is returned by walk when emit refuses the output.
var errDiffers = errors.New("delta: output differs from the target")

// walk checks delta against every rule of the wire format and calls emit
// (when not nil) with each piece of output in order: literal bytes from
// delta, copied bytes from base. It returns target_len. emit returning false
// stops the walk with errDiffers.
func walk(base, delta []byte, emit func([]byte) bool) (uint64, error) {
	total, n := binary.Uvarint(delta)
	if n <= 0 {
		return 0, fmt.Errorf("delta: bad target length varint")
	}
	if total > maxOutput {
		return 0, fmt.Errorf("delta: target length %d exceeds the maximum of %d", total, maxOutput)
	}
	pos := n
	left := total // output still to produce
	for left > 0 {
		opStart := pos
		litLen, n := binary.Uvarint(delta[pos:])
		if n <= 0 {
			return 0, fmt.Errorf("delta: bad literal length varint at offset %d", pos)
		}
		pos += n
		if litLen > left {
			return 0, fmt.Errorf("delta: literal of %d bytes overruns target length %d", litLen, total)
		}
		if litLen > uint64(len(delta)-pos) {
			return 0, fmt.Errorf("delta: literal of %d bytes truncated to %d", litLen, len(delta)-pos)
		}
		if litLen > 0 && emit != nil && !emit(delta[pos:pos+int(litLen)]) {
			return 0, errDiffers
		}
		pos += int(litLen)
		left -= litLen

		off, n := binary.Uvarint(delta[pos:])
		if n <= 0 {
			return 0, fmt.Errorf("delta: bad copy offset varint at offset %d", pos)
		}
		pos += n
		cpLen, n := binary.Uvarint(delta[pos:])
		if n <= 0 {
			return 0, fmt.Errorf("delta: bad copy length varint at offset %d", pos)
		}
		pos += n
		if cpLen == 0 {
			switch {
			case litLen == 0:
				return 0, fmt.Errorf("delta: empty op at offset %d", opStart)
			case off != 0:
				return 0, fmt.Errorf("delta: empty copy with offset %d", off)
			case left != 0:
				return 0, fmt.Errorf("delta: empty copy before the last op")
			}
			continue // left is 0: this was the last op
		}
		if off > uint64(len(base)) || cpLen > uint64(len(base))-off {
			return 0, fmt.Errorf("delta: copy %d+%d beyond base of %d bytes", off, cpLen, len(base))
		}
		if cpLen > left {
			return 0, fmt.Errorf("delta: copy of %d bytes overruns target length %d", cpLen, total)
		}
		if emit != nil && !emit(base[off:off+cpLen]) {
			return 0, errDiffers
		}
		left -= cpLen
	}
	if pos != len(delta) {
		return 0, fmt.Errorf("delta: %d trailing bytes", len(delta)-pos)
	}
	return total, nil
}
