package chunk

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/restic/chunker"
)

func TestChunkBoundsAndDeterminism(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	data := make([]byte, 8<<20)
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	pol, err := chunker.RandomPolynomial()
	if err != nil {
		t.Fatal(err)
	}
	p := Params{Min: 4 << 10, Max: 256 << 10, AvgBits: 14}
	var pool BufferPool
	cut := func(d []byte) [][]byte {
		c := New(bytes.NewReader(d), pol, p, &pool)
		var out [][]byte
		for {
			bp, err := c.Next()
			if errors.Is(err, io.EOF) {
				return out
			}
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, append([]byte(nil), *bp...))
			pool.Put(bp)
		}
	}
	a := cut(data)
	if !bytes.Equal(bytes.Join(a, nil), data) {
		t.Fatal("chunks do not reassemble the input")
	}
	for i, c := range a[:len(a)-1] {
		if uint(len(c)) < p.Min || uint(len(c)) > p.Max {
			t.Fatalf("chunk %d has %d bytes, outside [%d, %d]", i, len(c), p.Min, p.Max)
		}
	}
	avg := len(data) / len(a)
	if avg < 8<<10 || avg > 64<<10 {
		t.Fatalf("average chunk %d bytes for avg_bits 14", avg)
	}
	// An insertion near the start changes only the first chunks.
	edited := append(append([]byte("inserted"), data[:100]...), data[100:]...)
	b := cut(edited)
	same := 0
	set := map[string]bool{}
	for _, c := range a {
		set[string(c)] = true
	}
	for _, c := range b {
		if set[string(c)] {
			same++
		}
	}
	if same < len(a)-3 {
		t.Fatalf("only %d of %d chunks survived an 8-byte insertion", same, len(a))
	}
}

func TestBufferPoolClasses(t *testing.T) {
	var pool BufferPool
	for _, n := range []int{0, 1, 4096, 4097, 1 << 20, 3<<20 + 5} {
		bp := pool.Get(n)
		if len(*bp) != n || cap(*bp) < n {
			t.Fatalf("Get(%d): len %d cap %d", n, len(*bp), cap(*bp))
		}
		pool.Put(bp)
	}
	odd := make([]byte, 5000)
	pool.Put(&odd) // not a class size: dropped, not handed out
	if bp := pool.Get(5000); cap(*bp) == 5000 {
		t.Fatal("a buffer of a non-class capacity was pooled")
	}
}
