package repo

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/cairn-backup/cairn/crypto"
	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/repo/backend/local"
)

// testKDF keeps key derivation cheap in tests; init in the CLI always uses
// crypto.DefaultKDFParams.
var testKDF = crypto.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}

func newTestRepo(t testing.TB, opts Options) (*Repository, string) {
	t.Helper()
	dir := t.TempDir()
	be, err := local.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if opts.KDF == nil {
		opts.KDF = &testKDF
	}
	r, err := Init(context.Background(), be, "secret", opts)
	if err != nil {
		t.Fatal(err)
	}
	return r, dir
}

func reopen(t testing.TB, dir, password string) (*Repository, error) {
	t.Helper()
	be, err := local.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	return Open(context.Background(), be, password, Options{KDF: &testKDF})
}

func TestSaveLoadRoundTrip(t *testing.T) {
	ctx := context.Background()
	r, dir := newTestRepo(t, Options{PackSize: 1 << 20})
	rng := rand.New(rand.NewPCG(1, 2))
	sizes := []int{0, 1, 31, 4096, 65536, 1<<20 + 7, 3 << 20, 16 << 20}
	for i := 0; i < 20; i++ {
		sizes = append(sizes, rng.IntN(2<<20))
	}
	var blobs [][]byte
	var ids []crypto.ID
	for i, n := range sizes {
		b := make([]byte, n)
		if i%2 == 0 {
			for j := range b {
				b[j] = byte(rng.Uint32())
			}
		} else {
			for j := range b {
				b[j] = byte(j / 100)
			}
		}
		res, err := r.SaveBlob(ctx, index.DataBlob, b)
		if err != nil {
			t.Fatal(err)
		}
		blobs, ids = append(blobs, b), append(ids, res.ID)
	}
	// Identical content is stored once.
	res, err := r.SaveBlob(ctx, index.DataBlob, blobs[3])
	if err != nil || !res.Known || res.Stored != 0 {
		t.Fatalf("second save of the same content: %+v %v", res, err)
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	r2, err := reopen(t, dir, "secret")
	if err != nil {
		t.Fatal(err)
	}
	if err := r2.LoadIndex(ctx); err != nil {
		t.Fatal(err)
	}
	if got, want := r2.Index().Count(), len(sizes); got != want {
		t.Fatalf("index holds %d blobs, want %d", got, want)
	}
	for i, id := range ids {
		got, err := r2.LoadBlob(ctx, id, nil)
		if err != nil {
			t.Fatalf("blob %d (%d bytes): %v", i, len(blobs[i]), err)
		}
		if !bytes.Equal(got, blobs[i]) {
			t.Fatalf("blob %d differs after round trip", i)
		}
	}
	res, err = r2.SaveBlob(ctx, index.DataBlob, blobs[5])
	if err != nil || !res.Known {
		t.Fatalf("save after reopen must dedupe: %+v %v", res, err)
	}
}

func TestOpenErrors(t *testing.T) {
	_, dir := newTestRepo(t, Options{})
	if _, err := reopen(t, dir, "wrong"); !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("wrong password: got %v", err)
	}
	if _, err := reopen(t, t.TempDir(), "secret"); !errors.Is(err, ErrNoRepository) {
		t.Fatalf("missing repo: got %v", err)
	}
	be, _ := local.Open(dir)
	if _, err := Init(context.Background(), be, "x", Options{KDF: &testKDF}); !errors.Is(err, ErrAlreadyExists) {
		t.Fatalf("init over existing: got %v", err)
	}
}

// Two inits racing on one location: at most one succeeds, and the
// repository opens with the winner's password only.
func TestConcurrentInit(t *testing.T) {
	dir := t.TempDir()
	type result struct {
		pw  string
		err error
	}
	results := make(chan result, 4)
	for i := 0; i < 4; i++ {
		pw := string(rune('a' + i))
		go func() {
			be, _ := local.Open(dir)
			r, err := Init(context.Background(), be, pw, Options{KDF: &testKDF})
			if err == nil {
				r.Close()
			}
			results <- result{pw, err}
		}()
	}
	var winners []string
	for i := 0; i < 4; i++ {
		res := <-results
		if res.err == nil {
			winners = append(winners, res.pw)
		} else if !errors.Is(res.err, ErrAlreadyExists) {
			t.Fatalf("init %s: %v", res.pw, res.err)
		}
	}
	if len(winners) != 1 {
		t.Fatalf("%d inits succeeded: %v", len(winners), winners)
	}
	for i := 0; i < 4; i++ {
		pw := string(rune('a' + i))
		_, err := reopen(t, dir, pw)
		if (pw == winners[0]) != (err == nil) {
			t.Fatalf("password %s: %v (winner %s)", pw, err, winners[0])
		}
	}
}
