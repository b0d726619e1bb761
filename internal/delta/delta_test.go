package delta

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"
)

// pgRows returns n rows shaped like a pg_dump COPY section:
// "id\t1\t0\t<84 random characters>\n", ids counting up from 12345.
func pgRows(rng *rand.Rand, n int) [][]byte {
	const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,-"
	rows := make([][]byte, n)
	for k := range rows {
		var text [84]byte
		for j := range text {
			text[j] = alphabet[rng.IntN(len(alphabet))]
		}
		rows[k] = fmt.Appendf(nil, "%d\t1\t0\t%s\n", 12345+k, text[:])
	}
	return rows
}

// pgChunk returns rows that add up to at least size bytes.
func pgChunk(rng *rand.Rand, size int) [][]byte {
	rows := pgRows(rng, size/90+1)
	n, k := 0, 0
	for ; n < size; k++ {
		n += len(rows[k])
	}
	return rows[:k]
}

func randBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// deleteEvery drops every nth row, starting with the first.
func deleteEvery(rows [][]byte, n int) [][]byte {
	var out [][]byte
	for k, r := range rows {
		if k%n != 0 {
			out = append(out, r)
		}
	}
	return out
}

// literalOnly is the size of the delta that stores all of target as one
// literal run; the encoder must never do worse for chunk-sized inputs.
func literalOnly(target []byte) int {
	if len(target) == 0 {
		return 1
	}
	return 2*varintLen(uint64(len(target))) + len(target) + 2
}

func varintLen(v uint64) int {
	return len(binary.AppendUvarint(nil, v))
}

// roundTrip encodes and decodes, checks the result and returns the delta.
func roundTrip(t testing.TB, e *Encoder, base, target []byte) []byte {
	t.Helper()
	d := e.Encode(nil, base, target)
	if max := literalOnly(target); len(d) > max {
		t.Fatalf("delta of %d bytes is longer than a literal-only one (%d)", len(d), max)
	}
	got, err := Decode(nil, base, d)
	if err != nil {
		t.Fatalf("Decode: %v (delta %d bytes, base %d, target %d)", err, len(d), len(base), len(target))
	}
	if !bytes.Equal(got, target) {
		t.Fatalf("round trip differs: got %d bytes, want %d", len(got), len(target))
	}
	// Appending: a prefix in dst survives and the target follows it.
	prefix := []byte("prefix")
	got, err = Decode(prefix[:len(prefix):len(prefix)], base, d)
	if err != nil || !bytes.HasPrefix(got, prefix) || !bytes.Equal(got[len(prefix):], target) {
		t.Fatalf("Decode after a prefix: err %v, got %d bytes", err, len(got))
	}
	// And Encode appends too.
	d2 := e.Encode([]byte("xy"), base, target)
	if string(d2[:2]) != "xy" || !bytes.Equal(d2[2:], d) {
		t.Fatalf("Encode with a prefix differs from Encode without")
	}
	return d
}

func TestRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	rows := pgChunk(rng, 16<<10)
	chunk := bytes.Join(rows, nil)

	modified := func(every int, f func([]byte) []byte) []byte {
		var out [][]byte
		for k, r := range rows {
			if k%every == every/2 {
				r = f(bytes.Clone(r))
			}
			out = append(out, r)
		}
		return bytes.Join(out, nil)
	}
	inserted := func(every int) []byte {
		extra := pgRows(rng, len(rows)/every+1)
		var out [][]byte
		for k, r := range rows {
			if k%every == 0 {
				out = append(out, extra[k/every])
			}
			out = append(out, r)
		}
		return bytes.Join(out, nil)
	}
	random := randBytes(rng, 16<<10)
	zeros := make([]byte, 16<<10)
	pattern := bytes.Repeat([]byte("abcabcabd"), 3000)

	tests := []struct {
		name         string
		base, target []byte
		maxDelta     int // 0: only the literal-only bound
	}{
		{"both empty", nil, nil, 1},
		{"empty base", nil, chunk, 0},
		{"empty target", chunk, nil, 1},
		{"tiny", []byte("abc"), []byte("abd"), 0},
		{"short base", []byte("0123456789"), chunk, 0},
		{"short target", chunk, chunk[100:110], 0},
		{"exactly minMatch", chunk[:16], chunk[:16], 5},
		{"identical", chunk, chunk, 10},
		{"unrelated random", random, randBytes(rng, 16<<10), 0},
		{"random vs text", random, chunk, 0},
		{"every 44th row deleted", chunk, bytes.Join(deleteEvery(rows, 44), nil), len(chunk) / 20},
		{"every 10th row deleted", chunk, bytes.Join(deleteEvery(rows, 10), nil), len(chunk) / 20},
		{"rows inserted", chunk, inserted(40), len(chunk) / 20},
		{"rows rewritten", chunk, modified(50, func(r []byte) []byte {
			return pgRows(rng, 1)[0]
		}), len(chunk) / 20},
		{"bytes changed in place", chunk, modified(30, func(r []byte) []byte {
			r[20] ^= 1
			r[60] = '!'
			return r
		}), len(chunk) / 100},
		{"row grown", chunk, modified(60, func(r []byte) []byte {
			return append(r[:len(r)-1], "some more text\n"...)
		}), len(chunk) / 50},
		{"prefix changed", chunk, append([]byte("new header line\n"), chunk[300:]...), 40},
		{"suffix changed", chunk, append(bytes.Clone(chunk[:len(chunk)-300]), "new trailer\n"...), 40},
		{"halves swapped", chunk, append(bytes.Clone(chunk[len(chunk)/2:]), chunk[:len(chunk)/2]...), 20},
		{"base longer", chunk, chunk[4000:9000], 20},
		{"target longer", chunk[4000:9000], chunk, len(chunk) - 5000 + 50},
		{"target repeats base", chunk[:1000], bytes.Repeat(chunk[:1000], 20), 20 * 10},
		{"zeros", zeros, zeros, 10},
		{"zeros, base longer", zeros, zeros[:5000], 10},
		{"zeros, target longer", zeros[:1000], make([]byte, 100<<10), 101 * 10},
		{"zeros vs random", zeros, random, 0},
		{"pattern", pattern, pattern[1:], 20},
		{"pattern shifted", pattern[:10000], pattern[4:], 60},
	}
	var e Encoder
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := roundTrip(t, &e, tc.base, tc.target)
			if tc.maxDelta > 0 && len(d) > tc.maxDelta {
				t.Errorf("delta of %d bytes for a %d-byte target, want at most %d", len(d), len(tc.target), tc.maxDelta)
			}
			// A fresh Encoder gives the same delta as a reused one.
			var fresh Encoder
			if d2 := fresh.Encode(nil, tc.base, tc.target); !bytes.Equal(d, d2) {
				t.Errorf("reused and fresh encoders disagree")
			}
		})
	}
}

// TestRowDeletionSmall is the case the package exists for: a 16 KiB piece
// of a dump with a few rows deleted.
func TestRowDeletionSmall(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	rows := pgChunk(rng, 16<<10)
	base := bytes.Join(rows, nil)
	target := bytes.Join(deleteEvery(rows, 44), nil)
	if deleted := len(rows) - len(deleteEvery(rows, 44)); deleted != 4 {
		t.Fatalf("test setup: %d rows deleted, want 4", deleted)
	}
	var e Encoder
	d := roundTrip(t, &e, base, target)
	// One copy per surviving stretch: about five ops of at most seven
	// bytes each.
	if len(d) > 40 || len(d)*20 > len(target) {
		t.Fatalf("delta of %d bytes for %d-byte target with 4 rows deleted", len(d), len(target))
	}
}

// TestSingleByteChange pins down the exact ops for one changed byte: a
// copy, then the changed byte as a literal with a copy that resumes on the
// same diagonal.
func TestSingleByteChange(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	base := randBytes(rng, 16384)
	target := bytes.Clone(base)
	target[5000] ^= 0xff
	var e Encoder
	d := roundTrip(t, &e, base, target)
	want := binary.AppendUvarint(nil, 16384)
	want = append(want, 0, 0)
	want = binary.AppendUvarint(want, 5000)
	want = append(want, 1, target[5000])
	want = binary.AppendUvarint(want, 5001)
	want = binary.AppendUvarint(want, 16384-5001)
	if !bytes.Equal(d, want) {
		t.Fatalf("delta\n% x\nwant\n% x", d, want)
	}
}

