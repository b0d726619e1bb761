package archiver

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/cairn-backup/cairn/chunk"
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/tree"
)

func TestSniffKind(t *testing.T) {
	for in, want := range map[string]string{
		"PGDMP\x01\x0e\x00":                     repo.ChunkingDatabase,
		"--\n-- PostgreSQL database dump\n--\n": repo.ChunkingDatabase,
		"REDIS0011\xfa":                         repo.ChunkingDatabase,
		"":                                      repo.ChunkingFiles,
		"PGDM":                                  repo.ChunkingFiles,
		"hello world":                           repo.ChunkingFiles,
	} {
		kind, rd := sniffKind(strings.NewReader(in))
		if kind != want {
			t.Errorf("%q: kind %s, want %s", in, kind, want)
		}
		if got, _ := io.ReadAll(rd); string(got) != in {
			t.Errorf("%q: the reader lost bytes: %q", in, got)
		}
	}
}

// eventDump is a plain-SQL dump: one table of rows where every skip-th row
// is gone (0: none), then inserted rows appended to it, then a second table.
func eventDump(rows, skip, inserted int) []byte {
	var b bytes.Buffer
	b.WriteString("--\n-- PostgreSQL database dump\n--\nCOPY public.users (id, name, balance) FROM stdin;\n")
	row := func(k int, bal int) {
		rng := rand.New(rand.NewPCG(uint64(k), 3))
		fmt.Fprintf(&b, "%d\tuser-%x\t%d\n", k, rng.Uint64(), bal)
	}
	for k := 0; k < rows; k++ {
		if skip == 0 || k%skip != 5 {
			row(k, 0)
		}
	}
	for k := 0; k < inserted; k++ {
		row(k*skip+5, 17) // the updated versions of the missing rows
	}
	b.WriteString("\\.\n\nCOPY public.events (id, action) FROM stdin;\n")
	for k := 0; k < rows; k++ {
		fmt.Fprintf(&b, "%d\tlogin %d\n", k, k*7919%1000)
	}
	return b.Bytes()
}

