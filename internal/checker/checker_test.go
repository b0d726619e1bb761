package checker

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/archiver"
	"github.com/cairn-backup/cairn/crypto"
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/repo/backend"
	"github.com/cairn-backup/cairn/repo/backend/local"
)

var testKDF = crypto.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}

// Subsets 1/M … M/M read every pack exactly once, and a damaged pack is
// found by the subset that holds it and only by that one.
func TestReadDataSubsets(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	randomRepo(t, dir, 12, 600<<10, 4)
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

// packReads records how packs are read.
type packReads struct {
	backend.Backend
	mu           sync.Mutex
	opens, loads int
	whole        []string // packs loaded whole
}

func (p *packReads) Load(ctx context.Context, h backend.Handle, off, n int64) ([]byte, error) {
	if h.Type == backend.DataPack || h.Type == backend.TreePack {
		p.mu.Lock()
		p.loads++
		if off == 0 && n == 0 {
			p.whole = append(p.whole, h.Name)
		}
		p.mu.Unlock()
	}
	return p.Backend.Load(ctx, h, off, n)
}

func (p *packReads) Open(ctx context.Context, h backend.Handle, off, n int64) (io.ReadCloser, error) {
	if h.Type == backend.DataPack || h.Type == backend.TreePack {
		p.mu.Lock()
		p.opens++
		p.mu.Unlock()
	}
	return p.Backend.Open(ctx, h, off, n)
}

// TestReadDataStreams: check --read-data streams every pack once (never
// loading one whole into memory) and still finds every kind of damage: a
// flipped byte in a blob or in the header, a truncated pack, bytes
// appended.
func TestReadDataStreams(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	randomRepo(t, dir, 6, 700<<10, 6)
	check := func() (*Result, *packReads) {
		t.Helper()
		lbe, _ := local.Open(filepath.Join(dir, "repo"))
		pr := &packReads{Backend: lbe}
		r, err := repo.Open(ctx, pr, "pw", repo.Options{KDF: &testKDF})
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		res, err := Check(ctx, r, Options{ReadData: true})
		if err != nil {
			t.Fatal(err)
		}
		return res, pr
	}
	full, pr := check()
	if full.Errors() != 0 || full.PacksRead < 4 {
		t.Fatalf("check of an intact repository: %+v", full)
	}
	if pr.opens != full.PacksRead || len(pr.whole) != 0 {
		t.Fatalf("%d packs read with %d streams; %d loaded whole: %v", full.PacksRead, pr.opens, len(pr.whole), pr.whole)
	}
	packs, _ := filepath.Glob(filepath.Join(dir, "repo", "data", "*", "*"))
	victim := packs[0]
	orig, _ := os.ReadFile(victim)
	for name, damage := range map[string]func([]byte) []byte{
		"flipped blob byte":   func(b []byte) []byte { b[100] ^= 1; return b },
		"flipped header byte": func(b []byte) []byte { b[len(b)-10] ^= 1; return b },
		"truncated":           func(b []byte) []byte { return b[:len(b)-7] },
		"appended":            func(b []byte) []byte { return append(b, make([]byte, 100)...) },
	} {
		os.Chmod(victim, 0o600)
		os.WriteFile(victim, damage(bytes.Clone(orig)), 0o600)
		res, _ := check()
		found := false
		for _, f := range res.Findings {
			found = found || f.Severity == Error && strings.Contains(f.Object, filepath.Base(victim))
		}
		if !found {
			t.Errorf("%s: not reported: %+v", name, res.Findings)
		}
	}
}

// randomRepo backs up n incompressible files of size bytes (random from
// seed) into a new repository in dir/repo (1 MiB packs, password "pw").
func randomRepo(t *testing.T, dir string, n, size int, seed uint64) {
	t.Helper()
	ctx := context.Background()
	src := filepath.Join(dir, "src")
	os.MkdirAll(src, 0o755)
	rng := rand.New(rand.NewPCG(seed, 2))
	for i := 0; i < n; i++ {
		b := make([]byte, size)
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
	defer r.Close()
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
}