// TestBackwardExtension checks that a match found at an indexed base
// position grows back over the bytes before it, down to the end of the
// previous copy, so that misaligned matches cost nothing.
func TestBackwardExtension(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	base := randBytes(rng, 4096)
	// Long insertions also exercise the sparser probing of long literal
	// runs: the bytes it skips must come back too.
	for _, inserted := range []int{100, 101, 102, 103, 700, 1200, 3000, 3001, 3002, 3003} {
		for shift := 1; shift < 8; shift++ {
			// Unrelated bytes, then base from an odd offset.
			target := append(randBytes(rng, inserted), base[shift:]...)
			var e Encoder
			d := roundTrip(t, &e, base, target)
			want := build(uint64(len(target)), op{string(target[:inserted]), uint64(shift), uint64(len(base) - shift)})
			if !bytes.Equal(d, want) {
				t.Fatalf("%d inserted, shift %d: delta of %d bytes, want %d", inserted, shift, len(d), len(want))
			}
		}
	}
}

// TestDiagonal checks that after a copy the encoder tries the base
// position on the same diagonal first: it finds a 16-byte match between two
// changed bytes there, which the stride-indexed hash table cannot.
func TestDiagonal(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	base := randBytes(rng, 4096)
	for k := 1000; k < 1008; k++ {
		target := bytes.Clone(base)
		target[k] ^= 1
		target[k+minMatch+1] ^= 1
		var e Encoder
		d := roundTrip(t, &e, base, target)
		want := build(uint64(len(target)),
			op{"", 0, uint64(k)},
			op{string(target[k : k+1]), uint64(k + 1), minMatch},
			op{string(target[k+minMatch+1 : k+minMatch+2]), uint64(k + minMatch + 2), uint64(len(base) - k - minMatch - 2)})
		if !bytes.Equal(d, want) {
			t.Fatalf("change at %d: delta\n% x\nwant\n% x", k, d, want)
		}
	}
}

func TestDocExample(t *testing.T) {
	d := []byte("\x0c\x00\x00\x07\x05there\x00\x00")
	got, err := Decode(nil, []byte("hello, world"), d)
	if err != nil || string(got) != "hello, there" {
		t.Fatalf("got %q, %v", got, err)
	}
}

func TestNonMinimalVarints(t *testing.T) {
	// target_len 3 as 0x83 0x00, literal_len 3 as 0x83 0x80 0x00, copy
	// fields 0 as 0x80 0x00.
	d := []byte("\x83\x00\x83\x80\x00abc\x80\x00\x80\x00")
	got, err := Decode(nil, nil, d)
	if err != nil || string(got) != "abc" {
		t.Fatalf("got %q, %v", got, err)
	}
}

// op is one op of a hand-built delta.
type op struct {
	lit       string
	off, size uint64
}

func build(targetLen uint64, ops ...op) []byte {
	d := binary.AppendUvarint(nil, targetLen)
	for _, o := range ops {
		d = binary.AppendUvarint(d, uint64(len(o.lit)))
		d = append(d, o.lit...)
		d = binary.AppendUvarint(d, o.off)
		d = binary.AppendUvarint(d, o.size)
	}
	return d
}

func TestBuildMatchesEncode(t *testing.T) {
	// The hand-built deltas below are only meaningful if build writes what
	// Encode writes.
	base := []byte("0123456789abcdefghijklmnopqrstuvwxyz")
	target := []byte("XY" + string(base[3:30]) + "Z")
	var e Encoder
	got := e.Encode(nil, base, target)
	want := build(30, op{"XY", 3, 27}, op{"Z", 0, 0})
	if !bytes.Equal(got, want) {
		t.Fatalf("Encode % x, build % x", got, want)
	}
	if _, err := Decode(nil, base, want); err != nil {
		t.Fatal(err)
	}
}

