package repo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/crypto"
	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/repo/backend"
)

// readFixture stores full blobs and delta blobs against them across
// several small packs, and returns the IDs (deltas interleaved with full
// blobs, some IDs repeated) with their plaintexts.
func readFixture(t *testing.T) (*Repository, string, []crypto.ID, map[crypto.ID][]byte) {
	t.Helper()
	ctx := context.Background()
	r, dir := newTestRepo(t, Options{PackSize: 1 << 20})
	rng := rand.New(rand.NewPCG(3, 4))
	plain := map[crypto.ID][]byte{}
	var bases, ids []crypto.ID
	for i := range 40 {
		b := dumpRows(i*1000, i*1000+600, 0, nil)
		res, err := r.SaveBlob(ctx, index.DataBlob, b)
		if err != nil {
			t.Fatal(err)
		}
		plain[res.ID] = b
		bases = append(bases, res.ID)
		// Incompressible filler between the bases, so windows have gaps.
		filler := make([]byte, 20_000+rng.IntN(60_000))
		for j := range filler {
			filler[j] = byte(rng.Uint32())
		}
		fres, err := r.SaveBlob(ctx, index.DataBlob, filler)
		if err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			// Raw (incompressible) blobs are decrypted in place in
			// their read window.
			plain[fres.ID] = filler
			ids = append(ids, fres.ID)
		}
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	deltas := 0
	for i, base := range bases {
		v2 := dumpRows(i*1000, i*1000+600, 37, map[int]bool{i*1000 + 5: true})
		id := r.Key().BlobID(v2)
		res, err := r.SaveDataBlob(ctx, id, v2, cands(base))
		if err != nil {
			t.Fatal(err)
		}
		if !res.Base.IsNull() {
			deltas++
		}
		plain[id] = v2
		ids = append(ids, id)
		if i%3 == 0 {
			ids = append(ids, base)
		}
		if i%7 == 0 {
			ids = append(ids, id) // the same blob twice
		}
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if deltas < len(bases)/2 {
		t.Fatalf("only %d deltas stored", deltas)
	}
	return r, dir, ids, plain
}

func TestReadBlobs(t *testing.T) {
	r, _, ids, plain := readFixture(t)
	locs := make([]index.Location, len(ids))
	for i, id := range ids {
		var ok bool
		if locs[i], ok = r.Lookup(id); !ok {
			t.Fatalf("blob %d not in the index", i)
		}
	}
	for _, o := range []ReadOptions{
		{Ordered: true},
		{},
		{Ordered: true, Downloads: 1, Decoders: 1},
		{Downloads: 8, Decoders: 3},
		{Ordered: true, Budget: 1}, // every window over budget: progress only
		{Budget: 1, Downloads: 3},
		{Locations: locs},                  // looked up by the caller
		{Locations: locs[:1], Decoders: 2}, // not one per ID: ignored
	} {
		var mu sync.Mutex
		var order []int
		got := make([][]byte, len(ids))
		err := r.ReadBlobs(context.Background(), ids, o, func(i int, b []byte, err error) error {
			if err != nil {
				return err
			}
			// A slow consumer: the plaintext must stay valid for the
			// whole call while other windows download.
			time.Sleep(200 * time.Microsecond)
			mu.Lock()
			defer mu.Unlock()
			order = append(order, i)
			got[i] = bytes.Clone(b)
			return nil
		})
		if err != nil {
			t.Fatalf("%+v: %v", o, err)
		}
		for i, id := range ids {
			if !bytes.Equal(got[i], plain[id]) {
				t.Fatalf("%+v: blob %d (%s) differs", o, i, id.Short())
			}
		}
		if o.Ordered {
			for i, j := range order {
				if i != j {
					t.Fatalf("%+v: call %d was for blob %d", o, i, j)
				}
			}
		}
	}
}

func TestReadBlobsErrors(t *testing.T) {
	r, dir, ids, _ := readFixture(t)
	ctx := context.Background()
	missing := crypto.ID{9, 9}
	withMissing := append([]crypto.ID{missing}, ids...)
	errs := map[int]error{}
	var mu sync.Mutex // fn runs concurrently unless Ordered
	err := r.ReadBlobs(ctx, withMissing, ReadOptions{}, func(i int, _ []byte, err error) error {
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			errs[i] = err
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(errs) != 1 || !errors.Is(errs[0], ErrBlobNotFound) {
		t.Fatalf("errors %v, want ErrBlobNotFound for blob 0 only", errs)
	}

	// fn's error stops the read and is returned.
	stop := errors.New("enough")
	calls := 0
	err = r.ReadBlobs(ctx, ids, ReadOptions{Ordered: true}, func(i int, _ []byte, err error) error {
		calls++
		if i == 3 {
			return stop
		}
		return err
	})
	if !errors.Is(err, stop) || calls != 4 {
		t.Fatalf("stopped read: %v after %d calls", err, calls)
	}

	// A canceled context ends the read with its error.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := r.ReadBlobs(cctx, ids, ReadOptions{}, func(int, []byte, error) error { return nil }); !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled read: %v", err)
	}

	// A truncated pack: every blob past the cut reports damage, the others
	// are read.
	loc, _ := r.Lookup(ids[0])
	p := filepath.Join(dir, string(backend.DataPack), loc.Pack.String()[:2], loc.Pack.String())
	if err := os.Truncate(p, int64(loc.Offset)+int64(loc.Length)/2); err != nil {
		t.Fatal(err)
	}
	var bad, good int
	err = r.ReadBlobs(ctx, ids, ReadOptions{}, func(i int, _ []byte, err error) error {
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			if !errors.Is(err, ErrBlobCorrupt) {
				t.Errorf("blob %d: %v, want ErrBlobCorrupt", i, err)
			}
			bad++
		} else {
			good++
		}
		return nil
	})
	if err != nil || bad == 0 || good == 0 {
		t.Fatalf("truncated pack: %v, %d bad, %d good", err, bad, good)
	}
}

// TestReadBlobsSlowConsumer checks that a blob decrypted in place in its
// read window stays intact while fn runs, even when the window's buffer is
// the next download's as soon as fn returns.
func TestReadBlobsSlowConsumer(t *testing.T) {
	ctx := context.Background()
	r, _ := newTestRepo(t, Options{PackSize: 1 << 20})
	rng := rand.New(rand.NewPCG(5, 6))
	var ids []crypto.ID
	plain := map[crypto.ID][]byte{}
	for i := range 120 {
		// Incompressible (stored raw), of sizes that vary as files do, so
		// that windows of many sizes compete for buffers.
		b := make([]byte, []int{300_000, 20_000, 900_000, 60_000, 500_000}[i%5]*(1+i/40))
		for j := range b {
			b[j] = byte(rng.Uint32())
		}
		res, err := r.SaveBlob(ctx, index.DataBlob, b)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, res.ID)
		plain[res.ID] = b
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	// A budget of about one window: the next starts as soon as one is freed,
	// and window buffers, in use or kept for reuse, stay within bounds
	// however many downloads there are.
	for _, o := range []ReadOptions{{Downloads: 2, Budget: 1 << 20, Decoders: 1}, {Downloads: 3, Budget: 1 << 20, Ordered: true}, {Downloads: 8, Budget: 1 << 20}, {Downloads: 8, Budget: 2 << 20, Ordered: true}} {
		br, err := r.readBlobs(ctx, ids, o, func(i int, b []byte, err error) error {
			if err != nil {
				return err
			}
			head := bytes.Clone(b[:64])
			time.Sleep(2 * time.Millisecond)
			if !bytes.Equal(b, plain[ids[i]]) || !bytes.Equal(head, b[:64]) {
				return fmt.Errorf("blob %d changed under fn", i)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("%+v: %v", o, err)
		}
		if len(br.windows) < 6 {
			t.Fatalf("only %d windows: the test needs many", len(br.windows))
		}
		// In use and kept for reuse together: the budget, exceeded by the
		// window the oldest blob needs and by a reused buffer larger than
		// its window.
		t.Logf("%+v: peak %d largest %d windows %d", o, br.peak, br.largest, len(br.windows))
		if bound := o.Budget + 2*br.largest; br.peak > bound {
			t.Errorf("%+v: window buffers peaked at %d bytes, over %d (the budget %d and twice the largest window %d)", o, br.peak, bound, o.Budget, br.largest)
		}
	}
}