func backupStream(t *testing.T, r *repo.Repository, data []byte, parent *repo.Snapshot, opts Options) (*repo.Snapshot, repo.Summary) {
	t.Helper()
	ctx := context.Background()
	opts.Parent = parent
	res, err := Run(ctx, r, nil, []Stream{{Path: "/db.sql", Reader: bytes.NewReader(data), Chunking: repo.ChunkingAuto}}, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	sn := &repo.Snapshot{Tree: res.Tree, Paths: []string{"/db.sql"}}
	raw, err := r.LoadBlob(ctx, res.Tree, nil)
	if err != nil {
		t.Fatal(err)
	}
	root, err := tree.Decode(raw)
	if err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	for _, id := range root.Find("db.sql").Content {
		b, err := r.LoadBlob(ctx, id, nil)
		if err != nil {
			t.Fatal(err)
		}
		got.Write(b)
	}
	if !bytes.Equal(got.Bytes(), data) {
		t.Fatal("stream reads back different")
	}
	return sn, res.Summary
}

// TestStreamDeltas backs up a dump, then the dump after scattered row
// updates (rows moved to the table's end), and checks that the second
// backup stores the changed chunks as small deltas, also for the table
// after the inserted rows, where the alignment must have followed.
func TestStreamDeltas(t *testing.T) {
	day1, day2 := eventDump(150000, 0, 0), eventDump(150000, 40, 3750)
	r := newRepo(t)
	sn1, s1 := backupStream(t, r, day1, nil, Options{})
	if s1.DeltaBlobs != 0 {
		t.Fatalf("first backup made %d deltas", s1.DeltaBlobs)
	}
	_, s2 := backupStream(t, r, day2, sn1, Options{})
	// Every changed chunk is a delta, except those that hold mostly the
	// appended rows (new content, where a delta would not pay: one to
	// three chunks, depending on the repository's random chunker
	// polynomial).
	if s2.DeltaBlobs < s2.DataBlobs-3 || s2.DeltaBlobs*4 < s2.DataBlobs*3 {
		t.Fatalf("day 2: %d of %d new blobs are deltas; want all but those of the appended rows", s2.DeltaBlobs, s2.DataBlobs)
	}
	// Without deltas the same change costs several times more.
	r2 := newRepo(t)
	sn1b, _ := backupStream(t, r2, day1, nil, Options{})
	_, full := backupStream(t, r2, day2, sn1b, Options{NoDelta: true})
	if full.DeltaBlobs != 0 {
		t.Fatalf("NoDelta made %d deltas", full.DeltaBlobs)
	}
	if s2.DataAddedPacked*3 > full.DataAddedPacked {
		t.Fatalf("day 2 grew %d bytes with deltas, %d without", s2.DataAddedPacked, full.DataAddedPacked)
	}
	t.Logf("day 2 growth: %d bytes with deltas (%d of %d blobs), %d without", s2.DataAddedPacked, s2.DeltaBlobs, s2.DataBlobs, full.DataAddedPacked)
}

// TestChunkHeadsRecorded checks that a database stream's node lists the
// head of every chunk, and that the next backup finds bases by those heads
// without reading the old chunks (a deltaRef built from them never touches
// the repository: it is given none).
func TestChunkHeadsRecorded(t *testing.T) {
	ctx := context.Background()
	day1 := eventDump(60000, 0, 0)
	r := newRepo(t)
	sn1, _ := backupStream(t, r, day1, nil, Options{})
	root, err := tree.Load(ctx, r, sn1.Tree)
	if err != nil {
		t.Fatal(err)
	}
	node := root.Find("db.sql")
	if len(node.ChunkHeads) != len(node.Content) || len(node.Content) < 3 {
		t.Fatalf("%d chunk heads for %d chunks", len(node.ChunkHeads), len(node.Content))
	}
	var off int
	for i, id := range node.Content {
		b, err := r.LoadBlob(ctx, id, nil)
		if err != nil {
			t.Fatal(err)
		}
		if node.ChunkHeads[i] != tree.ChunkHead(b) || !bytes.Equal(b, day1[off:off+len(b)]) {
			t.Fatalf("chunk %d: head %x, want %x", i, node.ChunkHeads[i], tree.ChunkHead(b))
		}
		off += len(b)
	}
	ref := newDeltaRef(ctx, nil, node)
	defer ref.close()
	// A chunk that starts like old chunk 2, at an offset where position
	// alone would point elsewhere.
	start := int(node.ChunkSizes[0] + node.ChunkSizes[1])
	cands := ref.candidates(0, day1[start:start+100])
	if len(cands) == 0 || cands[0] != node.Content[2] {
		t.Fatalf("candidates %v, want chunk 2 (%s) first", cands, node.Content[2].Short())
	}
	// A file's node gets no heads.
	res, err := Run(ctx, r, nil, []Stream{{Path: "/plain", Reader: bytes.NewReader(day1), Chunking: repo.ChunkingFiles}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	root, err = tree.Load(ctx, r, res.Tree)
	if err != nil {
		t.Fatal(err)
	}
	if n := root.Find("plain"); n == nil || len(n.ChunkHeads) != 0 {
		t.Fatalf("a files stream got chunk heads: %+v", n)
	}
}

// TestKnownChunks checks that chunks of the previous version found again
// (taken without a cut-point search) leave the chunking exactly as a plain
// search makes it, and that they are found.
func TestKnownChunks(t *testing.T) {
	ctx := context.Background()
	day1, day2 := eventDump(150000, 0, 0), eventDump(150000, 40, 3750)
	r := newRepo(t)
	sn1, _ := backupStream(t, r, day1, nil, Options{})
	sn2, _ := backupStream(t, r, day2, sn1, Options{})
	root1, err := tree.Load(ctx, r, sn1.Tree)
	if err != nil {
		t.Fatal(err)
	}
	root2, err := tree.Load(ctx, r, sn2.Tree)
	if err != nil {
		t.Fatal(err)
	}
	// The same cuts as a plain search.
	p := r.Config().ChunkParams(repo.ChunkingDatabase)
	var pool chunk.BufferPool
	c := chunk.New(bytes.NewReader(day2), r.Config().Polynomial, p, &pool)
	var want []uint32
	for {
		bp, err := c.Next()
		if err != nil {
			break
		}
		want = append(want, uint32(len(*bp)))
	}
	if got := root2.Find("db.sql").ChunkSizes; !slices.Equal(got, want) {
		t.Fatalf("day 2 cut into %d chunks, a plain search makes %d", len(got), len(want))
	}
	// Unchanged chunks are found: day 1 again, chunk by chunk.
	ref := newDeltaRef(ctx, r, root1.Find("db.sql"))
	defer ref.close()
	c = chunk.New(bytes.NewReader(day1), r.Config().Polynomial, p, &pool)
	found := 0
	for i := 0; ; i++ {
		rest, err := c.Peek()
		if err != nil || len(rest) == 0 {
			break
		}
		if n, id, ok := ref.knownChunk(c, rest, r.Key()); ok {
			if id != ref.old[i] {
				t.Fatalf("chunk %d taken as %s, was %s", i, id.Short(), ref.old[i].Short())
			}
			pool.Put(c.Take(n))
			found++
			continue
		}
		if _, err := c.Next(); err != nil {
			t.Fatal(err)
		}
	}
	if found != len(ref.old)-1 { // all but the last, which ended with its stream
		t.Fatalf("%d of %d unchanged chunks found", found, len(ref.old))
	}
}