func TestDecodeErrors(t *testing.T) {
	base := []byte("0123456789")
	tests := []struct {
		name  string
		delta []byte
		want  string // in the error message
	}{
		{"empty delta", nil, "target length"},
		{"bad target varint", bytes.Repeat([]byte{0xff}, 11), "target length"},
		{"target over maxOutput", build(maxOutput + 1), "exceeds"},
		{"target 2^64-1", build(1<<64 - 1), "exceeds"},
		{"no ops", build(5), "literal length"},
		{"literal truncated", build(5, op{"abcde", 0, 0})[:5], "truncated"},
		{"literal over target", build(3, op{"abcd", 0, 0}), "overruns"},
		{"huge literal", binary.AppendUvarint([]byte{3}, 1<<64-1), "overruns"},
		{"copy over target", build(3, op{"", 0, 4}), "overruns"},
		{"copy offset out of base", build(3, op{"", 11, 1}), "beyond base"},
		{"copy end out of base", build(5, op{"", 8, 3}), "beyond base"},
		{"copy end exactly past base", build(11, op{"", 0, 11}), "beyond base"},
		{"copy overflowing", build(3, op{"", 1<<64 - 1, 2}), "beyond base"},
		{"copy length overflowing", build(3, op{"", 2, 1<<64 - 1}), "beyond base"},
		{"zero op", build(3, op{"", 0, 0}, op{"abc", 0, 0}), "empty op"},
		{"zero op with offset", build(3, op{"", 5, 0}, op{"abc", 0, 0}), "empty op"},
		{"empty copy with offset", build(3, op{"abc", 1, 0}), "offset"},
		{"empty copy before last op", build(4, op{"ab", 0, 0}, op{"cd", 0, 0}), "before the last op"},
		{"short of target", build(6, op{"ab", 0, 2}), "literal length"},
		{"trailing byte", append(build(3, op{"abc", 0, 0}), 0), "trailing"},
		{"trailing op", build(3, op{"abc", 0, 0}, op{"d", 0, 0}), "trailing"},
		{"trailing after empty target", []byte{0, 0}, "trailing"},
		{"missing copy fields", build(3, op{"abc", 0, 0})[:5], "copy offset"},
		{"missing copy length", build(3, op{"abc", 0, 0})[:6], "copy length"},
		{"bad literal varint", append(build(3), 0x80), "literal length"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := Decode(nil, base, tc.delta)
			if err == nil {
				t.Fatalf("no error, output %q", out)
			}
			if out != nil {
				t.Errorf("output %q with error", out)
			}
			if !strings.HasPrefix(err.Error(), "delta: ") || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q, want one mentioning %q", err, tc.want)
			}
		})
	}
}

// TestDecodeTruncated checks that no proper prefix of a valid delta decodes.
func TestDecodeTruncated(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	rows := pgChunk(rng, 4<<10)
	base := bytes.Join(rows, nil)
	targets := [][]byte{
		nil,
		[]byte("x"),
		bytes.Join(deleteEvery(rows, 7), nil),
		append([]byte("new"), base...),
		append(bytes.Clone(base), "new"...),
		randBytes(rng, 300),
	}
	var e Encoder
	for _, target := range targets {
		d := roundTrip(t, &e, base, target)
		for n := range len(d) {
			if out, err := Decode(nil, base, d[:n]); err == nil {
				t.Fatalf("prefix of %d of a %d-byte delta decodes to %d bytes", n, len(d), len(out))
			}
		}
	}
}

func TestDecodeMaxOutput(t *testing.T) {
	if testing.Short() {
		t.Skip("builds 64 MiB")
	}
	// Exactly maxOutput is allowed, from a small delta of repeated copies.
	base := bytes.Repeat([]byte{7}, 1<<20)
	var ops []op
	for range maxOutput / len(base) {
		ops = append(ops, op{"", 0, uint64(len(base))})
	}
	out, err := Decode(nil, base, build(maxOutput, ops...))
	if err != nil || len(out) != maxOutput {
		t.Fatalf("len %d, err %v", len(out), err)
	}
	// One more byte is not.
	if _, err := Decode(nil, base, build(maxOutput+1, append(ops, op{"x", 0, 0})...)); err == nil {
		t.Fatal("maxOutput+1 accepted")
	}
}

// TestDecodeSmallAllocation checks that a delta claiming maxOutput but
// failing at once does not allocate the claimed size first.
func TestDecodeSmallAllocation(t *testing.T) {
	d := build(maxOutput, op{"", 5, 1 << 30})
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range 10 {
		if _, err := Decode(nil, []byte("0123456789"), d); err == nil {
			t.Fatal("accepted")
		}
	}
	runtime.ReadMemStats(&after)
	if per := (after.TotalAlloc - before.TotalAlloc) / 10; per > 4096 {
		t.Fatalf("%d bytes allocated per failed Decode", per)
	}
}

