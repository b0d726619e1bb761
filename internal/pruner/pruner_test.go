package pruner

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/archiver"
	"github.com/cairn-backup/cairn/crypto"
	"github.com/cairn-backup/cairn/internal/checker"
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/repo/backend"
	"github.com/cairn-backup/cairn/repo/backend/local"
	"github.com/cairn-backup/cairn/restorer"
)

var testKDF = crypto.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}

type fixture struct {
	t   *testing.T
	dir string
	src string
	rng *rand.Rand
}

func newFixture(t *testing.T) *fixture {
	dir := t.TempDir()
	be, _ := local.Open(filepath.Join(dir, "repo"))
	r, err := repo.Init(context.Background(), be, "pw", repo.Options{PackSize: 1 << 20, KDF: &testKDF})
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	src := filepath.Join(dir, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	return &fixture{t: t, dir: dir, src: src, rng: rand.New(rand.NewPCG(7, 7))}
}

func (f *fixture) open() *repo.Repository {
	be, _ := local.Open(filepath.Join(f.dir, "repo"))
	r, err := repo.Open(context.Background(), be, "pw", repo.Options{KDF: &testKDF})
	if err != nil {
		f.t.Fatal(err)
	}
	if err := r.LoadIndex(context.Background()); err != nil {
		f.t.Fatal(err)
	}
	return r
}

func (f *fixture) write(name string, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(f.rng.Uint32())
	}
	if err := os.WriteFile(filepath.Join(f.src, name), b, 0o644); err != nil {
		f.t.Fatal(err)
	}
	return b
}

// backup runs a backup with an already opened repository (whose index may
// be stale: that is how a concurrent backup sees the repository).
func (f *fixture) backup(r *repo.Repository) *repo.Snapshot {
	ctx := context.Background()
	res, err := archiver.Run(ctx, r, []string{f.src}, nil, archiver.Options{})
	if err != nil {
		f.t.Fatal(err)
	}
	if err := r.Flush(ctx); err != nil {
		f.t.Fatal(err)
	}
	sn := &repo.Snapshot{Time: time.Now(), Tree: res.Tree, Paths: []string{f.src}, Hostname: "h"}
	if _, err := r.SaveSnapshot(ctx, sn); err != nil {
		f.t.Fatal(err)
	}
	return sn
}

func (f *fixture) forget(sn *repo.Snapshot) {
	r := f.open()
	defer r.Close()
	if err := r.Backend().Remove(context.Background(), backend.Handle{Type: backend.Snapshot, Name: sn.ID.String()}); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) prune(now time.Time, grace time.Duration) Stats {
	r := f.open()
	defer r.Close()
	st, err := Prune(context.Background(), r, Options{Now: now, Grace: grace})
	if err != nil {
		f.t.Fatal(err)
	}
	return st
}

func (f *fixture) check() {
	r := f.open()
	defer r.Close()
	res, err := checker.Check(context.Background(), r, checker.Options{ReadData: true})
	if err != nil {
		f.t.Fatal(err)
	}
	if res.Errors() > 0 {
		f.t.Fatalf("check found errors: %v", res.Findings)
	}
}

func (f *fixture) restoreAll(want map[string][]byte) {
	r := f.open()
	defer r.Close()
	sns, err := r.ListSnapshots(context.Background())
	if err != nil {
		f.t.Fatal(err)
	}
	for _, sn := range sns {
		target := f.t.TempDir()
		st, err := restorer.Restore(context.Background(), r, sn.Tree, restorer.Options{Target: target})
		if err != nil || st.Warnings > 0 {
			f.t.Fatalf("restore %s: %v %+v", sn.ID.Short(), err, st)
		}
		for name, data := range want {
			got, err := os.ReadFile(filepath.Join(target, f.src, name))
			if err == nil && !bytes.Equal(got, data) {
				f.t.Fatalf("snapshot %s: %s differs", sn.ID.Short(), name)
			}
		}
	}
}

func packBytes(t *testing.T, dir string) int64 {
	var n int64
	for _, sub := range []string{"data", "tree"} {
		_ = filepath.Walk(filepath.Join(dir, "repo", sub), func(_ string, fi os.FileInfo, err error) error {
			if err == nil && fi.Mode().IsRegular() {
				n += fi.Size()
			}
			return nil
		})
	}
	return n
}

