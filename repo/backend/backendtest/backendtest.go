// Package backendtest is a conformance suite for backend.Backend
// implementations: every backend must pass it.
package backendtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/repo/backend"
)

// Options tune the suite.
type Options struct {
	// ManyObjects is how many objects the listing test stores (default
	// 120). Use more than 1000 for backends whose listings are paginated
	// (S3 pages hold 1000 keys).
	ManyObjects int
	// Workers saving those objects concurrently (default 8).
	Workers int
}

// Run runs the suite with default options. newBackend returns a new, empty
// backend for one subtest; it registers its own cleanup.
func Run(t *testing.T, newBackend func(t *testing.T) backend.Backend) {
	RunWithOptions(t, Options{}, newBackend)
}

// RunWithOptions runs the suite.
func RunWithOptions(t *testing.T, opts Options, newBackend func(t *testing.T) backend.Backend) {
	if opts.ManyObjects <= 0 {
		opts.ManyObjects = 120
	}
	if opts.Workers <= 0 {
		opts.Workers = 8
	}
	open := func(t *testing.T) backend.Backend {
		t.Helper()
		be := newBackend(t)
		if c, ok := be.(interface{ Create(context.Context) error }); ok {
			if err := c.Create(context.Background()); err != nil {
				t.Fatalf("create: %v", err)
			}
		}
		return be
	}
	t.Run("SaveLoad", func(t *testing.T) { testSaveLoad(t, open(t)) })
	t.Run("TooLarge", func(t *testing.T) { testTooLarge(t, open(t)) })
	t.Run("Config", func(t *testing.T) { testConfig(t, open(t)) })
	t.Run("RangedLoad", func(t *testing.T) { testRangedLoad(t, open(t)) })
	t.Run("Open", func(t *testing.T) { testOpen(t, open(t)) })
	t.Run("Stat", func(t *testing.T) { testStat(t, open(t)) })
	t.Run("Missing", func(t *testing.T) { testMissing(t, open(t)) })
	t.Run("Remove", func(t *testing.T) { testRemove(t, open(t)) })
	t.Run("SaveExisting", func(t *testing.T) { testSaveExisting(t, open(t)) })
	t.Run("InvalidNames", func(t *testing.T) { testInvalidNames(t, open(t)) })
	t.Run("ListTypes", func(t *testing.T) { testListTypes(t, open(t)) })
	t.Run("ListMany", func(t *testing.T) { testListMany(t, open(t), opts) })
	t.Run("ListCallbackError", func(t *testing.T) { testListCallbackError(t, open(t)) })
	t.Run("Concurrent", func(t *testing.T) { testConcurrent(t, open(t), opts.Workers) })
	t.Run("Canceled", func(t *testing.T) { testCanceled(t, open(t)) })
	t.Run("CancelDuringSave", func(t *testing.T) { testCancelDuringSave(t, open(t)) })
}

