package cache

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/crypto"
	"github.com/cairn-backup/cairn/repo/backend"
	"github.com/cairn-backup/cairn/repo/backend/local"
)

// counting wraps a backend and counts the loads of each object.
type counting struct {
	backend.Backend
	mu    sync.Mutex
	loads map[backend.Handle]int
}

func (c *counting) Load(ctx context.Context, h backend.Handle, off, n int64) ([]byte, error) {
	c.mu.Lock()
	c.loads[h]++
	c.mu.Unlock()
	return c.Backend.Load(ctx, h, off, n)
}

func (c *counting) count(h backend.Handle) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.loads[h]
}

func randomBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// setup returns a local repository directory behind a counting backend,
// and a cache in front of it.
func setup(t *testing.T) (*counting, *Backend, *Cache) {
	t.Helper()
	lb, err := local.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := lb.Create(context.Background()); err != nil {
		t.Fatal(err)
	}
	cb := &counting{Backend: lb, loads: map[backend.Handle]int{}}
	c, err := Open(t.TempDir(), "0123abcd", func(err error) { t.Logf("cache warning: %v", err) })
	if err != nil {
		t.Fatal(err)
	}
	return cb, Wrap(cb, c), c
}

// put stores an object in the repository behind the cache.
func put(t *testing.T, be backend.Backend, typ backend.FileType, data []byte) backend.Handle {
	t.Helper()
	h := backend.Handle{Type: typ, Name: crypto.Hash(data).String()}
	if err := be.Save(context.Background(), h, data); err != nil {
		t.Fatal(err)
	}
	return h
}

func mustLoad(t *testing.T, be backend.Backend, h backend.Handle, off, n int64) []byte {
	t.Helper()
	b, err := be.Load(context.Background(), h, off, n)
	if err != nil {
		t.Fatalf("load %v: %v", h, err)
	}
	return b
}

func TestTreePackFetchedOnceWhole(t *testing.T) {
	inner, cb, c := setup(t)
	data := randomBytes(t, 300_000)
	h := put(t, inner.Backend, backend.TreePack, data)
	// Many concurrent ranged reads of one pack: one whole download.
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			off := int64(i * 10_000)
			got, err := cb.Load(context.Background(), h, off, 5000)
			if err != nil || !bytes.Equal(got, data[off:off+5000]) {
				t.Errorf("load %d: %v", off, err)
			}
		})
	}
	wg.Wait()
	if n := inner.count(h); n != 1 {
		t.Fatalf("%d loads from the repository, want 1", n)
	}
	if _, err := os.Stat(c.path(h)); err != nil {
		t.Fatalf("tree pack not in the cache: %v", err)
	}
	// Another process (a new Cache on the same directory) reads it from disk.
	c2, err := Open(filepath.Dir(c.Dir()), "0123abcd", nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := mustLoad(t, Wrap(inner, c2), h, 100, 0); !bytes.Equal(got, data[100:]) {
		t.Fatal("second process read wrong bytes")
	}
	if n := inner.count(h); n != 1 {
		t.Fatalf("%d loads from the repository after a second process, want 1", n)
	}
	// Streaming reads come from the cache too.
	rc, err := cb.Open(context.Background(), h, 10, 20)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(rc)
	if !bytes.Equal(got, data[10:30]) {
		t.Fatal("open: wrong bytes")
	}
}

func TestDataPacksPassThrough(t *testing.T) {
	inner, cb, c := setup(t)
	data := randomBytes(t, 50_000)
	h := put(t, cb, backend.DataPack, data)
	for range 3 {
		if got := mustLoad(t, cb, h, 5, 10); !bytes.Equal(got, data[5:15]) {
			t.Fatal("wrong bytes")
		}
	}
	if n := inner.count(h); n != 3 {
		t.Fatalf("%d loads of a data pack, want 3 (never cached)", n)
	}
	if _, err := os.Stat(c.path(h)); err == nil {
		t.Fatal("a data pack was cached")
	}
}

