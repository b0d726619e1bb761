package chunk

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"
	"testing/iotest"

	"github.com/restic/chunker"
)

// resticCuts returns the chunk lengths restic/chunker produces.
func resticCuts(t testing.TB, data []byte, pol chunker.Pol, p Params) []int {
	c := chunker.NewWithBoundaries(bytes.NewReader(data), pol, p.Min, p.Max)
	c.SetAverageBits(p.AvgBits)
	buf := make([]byte, p.Max)
	var out []int
	for {
		ch, err := c.Next(buf)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, int(ch.Length))
	}
}

// ourCuts returns the chunk lengths of Chunker, reading rd.
func ourCuts(t testing.TB, rd io.Reader, pol chunker.Pol, p Params, sizeHint uint64) []int {
	var pool BufferPool
	c := New(nil, pol, p, &pool)
	c.Reset(rd, pol, sizeHint)
	var out []int
	for {
		bp, err := c.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, len(*bp))
		pool.Put(bp)
	}
}

func equalCuts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestCutsMatchRestic checks that the slice-based search cuts exactly where
// restic/chunker does: repositories written before must keep deduplicating.
func TestCutsMatchRestic(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	random := make([]byte, 24<<20)
	for i := range random {
		random[i] = byte(rng.Uint32())
	}
	// Text with long repeats (a dump) and a run of zeros (max-size cuts).
	var text bytes.Buffer
	for i := 0; text.Len() < 6<<20; i++ {
		text.WriteString("1234\t1\t0\t                                                    \n")
		if i%97 == 0 {
			text.WriteString("changed row\n")
		}
	}
	text.Write(make([]byte, 3<<20))
	for _, p := range []Params{
		{Min: 512 << 10, Max: 8 << 20, AvgBits: 20}, // files
		{Min: 64 << 10, Max: 4 << 20, AvgBits: 18},  // database
		{Min: 64, Max: 4096, AvgBits: 8},            // tiny: many cuts
		{Min: 4 << 10, Max: 64 << 10, AvgBits: 14},
	} {
		pol, err := chunker.RandomPolynomial()
		if err != nil {
			t.Fatal(err)
		}
		for _, data := range [][]byte{random, text.Bytes(), random[:100], random[:int(p.Min)+3], nil} {
			want := resticCuts(t, data, pol, p)
			check := func(what string, got, want []int) {
				t.Helper()
				if !equalCuts(got, want) {
					t.Fatalf("params %+v, %d bytes, %s: %d cuts, restic %d", p, len(data), what, len(got), len(want))
				}
			}
			check("whole reads", ourCuts(t, bytes.NewReader(data), pol, p, 0), want)
			check("short reads", ourCuts(t, iotest.HalfReader(bytes.NewReader(data)), pol, p, 0), want)
			// A size hint, right or wrong, changes nothing.
			for _, hint := range []uint64{uint64(len(data)), uint64(len(data)) / 3, 1} {
				check(fmt.Sprintf("hint %d", hint), ourCuts(t, bytes.NewReader(data), pol, p, hint), want)
			}
			// Byte by byte (slow: a prefix).
			prefix := data[:min(len(data), 300_000)]
			check("one-byte reads", ourCuts(t, iotest.OneByteReader(bytes.NewReader(prefix)), pol, p, 0), resticCuts(t, prefix, pol, p))
		}
	}
}

// TestTake checks that taking a chunk the stream had before, instead of
// searching its cut point, leaves the following cuts unchanged.
func TestTake(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	data := make([]byte, 8<<20)
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	pol, _ := chunker.RandomPolynomial()
	p := Params{Min: 64 << 10, Max: 1 << 20, AvgBits: 16}
	want := resticCuts(t, data, pol, p)
	var pool BufferPool
	c := New(bytes.NewReader(data), pol, p, &pool)
	var got []int
	for i := 0; ; i++ {
		rest, err := c.Peek()
		if err != nil {
			t.Fatal(err)
		}
		if len(rest) == 0 {
			break
		}
		var bp *[]byte
		if i%2 == 0 && i < len(want)-1 {
			bp = c.Take(want[i]) // known from "the parent"
		} else if bp, err = c.Next(); err != nil {
			t.Fatal(err)
		}
		got = append(got, len(*bp))
		pool.Put(bp)
	}
	if !equalCuts(got, want) {
		t.Fatalf("%d cuts with Take, %d without", len(got), len(want))
	}
}

