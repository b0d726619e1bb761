package index

import (
	"errors"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/cairn-backup/cairn/crypto"
)

func randID(rng *rand.Rand) crypto.ID {
	var id crypto.ID
	for i := 0; i < crypto.IDSize; i += 8 {
		v := rng.Uint64()
		for j := 0; j < 8; j++ {
			id[i+j] = byte(v >> (8 * j))
		}
	}
	return id
}

func TestLocEncoding(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	cases := []loc{
		{}, {pack: maxPackNum, offset: maxOffset, length: maxLength},
		{pack: 1 << 15, offset: 1, length: 1}, {pack: 1<<15 - 1, offset: maxOffset, length: 0},
		{pack: 0x5a5a5a, offset: 0x1234567, length: 0xabcdef},
	}
	for i := 0; i < 1000; i++ {
		cases = append(cases, loc{pack: rng.Uint32N(maxPackNum + 1), offset: rng.Uint32N(maxOffset + 1), length: rng.Uint32N(maxLength + 1)})
	}
	var b [9]byte
	for _, l := range cases {
		if !l.fits() {
			t.Fatalf("%+v should fit", l)
		}
		putLoc(b[:], l)
		if got := getLoc(b[:]); got != l {
			t.Fatalf("putLoc/getLoc: %+v -> %+v", l, got)
		}
	}
	for _, l := range []loc{{pack: maxPackNum + 1}, {offset: maxOffset + 1}, {length: maxLength + 1}, {offset: 1<<32 - 1, length: 1<<32 - 1}} {
		if l.fits() {
			t.Fatalf("%+v should not fit", l)
		}
	}
}

// buildIndex adds nblobs random blobs in packs of perPack blobs and returns
// the index with the expected location of every blob. Every 97th blob gets a
// location that does not fit the compact layout.
func buildIndex(t testing.TB, rng *rand.Rand, nblobs, perPack int) (*Index, map[crypto.ID]Location) {
	idx := New()
	want := make(map[crypto.ID]Location, nblobs)
	for added := 0; added < nblobs; {
		p := PackEntry{ID: randID(rng), Type: BlobType(rng.IntN(2))}
		var off uint32
		for j := 0; j < perPack && added < nblobs; j++ {
			e := BlobEntry{ID: randID(rng), Offset: off, Length: 41 + rng.Uint32N(64<<10)}
			switch added % 97 {
			case 13:
				e.Offset = maxOffset + 1 + rng.Uint32N(1<<30)
			case 31:
				e.Length = maxLength + 1 + rng.Uint32N(1<<30)
			case 53:
				e.Offset, e.Length = 1<<32-1, 1<<32-1
			case 71:
				e.Offset, e.Length = maxOffset, maxLength // largest values that fit
			}
			off += 41 + rng.Uint32N(64<<10)
			e.RawLength = e.Length
			p.Blobs = append(p.Blobs, e)
			want[e.ID] = Location{Pack: p.ID, Type: p.Type, Offset: e.Offset, Length: e.Length}
			added++
		}
		idx.AddPack(p)
	}
	return idx, want
}

