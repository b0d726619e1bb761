package compat

import (
	"bytes"
	"context"
	"flag"
	"path/filepath"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/archiver"
	"github.com/cairn-backup/cairn/crypto"
	"github.com/cairn-backup/cairn/internal/checker"
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/repo/backend/local"
	"github.com/cairn-backup/cairn/tree"
)

var updateHeads = flag.Bool("update-golden-heads", false, "rewrite testdata/golden-heads-repo (never once released)")

var goldenHeadsDir = filepath.Join("..", "..", "testdata", "golden-heads-repo")

// writeGoldenHeads stores the golden dump of day 1 and day 2 as the delta
// golden repository does, with the trees of this version: version 2, with
// the chunk heads of the dump.
func writeGoldenHeads(t *testing.T) {
	ctx := context.Background()
	be, _ := local.Open(goldenHeadsDir)
	kdf := crypto.KDFParams{Time: 1, MemoryKiB: 1024, Threads: 1}
	r, err := repo.Init(ctx, be, goldenPassword, repo.Options{PackSize: 1 << 20, KDF: &kdf})
	if err != nil {
		t.Fatal(err)
	}
	var parent *repo.Snapshot
	for day := 1; day <= 2; day++ {
		res, err := archiver.Run(ctx, r, nil, []archiver.Stream{{Path: "/db.pgdump", Reader: bytes.NewReader(goldenDump(day)), Chunking: repo.ChunkingAuto}}, archiver.Options{Parent: parent})
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		parent = &repo.Snapshot{Time: goldenTime.Add(time.Duration(day) * 24 * time.Hour), Tree: res.Tree, Paths: []string{"/db.pgdump"},
			Hostname: "golden-host", ProgramVersion: "cairn golden", Summary: &res.Summary}
		if _, err := r.SaveSnapshot(ctx, parent); err != nil {
			t.Fatal(err)
		}
	}
}

// TestGoldenHeadsRepository reads a repository written when tree version 2
// (chunk heads, docs/format.md §11) was introduced.
func TestGoldenHeadsRepository(t *testing.T) {
	if *updateHeads {
		writeGoldenHeads(t)
	}
	ctx := context.Background()
	be, err := local.Open(goldenHeadsDir)
	if err != nil {
		t.Fatal(err)
	}
	r, err := repo.Open(ctx, be, goldenPassword, repo.Options{})
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	res, err := checker.Check(ctx, r, checker.Options{ReadData: true})
	if err != nil || res.Errors() != 0 || res.Snapshots != 2 {
		t.Fatalf("check: %v %+v", err, res)
	}
	if err := r.LoadIndex(ctx); err != nil {
		t.Fatal(err)
	}
	sns, err := r.ListSnapshots(ctx)
	if err != nil || len(sns) != 2 {
		t.Fatalf("snapshots: %v %v", sns, err)
	}
	deltas := 0
	for _, sn := range sns {
		day := 1
		if sn.Time.After(goldenTime.Add(36 * time.Hour)) {
			day = 2
		}
		root, err := tree.Load(ctx, r, sn.Tree)
		if err != nil {
			t.Fatal(err)
		}
		node := root.Find("db.pgdump")
		if len(node.ChunkHeads) != len(node.Content) {
			t.Fatalf("day %d: %d chunk heads for %d blobs", day, len(node.ChunkHeads), len(node.Content))
		}
		var got bytes.Buffer
		for i, id := range node.Content {
			if _, ok := r.DeltaBase(id); ok {
				deltas++
			}
			b, err := r.LoadBlob(ctx, id, nil)
			if err != nil {
				t.Fatal(err)
			}
			if tree.ChunkHead(b) != node.ChunkHeads[i] {
				t.Fatalf("day %d, blob %d: head %x, stored %x", day, i, tree.ChunkHead(b), node.ChunkHeads[i])
			}
			got.Write(b)
		}
		if !bytes.Equal(got.Bytes(), goldenDump(day)) {
			t.Errorf("day %d reads back different", day)
		}
	}
	if deltas == 0 {
		t.Fatal("the golden repository holds no delta blob")
	}
}
