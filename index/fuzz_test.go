package index

import (
	"errors"
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/cairn-backup/cairn/crypto"
)

// FuzzDecodeFile checks that DecodeFile never panics, that every error wraps
// ErrFormat, and that a decoded file survives an Encode/DecodeFile round trip.
func FuzzDecodeFile(f *testing.F) {
	rng := rand.New(rand.NewPCG(1, 2))
	f.Add((&File{}).Encode())
	f.Add((&File{Supersedes: []crypto.ID{fillID(1)}}).Encode())
	f.Add((&File{Packs: []PackEntry{{ID: fillID(2), Type: TreeBlob}}}).Encode())
	f.Add((&File{Packs: []PackEntry{{ID: fillID(2), Blobs: []BlobEntry{{ID: fillID(3), Offset: 1<<32 - 1, Length: 300, RawLength: 5}}}}}).Encode())
	f.Add(sampleFile(rng, 2, 3).Encode())
	f.Add([]byte("CRNI\x01"))
	f.Add(deltaFile(rng, nil).Encode())
	f.Add(deltaFile(rng, []ObsoletePack{{Since: 7, Pack: PackEntry{ID: fillID(9)}}}).Encode())
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := DecodeFile(data)
		if err != nil {
			if !errors.Is(err, ErrFormat) {
				t.Fatalf("error does not wrap ErrFormat: %v", err)
			}
			if file != nil {
				t.Fatalf("DecodeFile returned a file and an error")
			}
			return
		}
		enc := file.Encode()
		again, err := DecodeFile(enc)
		if err != nil {
			t.Fatalf("re-encoded file does not decode: %v", err)
		}
		if !reflect.DeepEqual(file, again) {
			t.Fatalf("round trip changed the file:\n%+v\n%+v", file, again)
		}
		if len(enc) > len(data) {
			t.Fatalf("canonical encoding (%d bytes) longer than the input (%d)", len(enc), len(data))
		}
	})
}