func TestNoAllocs(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	rows := pgChunk(rng, 16<<10)
	base := bytes.Join(rows, nil)
	target := bytes.Join(deleteEvery(rows, 44), nil)
	var e Encoder
	d := e.Encode(nil, base, target)
	dst := make([]byte, 0, len(target))
	if n := testing.AllocsPerRun(20, func() { e.Encode(dst[:0], base, target) }); n != 0 {
		t.Errorf("Encode: %v allocations per call", n)
	}
	if n := testing.AllocsPerRun(20, func() { Decode(dst[:0], base, d) }); n != 0 {
		t.Errorf("Decode: %v allocations per call", n)
	}
}

// TestEncoderReuseShrinking encodes against a large base and then a small
// one with the same Encoder: stale table entries from the large base must
// not leak into the small one.
func TestEncoderReuseShrinking(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 14))
	big := randBytes(rng, 1<<20)
	var e Encoder
	roundTrip(t, &e, big, big[1000:200000])
	small := big[500000:510000]
	roundTrip(t, &e, small, big[500000:520000])
	roundTrip(t, &e, small[:20], big)
	roundTrip(t, &e, big, small)
}

// Deltas of a 16 KiB dump chunk with 4 rows deleted; SetBytes counts the
// target, so MB/s is target bytes per second.
func benchInput(b *testing.B) (base, target []byte) {
	rng := rand.New(rand.NewPCG(15, 16))
	rows := pgChunk(rng, 16<<10)
	return bytes.Join(rows, nil), bytes.Join(deleteEvery(rows, 44), nil)
}

func BenchmarkEncode(b *testing.B) {
	base, target := benchInput(b)
	var e Encoder
	dst := e.Encode(nil, base, target)
	b.SetBytes(int64(len(target)))
	b.ReportAllocs()
	for b.Loop() {
		dst = e.Encode(dst[:0], base, target)
	}
	b.ReportMetric(float64(len(dst)), "delta-bytes")
}

// BenchmarkEncodeUnrelated is the slow path: nothing matches, every target
// position is looked up.
func BenchmarkEncodeUnrelated(b *testing.B) {
	rng := rand.New(rand.NewPCG(17, 18))
	base, target := randBytes(rng, 16<<10), randBytes(rng, 16<<10)
	var e Encoder
	dst := e.Encode(nil, base, target)
	b.SetBytes(int64(len(target)))
	b.ReportAllocs()
	for b.Loop() {
		dst = e.Encode(dst[:0], base, target)
	}
}

// BenchmarkEncodeRewritten has every tenth row replaced: a literal-heavy
// but realistic case.
func BenchmarkEncodeRewritten(b *testing.B) {
	rng := rand.New(rand.NewPCG(19, 20))
	rows := pgChunk(rng, 16<<10)
	base := bytes.Join(rows, nil)
	fresh := pgRows(rng, len(rows))
	for k := range rows {
		if k%10 == 5 {
			rows[k] = fresh[k]
		}
	}
	target := bytes.Join(rows, nil)
	var e Encoder
	dst := e.Encode(nil, base, target)
	b.SetBytes(int64(len(target)))
	b.ReportAllocs()
	for b.Loop() {
		dst = e.Encode(dst[:0], base, target)
	}
	b.ReportMetric(float64(len(dst)), "delta-bytes")
}

func BenchmarkDecode(b *testing.B) {
	base, target := benchInput(b)
	var e Encoder
	d := e.Encode(nil, base, target)
	dst := make([]byte, 0, len(target))
	b.SetBytes(int64(len(target)))
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if dst, err = Decode(dst[:0], base, d); err != nil {
			b.Fatal(err)
		}
	}
}

func TestVerify(t *testing.T) {
	base := bytes.Repeat([]byte("0123456789abcdef row\n"), 500)
	target := append(append([]byte("new "), base[:3000]...), base[3100:]...)
	var e Encoder
	d := e.Encode(nil, base, target)
	if err := Verify(base, d, target); err != nil {
		t.Fatalf("valid delta: %v", err)
	}
	bad := bytes.Clone(target)
	bad[len(bad)/2] ^= 1
	if err := Verify(base, d, bad); err == nil {
		t.Fatal("a different target verified")
	}
	if err := Verify(base, d, target[:len(target)-1]); err == nil {
		t.Fatal("a shorter target verified")
	}
	if err := Verify(base, d, append(bytes.Clone(target), 'x')); err == nil {
		t.Fatal("a longer target verified")
	}
	if err := Verify(base, d[:len(d)-1], target); err == nil {
		t.Fatal("a truncated delta verified")
	}
}
