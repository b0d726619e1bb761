package checker

import (
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/archiver"
	"github.com/cairn-backup/cairn/crypto"
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/repo/backend/local"
)

var testKDF = crypto.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}

// Subsets 1/M … M/M read every pack exactly once, and a damaged pack is
// found by the subset that holds it and only by that one.
func TestReadDataSubsets(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	os.MkdirAll(src, 0o755)
	rng := rand.New(rand.NewPCG(4, 2))
	for i := 0; i < 12; i++ {
		b := make([]byte, 600<<10)
		for j := range b {
			b[j] = byte(rng.Uint32())
		}
		os.WriteFile(filepath.Join(src, string(rune('a'+i))), b, 0o644)
	}
	be, _ := local.Open(filepath.Join(dir, "repo"))
	r, err := repo.Init(ctx, be, "pw", repo.Options{PackSize: 1 << 20, KDF: &testKDF})
	if err != nil {
		t.Fatal(err)
	}
	res, err := archiver.Run(ctx, r, []string{src}, nil, archiver.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := r.SaveSnapshot(ctx, &repo.Snapshot{Time: time.Now(), Tree: res.Tree, Paths: []string{src}}); err != nil {
		t.Fatal(err)
	}
	r.Close()
	check := func(n, m int) *Result {
		be, _ := local.Open(filepath.Join(dir, "repo"))
		r, err := repo.Open(ctx, be, "pw", repo.Options{KDF: &testKDF})
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		res, err := Check(ctx, r, Options{ReadData: true, SubsetN: n, SubsetM: m})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	full := check(0, 0)
	if full.Errors() != 0 || full.PacksRead < 6 {
		t.Fatalf("full check: %+v", full)
	}
	const m = 3
	sum := 0
	for n := 1; n <= m; n++ {
		sum += check(n, m).PacksRead
	}
	if sum != full.PacksRead {
		t.Fatalf("subsets read %d packs, the full check %d", sum, full.PacksRead)
	}
	// Damage one pack: exactly one subset reports it.
	packs, _ := filepath.Glob(filepath.Join(dir, "repo", "data", "*", "*"))
	victim := packs[0]
	b, _ := os.ReadFile(victim)
	b[len(b)/2] ^= 0x40
	os.WriteFile(victim, b, 0o600)
	found := 0
	for n := 1; n <= m; n++ {
		res := check(n, m)
		for _, f := range res.Findings {
			if f.Severity == Error && strings.Contains(f.Object, filepath.Base(victim)) {
				found++
				break
			}
		}
	}
	if found != 1 {
		t.Fatalf("the damaged pack was reported by %d subsets, want 1", found)
	}
	if _, err := Check(ctx, nil, Options{SubsetN: 4, SubsetM: 3}); err == nil {
		t.Fatal("subset 4/3 accepted")
	}
}