func BenchmarkChunker(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 2))
	data := make([]byte, 64<<20)
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	pol := chunker.Pol(0x3DA3358B4DC173)
	p := Params{Min: 64 << 10, Max: 4 << 20, AvgBits: 18}
	b.Run("cairn", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		var pool BufferPool
		c := New(nil, pol, p, &pool)
		for i := 0; i < b.N; i++ {
			c.Reset(bytes.NewReader(data), pol, 0)
			for {
				bp, err := c.Next()
				if err != nil {
					break
				}
				pool.Put(bp)
			}
		}
	})
	b.Run("restic", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		buf := make([]byte, p.Max)
		for i := 0; i < b.N; i++ {
			c := chunker.NewWithBoundaries(bytes.NewReader(data), pol, p.Min, p.Max)
			c.SetAverageBits(p.AvgBits)
			for {
				if _, err := c.Next(buf); err != nil {
					break
				}
			}
		}
	})
}

// FuzzCutsMatchRestic compares the cut points with restic/chunker's on
// arbitrary input: a repository's chunks must not change with the chunker.
func FuzzCutsMatchRestic(f *testing.F) {
	f.Add([]byte("PGDMP\x01\x0e\x00 seed"), uint8(6), uint8(7), uint8(4), uint16(300))
	f.Add(bytes.Repeat([]byte{0}, 5000), uint8(6), uint8(9), uint8(3), uint16(1))
	f.Add(bytes.Repeat([]byte("row\t1\t2\n"), 900), uint8(7), uint8(10), uint8(5), uint16(4000))
	pol := chunker.Pol(0x3DA3358B4DC173)
	f.Fuzz(func(t *testing.T, data []byte, minExp, maxExp, avgBits uint8, repeat uint16) {
		// Sizes small enough that short inputs make many chunks; Min is at
		// least the window (restic/chunker's own requirement).
		minSize := uint(1) << (6 + minExp%6)
		maxSize := minSize << (1 + maxExp%6)
		p := Params{Min: minSize, Max: maxSize, AvgBits: 1 + int(avgBits%12)}
		in := bytes.Repeat(data, 1+int(repeat%64))
		if got, want := ourCuts(t, bytes.NewReader(in), pol, p, 0), resticCuts(t, in, pol, p); !equalCuts(got, want) {
			t.Fatalf("params %+v, %d bytes: cuts %v, restic %v", p, len(in), got, want)
		}
	})
}

// TestCutsAt checks the filter Take's callers use: it accepts every cut
// the search makes.
func TestCutsAt(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	data := make([]byte, 4<<20)
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	pol, _ := chunker.RandomPolynomial()
	p := Params{Min: 16 << 10, Max: 256 << 10, AvgBits: 14}
	var pool BufferPool
	c := New(bytes.NewReader(data), pol, p, &pool)
	rejected := 0
	for {
		rest, err := c.Peek()
		if err != nil || len(rest) == 0 {
			break
		}
		n := c.cut.cut(rest)
		if n < len(rest) && !c.CutsAt(n) {
			t.Fatalf("CutsAt(%d) is false for a cut the search made", n)
		}
		if c.CutsAt(n - 1) {
			rejected++ // possible but about one in 2^14
		}
		pool.Put(c.Take(n))
	}
	if rejected > 2 {
		t.Fatalf("CutsAt accepted %d positions next to a cut", rejected)
	}
}
