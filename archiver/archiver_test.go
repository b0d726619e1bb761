package archiver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/crypto"
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

func makeSource(t *testing.T) string {
	src := t.TempDir()
	rng := rand.New(rand.NewPCG(1, 1))
	for i, name := range []string{"a.txt", "sub/b.bin", "sub/deeper/c.bin", "z"} {
		b := make([]byte, 1000*i*i*i+10)
		for j := range b {
			b[j] = byte(rng.Uint32())
		}
		p := filepath.Join(src, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	os.Symlink("a.txt", filepath.Join(src, "link"))
	// Fixed times, so nothing but content and metadata decides the tree.
	when := time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC)
	filepath.Walk(src, func(p string, _ os.FileInfo, _ error) error {
		os.Chtimes(p, when, when)
		return nil
	})
	return src
}

// sourceTree returns the tree ID of the backed-up directory itself: the
// directories above it (/tmp...) change while tests run.
func sourceTree(t *testing.T, r *repo.Repository, root crypto.ID, src string) crypto.ID {
	t.Helper()
	id := root
	for _, comp := range strings.Split(strings.Trim(filepath.ToSlash(src), "/"), "/") {
		raw, err := r.LoadBlob(context.Background(), id, nil)
		if err != nil {
			t.Fatal(err)
		}
		tr, err := tree.Decode(raw)
		if err != nil {
			t.Fatal(err)
		}
		n := tr.Find(comp)
		if n == nil {
			t.Fatalf("%s not in the tree", comp)
		}
		id = n.Subtree
	}
	return id
}

// The same tree gives the same ID, in one repository and across runs; a
// different repository (another ID key) gives another ID.
func TestTreeIDIsDeterministic(t *testing.T) {
	ctx := context.Background()
	src := makeSource(t)
	r := newRepo(t)
	res1, err := Run(ctx, r, []string{src}, nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	res2, err := Run(ctx, r, []string{src}, nil, Options{BlobWorkers: 1, FileWorkers: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	id1, id2 := sourceTree(t, r, res1.Tree, src), sourceTree(t, r, res2.Tree, src)
	if id1 != id2 {
		t.Fatalf("same tree, different IDs: %s %s", id1.Short(), id2.Short())
	}
	other := newRepo(t)
	res3, err := Run(ctx, other, []string{src}, nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := other.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if sourceTree(t, other, res3.Tree, src) == id1 {
		t.Fatal("tree IDs are not keyed per repository")
	}
	// Changing one byte of metadata changes the root.
	os.Chmod(filepath.Join(src, "z"), 0o600)
	res4, err := Run(ctx, r, []string{src}, nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if sourceTree(t, r, res4.Tree, src) == id1 {
		t.Fatal("a mode change did not change the tree ID")
	}
}

func TestTreeEncodingIgnoresInputOrder(t *testing.T) {
	nodes := []tree.Node{
		{Name: "b", Type: tree.File, Mode: 0o644, Xattrs: []tree.Xattr{{Name: "user.z", Value: []byte("1")}, {Name: "user.a", Value: []byte("2")}}},
		{Name: "a", Type: tree.Symlink, LinkTarget: "b"},
		{Name: "c", Type: tree.FIFO},
	}
	t1 := &tree.Tree{Nodes: []tree.Node{nodes[0], nodes[1], nodes[2]}}
	t2 := &tree.Tree{Nodes: []tree.Node{nodes[2], nodes[0], nodes[1]}}
	t1.Sort()
	t2.Sort()
	b1, err1 := t1.Encode()
	b2, err2 := t2.Encode()
	if err1 != nil || err2 != nil || !bytes.Equal(b1, b2) {
		t.Fatalf("encodings differ: %v %v", err1, err2)
	}
}

type failingReader struct{ n int }

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, errors.New("source died")
	}
	n := min(len(p), f.n)
	f.n -= n
	return n, nil
}

// A stream that fails fails the run; a stream read to its end is stored
// whole and in order.
func TestStreams(t *testing.T) {
	ctx := context.Background()
	r := newRepo(t)
	if _, err := Run(ctx, r, nil, []Stream{{Path: "/db.sql", Reader: &failingReader{n: 3 << 20}}}, Options{}); err == nil {
		t.Fatal("a failing stream did not fail the run")
	}
	var buf bytes.Buffer
	rng := rand.New(rand.NewPCG(5, 5))
	for buf.Len() < 6<<20 {
		fmt.Fprintf(&buf, "INSERT INTO t VALUES (%d, '%x');\n", rng.Uint64(), rng.Uint64())
	}
	data := buf.Bytes()
	res, err := Run(ctx, r, nil, []Stream{{Path: "/pg/db.sql", Reader: bytes.NewReader(data), Chunking: repo.ChunkingDatabase}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if res.StreamSizes["/pg/db.sql"] != uint64(len(data)) {
		t.Fatalf("stream size %d", res.StreamSizes["/pg/db.sql"])
	}
	root, _ := r.LoadBlob(ctx, res.Tree, nil)
	rt, _ := tree.Decode(root)
	pg := rt.Find("pg")
	sub, _ := r.LoadBlob(ctx, pg.Subtree, nil)
	st, _ := tree.Decode(sub)
	n := st.Find("db.sql")
	var got bytes.Buffer
	for _, id := range n.Content {
		b, err := r.LoadBlob(ctx, id, nil)
		if err != nil {
			t.Fatal(err)
		}
		got.Write(b)
	}
	if !bytes.Equal(got.Bytes(), data) {
		t.Fatal("stream content differs")
	}
	if len(n.Content) < 12 { // about 24 at 256 KiB; 1 MiB chunks would give 6
		t.Fatalf("a 6 MB database stream gave only %d chunks: the database chunk size is not used", len(n.Content))
	}
}
