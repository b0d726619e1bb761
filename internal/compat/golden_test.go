package compat

import (
	"bytes"
	"context"
	"flag"
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

var (
	update   = flag.Bool("update-golden", false, "rewrite testdata/golden-repo (format v1: never for a released version)")
	updateV2 = flag.Bool("update-golden-v2", false, "rewrite testdata/golden-v2-repo (format v2: never once released)")
)

const goldenPassword = "golden vector password"

var (
	goldenDir   = filepath.Join("..", "..", "testdata", "golden-repo")
	goldenV2Dir = filepath.Join("..", "..", "testdata", "golden-v2-repo")
)

// goldenFiles is the content of the golden snapshot, generated
// deterministically so the test can recompute it.
func goldenFiles() map[string][]byte {
	rng := rand.New(rand.NewPCG(2026, 11))
	big := make([]byte, 1<<20+12345)
	for i := range big {
		big[i] = byte(rng.Uint32())
	}
	var sql bytes.Buffer
	for i := 0; i < 20000; i++ {
		sql.WriteString("INSERT INTO events VALUES (")
		sql.WriteString(time.Unix(1700000000+int64(i), 0).UTC().Format(time.RFC3339))
		sql.WriteString(", 'login');\n")
	}
	return map[string][]byte{
		"hello.txt":         []byte("hello, cairn\n"),
		"empty":             {},
		"dir/random.bin":    big,
		"dir/sub/dump.sql":  sql.Bytes(),
		"dir/sub/dump2.sql": sql.Bytes(), // deduplicated against dump.sql
	}
}

var goldenTime = time.Date(2026, 11, 26, 3, 0, 0, 0, time.UTC)

func writeGolden(t *testing.T, goldenDir string, version int) {
	ctx := context.Background()
	src := t.TempDir()
	for name, data := range goldenFiles() {
		p := filepath.Join(src, "golden", filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("hello.txt", filepath.Join(src, "golden", "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(goldenDir); err != nil {
		t.Fatal(err)
	}
	be, _ := local.Open(goldenDir)
	// Cheap KDF parameters keep the test fast; the format is the same.
	kdf := crypto.KDFParams{Time: 1, MemoryKiB: 1024, Threads: 1}
	r, err := repo.Init(ctx, be, goldenPassword, repo.Options{PackSize: 1 << 20, KDF: &kdf, FormatVersion: version})
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(src, "golden")
	res, err := archiver.Run(ctx, r, []string{root}, []archiver.Stream{{Path: "/stream/stdin.txt", Reader: bytes.NewReader([]byte("streamed\n")), Chunking: repo.ChunkingDatabase}}, archiver.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := r.SaveSnapshot(ctx, &repo.Snapshot{Time: goldenTime, Tree: res.Tree, Paths: []string{"/golden"}, Hostname: "golden-host",
		Tags: []string{"golden"}, ProgramVersion: "cairn golden", Summary: &res.Summary}); err != nil {
		t.Fatal(err)
	}
	t.Logf("golden repository written to %s (source was %s; the snapshot tree holds that absolute path)", goldenDir, root)
}

func TestGoldenRepository(t *testing.T) {
	if *update {
		writeGolden(t, goldenDir, 1)
	}
	checkGolden(t, goldenDir, 1, 14)
}

// TestGoldenRepositoryV2 reads the golden repository of format version 2
// (files bound to their type).
func TestGoldenRepositoryV2(t *testing.T) {
	if *updateV2 {
		writeGolden(t, goldenV2Dir, 2)
	}
	checkGolden(t, goldenV2Dir, 2, 18)
}

// TestGoldenV1Migrates upgrades a copy of the version 1 golden repository
// to version 2: check --read-data finds nothing wrong, and it restores the
// same files.
func TestGoldenV1Migrates(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "repo")
	if err := os.CopyFS(dir, os.DirFS(goldenDir)); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	be, err := local.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	r, err := repo.Open(ctx, be, goldenPassword, repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	res, err := r.Migrate(ctx)
	r.Close()
	if err != nil || res.From != 1 || res.To != 2 || len(res.Snapshots) != 1 {
		t.Fatalf("migrate: %+v %v", res, err)
	}
	checkGolden(t, dir, 2, 14)
}

// checkGolden opens a golden repository of the given format version
// (database chunks of 2^dbBits bytes on average), checks it with
// --read-data and restores its snapshot.
func checkGolden(t *testing.T, goldenDir string, version, dbBits int) {
	t.Helper()
	ctx := context.Background()
	be, err := local.Open(goldenDir)
	if err != nil {
		t.Fatal(err)
	}
	r, err := repo.Open(ctx, be, goldenPassword, repo.Options{})
	if err != nil {
		t.Fatalf("open golden repository: %v", err)
	}
	defer r.Close()
	cfg := r.Config()
	if cfg.Version != version || cfg.PackSize != 1<<20 || cfg.Chunking[repo.ChunkingFiles].AvgBits != 20 || cfg.Chunking[repo.ChunkingDatabase].AvgBits != dbBits {
		t.Fatalf("config: %+v", cfg)
	}
	res, err := checker.Check(ctx, r, checker.Options{ReadData: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.Errors() != 0 || res.Snapshots != 1 || res.PacksRead == 0 {
		t.Fatalf("check of golden repository: %+v", res)
	}
	sns, err := r.ListSnapshots(ctx)
	if err != nil || len(sns) != 1 {
		t.Fatalf("snapshots: %v %v", sns, err)
	}
	sn := sns[0]
	if !sn.Time.Equal(goldenTime) || sn.Hostname != "golden-host" || !slices.Equal(sn.Tags, []string{"golden"}) {
		t.Fatalf("snapshot fields: %+v", sn)
	}
	target := t.TempDir()
	st, err := restorer.Restore(ctx, r, sn.Tree, restorer.Options{Target: target})
	if err != nil || st.Warnings != 0 {
		t.Fatalf("restore: %v, %+v", err, st)
	}
	// The snapshot stores the source's absolute path; find the "golden" dir.
	var root string
	_ = filepath.WalkDir(target, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() && d.Name() == "golden" && root == "" {
			root = p
		}
		return nil
	})
	if root == "" {
		t.Fatal("restored tree has no golden directory")
	}
	for name, want := range goldenFiles() {
		got, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(name)))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s: restored %d bytes differ from the expected %d", name, len(got), len(want))
		}
	}
	if l, err := os.Readlink(filepath.Join(root, "link")); err != nil || l != "hello.txt" {
		t.Errorf("symlink: %q %v", l, err)
	}
	got, err := os.ReadFile(filepath.Join(target, "stream", "stdin.txt"))
	if err != nil || string(got) != "streamed\n" {
		t.Errorf("stream: %q %v", got, err)
	}
}
