package repo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/cairn-backup/cairn/crypto"
	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/repo/backend"
)

// cands offers fixed delta candidates to SaveDataBlob.
func cands(ids ...crypto.ID) func() []crypto.ID { return func() []crypto.ID { return ids } }

// dumpRows returns pg_dump-like text rows with keys from..to, skipping
// every skip-th row (0: none), with random filler seeded by the key.
func dumpRows(from, to, skip int, changed map[int]bool) []byte {
	var b bytes.Buffer
	for k := from; k < to; k++ {
		if skip > 0 && k%skip == 0 {
			continue
		}
		rng := rand.New(rand.NewPCG(uint64(k), 7))
		bal := 0
		if changed[k] {
			bal = 4242
		}
		fmt.Fprintf(&b, "%d\t1\t%d\t", k, bal)
		for i := 0; i < 40; i++ {
			b.WriteByte("abcdef0123456789"[rng.IntN(16)])
		}
		b.WriteByte('\n')
	}
	return b.Bytes()
}

func TestDeltaBlobs(t *testing.T) {
	ctx := context.Background()
	r, dir := newTestRepo(t, Options{PackSize: 1 << 20})
	v1 := dumpRows(0, 300, 0, nil)
	v2 := dumpRows(0, 300, 44, nil)                   // a few rows deleted
	v3 := dumpRows(0, 300, 44, map[int]bool{7: true}) // and one changed
	unrelated := dumpRows(5000, 5300, 0, nil)

	r1, err := r.SaveBlob(ctx, index.DataBlob, v1)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	// A candidate that is not stored is ignored: the blob is stored whole.
	r0, err := r.SaveDataBlob(ctx, r.Key().BlobID(unrelated), unrelated, cands(crypto.ID{1}))
	if err != nil || !r0.Base.IsNull() {
		t.Fatalf("unknown candidate: %+v, %v", r0, err)
	}
	full, err := r.SaveBlob(ctx, index.DataBlob, append([]byte("x"), v2...))
	if err != nil {
		t.Fatal(err)
	}
	r2, err := r.SaveDataBlob(ctx, r.Key().BlobID(v2), v2, cands(r0.ID, r1.ID))
	if err != nil {
		t.Fatal(err)
	}
	if r2.Base != r1.ID || r2.BaseFrom != r1.ID {
		t.Fatalf("v2 not stored as a delta against v1: %+v", r2)
	}
	if r2.Stored*8 > full.Stored {
		t.Fatalf("delta takes %d bytes, the full blob %d", r2.Stored, full.Stored)
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	// A candidate that is itself a delta lends its base: chains stay one deep.
	r3, err := r.SaveDataBlob(ctx, r.Key().BlobID(v3), v3, cands(r2.ID))
	if err != nil {
		t.Fatal(err)
	}
	if r3.Base != r1.ID || r3.BaseFrom != r2.ID {
		t.Fatalf("v3: %+v; want base %s from %s", r3, r1.ID.Short(), r2.ID.Short())
	}
	// Unrelated content makes no delta.
	u := dumpRows(9000, 9300, 0, nil)
	ru, err := r.SaveDataBlob(ctx, r.Key().BlobID(u), u, cands(r1.ID))
	if err != nil || !ru.Base.IsNull() {
		t.Fatalf("unrelated: %+v, %v", ru, err)
	}
	// Saving again is a no-op.
	if again, err := r.SaveDataBlob(ctx, r2.ID, v2, cands(r1.ID)); err != nil || !again.Known {
		t.Fatalf("second save: %+v, %v", again, err)
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}

	r, err = reopen(t, dir, "secret")
	if err != nil {
		t.Fatal(err)
	}
	if err := r.LoadIndex(ctx); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		id   crypto.ID
		want []byte
	}{{r1.ID, v1}, {r2.ID, v2}, {r3.ID, v3}, {ru.ID, u}} {
		got, err := r.LoadBlob(ctx, c.id, nil)
		if err != nil || !bytes.Equal(got, c.want) {
			t.Fatalf("blob %s: %d bytes, %v", c.id.Short(), len(got), err)
		}
	}
	if b, ok := r.DeltaBase(r2.ID); !ok || b != r1.ID {
		t.Fatalf("DeltaBase(v2) = %s, %v", b.Short(), ok)
	}
	if _, ok := r.DeltaBase(r1.ID); ok {
		t.Fatal("a full blob has a delta base")
	}
	// The pack header names the base too (repair index rebuilds from it).
	loc, _ := r.Lookup(r2.ID)
	_, blobs, err := r.LoadPackHeader(ctx, backend.DataPack, loc.Pack)
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, b := range blobs {
		if b.ID == r2.ID {
			found = b.Base == r1.ID
		}
	}
	if !found {
		t.Fatal("pack header does not list v2 with its base")
	}

	// Without its base a delta cannot be read, and says why.
	baseLoc, _ := r.Lookup(r1.ID)
	if baseLoc.Pack == loc.Pack {
		t.Fatal("test needs base and delta in different packs")
	}
	p := filepath.Join(dir, "data", baseLoc.Pack.String()[:2], baseLoc.Pack.String())
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	if r, err = reopen(t, dir, "secret"); err != nil {
		t.Fatal(err)
	}
	if err := r.LoadIndex(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := r.LoadBlob(ctx, r2.ID, nil); err == nil || !errors.Is(err, backend.ErrNotFound) && !errors.Is(err, ErrBlobNotFound) {
		t.Fatalf("delta without its base: %v", err)
	}
}

// TestDeltaBaseMustBeFull checks that a reader refuses a delta whose base
// is itself a delta (a chain), which writers never produce.
func TestDeltaBaseMustBeFull(t *testing.T) {
	ctx := context.Background()
	r, _ := newTestRepo(t, Options{})
	v1 := dumpRows(0, 200, 0, nil)
	v2 := dumpRows(0, 200, 30, nil)
	r1, err := r.SaveBlob(ctx, index.DataBlob, v1)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	r2, err := r.SaveDataBlob(ctx, r.Key().BlobID(v2), v2, cands(r1.ID))
	if err != nil || r2.Base.IsNull() {
		t.Fatalf("%+v, %v", r2, err)
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	// Hand-craft a delta payload whose base is v2 (a delta).
	plain := append([]byte{payloadDelta}, r2.ID[:]...)
	plain = append(plain, 0) // empty target
	sealed := r.key.Seal(nil, plain)
	if _, err := r.DecodeBlob(ctx, r.Key().BlobID(nil), sealed, nil); !errors.Is(err, ErrBlobCorrupt) {
		t.Fatalf("delta of a delta: %v", err)
	}
	// A delta against the right base but with a broken body is corrupt.
	plain = append([]byte{payloadDelta}, r1.ID[:]...)
	plain = append(plain, 5, 0, 0, 3) // claims 5 bytes, copies 3
	if _, err := r.DecodeBlob(ctx, r.Key().BlobID(v1[:5]), r.key.Seal(nil, plain), nil); !errors.Is(err, ErrBlobCorrupt) {
		t.Fatalf("short delta: %v", err)
	}
}

// TestPackHeaderBases checks that the header version follows the content:
// version 1 without deltas (as before deltas existed), 2 with, and that a
// version 2 header without a delta is refused.
func TestPackHeaderBases(t *testing.T) {
	plain := []index.BlobEntry{{ID: crypto.ID{1}, Length: 100, RawLength: 70}}
	if v := encodePackHeader(index.DataBlob, plain)[4]; v != 1 {
		t.Fatalf("header without deltas is version %d", v)
	}
	withDelta := append(plain, index.BlobEntry{ID: crypto.ID{2}, Length: 60, RawLength: 900, Base: crypto.ID{1}})
	enc := encodePackHeader(index.DataBlob, withDelta)
	if enc[4] != 2 {
		t.Fatalf("header with a delta is version %d", enc[4])
	}
	_, got, err := DecodePackHeader(enc)
	if err != nil || len(got) != 2 || got[1].Base != (crypto.ID{1}) || got[0].IsDelta() {
		t.Fatalf("decoded %+v, %v", got, err)
	}
	v2plain := append([]byte(nil), encodePackHeader(index.DataBlob, plain)...)
	v2plain[4] = 2
	v2plain = append(v2plain, 0) // base flag 0: not a delta
	if _, _, err := DecodePackHeader(v2plain); !errors.Is(err, ErrPackFormat) {
		t.Fatalf("version 2 without deltas: %v", err)
	}
}

// TestDeltaBaseVerified: a new delta is encoded only against a base whose
// content hashes to its ID. Storage that serves another blob of the same
// stored length in the base's place (here: the two swapped in their pack)
// must not make new deltas depend on the swap, or they break once the
// swap is undone.
func TestDeltaBaseVerified(t *testing.T) {
	ctx := context.Background()
	r, dir := newTestRepo(t, Options{})
	rng := rand.New(rand.NewPCG(9, 10))
	a := make([]byte, 200_000) // incompressible: stored raw, so equal lengths stay equal
	for i := range a {
		a[i] = byte(rng.Uint32())
	}
	// b is a with 100 bytes moved from offset 1,000 to 150,000: as long,
	// nearly the same, but its middle lies 100 bytes earlier.
	b := append(append(append([]byte{}, a[:1000]...), a[1100:150_000]...), a[1000:1100]...)
	b = append(b, a[150_000:]...)
	ra, err := r.SaveBlob(ctx, index.DataBlob, a)
	if err != nil {
		t.Fatal(err)
	}
	rb, err := r.SaveBlob(ctx, index.DataBlob, b)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	la, _ := r.Lookup(ra.ID)
	lb, _ := r.Lookup(rb.ID)
	if la.Pack != lb.Pack || la.Length != lb.Length {
		t.Fatalf("the test needs both blobs in one pack with one length: %+v %+v", la, lb)
	}
	name := la.Pack.String()
	packPath := filepath.Join(dir, string(PackType(index.DataBlob)), name[:2], name)
	orig, err := os.ReadFile(packPath)
	if err != nil {
		t.Fatal(err)
	}
	swapped := bytes.Clone(orig)
	copy(swapped[la.Offset:la.Offset+la.Length], orig[lb.Offset:lb.Offset+lb.Length])
	copy(swapped[lb.Offset:lb.Offset+lb.Length], orig[la.Offset:la.Offset+la.Length])
	writePack := func(data []byte) {
		t.Helper()
		_ = os.Chmod(packPath, 0o600)
		if err := os.WriteFile(packPath, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writePack(swapped)

	d := bytes.Clone(a)
	copy(d[100_000:], "a changed row")
	rd, err := r.SaveDataBlob(ctx, r.Key().BlobID(d), d, cands(ra.ID))
	if err != nil {
		t.Fatal(err)
	}
	if rd.Base == ra.ID {
		t.Errorf("a delta was encoded against blob %s as its storage served it (another blob's content)", ra.ID.Short())
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	writePack(orig)
	r2, err := reopen(t, dir, "secret")
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	if err := r2.LoadIndex(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := r2.LoadBlob(ctx, rd.ID, nil)
	if err != nil || !bytes.Equal(got, d) {
		t.Errorf("the new blob does not load once the storage is repaired: %v", err)
	}
}