// Random returns n random bytes.
func Random(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// NameOf returns a content-derived object name (hex SHA-256).
func NameOf(data []byte) string {
	s := sha256.Sum256(data)
	return hex.EncodeToString(s[:])
}

func save(t testing.TB, be backend.Backend, typ backend.FileType, data []byte) backend.Handle {
	t.Helper()
	h := backend.Handle{Type: typ, Name: NameOf(data)}
	if err := be.Save(context.Background(), h, data); err != nil {
		t.Fatalf("save %v: %v", h, err)
	}
	return h
}

func load(t testing.TB, be backend.Backend, h backend.Handle, off, n int64) []byte {
	t.Helper()
	b, err := be.Load(context.Background(), h, off, n)
	if err != nil {
		t.Fatalf("load %v %d+%d: %v", h, off, n, err)
	}
	return b
}

func testSaveLoad(t *testing.T, be backend.Backend) {
	for _, typ := range []backend.FileType{backend.Key, backend.DataPack, backend.TreePack, backend.Index, backend.Snapshot} {
		for _, size := range []int{0, 1, 4096, 1<<20 + 17} {
			size = min(size, int(backend.MaxLoadSize(typ)))
			data := Random(t, size)
			h := save(t, be, typ, data)
			got := load(t, be, h, 0, 0)
			if !bytes.Equal(got, data) {
				t.Fatalf("%v: loaded %d bytes, want the %d saved", h, len(got), len(data))
			}
			if got == nil {
				t.Fatalf("%v: Load returned nil for an empty object, want an empty slice", h)
			}
		}
	}
}

// testTooLarge: a whole-object Load of more than its type allows is
// refused (ErrTooLarge) instead of being read into memory.
func testTooLarge(t *testing.T, be backend.Backend) {
	max := backend.MaxLoadSize(backend.Key)
	h := save(t, be, backend.Key, Random(t, int(max)+1))
	if _, err := be.Load(context.Background(), h, 0, 0); !errors.Is(err, backend.ErrTooLarge) {
		t.Fatalf("load of a %d-byte key object: %v, want ErrTooLarge", max+1, err)
	}
	if got := load(t, be, h, 0, 16); len(got) != 16 {
		t.Fatalf("a range of an oversized object: %d bytes", len(got))
	}
}

func testConfig(t *testing.T, be backend.Backend) {
	ctx := context.Background()
	h := backend.Handle{Type: backend.Config}
	if _, err := be.Stat(ctx, h); !errors.Is(err, backend.ErrNotFound) {
		t.Fatalf("stat config of an empty backend: %v, want ErrNotFound", err)
	}
	data := Random(t, 300)
	if err := be.Save(ctx, h, data); err != nil {
		t.Fatal(err)
	}
	if got := load(t, be, h, 0, 0); !bytes.Equal(got, data) {
		t.Fatal("config does not read back")
	}
	fi, err := be.Stat(ctx, h)
	if err != nil || fi.Size != int64(len(data)) {
		t.Fatalf("stat config: %+v, %v", fi, err)
	}
	// config is not an object of any listed type
	for _, typ := range []backend.FileType{backend.Key, backend.DataPack, backend.TreePack, backend.Index, backend.Snapshot} {
		err := be.List(ctx, typ, func(fi backend.FileInfo) error {
			return fmt.Errorf("list %s on a backend holding only config: got %q", typ, fi.Name)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

func testRangedLoad(t *testing.T, be backend.Backend) {
	const size = 100_000
	data := Random(t, size)
	h := save(t, be, backend.DataPack, data)
	cases := []struct {
		off, n int64
		want   []byte
	}{
		{0, 0, data},
		{0, 10, data[:10]},
		{10, 0, data[10:]},
		{12345, 54321, data[12345 : 12345+54321]},
		{size - 1, 1, data[size-1:]},
		{size - 1, 0, data[size-1:]},
		{0, size, data},
		{size, 0, nil},                // offset at the end: nothing
		{size, 5, nil},                // likewise with a length
		{size - 3, 10, data[size-3:]}, // the object is shorter than asked
		{size + 10, 0, nil},           // past the end
		{size + 10, 5, nil},
	}
	for _, c := range cases {
		got := load(t, be, h, c.off, c.n)
		if !bytes.Equal(got, c.want) {
			t.Errorf("load %d+%d: got %d bytes, want %d", c.off, c.n, len(got), len(c.want))
		}
	}
	if _, err := be.Load(context.Background(), h, -1, 0); err == nil {
		t.Error("load at a negative offset succeeded")
	}
	if _, err := be.Load(context.Background(), h, 0, -1); err == nil {
		t.Error("load with a negative length succeeded")
	}
	// an empty object
	e := save(t, be, backend.Index, nil)
	if got := load(t, be, e, 0, 0); len(got) != 0 {
		t.Errorf("empty object: got %d bytes", len(got))
	}
	if got := load(t, be, e, 0, 10); len(got) != 0 {
		t.Errorf("empty object, 10 bytes: got %d bytes", len(got))
	}
}

// testOpen reads the ranges of testRangedLoad as streams, in small reads
// (a restore consumes a pack blob by blob).
func testOpen(t *testing.T, be backend.Backend) {
	ctx := context.Background()
	const size = 300_000
	data := Random(t, size)
	h := save(t, be, backend.DataPack, data)
	cases := []struct {
		off, n int64
		want   []byte
	}{
		{0, 0, data},
		{0, 10, data[:10]},
		{10, 0, data[10:]},
		{12345, 154321, data[12345 : 12345+154321]},
		{size - 1, 1, data[size-1:]},
		{size, 0, nil},
		{size - 3, 10, data[size-3:]},
		{size + 10, 5, nil},
	}
	for _, c := range cases {
		rc, err := be.Open(ctx, h, c.off, c.n)
		if err != nil {
			t.Fatalf("open %d+%d: %v", c.off, c.n, err)
		}
		var got []byte
		buf := make([]byte, 777)
		for {
			n, err := rc.Read(buf)
			got = append(got, buf[:n]...)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("read %d+%d: %v", c.off, c.n, err)
			}
		}
		if err := rc.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
		if !bytes.Equal(got, c.want) {
			t.Errorf("open %d+%d: got %d bytes, want %d", c.off, c.n, len(got), len(c.want))
		}
	}
	// Closing early is fine.
	rc, err := be.Open(ctx, h, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(rc, make([]byte, 100)); err != nil {
		t.Fatal(err)
	}
	rc.Close()
	missing := backend.Handle{Type: backend.DataPack, Name: NameOf(Random(t, 8))}
	if _, err := be.Open(ctx, missing, 0, 0); !errors.Is(err, backend.ErrNotFound) {
		t.Errorf("open missing: %v, want ErrNotFound", err)
	}
	if _, err := be.Open(ctx, h, -1, 0); err == nil {
		t.Error("open at a negative offset succeeded")
	}
}

func testStat(t *testing.T, be backend.Backend) {
	for _, size := range []int{0, 1, 70_000} {
		h := save(t, be, backend.DataPack, Random(t, size))
		fi, err := be.Stat(context.Background(), h)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size != int64(size) || fi.Name != h.Name {
			t.Errorf("stat %v: %+v, want size %d", h, fi, size)
		}
	}
}

func testMissing(t *testing.T, be backend.Backend) {
	ctx := context.Background()
	save(t, be, backend.DataPack, Random(t, 10)) // the type's directory exists
	for _, typ := range []backend.FileType{backend.Config, backend.Key, backend.DataPack, backend.TreePack, backend.Index, backend.Snapshot} {
		h := backend.Handle{Type: typ, Name: NameOf(Random(t, 8))}
		if typ == backend.Config {
			h.Name = ""
		}
		if _, err := be.Load(ctx, h, 0, 0); !errors.Is(err, backend.ErrNotFound) {
			t.Errorf("load missing %v: %v, want ErrNotFound", h, err)
		}
		if _, err := be.Load(ctx, h, 5, 10); !errors.Is(err, backend.ErrNotFound) {
			t.Errorf("ranged load missing %v: %v, want ErrNotFound", h, err)
		}
		if _, err := be.Stat(ctx, h); !errors.Is(err, backend.ErrNotFound) {
			t.Errorf("stat missing %v: %v, want ErrNotFound", h, err)
		}
		if !backend.IsNotFound(func() error { _, err := be.Stat(ctx, h); return err }()) {
			t.Errorf("IsNotFound is false for a missing %v", h)
		}
	}
}

func testRemove(t *testing.T, be backend.Backend) {
	ctx := context.Background()
	h := save(t, be, backend.Snapshot, Random(t, 100))
	keep := save(t, be, backend.Snapshot, Random(t, 100))
	if err := be.Remove(ctx, h); err != nil {
		t.Fatal(err)
	}
	if _, err := be.Stat(ctx, h); !errors.Is(err, backend.ErrNotFound) {
		t.Fatalf("stat after remove: %v", err)
	}
	if err := be.Remove(ctx, h); err != nil {
		t.Fatalf("removing a removed object: %v", err)
	}
	missing := backend.Handle{Type: backend.DataPack, Name: NameOf(Random(t, 8))}
	if err := be.Remove(ctx, missing); err != nil {
		t.Fatalf("removing a missing object: %v", err)
	}
	names := listNames(t, be, backend.Snapshot)
	if len(names) != 1 || names[0] != keep.Name {
		t.Fatalf("after remove, snapshots are %v, want [%s]", names, keep.Name)
	}
	if got := load(t, be, keep, 0, 0); len(got) != 100 {
		t.Fatal("remove touched another object")
	}
}

func testSaveExisting(t *testing.T, be backend.Backend) {
	ctx := context.Background()
	first := Random(t, 5000)
	h := save(t, be, backend.DataPack, first)
	if err := be.Save(ctx, h, first); err != nil {
		t.Fatalf("saving the same object again: %v", err)
	}
	// Names are content hashes, so different bytes under one name do not
	// happen in practice; a backend must still keep the first.
	if err := be.Save(ctx, h, Random(t, 3000)); err != nil {
		t.Fatalf("saving an existing name again: %v", err)
	}
	if got := load(t, be, h, 0, 0); !bytes.Equal(got, first) {
		t.Fatalf("an existing object changed: got %d bytes, want the first %d", len(got), len(first))
	}
}

func testInvalidNames(t *testing.T, be backend.Backend) {
	ctx := context.Background()
	for _, h := range []backend.Handle{
		{Type: backend.Key, Name: ""},
		{Type: backend.Key, Name: "a/b"},
		{Type: backend.Index, Name: ".."},
		{Type: backend.DataPack, Name: "a"},
		{Type: backend.Snapshot, Name: `a\b`},
	} {
		if err := be.Save(ctx, h, []byte("x")); err == nil {
			t.Errorf("save %q/%q succeeded", h.Type, h.Name)
		}
		if _, err := be.Load(ctx, h, 0, 0); err == nil {
			t.Errorf("load %q/%q succeeded", h.Type, h.Name)
		}
	}
}

func listNames(t testing.TB, be backend.Backend, typ backend.FileType) []string {
	t.Helper()
	var names []string
	var mu sync.Mutex
	err := be.List(context.Background(), typ, func(fi backend.FileInfo) error {
		mu.Lock()
		names = append(names, fi.Name)
		mu.Unlock()
		return nil
	})
	if err != nil {
		t.Fatalf("list %s: %v", typ, err)
	}
	sort.Strings(names)
	return names
}

func testListTypes(t *testing.T, be backend.Backend) {
	ctx := context.Background()
	want := map[backend.FileType]map[string]int64{}
	for i, typ := range []backend.FileType{backend.Key, backend.DataPack, backend.TreePack, backend.Index, backend.Snapshot} {
		want[typ] = map[string]int64{}
		for j := 0; j < 3+i; j++ {
			data := Random(t, 10*j+i)
			h := save(t, be, typ, data)
			want[typ][h.Name] = int64(len(data))
		}
	}
	if err := be.Save(ctx, backend.Handle{Type: backend.Config}, []byte("config")); err != nil {
		t.Fatal(err)
	}
	for typ, objs := range want {
		got := map[string]int64{}
		err := be.List(ctx, typ, func(fi backend.FileInfo) error {
			if _, dup := got[fi.Name]; dup {
				return fmt.Errorf("%s listed twice", fi.Name)
			}
			got[fi.Name] = fi.Size
			return nil
		})
		if err != nil {
			t.Fatalf("list %s: %v", typ, err)
		}
		if len(got) != len(objs) {
			t.Errorf("list %s: %d objects, want %d", typ, len(got), len(objs))
		}
		for name, size := range objs {
			if s, ok := got[name]; !ok || s != size {
				t.Errorf("list %s: %s has size %d (listed %v), want %d", typ, name, s, ok, size)
			}
		}
	}
}

// saveMany stores n small objects of type typ with w workers.
func saveMany(t *testing.T, be backend.Backend, typ backend.FileType, n, w int) map[string]bool {
	t.Helper()
	names := make(map[string]bool, n)
	datas := make([][]byte, n)
	for i := range datas {
		datas[i] = Random(t, 1+i%97)
		names[NameOf(datas[i])] = true
	}
	jobs := make(chan []byte)
	errs := make(chan error, w)
	var wg sync.WaitGroup
	for i := 0; i < w; i++ {
		wg.Go(func() {
			for d := range jobs {
				h := backend.Handle{Type: typ, Name: NameOf(d)}
				if err := be.Save(context.Background(), h, d); err != nil {
					errs <- err
					for range jobs {
					}
					return
				}
			}
		})
	}
	for _, d := range datas {
		jobs <- d
	}
	close(jobs)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return names
}

func testListMany(t *testing.T, be backend.Backend, opts Options) {
	start := time.Now()
	want := saveMany(t, be, backend.DataPack, opts.ManyObjects, opts.Workers)
	t.Logf("saved %d objects in %v", opts.ManyObjects, time.Since(start).Round(time.Millisecond))
	got := listNames(t, be, backend.DataPack)
	if len(got) != len(want) {
		t.Fatalf("listed %d objects, want %d", len(got), len(want))
	}
	for i, n := range got {
		if !want[n] {
			t.Fatalf("listed unknown object %q", n)
		}
		if i > 0 && got[i-1] == n {
			t.Fatalf("%q listed twice", n)
		}
	}
}

func testListCallbackError(t *testing.T, be backend.Backend) {
	saveMany(t, be, backend.Index, 10, 4)
	stop := errors.New("stop here")
	calls := 0
	err := be.List(context.Background(), backend.Index, func(backend.FileInfo) error {
		calls++
		if calls == 3 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) {
		t.Fatalf("list returned %v, want the callback's error", err)
	}
	if calls != 3 {
		t.Fatalf("callback called %d times after failing on the 3rd", calls)
	}
}

func testConcurrent(t *testing.T, be backend.Backend, workers int) {
	ctx := context.Background()
	shared := Random(t, 200_000)
	sh := backend.Handle{Type: backend.DataPack, Name: NameOf(shared)}
	var wg sync.WaitGroup
	errs := make(chan error, 4*workers)
	for i := 0; i < workers; i++ {
		own := Random(t, 50_000+i)
		wg.Go(func() {
			// everyone saves the same object, and one of its own
			if err := be.Save(ctx, sh, shared); err != nil {
				errs <- err
				return
			}
			h := backend.Handle{Type: backend.TreePack, Name: NameOf(own)}
			if err := be.Save(ctx, h, own); err != nil {
				errs <- err
				return
			}
			for j := 0; j < 3; j++ {
				got, err := be.Load(ctx, h, int64(j*1000), 1000)
				if err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(got, own[j*1000:(j+1)*1000]) {
					errs <- fmt.Errorf("concurrent ranged load of %v returned other bytes", h)
					return
				}
			}
			got, err := be.Load(ctx, sh, 0, 0)
			if err != nil {
				errs <- err
				return
			}
			if !bytes.Equal(got, shared) {
				errs <- errors.New("the object saved concurrently does not read back")
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := len(listNames(t, be, backend.TreePack)); n != workers {
		t.Errorf("%d tree packs listed, want %d", n, workers)
	}
}

// testCanceled: operations given a canceled context fail with its error and
// change nothing. Stat and Remove may still succeed (they are quick).
func testCanceled(t *testing.T, be backend.Backend) {
	existing := save(t, be, backend.Key, Random(t, 100))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	data := Random(t, 1000)
	h := backend.Handle{Type: backend.Key, Name: NameOf(data)}
	if err := be.Save(ctx, h, data); !errors.Is(err, context.Canceled) {
		t.Errorf("save with a canceled context: %v, want context.Canceled", err)
	}
	if _, err := be.Stat(context.Background(), h); !errors.Is(err, backend.ErrNotFound) {
		t.Errorf("a save with a canceled context stored the object (stat: %v)", err)
	}
	if _, err := be.Load(ctx, existing, 0, 0); !errors.Is(err, context.Canceled) {
		t.Errorf("load with a canceled context: %v, want context.Canceled", err)
	}
	err := be.List(ctx, backend.Key, func(backend.FileInfo) error { return nil })
	if !errors.Is(err, context.Canceled) {
		t.Errorf("list with a canceled context: %v, want context.Canceled", err)
	}
	if _, err := be.Stat(ctx, existing); err != nil && !errors.Is(err, context.Canceled) {
		t.Errorf("stat with a canceled context: %v, want nil or context.Canceled", err)
	}
	if err := be.Remove(ctx, existing); err != nil && !errors.Is(err, context.Canceled) {
		t.Errorf("remove with a canceled context: %v, want nil or context.Canceled", err)
	}
}

// testCancelDuringSave cancels large saves at various moments: each either
// succeeds or fails with the context's error, and the object is then
// either complete or absent, never partial.
func testCancelDuringSave(t *testing.T, be backend.Backend) {
	for _, after := range []time.Duration{0, time.Millisecond, 5 * time.Millisecond, 20 * time.Millisecond} {
		data := Random(t, 8<<20)
		h := backend.Handle{Type: backend.DataPack, Name: NameOf(data)}
		ctx, cancel := context.WithCancel(context.Background())
		timer := time.AfterFunc(after, cancel)
		start := time.Now()
		err := be.Save(ctx, h, data)
		took := time.Since(start)
		timer.Stop()
		cancel()
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Fatalf("save canceled after %v: %v, want nil or context.Canceled", after, err)
		}
		if err != nil && took > after+5*time.Second {
			t.Errorf("save canceled after %v returned only after %v", after, took)
		}
		got, lerr := be.Load(context.Background(), h, 0, 0)
		switch {
		case errors.Is(lerr, backend.ErrNotFound):
			if err == nil {
				t.Fatalf("save returned nil but the object is missing")
			}
		case lerr != nil:
			t.Fatal(lerr)
		case !bytes.Equal(got, data):
			t.Fatalf("save canceled after %v left a partial object (%d of %d bytes)", after, len(got), len(data))
		}
	}
}
