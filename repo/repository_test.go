package repo

import (
	"context"
	"errors"
	"testing"

	"github.com/cairn-backup/cairn/crypto"
	"github.com/cairn-backup/cairn/repo/backend"
	"github.com/cairn-backup/cairn/repo/backend/local"
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

// keyLoads counts the key files a backend serves.
type keyLoads struct {
	backend.Backend
	n int
}

func (k *keyLoads) Load(ctx context.Context, h backend.Handle, off, n int64) ([]byte, error) {
	if h.Type == backend.Key {
		k.n++
	}
	return k.Backend.Load(ctx, h, off, n)
}

// TestPreferKey: the key that opened the repository last time is tried
// first, and when it opens no other key file is read; a stale or wrong
// hint only costs the usual order.
func TestPreferKey(t *testing.T) {
	ctx := context.Background()
	r, dir := newTestRepo(t, Options{})
	first := r.KeyID()
	var second string
	for range 3 {
		id, err := r.AddKey(ctx, "other")
		if err != nil {
			t.Fatal(err)
		}
		second = id
	}
	r.Close()
	be, err := local.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		password, prefer, want string
		loads                  int
	}{
		{"secret", first, first, 1},
		{"other", second, second, 1},
		{"other", first, "", 4}, // the hint is another password's key
		{"secret", "gone", first, 4},
		{"secret", "", first, 4},
	} {
		kl := &keyLoads{Backend: be}
		r, err := Open(ctx, kl, c.password, Options{KDF: &testKDF, PreferKey: c.prefer})
		if err != nil {
			t.Fatalf("%+v: %v", c, err)
		}
		if c.want != "" && r.KeyID() != c.want {
			t.Errorf("%+v: opened with key %s", c, r.KeyID())
		}
		if kl.n != c.loads {
			t.Errorf("%+v: %d key files read, want %d", c, kl.n, c.loads)
		}
		r.Close()
	}
	if _, err := Open(ctx, be, "wrong", Options{KDF: &testKDF, PreferKey: first}); !errors.Is(err, ErrWrongPassword) {
		t.Errorf("wrong password with a hint: %v", err)
	}
}
