package repo

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"

	"github.com/restic/chunker"

	"github.com/cairn-backup/cairn/crypto"
	"github.com/cairn-backup/cairn/index"
)

func fuzzID(c byte) (id crypto.ID) {
	for i := range id {
		id[i] = c + byte(i)
	}
	return id
}

// FuzzDecodePackHeader checks that DecodePackHeader never panics, that errors
// wrap ErrPackFormat, and that a decoded header re-encodes to one that
// decodes to the same entries (offsets are implied by cumulative lengths).
func FuzzDecodePackHeader(f *testing.F) {
	f.Add(encodePackHeader(index.DataBlob, nil))
	f.Add(encodePackHeader(index.TreeBlob, []index.BlobEntry{{ID: fuzzID(1), Length: crypto.Overhead + 1, RawLength: 0}}))
	f.Add(encodePackHeader(index.DataBlob, []index.BlobEntry{
		{ID: fuzzID(1), Length: 1 << 20, RawLength: 3 << 20},
		{ID: fuzzID(2), Length: 100, RawLength: 59},
		{ID: fuzzID(3), Length: 1<<32 - 1 - (1<<20 + 100), RawLength: 1<<32 - 1},
	}))
	f.Add([]byte("CRNP\x01\x00"))
	f.Add(encodePackHeader(index.DataBlob, []index.BlobEntry{
		{ID: fuzzID(1), Length: 300, RawLength: 16384},
		{ID: fuzzID(2), Length: 90, RawLength: 15000, Base: fuzzID(1)},
	}))
	f.Fuzz(func(t *testing.T, data []byte) {
		typ, blobs, err := DecodePackHeader(data)
		if err != nil {
			if !errors.Is(err, ErrPackFormat) {
				t.Fatalf("error does not wrap ErrPackFormat: %v", err)
			}
			return
		}
		if !typ.Valid() {
			t.Fatalf("decoded invalid type %d", typ)
		}
		var off uint64
		for i, e := range blobs {
			if uint64(e.Offset) != off {
				t.Fatalf("entry %d: offset %d, want cumulative %d", i, e.Offset, off)
			}
			off += uint64(e.Length)
		}
		if off > 1<<32-1 {
			t.Fatalf("blobs span %d bytes", off)
		}
		enc := encodePackHeader(typ, blobs)
		typ2, blobs2, err := DecodePackHeader(enc)
		if err != nil {
			t.Fatalf("re-encoded header does not decode: %v", err)
		}
		if typ2 != typ || !reflect.DeepEqual(blobs, blobs2) {
			t.Fatalf("round trip changed the header:\n%v %+v\n%v %+v", typ, blobs, typ2, blobs2)
		}
	})
}

// FuzzDecodeConfig checks that DecodeConfig never panics, neither on raw
// stored bytes nor on arbitrary JSON that is properly sealed with the key,
// and that an accepted config re-encodes to one that decodes equal.
func FuzzDecodeConfig(f *testing.F) {
	var m [crypto.MasterKeySize]byte
	for i := range m {
		m[i] = byte(i)
	}
	key, err := crypto.KeyFromMaster(m)
	if err != nil {
		f.Fatal(err)
	}
	valid := &Config{
		Version:     FormatVersion,
		ID:          "00112233",
		Polynomial:  chunker.Pol(0x3DA3358B4DC173),
		Chunking:    DefaultChunking(),
		PackSize:    16 << 20,
		Compression: "zstd",
	}
	js, err := json.Marshal(valid)
	if err != nil {
		f.Fatal(err)
	}
	stored, err := encodeConfig(key, valid)
	if err != nil {
		f.Fatal(err)
	}
	// raw is a whole stored object; plain is JSON the fuzz function seals.
	f.Add(stored, js)
	f.Add([]byte(configMagic+"\x01"), []byte(`{"version":1,"chunker_polynomial":"3da3358b4dc173","pack_size":1048576,"chunking":{"files":{"min":1,"avg_bits":10,"max":2}}}`))
	f.Add([]byte{}, []byte(`{"version":1,"chunker_polynomial":"0","pack_size":1048576,"chunking":{"files":{"min":1,"avg_bits":10,"max":2}}}`))
	f.Add([]byte("CRNC\x02"), []byte(`null`))
	f.Add([]byte("XXXX\x01"), []byte(`{"chunker_polynomial":""}`))
	f.Fuzz(func(t *testing.T, raw, plain []byte) {
		if c, err := DecodeConfig(key, raw); err == nil {
			checkConfigRoundTrip(t, key, c)
		}
		sealed := key.Seal([]byte(configMagic+"\x01"), plain)
		if c, err := DecodeConfig(key, sealed); err == nil {
			checkConfigRoundTrip(t, key, c)
		}
	})
}

func checkConfigRoundTrip(t *testing.T, key *crypto.Key, c *Config) {
	t.Helper()
	if err := c.validate(); err != nil {
		t.Fatalf("DecodeConfig accepted an invalid config: %v", err)
	}
	b, err := encodeConfig(key, c)
	if err != nil {
		t.Fatalf("accepted config does not encode: %v", err)
	}
	c2, err := DecodeConfig(key, b)
	if err != nil {
		t.Fatalf("re-encoded config does not decode: %v", err)
	}
	if !reflect.DeepEqual(c, c2) {
		t.Fatalf("round trip changed the config:\n%+v\n%+v", c, c2)
	}
}
