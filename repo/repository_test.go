package repo

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/cairn-backup/cairn/crypto"
	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/repo/backend"
	"github.com/cairn-backup/cairn/repo/backend/local"
)

// TestKeysCheapestFirst: a key file planted with costly parameters and a
// name that sorts first is tried after the real ones.
func TestKeysCheapestFirst(t *testing.T) {
	kf := func(time, mem uint32) *crypto.KeyFile {
		return &crypto.KeyFile{Params: crypto.KDFParams{Time: time, MemoryKiB: mem, Threads: 1}}
	}
	kfs := []namedKeyFile{{name: "00planted", kf: kf(10, 1<<20)}, {name: "5real", kf: kf(3, 64<<10)}, {name: "9second", kf: kf(3, 64<<10)}}
	cheapestFirst(kfs)
	if kfs[0].name != "5real" || kfs[1].name != "9second" || kfs[2].name != "00planted" {
		t.Fatalf("order: %s, %s, %s", kfs[0].name, kfs[1].name, kfs[2].name)
	}
}

// keyLoads counts the key files a backend serves.
type keyLoads struct {
	backend.Backend
	n, lists int
}

func (k *keyLoads) Load(ctx context.Context, h backend.Handle, off, n int64) ([]byte, error) {
	if h.Type == backend.Key {
		k.n++
	}
	return k.Backend.Load(ctx, h, off, n)
}

func (k *keyLoads) List(ctx context.Context, t backend.FileType, fn func(backend.FileInfo) error) error {
	if t == backend.Key {
		k.lists++
	}
	return k.Backend.List(ctx, t, fn)
}

// TestPreferKey: the key that opened the repository last time is read
// first, by its name, and when it opens the keys are not even listed; a
// stale (removed, revoked) or wrong hint only costs one read more than the
// usual order.
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
		loads, lists           int
	}{
		{"secret", first, first, 1, 0},
		{"other", second, second, 1, 0},
		{"other", first, "", 4, 1}, // the hint is another password's key
		{"secret", "gone", first, 5, 1},
		{"secret", "", first, 4, 1},
	} {
		kl := &keyLoads{Backend: be}
		r, err := Open(ctx, kl, c.password, Options{KDF: &testKDF, PreferKey: c.prefer})
		if err != nil {
			t.Fatalf("%+v: %v", c, err)
		}
		if c.want != "" && r.KeyID() != c.want {
			t.Errorf("%+v: opened with key %s", c, r.KeyID())
		}
		if kl.n != c.loads || kl.lists != c.lists {
			t.Errorf("%+v: %d key files read, %d listings, want %d and %d", c, kl.n, kl.lists, c.loads, c.lists)
		}
		r.Close()
	}
	if _, err := Open(ctx, be, "wrong", Options{KDF: &testKDF, PreferKey: first}); !errors.Is(err, ErrWrongPassword) {
		t.Errorf("wrong password with a hint: %v", err)
	}
}

// TestDerivedKey: a key derived ahead from a local copy of the hinted key
// file is used once that key file is read from the repository, never
// when the repository no longer has it (removed: revoked), and a
// derivation that failed costs only the usual order.
func TestDerivedKey(t *testing.T) {
	ctx := context.Background()
	r, dir := newTestRepo(t, Options{})
	keyID, master := r.KeyID(), r.Key()
	other, err := r.AddKey(ctx, "secret")
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	be, err := local.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	calls := 0
	derived := func(k *crypto.Key, err error) func() (*crypto.Key, error) {
		return func() (*crypto.Key, error) { calls++; return k, err }
	}

	kl := &keyLoads{Backend: be}
	r, err = Open(ctx, kl, "secret", Options{KDF: &testKDF, PreferKey: keyID, DerivedKey: derived(master, nil)})
	if err != nil {
		t.Fatal(err)
	}
	if r.KeyID() != keyID || calls != 1 || kl.n != 1 || kl.lists != 0 {
		t.Errorf("opened with %s after %d derivations ahead, %d key reads, %d listings; want %s, 1, 1, 0", r.KeyID(), calls, kl.n, kl.lists, keyID)
	}
	if want, _ := os.ReadFile(filepath.Join(dir, "keys", keyID)); !bytes.Equal(r.KeyFile(), want) {
		t.Error("KeyFile is not the stored key file")
	}
	r.Close()

	calls = 0
	r, err = Open(ctx, be, "secret", Options{KDF: &testKDF, PreferKey: keyID, DerivedKey: derived(nil, ErrWrongPassword)})
	if err != nil {
		t.Fatal(err)
	}
	if r.KeyID() != other || calls != 1 {
		t.Errorf("after a failed derivation ahead: opened with %s (%d calls), want %s", r.KeyID(), calls, other)
	}
	r.Close()

	// Revoked: the key file is gone from the repository; the copy derived
	// ahead must not open it.
	if err := os.Remove(filepath.Join(dir, "keys", keyID)); err != nil {
		t.Fatal(err)
	}
	calls = 0
	r, err = Open(ctx, be, "secret", Options{KDF: &testKDF, PreferKey: keyID, DerivedKey: derived(master, nil)})
	if err != nil {
		t.Fatal(err)
	}
	if r.KeyID() != other || calls != 0 {
		t.Errorf("revoked key: opened with %s after %d derivations ahead, want %s and none", r.KeyID(), calls, other)
	}
	r.Close()
}

// TestInitFrom: a repository made from another cuts and names data as the
// source does (same polynomial, chunking, blob IDs), also after reopening,
// but its master and encryption keys are its own.
func TestInitFrom(t *testing.T) {
	ctx := context.Background()
	src, _ := newTestRepo(t, Options{})
	defer src.Close()
	data := []byte("the same content in both repositories")
	res, err := src.SaveBlob(ctx, index.DataBlob, data)
	if err != nil {
		t.Fatal(err)
	}
	tpl := src.Template()
	dst, dir := newTestRepo(t, Options{From: &tpl})
	if got := dst.Key().BlobID(data); got != res.ID {
		t.Errorf("blob ID %s in the new repository, %s in its source", got.Short(), res.ID.Short())
	}
	if dst.Key().Master() == src.Key().Master() || dst.Config().ID == src.Config().ID {
		t.Error("the new repository shares its source's master key or ID")
	}
	if dst.Config().Polynomial != src.Config().Polynomial || dst.Config().Chunking["database"] != src.Config().Chunking["database"] {
		t.Error("chunking not taken from the source")
	}
	if _, err := dst.Key().Open(nil, src.Key().Seal(nil, data)); err == nil {
		t.Error("the new repository's key opens what its source sealed")
	}
	dst.Close()
	again, err := reopen(t, dir, "secret")
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if got := again.Key().BlobID(data); got != res.ID {
		t.Errorf("after reopening: blob ID %s, want %s", got.Short(), res.ID.Short())
	}
	// Version 1 has no room for a blob-ID key.
	be, _ := local.Open(t.TempDir())
	if _, err := Init(ctx, be, "secret", Options{KDF: &testKDF, From: &tpl, FormatVersion: 1}); err == nil {
		t.Error("version 1 repository made from another")
	}
}
