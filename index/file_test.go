package index

import (
	"bytes"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/cairn-backup/cairn/crypto"
)

func fillID(c byte) (id crypto.ID) {
	for i := range id {
		id[i] = c
	}
	return id
}

func sampleFile(rng *rand.Rand, packs, blobs int) *File {
	f := &File{}
	for i := 0; i < 2; i++ {
		f.Supersedes = append(f.Supersedes, randID(rng))
	}
	for i := 0; i < packs; i++ {
		p := PackEntry{ID: randID(rng), Type: BlobType(i % 2), Blobs: []BlobEntry{}}
		for j := 0; j < blobs; j++ {
			p.Blobs = append(p.Blobs, BlobEntry{ID: randID(rng), Offset: rng.Uint32(), Length: rng.Uint32N(1 << (j % 32)), RawLength: rng.Uint32()})
		}
		f.Packs = append(f.Packs, p)
	}
	return f
}

func TestFileRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	files := []*File{
		{},
		{Supersedes: []crypto.ID{fillID(1)}},
		{Packs: []PackEntry{{ID: fillID(2), Type: TreeBlob, Blobs: []BlobEntry{}}}},
		{Packs: []PackEntry{{ID: fillID(2), Blobs: []BlobEntry{{ID: fillID(3), Offset: 1<<32 - 1, Length: 1<<32 - 1, RawLength: 1<<32 - 1}}}}},
		sampleFile(rng, 1, 1),
		sampleFile(rng, 30, 100),
		deltaFile(rng, nil),
		deltaFile(rng, []ObsoletePack{{Since: -5, Pack: PackEntry{ID: fillID(9), Blobs: []BlobEntry{{ID: fillID(8), Base: fillID(7)}}}}}),
	}
	for i, f := range files {
		data := f.Encode()
		got, err := DecodeFile(data)
		if err != nil {
			t.Fatalf("file %d: %v", i, err)
		}
		if !reflect.DeepEqual(got, f) {
			t.Fatalf("file %d differs after round trip:\n got %+v\nwant %+v", i, got, f)
		}
		if !bytes.Equal(got.Encode(), data) {
			t.Fatalf("file %d: encoding is not stable", i)
		}
	}
}

// deltaFile is a sample file with delta blobs (version 3).
func deltaFile(rng *rand.Rand, obsolete []ObsoletePack) *File {
	f := sampleFile(rng, 3, 5)
	f.Packs[0].Blobs[1].Base = f.Packs[0].Blobs[0].ID
	f.Packs[2].Blobs[4].Base = randID(rng)
	f.Obsolete = obsolete
	return f
}

// TestFileBasesVersion checks that version 3 is written exactly when a blob
// is a delta, and that a version 3 file without one is refused.
func TestFileBasesVersion(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 3))
	f := deltaFile(rng, nil)
	data := f.Encode()
	if data[4] != 3 {
		t.Fatalf("file with delta blobs written as version %d", data[4])
	}
	f.Packs[0].Blobs[1].Base, f.Packs[2].Blobs[4].Base = crypto.ID{}, crypto.ID{}
	if v := f.Encode()[4]; v != 1 {
		t.Fatalf("file without deltas written as version %d", v)
	}
	// Hand-made version 3 file whose only blob is not a delta.
	plain := append(append([]byte("CRNI\x03\x00\x01"), make([]byte, 33)...), append(append([]byte{1}, make([]byte, 32)...), 1, 2, 3, 0, 0)...)
	if _, err := DecodeFile(plain); !errors.Is(err, ErrFormat) {
		t.Fatalf("version 3 without deltas: %v", err)
	}
	// The same with a null base behind flag 1.
	bad := append(append([]byte("CRNI\x03\x00\x01"), make([]byte, 33)...), append(append(append([]byte{1}, make([]byte, 32)...), 1, 2, 3, 1), append(make([]byte, 32), 0)...)...)
	if _, err := DecodeFile(bad); !errors.Is(err, ErrFormat) {
		t.Fatalf("flag 1 with a null base: %v", err)
	}
	bad[len(bad)-34] = 2
	if _, err := DecodeFile(bad); !errors.Is(err, ErrFormat) {
		t.Fatalf("base flag 2: %v", err)
	}
}

