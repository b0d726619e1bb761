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
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/restorer"
)

// pgDump imitates a pg_dump stream: the PGDMP magic, then rows; every
// skip-th row is missing (0: none), as after updates moved them.
func pgDump(rows, skip int) []byte {
	b := bytes.NewBufferString("PGDMP")
	for k := 0; k < rows; k++ {
		if skip > 0 && k%skip == 3 {
			continue
		}
		rng := rand.New(rand.NewPCG(uint64(k), 1))
		fmt.Fprintf(b, "%d\t%d\t%016x%016x\n", k, k%7, rng.Uint64(), rng.Uint64())
	}
	return b.Bytes()
}

func (f *fixture) backupStream(data []byte, parent *repo.Snapshot) (*repo.Snapshot, repo.Summary) {
	ctx := context.Background()
	r := f.open()
	defer r.Close()
	res, err := archiver.Run(ctx, r, nil, []archiver.Stream{{Path: "/db.pgdump", Reader: bytes.NewReader(data), Chunking: repo.ChunkingAuto}}, archiver.Options{Parent: parent})
	if err != nil {
		f.t.Fatal(err)
	}
	if err := r.Flush(ctx); err != nil {
		f.t.Fatal(err)
	}
	sn := &repo.Snapshot{Time: time.Now(), Tree: res.Tree, Paths: []string{"/db.pgdump"}, Hostname: "h", Summary: &res.Summary}
	if _, err := r.SaveSnapshot(ctx, sn); err != nil {
		f.t.Fatal(err)
	}
	return sn, res.Summary
}

// TestPruneKeepsDeltaBases forgets the snapshot whose chunks are the bases
// of the next snapshot's deltas and prunes at once: the bases must stay.
func TestPruneKeepsDeltaBases(t *testing.T) {
	f := newFixture(t)
	day1, day2 := pgDump(40000, 0), pgDump(40000, 44)
	sn1, _ := f.backupStream(day1, nil)
	sn2, sum := f.backupStream(day2, sn1)
	if sum.DeltaBlobs == 0 || sum.DeltaBlobs*2 < sum.DataBlobs {
		t.Fatalf("day 2 stored %d blobs, %d as deltas; want most as deltas", sum.DataBlobs, sum.DeltaBlobs)
	}
	if sum.DataAddedPacked*5 > uint64(len(day2)) {
		t.Fatalf("day 2 added %d bytes for a %d-byte dump", sum.DataAddedPacked, len(day2))
	}
	f.forget(sn1)
	st := f.prune(time.Now(), 0)
	if st.PacksDeleted+st.PacksRepacked > 0 && st.UsedBlobs <= int(sum.DataBlobs) {
		t.Fatalf("prune used set (%d) misses the bases: %+v", st.UsedBlobs, st)
	}
	f.check()

	r := f.open()
	defer r.Close()
	target := t.TempDir()
	if _, err := restorer.Restore(context.Background(), r, sn2.Tree, restorer.Options{Target: target}); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(target, "db.pgdump"))
	if err != nil || !bytes.Equal(got, day2) {
		t.Fatalf("restored day 2: %d bytes, %v", len(got), err)
	}
}
