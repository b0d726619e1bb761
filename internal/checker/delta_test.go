package checker

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/archiver"
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/repo/backend/local"
)

// TestCheckFindsMissingDeltaBase removes the pack holding the bases of a
// later backup's deltas: check must say which deltas lost their base, even
// without reading data.
func TestCheckFindsMissingDeltaBase(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	open := func() *repo.Repository {
		be, _ := local.Open(filepath.Join(dir, "repo"))
		r, err := repo.Open(ctx, be, "pw", repo.Options{KDF: &testKDF})
		if err != nil {
			t.Fatal(err)
		}
		if err := r.LoadIndex(ctx); err != nil {
			t.Fatal(err)
		}
		return r
	}
	be, _ := local.Open(filepath.Join(dir, "repo"))
	r, err := repo.Init(ctx, be, "pw", repo.Options{PackSize: 1 << 20, KDF: &testKDF})
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	dump := func(skip int) []byte {
		var b bytes.Buffer
		b.WriteString("PGDMP")
		for k := 0; k < 30000; k++ {
			if skip == 0 || k%skip != 1 {
				fmt.Fprintf(&b, "%d\tname-%d\t%x\n", k, k*31%977, k*k)
			}
		}
		return b.Bytes()
	}
	var parent *repo.Snapshot
	for _, skip := range []int{0, 50} {
		r := open()
		res, err := archiver.Run(ctx, r, nil, []archiver.Stream{{Path: "/db", Reader: bytes.NewReader(dump(skip)), Chunking: repo.ChunkingAuto}}, archiver.Options{Parent: parent})
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		parent = &repo.Snapshot{Time: time.Now(), Tree: res.Tree, Paths: []string{"/db"}}
		if _, err := r.SaveSnapshot(ctx, parent); err != nil {
			t.Fatal(err)
		}
		if skip > 0 && res.Summary.DeltaBlobs == 0 {
			t.Fatal("no deltas were made")
		}
		r.Close()
	}
	r = open()
	res, err := Check(ctx, r, Options{ReadData: true})
	r.Close()
	if err != nil || res.Errors() != 0 {
		t.Fatalf("intact repository: %v %+v", err, res.Findings)
	}
	// The first pack written holds day 1's chunks: the bases.
	packs, _ := filepath.Glob(filepath.Join(dir, "repo", "data", "*", "*"))
	var oldest string
	var oldestTime time.Time
	for _, p := range packs {
		fi, _ := os.Stat(p)
		if oldest == "" || fi.ModTime().Before(oldestTime) {
			oldest, oldestTime = p, fi.ModTime()
		}
	}
	if err := os.Remove(oldest); err != nil {
		t.Fatal(err)
	}
	r = open()
	defer r.Close()
	res, err = Check(ctx, r, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, f := range res.Findings {
		if f.Severity == Error && strings.Contains(f.Message, "needs base") && strings.Contains(f.Message, "missing pack") {
			found = true
		}
	}
	if !found {
		t.Fatalf("check did not report the missing bases: %+v", res.Findings)
	}
}