// TestFileGolden pins the byte layout documented in docs/format.md.
func TestFileGolden(t *testing.T) {
	f := &File{
		Supersedes: []crypto.ID{fillID(0x11)},
		Packs: []PackEntry{{ID: fillID(0x22), Type: TreeBlob, Blobs: []BlobEntry{
			{ID: fillID(0x33), Offset: 0, Length: 300, RawLength: 5},
		}}},
	}
	want := hex.EncodeToString([]byte("CRNI")) + "01" +
		"01" + strings.Repeat("11", 32) +
		"01" + strings.Repeat("22", 32) + "01" +
		"01" + strings.Repeat("33", 32) + "00" + "ac02" + "05"
	if got := hex.EncodeToString(f.Encode()); got != want {
		t.Fatalf("encoding changed:\n got %s\nwant %s", got, want)
	}
}

func TestFileTruncated(t *testing.T) {
	rng := rand.New(rand.NewPCG(2, 2))
	for _, f := range []*File{sampleFile(rng, 3, 4), deltaFile(rng, nil)} {
		data := f.Encode()
		for n := 0; n < len(data); n++ {
			got, err := DecodeFile(data[:n])
			if !errors.Is(err, ErrFormat) {
				t.Fatalf("truncated to %d of %d bytes: got %v, %v; want ErrFormat", n, len(data), got, err)
			}
			if got != nil {
				t.Fatalf("truncated to %d bytes: returned a file with the error", n)
			}
		}
		if _, err := DecodeFile(append(bytes.Clone(data), 0)); !errors.Is(err, ErrFormat) {
			t.Fatalf("trailing byte: got %v", err)
		}
	}
}

func TestFileMalformed(t *testing.T) {
	valid := (&File{Packs: []PackEntry{{ID: fillID(2), Blobs: []BlobEntry{{ID: fillID(3), Offset: 1, Length: 2, RawLength: 3}}}}}).Encode()
	set := func(i int, v ...byte) []byte {
		b := bytes.Clone(valid)
		return append(b[:i], append(v, b[i+len(v):]...)...)
	}
	typeAt := 4 + 1 + 1 + 1 + 32
	cases := map[string][]byte{
		"magic":             set(0, 'X'),
		"version":           set(4, 2),
		"pack type":         set(typeAt, 2),
		"huge supersedes":   append([]byte("CRNI\x01\xff\xff\xff\xff\x0f"), make([]byte, 64)...),
		"huge pack count":   append([]byte("CRNI\x01\x00\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"), make([]byte, 64)...),
		"huge blob count":   append(append([]byte("CRNI\x01\x00\x01"), make([]byte, 33)...), 0xff, 0xff, 0xff, 0xff, 0x0f),
		"offset over 32bit": append(append([]byte("CRNI\x01\x00\x01"), make([]byte, 33)...), append(append([]byte{1}, make([]byte, 32)...), 0x80, 0x80, 0x80, 0x80, 0x10, 0, 0)...),
		"varint overflow":   append([]byte("CRNI\x01"), bytes.Repeat([]byte{0xff}, 11)...),
	}
	for name, data := range cases {
		if f, err := DecodeFile(data); !errors.Is(err, ErrFormat) {
			t.Errorf("%s: got %+v, %v; want ErrFormat", name, f, err)
		}
	}
	// The largest offset that fits still decodes.
	ok := append(append([]byte("CRNI\x01\x00\x01"), make([]byte, 33)...), append(append([]byte{1}, make([]byte, 32)...), 0xff, 0xff, 0xff, 0xff, 0x0f, 0, 0)...)
	f, err := DecodeFile(ok)
	if err != nil || f.Packs[0].Blobs[0].Offset != 1<<32-1 {
		t.Fatalf("max offset: %+v, %v", f, err)
	}
}
