package delta

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// FuzzDecode checks that Decode never panics, that a delta it accepts
// produces exactly the declared target length, that decoding appends to dst
// without disturbing it, and that the encoder round-trips what came out.
// The committed corpus in testdata/fuzz/FuzzDecode holds valid and broken
// deltas.
func FuzzDecode(f *testing.F) {
	base := []byte("0123456789abcdefghijklmnopqrstuvwxyz")
	var e Encoder
	f.Add(base, e.Encode(nil, base, []byte("XY3456789abcdefghijklmnopqrstuvwxyzZ")))
	f.Add(base, build(5, op{"ab", 3, 3}))
	f.Fuzz(func(t *testing.T, base, delta []byte) {
		out, err := Decode(nil, base, delta)
		if err != nil {
			if out != nil {
				t.Fatalf("output of %d bytes with error %v", len(out), err)
			}
			return
		}
		declared, n := binary.Uvarint(delta)
		if n <= 0 || declared != uint64(len(out)) {
			t.Fatalf("decoded %d bytes, delta declares %d (varint length %d)", len(out), declared, n)
		}
		prefix := []byte{1, 2, 3}
		again, err := Decode(prefix, base, delta)
		if err != nil || !bytes.Equal(again[:3], []byte{1, 2, 3}) || !bytes.Equal(again[3:], out) {
			t.Fatalf("Decode after a prefix: %v", err)
		}
		if err := Verify(base, delta, out); err != nil {
			t.Fatalf("Verify refuses what Decode produced: %v", err)
		}
		if len(out) > 0 {
			flipped := bytes.Clone(out)
			flipped[len(out)/2] ^= 1
			if Verify(base, delta, flipped) == nil {
				t.Fatal("Verify accepts a different target")
			}
		}
		d := e.Encode(nil, base, out)
		back, err := Decode(nil, base, d)
		if err != nil || !bytes.Equal(back, out) {
			t.Fatalf("re-encoded output does not round-trip: %v", err)
		}
	})
}

// FuzzRoundTrip checks Decode(Encode(base, target)) == target, and that the
// delta is never longer than storing target as one literal run.
func FuzzRoundTrip(f *testing.F) {
	row := []byte("12345\t1\t0\tsome text that is long enough to be matched\n")
	f.Add([]byte(nil), []byte(nil))
	f.Add(row, row)
	f.Add(bytes.Repeat(row, 5), append(bytes.Repeat(row, 2), bytes.Repeat(row[3:], 3)...))
	f.Add(make([]byte, 100), make([]byte, 300))
	f.Add([]byte("abcdefghijklmnopqrstuvwxyz"), []byte("xyzabcdefghijklmnopqrstuvw"))
	var e Encoder // reused across inputs, as callers do
	f.Fuzz(func(t *testing.T, base, target []byte) {
		d := e.Encode(nil, base, target)
		if max := literalOnly(target); len(d) > max {
			t.Fatalf("delta of %d bytes, literal-only is %d", len(d), max)
		}
		out, err := Decode(nil, base, d)
		if err != nil {
			t.Fatalf("Decode: %v", err)
		}
		if !bytes.Equal(out, target) {
			t.Fatalf("round trip differs")
		}
		if err := Verify(base, d, target); err != nil {
			t.Fatalf("Verify: %v", err)
		}
	})
}
