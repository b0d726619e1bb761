package backup

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cairn-backup/cairn/archiver"
	"github.com/cairn-backup/cairn/crypto"
	"github.com/cairn-backup/cairn/internal/source"
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/repo/backend/local"
	"github.com/cairn-backup/cairn/tree"
)

var testKDF = crypto.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}

func newRepo(t *testing.T) *repo.Repository {
	be, _ := local.Open(t.TempDir())
	r, err := repo.Init(context.Background(), be, "pw", repo.Options{PackSize: 1 << 20, KDF: &testKDF})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func stream(path, content string) source.Capture {
	return source.Capture{
		Streams: []archiver.Stream{{Path: path, Reader: strings.NewReader(content)}},
		Records: []repo.Source{{Kind: source.KindStdin, Name: path, Status: repo.SourceOK}},
	}
}

// TestRun backs up a directory and a stream twice: the second run takes
// the first as its parent and the snapshot records both sources.
func TestRun(t *testing.T) {
	ctx := context.Background()
	r := newRepo(t)
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "a"), []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	plan := func() Plan {
		return Plan{Paths: []string{src}, Captures: []source.Capture{stream("/db.sql", "rows\n")}, Host: "h", ProgramVersion: "test"}
	}
	first, err := Run(ctx, r, plan())
	if err != nil {
		t.Fatal(err)
	}
	second, err := Run(ctx, r, plan())
	if err != nil {
		t.Fatal(err)
	}
	if second.Parent == nil || second.Parent.ID != first.ID {
		t.Fatalf("second backup's parent: %v, want %s", second.Parent, first.ID.Short())
	}
	sn := second.Snapshot
	if len(sn.Sources) != 2 || sn.Sources[0].Name != "/db.sql" || sn.Sources[0].Size != 5 || sn.Sources[1].Kind != source.KindFiles || sn.Sources[1].Status != repo.SourceOK {
		t.Fatalf("sources %+v", sn.Sources)
	}
	if n, err := tree.Find(ctx, r, sn.Tree, "/db.sql"); err != nil || n.Size != 5 {
		t.Fatalf("stream in the tree: %+v %v", n, err)
	}
	if second.Archive.Summary.FilesUnmodified == 0 {
		t.Fatal("the second backup read everything again")
	}
}

// TestSources checks what failing sources do: an optional one is recorded
// as skipped and its stream left out; a required one writes no snapshot,
// and every source is ended either way.
func TestSources(t *testing.T) {
	ctx := context.Background()
	r := newRepo(t)
	finished := 0
	failing := func(optional bool) source.Capture {
		c := stream("/redis/dump.rdb", "REDIS0011 half")
		c.Optional = optional
		c.Finish = func(*archiver.Result) error { finished++; return errors.New("server went away") }
		return c
	}
	good := func() source.Capture {
		c := stream("/db.sql", "rows\n")
		c.Finish = func(*archiver.Result) error { finished++; return nil }
		return c
	}
	skippedSeen := 0
	res, err := Run(ctx, r, Plan{Captures: []source.Capture{good(), failing(true)}, Host: "h", SourceSkipped: func(error) { skippedSeen++ }})
	if err != nil {
		t.Fatal(err)
	}
	if res.Skipped != 1 || skippedSeen != 1 || finished != 2 {
		t.Fatalf("skipped %d (told %d), finished %d", res.Skipped, skippedSeen, finished)
	}
	if res.Snapshot.Sources[1].Status != repo.SourceSkipped || !strings.Contains(res.Snapshot.Sources[1].Error, "went away") {
		t.Fatalf("records %+v", res.Snapshot.Sources)
	}
	if _, err := tree.Find(ctx, r, res.Snapshot.Tree, "/redis/dump.rdb"); !errors.Is(err, tree.ErrNotFound) {
		t.Fatalf("the skipped source's stream is in the tree: %v", err)
	}
	sns, _ := r.ListSnapshots(ctx)
	finished = 0
	_, err = Run(ctx, r, Plan{Captures: []source.Capture{good(), failing(false)}, Host: "h"})
	if !errors.Is(err, ErrNoSnapshot) || finished != 2 {
		t.Fatalf("a required source failed: %v, %d finished", err, finished)
	}
	if after, _ := r.ListSnapshots(ctx); len(after) != len(sns) {
		t.Fatalf("%d snapshots after a failed backup, %d before", len(after), len(sns))
	}
}
