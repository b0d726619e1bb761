package repo

import (
	"testing"

	"github.com/cairn-backup/cairn/crypto"
)

// TestKeysCheapestFirst: a key file planted with costly parameters and a
// name that sorts first is tried after the real ones.
func TestKeysCheapestFirst(t *testing.T) {
	kf := func(time, mem uint32) *crypto.KeyFile {
		return &crypto.KeyFile{Params: crypto.KDFParams{Time: time, MemoryKiB: mem, Threads: 1}}
	}
	kfs := []namedKeyFile{{"00planted", kf(10, 1<<20)}, {"5real", kf(3, 64<<10)}, {"9second", kf(3, 64<<10)}}
	cheapestFirst(kfs)
	if kfs[0].name != "5real" || kfs[1].name != "9second" || kfs[2].name != "00planted" {
		t.Fatalf("order: %s, %s, %s", kfs[0].name, kfs[1].name, kfs[2].name)
	}
}