func checkIndex(t *testing.T, idx *Index, want map[crypto.ID]Location) {
	t.Helper()
	if got := idx.Count(); got != len(want) {
		t.Fatalf("Count() = %d, want %d", got, len(want))
	}
	for id, w := range want {
		got, ok := idx.Lookup(id)
		if !ok {
			t.Fatalf("Lookup(%v): not found", id.Short())
		}
		if got != w {
			t.Fatalf("Lookup(%v) = %+v, want %+v", id.Short(), got, w)
		}
		if !idx.Has(id) {
			t.Fatalf("Has(%v) = false", id.Short())
		}
	}
	seen := make(map[crypto.ID]bool, len(want))
	err := idx.Each(func(id crypto.ID, l Location) error {
		if seen[id] {
			t.Fatalf("Each visits %v twice", id.Short())
		}
		seen[id] = true
		if w, ok := want[id]; !ok || w != l {
			t.Fatalf("Each(%v) = %+v, want %+v (known %v)", id.Short(), l, w, ok)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(seen) != len(want) {
		t.Fatalf("Each visited %d blobs, want %d", len(seen), len(want))
	}
}

func checkAbsent(t *testing.T, idx *Index, rng *rand.Rand, want map[crypto.ID]Location) {
	t.Helper()
	n := 0
	for id := range want {
		if n++; n > 2000 {
			break
		}
		// Same bucket and almost the same ID: only the last byte differs,
		// or only a byte in the implied bucket prefix.
		a, b := id, id
		a[crypto.IDSize-1] ^= 1
		b[1] ^= 0x80
		for _, x := range []crypto.ID{a, b, randID(rng)} {
			if _, known := want[x]; known {
				continue
			}
			if l, ok := idx.Lookup(x); ok || idx.Has(x) {
				t.Fatalf("Lookup of absent %v found %+v", x.Short(), l)
			}
		}
	}
	if _, ok := idx.Lookup(crypto.ID{}); ok {
		t.Fatal("null ID found")
	}
}

func TestIndexManyBlobs(t *testing.T) {
	n := 200_000
	if testing.Short() {
		n = 100_000 // one merge, at mergeAt
	}
	rng := rand.New(rand.NewPCG(1, 2))
	idx, want := buildIndex(t, rng, n, 700)
	// Merges must have happened along the way: only the tail is pending.
	idx.mu.RLock()
	tableLen, pending, overflow := idx.Len(), len(idx.pending), len(idx.overflow)
	idx.mu.RUnlock()
	if tableLen == 0 || pending > mergeAt+tableLen/16 {
		t.Fatalf("no merge happened: %d in table, %d pending", tableLen, pending)
	}
	if overflow < 3*n/97 {
		t.Fatalf("only %d blobs in the overflow map", overflow)
	}
	checkIndex(t, idx, want)
	checkAbsent(t, idx, rng, want)

	idx.Compact()
	idx.mu.RLock()
	pending = len(idx.pending)
	idx.mu.RUnlock()
	if pending != 0 {
		t.Fatalf("%d pending after Compact", pending)
	}
	checkIndex(t, idx, want)
	checkAbsent(t, idx, rng, want)
	idx.Compact() // idempotent
	checkIndex(t, idx, want)

	packs := idx.Packs()
	for _, l := range want {
		if typ, ok := packs[l.Pack]; !ok || typ != l.Type {
			t.Fatalf("Packs() lacks %v (%v)", l.Pack.Short(), l.Type)
		}
	}
	if len(packs) != (n+699)/700 {
		t.Fatalf("Packs() has %d packs, want %d", len(packs), (n+699)/700)
	}
	if mb := idx.MemoryBytes(); mb < n*entrySize*9/10 {
		t.Fatalf("MemoryBytes() = %d for %d blobs", mb, n)
	}
}

func TestIndexSmall(t *testing.T) {
	idx := New()
	if idx.Count() != 0 || idx.Has(crypto.ID{}) {
		t.Fatal("new index is not empty")
	}
	if err := idx.Each(func(crypto.ID, Location) error { t.Fatal("Each on empty index"); return nil }); err != nil {
		t.Fatal(err)
	}
	idx.Compact()
	// IDs at the bucket extremes.
	var lo, hi crypto.ID
	for i := range hi {
		hi[i] = 0xff
	}
	lo[crypto.IDSize-1] = 1
	p := PackEntry{ID: crypto.ID{9}, Type: TreeBlob, Blobs: []BlobEntry{{ID: lo, Offset: 5, Length: 6}, {ID: hi, Offset: 7, Length: 8}}}
	idx.AddPack(p)
	idx.AddPack(PackEntry{ID: crypto.ID{10}, Type: DataBlob}) // empty pack
	want := map[crypto.ID]Location{
		lo: {Pack: p.ID, Type: TreeBlob, Offset: 5, Length: 6},
		hi: {Pack: p.ID, Type: TreeBlob, Offset: 7, Length: 8},
	}
	checkIndex(t, idx, want)
	idx.Compact()
	checkIndex(t, idx, want)
	if len(idx.Packs()) != 2 {
		t.Fatalf("Packs() = %v", idx.Packs())
	}
}

func TestIndexDuplicatesKeepFirst(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	idx, want := buildIndex(t, rng, 100_000, 1000)
	// Most of the blobs are merged into the table by now, the rest pending.
	idx.mu.RLock()
	merged, pending := idx.Len(), len(idx.pending)
	idx.mu.RUnlock()
	if merged == 0 || pending == 0 {
		t.Fatalf("want both merged and pending entries, have %d and %d", merged, pending)
	}
	var ids []crypto.ID
	for id := range want {
		ids = append(ids, id)
	}
	// Re-add every known blob (table, pending and overflow alike) in new
	// packs with other locations, including ones that would overflow and
	// a repeat within one pack; plus some new blobs.
	newWant := make(map[crypto.ID]Location)
	for i := 0; i < len(ids); i += 500 {
		p := PackEntry{ID: randID(rng), Type: DataBlob}
		for j := i; j < i+500 && j < len(ids); j++ {
			p.Blobs = append(p.Blobs, BlobEntry{ID: ids[j], Offset: uint32(j), Length: 1 << 30})
		}
		p.Blobs = append(p.Blobs, BlobEntry{ID: ids[i], Offset: 1, Length: 2})
		nid := randID(rng)
		p.Blobs = append(p.Blobs, BlobEntry{ID: nid, Offset: 100, Length: 200}, BlobEntry{ID: nid, Offset: 300, Length: 400})
		newWant[nid] = Location{Pack: p.ID, Type: DataBlob, Offset: 100, Length: 200}
		idx.AddPack(p)
	}
	for id, l := range newWant {
		want[id] = l
	}
	checkIndex(t, idx, want)
	idx.Compact()
	checkIndex(t, idx, want)
	// A pack added twice keeps its number and type.
	before := len(idx.Packs())
	for id, l := range want {
		idx.AddPack(PackEntry{ID: l.Pack, Type: l.Type, Blobs: []BlobEntry{{ID: id, Offset: 1, Length: 1}}})
		break
	}
	if len(idx.Packs()) != before {
		t.Fatal("re-adding a pack created a new pack entry")
	}
	checkIndex(t, idx, want)
}

func TestIndexEachStops(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	idx, _ := buildIndex(t, rng, 20_000, 100)
	stop := errors.New("stop")
	for _, limit := range []int{1, 5_000, 19_999} {
		calls := 0
		err := idx.Each(func(crypto.ID, Location) error {
			calls++
			if calls == limit {
				return stop
			}
			return nil
		})
		if !errors.Is(err, stop) || calls != limit {
			t.Fatalf("limit %d: Each returned %v after %d calls", limit, err, calls)
		}
	}
}

func TestIndexConcurrent(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	idx := New()
	var packs []PackEntry
	want := make(map[crypto.ID]Location)
	for i := 0; i < 40; i++ {
		p := PackEntry{ID: randID(rng), Type: DataBlob}
		for j := 0; j < 1000; j++ {
			e := BlobEntry{ID: randID(rng), Offset: uint32(j) * 100, Length: 100}
			p.Blobs = append(p.Blobs, e)
			want[e.ID] = Location{Pack: p.ID, Offset: e.Offset, Length: e.Length}
		}
		packs = append(packs, p)
	}
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Go(func() {
			for i := w; i < len(packs); i += 4 {
				idx.AddPack(packs[i])
				// Blobs of a pack this goroutine added are visible at once.
				for _, e := range packs[i].Blobs[:50] {
					if !idx.Has(e.ID) {
						t.Errorf("blob %v not visible after AddPack", e.ID.Short())
						return
					}
				}
				_ = idx.Count()
			}
		})
	}
	wg.Go(func() {
		for i := 0; i < 20; i++ {
			idx.Compact()
			_ = idx.Each(func(crypto.ID, Location) error { return nil })
		}
	})
	wg.Wait()
	checkIndex(t, idx, want)
}