func TestPruneFreesSpaceAfterGrace(t *testing.T) {
	f := newFixture(t)
	f.write("a", 3<<20)
	keep := f.write("b", 2<<20)
	r := f.open()
	first := f.backup(r)
	r.Close()
	os.Remove(filepath.Join(f.src, "a"))
	r = f.open()
	f.backup(r)
	r.Close()
	f.forget(first)
	before := packBytes(t, f.dir)
	now := time.Now()

	st := f.prune(now, time.Hour)
	if st.BytesFreed != 0 || st.PacksMarked+st.PacksRepacked == 0 {
		t.Fatalf("phase one must only mark: %+v", st)
	}
	f.check()
	st = f.prune(now.Add(30*time.Minute), time.Hour)
	if st.PacksDeleted != 0 {
		t.Fatalf("deleted within the grace period: %+v", st)
	}
	st = f.prune(now.Add(2*time.Hour), time.Hour)
	if st.PacksDeleted == 0 || st.BytesFreed == 0 {
		t.Fatalf("phase two deleted nothing: %+v", st)
	}
	after := packBytes(t, f.dir)
	if after >= before-2<<20 {
		t.Fatalf("pack bytes %d -> %d: about 3 MiB should be freed", before, after)
	}
	f.check()
	f.restoreAll(map[string][]byte{"b": keep})
}

// A backup that loaded the index before prune marked a pack unused, and
// deduplicated against it, must not lose data: the next prune after the
// grace period brings the pack back instead of deleting it.
func TestPruneKeepsDataOfConcurrentBackup(t *testing.T) {
	f := newFixture(t)
	data := f.write("shared", 3<<20)
	r := f.open()
	first := f.backup(r)
	r.Close()

	// The concurrent backup opens the repository now (old index) ...
	concurrent := f.open()
	// ... while the snapshot is forgotten and prune marks its packs.
	f.forget(first)
	now := time.Now()
	st := f.prune(now, time.Hour)
	if st.PacksMarked == 0 {
		t.Fatalf("nothing marked: %+v", st)
	}
	// The backup finishes: "shared" is deduplicated against marked packs.
	f.backup(concurrent)
	concurrent.Close()
	f.check()

	st = f.prune(now.Add(2*time.Hour), time.Hour)
	if st.PacksResurrected == 0 {
		t.Fatalf("prune did not bring back the packs the new snapshot uses: %+v", st)
	}
	f.check()
	f.restoreAll(map[string][]byte{"shared": data})
	// And a third prune keeps everything.
	st = f.prune(now.Add(4*time.Hour), time.Hour)
	f.check()
	f.restoreAll(map[string][]byte{"shared": data})
}

func TestPruneRepacksMostlyUnusedPacks(t *testing.T) {
	f := newFixture(t)
	// Many small files share packs; forgetting most of them leaves packs
	// mostly unused.
	kept := map[string][]byte{}
	for i := 0; i < 40; i++ {
		b := f.write(filepath.Base(filepath.Join("f", string(rune('a'+i%26))+string(rune('a'+i/26)))), 100<<10)
		if i%5 == 0 {
			kept[filepath.Base(string(rune('a'+i%26))+string(rune('a'+i/26)))] = b
		}
	}
	r := f.open()
	first := f.backup(r)
	r.Close()
	for i := 0; i < 40; i++ {
		name := string(rune('a'+i%26)) + string(rune('a'+i/26))
		if _, ok := kept[name]; !ok {
			os.Remove(filepath.Join(f.src, name))
		}
	}
	r = f.open()
	f.backup(r)
	r.Close()
	f.forget(first)
	st := f.prune(time.Now(), 0)
	if st.PacksRepacked == 0 || st.BlobsRepacked == 0 || st.BytesFreed == 0 {
		t.Fatalf("expected repacking and freed bytes: %+v", st)
	}
	f.check()
	f.restoreAll(kept)
}

// TestPlanIsWhatExecuteDoes checks that a dry run reports exactly what the
// real run then does, with and without a grace period, including
// repacking.
func TestPlanIsWhatExecuteDoes(t *testing.T) {
	for _, grace := range []time.Duration{time.Hour, 0} {
		f := newFixture(t)
		r := f.open()
		for i := range 6 {
			f.write(fmt.Sprint("f", i), 300_000)
		}
		old := f.backup(r)
		// f1 leaves its pack partly unused (repacked), whichever blobs
		// share it; the old snapshot's tree pack is unused (marked).
		os.Remove(filepath.Join(f.src, "f1"))
		f.write("f6", 200_000)
		f.backup(r)
		r.Close()
		f.forget(old)
		now := time.Now()
		r = f.open()
		plan, err := PlanPrune(context.Background(), r, Options{Grace: grace, Now: now, MaxUnused: 0.01})
		if err != nil {
			t.Fatal(err)
		}
		got, err := plan.Execute(context.Background(), r)
		r.Close()
		if err != nil {
			t.Fatal(err)
		}
		if got != plan.Stats || got.PacksRepacked == 0 || got.PacksMarked+got.PacksDeleted == 0 {
			t.Fatalf("grace %v: executed %+v, planned %+v", grace, got, plan.Stats)
		}
		// The repository is sound afterwards.
		f.check()
	}
}
