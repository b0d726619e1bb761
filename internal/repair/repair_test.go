package repair

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/archiver"
	"github.com/cairn-backup/cairn/crypto"
	"github.com/cairn-backup/cairn/internal/checker"
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/repo/backend/local"
	"github.com/cairn-backup/cairn/restorer"
)

var testKDF = crypto.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}

// setup backs up a few files into a new repository with small packs.
func setup(t *testing.T) (repoDir, src string, files map[string][]byte) {
	dir := t.TempDir()
	repoDir, src = filepath.Join(dir, "repo"), filepath.Join(dir, "src")
	rng := rand.New(rand.NewPCG(3, 4))
	files = map[string][]byte{}
	for _, name := range []string{"a.bin", "b.bin", "sub/c.bin", "sub/d.txt"} {
		b := make([]byte, 700<<10+rng.IntN(900<<10))
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		p := filepath.Join(src, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		files[name] = b
	}
	be, _ := local.Open(repoDir)
	ctx := context.Background()
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
	if _, err := r.SaveSnapshot(ctx, &repo.Snapshot{Time: time.Now(), Tree: res.Tree, Paths: []string{src}, Hostname: "h"}); err != nil {
		t.Fatal(err)
	}
	return repoDir, src, files
}

func open(t *testing.T, dir string, loadIndex bool) *repo.Repository {
	be, _ := local.Open(dir)
	r, err := repo.Open(context.Background(), be, "pw", repo.Options{KDF: &testKDF})
	if err != nil {
		t.Fatal(err)
	}
	if loadIndex {
		if err := r.LoadIndex(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

func checkErrors(t *testing.T, dir string) int {
	r := open(t, dir, false)
	defer r.Close()
	res, err := checker.Check(context.Background(), r, checker.Options{ReadData: true})
	if err != nil {
		t.Fatal(err)
	}
	return res.Errors()
}

func restoreLatest(t *testing.T, dir string) (string, *repo.Snapshot) {
	r := open(t, dir, true)
	defer r.Close()
	sns, err := r.ListSnapshots(context.Background())
	if err != nil || len(sns) == 0 {
		t.Fatalf("snapshots: %v %v", sns, err)
	}
	target := t.TempDir()
	if _, err := restorer.Restore(context.Background(), r, sns[len(sns)-1].Tree, restorer.Options{Target: target}); err != nil {
		t.Fatal(err)
	}
	return target, sns[len(sns)-1]
}

func TestRepairIndexAfterLosingEveryIndexFile(t *testing.T) {
	dir, src, files := setup(t)
	idxFiles, _ := filepath.Glob(filepath.Join(dir, "index", "*"))
	if len(idxFiles) == 0 {
		t.Fatal("no index files")
	}
	for _, f := range idxFiles {
		os.Remove(f)
	}
	if n := checkErrors(t, dir); n == 0 {
		t.Fatal("check did not notice the missing index")
	}
	r := open(t, dir, false)
	st, err := Index(context.Background(), r, t.Logf)
	r.Close()
	if err != nil || st.Packs == 0 || len(st.BadPacks) != 0 {
		t.Fatalf("repair index: %+v %v", st, err)
	}
	if n := checkErrors(t, dir); n != 0 {
		t.Fatalf("check after repair index: %d errors", n)
	}
	target, _ := restoreLatest(t, dir)
	for name, want := range files {
		got, err := os.ReadFile(filepath.Join(target, src, name))
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s: restored content differs (%v)", name, err)
		}
	}
}

func TestRepairSnapshotsAfterLosingADataPack(t *testing.T) {
	dir, src, files := setup(t)
	packs, _ := filepath.Glob(filepath.Join(dir, "data", "*", "*"))
	slices.Sort(packs)
	if len(packs) < 2 {
		t.Fatalf("want several data packs, have %d", len(packs))
	}
	if err := os.Remove(packs[0]); err != nil {
		t.Fatal(err)
	}
	if n := checkErrors(t, dir); n == 0 {
		t.Fatal("check did not notice the missing pack")
	}
	r := open(t, dir, false)
	if _, err := Index(context.Background(), r, t.Logf); err != nil {
		t.Fatal(err)
	}
	r.Close()
	r = open(t, dir, true)
	st, err := Snapshots(context.Background(), r, SnapshotOptions{Forget: true, Log: t.Logf})
	r.Close()
	if err != nil || st.Repaired != 1 || len(st.DamagedFiles) == 0 || st.Removed != 1 {
		t.Fatalf("repair snapshots: %+v %v", st, err)
	}
	if n := checkErrors(t, dir); n != 0 {
		t.Fatalf("check after repair: %d errors", n)
	}
	target, sn := restoreLatest(t, dir)
	if sn.Original == nil || !slices.Contains(sn.Tags, "repaired") {
		t.Fatalf("repaired snapshot is not marked: %+v", sn)
	}
	lost := 0
	for name, want := range files {
		got, err := os.ReadFile(filepath.Join(target, src, name))
		if err == nil {
			if !bytes.Equal(got, want) {
				t.Fatalf("%s: an intact file restored with different content", name)
			}
			continue
		}
		dmg, err := os.Stat(filepath.Join(target, src, name+DamagedSuffix))
		if err != nil || dmg.Size() != 0 {
			t.Fatalf("%s: neither intact nor marked damaged (%v)", name, err)
		}
		lost++
	}
	if lost == 0 || lost == len(files) {
		t.Fatalf("%d of %d files lost: a single pack should lose some, not all", lost, len(files))
	}
}
