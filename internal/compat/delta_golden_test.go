package compat

import (
	"bytes"
	"context"
	"flag"
	"fmt"
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

var updateDelta = flag.Bool("update-golden-delta", false, "rewrite testdata/golden-delta-repo (never once released)")

var goldenDeltaDir = filepath.Join("..", "..", "testdata", "golden-delta-repo")

// goldenDump is a pg_dump-like stream for day 1 or day 2; day 2 lacks every
// 30th row, which reappears changed at the end.
func goldenDump(day int) []byte {
	var b bytes.Buffer
	b.WriteString("PGDMP\x01\x0e\x00")
	for k := 0; k < 20000; k++ {
		if day == 2 && k%30 == 7 {
			continue
		}
		fmt.Fprintf(&b, "%d\tuser%05d@example.org\t%d\t%x\n", k, k*7%99991, k%13, k*k*2654435761%1000003)
	}
	if day == 2 {
		for k := 7; k < 20000; k += 30 {
			fmt.Fprintf(&b, "%d\tuser%05d@example.org\t%d\tchanged\n", k, k*7%99991, k%13)
		}
	}
	return b.Bytes()
}

func writeGoldenDelta(t *testing.T) {
	ctx := context.Background()
	be, _ := local.Open(goldenDeltaDir)
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
		t.Logf("day %d: %d blobs, %d deltas", day, res.Summary.DataBlobs, res.Summary.DeltaBlobs)
	}
}

// TestGoldenDeltaRepository reads a repository written when delta blobs
// (blob flags 2/3, pack header version 2, index version 3) were introduced.
func TestGoldenDeltaRepository(t *testing.T) {
	if *updateDelta {
		writeGoldenDelta(t)
	}
	ctx := context.Background()
	be, err := local.Open(goldenDeltaDir)
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
		raw, err := r.LoadBlob(ctx, sn.Tree, nil)
		if err != nil {
			t.Fatal(err)
		}
		root, err := tree.Decode(raw)
		if err != nil {
			t.Fatal(err)
		}
		var got bytes.Buffer
		for _, id := range root.Find("db.pgdump").Content {
			if _, ok := r.DeltaBase(id); ok {
				deltas++
			}
			b, err := r.LoadBlob(ctx, id, nil)
			if err != nil {
				t.Fatal(err)
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