func TestWritesGoToTheCache(t *testing.T) {
	inner, cb, _ := setup(t)
	for _, typ := range []backend.FileType{backend.Index, backend.Snapshot, backend.TreePack} {
		data := randomBytes(t, 1000)
		h := put(t, cb, typ, data)
		if got := mustLoad(t, cb, h, 0, 0); !bytes.Equal(got, data) {
			t.Fatalf("%s: wrong bytes", typ)
		}
		if n := inner.count(h); n != 0 {
			t.Fatalf("%s: read from the repository %d times after being written through the cache", typ, n)
		}
	}
	// SaveFile (how packs are uploaded) keeps a copy too.
	data := randomBytes(t, 2000)
	f, err := os.CreateTemp(cb.TempDir(), ".tmp-pack-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	h := backend.Handle{Type: backend.TreePack, Name: crypto.Hash(data).String()}
	if err := cb.SaveFile(context.Background(), h, f, int64(len(data))); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if got := mustLoad(t, cb, h, 0, 0); !bytes.Equal(got, data) || inner.count(h) != 0 {
		t.Fatal("a tree pack saved from a file was not cached")
	}
}

// TestTreePacksKeptOpen: tree packs read from the cache stay open for the
// next read, at most maxOpenPacks of them; every read returns the right
// bytes; a pack the cache drops is never served from its open file; Close
// closes them and the cache goes on working.
func TestTreePacksKeptOpen(t *testing.T) {
	inner, cb, c := setup(t)
	var handles []backend.Handle
	var datas [][]byte
	for range maxOpenPacks + 6 {
		data := randomBytes(t, 3000)
		handles = append(handles, put(t, inner.Backend, backend.TreePack, data))
		datas = append(datas, data)
	}
	for round := range 3 {
		for i, h := range handles {
			off := int64(round * 700)
			if got := mustLoad(t, cb, h, off, 500); !bytes.Equal(got, datas[i][off:off+500]) {
				t.Fatalf("round %d, pack %d: wrong bytes", round, i)
			}
		}
	}
	for _, h := range handles {
		if n := inner.count(h); n != 1 {
			t.Fatalf("%d loads of %v from the repository, want 1", n, h)
		}
	}
	c.mu.Lock()
	open := len(c.open)
	_, firstOpen := c.open[handles[0]]
	c.mu.Unlock()
	if open != maxOpenPacks || !firstOpen {
		t.Fatalf("%d packs kept open (the first: %v), want %d", open, firstOpen, maxOpenPacks)
	}
	// The cache drops the first pack (a prune elsewhere): it is fetched
	// again, not read from the file it had open.
	c.KeepOnly(backend.TreePack, time.Now().Add(time.Hour), func(name string) bool { return name != handles[0].Name })
	if _, err := os.Stat(c.path(handles[0])); !os.IsNotExist(err) {
		t.Fatalf("dropped pack still on disk: %v", err)
	}
	if got := mustLoad(t, cb, handles[0], 0, 0); !bytes.Equal(got, datas[0]) {
		t.Fatal("dropped pack: wrong bytes")
	}
	if n := inner.count(handles[0]); n != 2 {
		t.Fatalf("%d loads of the dropped pack, want 2 (fetched again)", n)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	open = len(c.open)
	c.mu.Unlock()
	if open != 0 {
		t.Fatalf("%d packs open after Close", open)
	}
	for i, h := range handles {
		if got := mustLoad(t, cb, h, 0, 0); !bytes.Equal(got, datas[i]) {
			t.Fatalf("after Close, pack %d: wrong bytes", i)
		}
	}
	if n := inner.count(handles[1]); n != 1 {
		t.Fatalf("%d loads after Close, want 1 (read from disk)", n)
	}
}

func TestDamagedCacheFileIsRefetched(t *testing.T) {
	for _, typ := range []backend.FileType{backend.Index, backend.Snapshot, backend.TreePack} {
		t.Run(string(typ), func(t *testing.T) {
			inner, _, c := setup(t)
			data := randomBytes(t, 5000)
			h := put(t, inner.Backend, typ, data)
			cb := Wrap(inner, c)
			mustLoad(t, cb, h, 0, 0)
			// Flip a byte on disk, then read with a new process's cache.
			p := c.path(h)
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			b[100] ^= 1
			if err := os.WriteFile(p, b, 0o600); err != nil {
				t.Fatal(err)
			}
			c2, err := Open(filepath.Dir(c.Dir()), "0123abcd", nil)
			if err != nil {
				t.Fatal(err)
			}
			if got := mustLoad(t, Wrap(inner, c2), h, 0, 0); !bytes.Equal(got, data) {
				t.Fatal("the damaged cached copy was served")
			}
			if n := inner.count(h); n != 2 {
				t.Fatalf("%d loads from the repository, want 2 (the damaged copy refetched)", n)
			}
			if b, err := os.ReadFile(p); err != nil || !bytes.Equal(b, data) {
				t.Fatalf("the cache was not repaired: %v", err)
			}
		})
	}
}

func TestDamagedRepositoryObjectIsNotCached(t *testing.T) {
	inner, cb, c := setup(t)
	data := randomBytes(t, 5000)
	// Stored under a name that does not match: damage in the repository.
	h := backend.Handle{Type: backend.TreePack, Name: crypto.Hash([]byte("other")).String()}
	if err := inner.Save(context.Background(), h, data); err != nil {
		t.Fatal(err)
	}
	if got := mustLoad(t, cb, h, 10, 10); !bytes.Equal(got, data[10:20]) {
		t.Fatal("the repository's bytes were not returned as they are")
	}
	if _, err := os.Stat(c.path(h)); err == nil {
		t.Fatal("an object that does not match its name was cached")
	}
}

func TestListDropsRemovedObjects(t *testing.T) {
	inner, cb, c := setup(t)
	keep := put(t, cb, backend.Snapshot, randomBytes(t, 100))
	gone := put(t, cb, backend.Snapshot, randomBytes(t, 100))
	// Another host removes a snapshot.
	if err := inner.Remove(context.Background(), gone); err != nil {
		t.Fatal(err)
	}
	past := time.Now().Add(-time.Minute)
	for _, h := range []backend.Handle{keep, gone} {
		_ = os.Chtimes(c.path(h), past, past)
	}
	if err := cb.List(context.Background(), backend.Snapshot, func(backend.FileInfo) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(c.path(gone)); err == nil {
		t.Fatal("a removed snapshot stayed in the cache")
	}
	if _, err := os.Stat(c.path(keep)); err != nil {
		t.Fatal("a listed snapshot was dropped from the cache")
	}
	// A failed listing drops nothing.
	failing := errors.New("stop")
	if err := cb.List(context.Background(), backend.Snapshot, func(backend.FileInfo) error { return failing }); !errors.Is(err, failing) {
		t.Fatal(err)
	}
	if _, err := os.Stat(c.path(keep)); err != nil {
		t.Fatal("an interrupted listing dropped a cached object")
	}
	// Removing through the cache drops the copy at once.
	if err := cb.Remove(context.Background(), keep); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(c.path(keep)); err == nil {
		t.Fatal("a removed object stayed in the cache")
	}
}

func TestKeepOnlySparesNewFiles(t *testing.T) {
	_, cb, c := setup(t)
	old := put(t, cb, backend.TreePack, randomBytes(t, 100))
	past := time.Now().Add(-time.Minute)
	_ = os.Chtimes(c.path(old), past, past)
	since := time.Now().Add(-time.Second)
	fresh := put(t, cb, backend.TreePack, randomBytes(t, 100))
	c.KeepOnly(backend.TreePack, since, func(string) bool { return false })
	if _, err := os.Stat(c.path(old)); err == nil {
		t.Fatal("an unindexed tree pack stayed")
	}
	if _, err := os.Stat(c.path(fresh)); err != nil {
		t.Fatal("a tree pack written after the index was read was dropped")
	}
}

func TestUnwritableCache(t *testing.T) {
	base := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(base, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	// A regular file where the directory should be: not creatable, even
	// for root.
	if _, err := Open(filepath.Join(base, "cache"), "0123abcd", nil); err == nil {
		t.Fatal("a cache below a regular file opened")
	}
	// A cache whose writes start failing later warns once and goes on.
	inner, _, _ := setup(t)
	var warnings atomic.Int32
	c, err := Open(t.TempDir(), "0123abcd", func(error) { warnings.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	cb := Wrap(inner, c)
	if err := os.RemoveAll(filepath.Join(c.Dir(), "tree")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(c.Dir(), "tree"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		data := randomBytes(t, 1000)
		h := put(t, inner.Backend, backend.TreePack, data)
		if got := mustLoad(t, cb, h, 10, 10); !bytes.Equal(got, data[10:20]) {
			t.Fatal("wrong bytes from a broken cache")
		}
	}
	if n := warnings.Load(); n != 1 {
		t.Fatalf("%d warnings, want 1", n)
	}
}

func TestTemporaryCacheIsRemoved(t *testing.T) {
	inner, _, _ := setup(t)
	c, err := OpenTemp(nil)
	if err != nil {
		t.Fatal(err)
	}
	cb := Wrap(inner, c)
	h := put(t, cb, backend.Index, randomBytes(t, 10))
	if _, err := os.Stat(c.path(h)); err != nil {
		t.Fatal(err)
	}
	if err := cb.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Dir(c.Dir())); err == nil {
		t.Fatal("the temporary cache outlived its backend")
	}
}

func TestPrefetch(t *testing.T) {
	inner, cb, c := setup(t)
	var hs []backend.Handle
	for range 12 {
		hs = append(hs, put(t, inner.Backend, backend.TreePack, randomBytes(t, 10_000)))
	}
	cb.Prefetch(context.Background(), hs)
	cb.prefetchWG.Wait()
	fetched := 0
	for _, h := range hs {
		if _, err := os.Stat(c.path(h)); err == nil {
			fetched++
		}
		if n := inner.count(h); n > 1 {
			t.Fatalf("%v fetched %d times", h, n)
		}
	}
	// Some ran in the background (at most maxPrefetch at once; the rest
	// are left to readers).
	if fetched == 0 {
		t.Fatalf("%d of %d packs prefetched", fetched, len(hs))
	}
	for _, h := range hs {
		mustLoad(t, cb, h, 0, 10)
		if n := inner.count(h); n != 1 {
			t.Fatalf("%v loaded %d times, want 1", h, n)
		}
	}
}
