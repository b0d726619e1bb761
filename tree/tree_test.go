package tree

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/cairn-backup/cairn/crypto"
)

// TestChunkHeadsEncoding pins version 2 byte by byte (docs/format.md §11):
// a tree with chunk heads, and the same tree without them, which must stay
// version 1 so its ID does not change.
func TestChunkHeadsEncoding(t *testing.T) {
	id := crypto.ID{1}
	node := Node{Name: "a", Type: File, Mode: 0o644, ModTime: -1, Size: 200, Content: []crypto.ID{id}, ChunkSizes: []uint32{200}}
	v1, err := (&Tree{Nodes: []Node{node}}).Encode()
	if err != nil {
		t.Fatal(err)
	}
	// The example of §11.1.
	if got, want := hex.EncodeToString(v1), "43524e540101016101a403000000000100c801000000000000010100000000000000000000000000000000000000000000000000000000000000c80100"; got != want {
		t.Fatalf("version 1:\n got %s\nwant %s", got, want)
	}
	node.ChunkHeads = []uint64{0x0102030405060708}
	v2, err := (&Tree{Nodes: []Node{node}}).Encode()
	if err != nil {
		t.Fatal(err)
	}
	// Version byte 02, and after the content list: one head, little endian.
	if got, want := hex.EncodeToString(v2), "43524e540201016101a403000000000100c801000000000000010100000000000000000000000000000000000000000000000000000000000000c801010807060504030201"+"00"; got != want {
		t.Fatalf("version 2:\n got %s\nwant %s", got, want)
	}
	back, err := Decode(v2)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(back.Nodes[0].ChunkHeads, node.ChunkHeads) {
		t.Fatalf("heads %v, want %v", back.Nodes[0].ChunkHeads, node.ChunkHeads)
	}
	// Version 2 without any head is not canonical (version 1 says the same).
	bad := append([]byte(nil), v1...)
	bad[4] = 2
	bad = append(bad[:len(bad)-1], 0, 0) // an empty head list, then the subtree flag
	if _, err := Decode(bad); !errors.Is(err, ErrFormat) {
		t.Fatalf("version 2 without heads: %v", err)
	}
	// Heads must match the blobs one to one.
	node.ChunkHeads = []uint64{1, 2}
	if _, err := (&Tree{Nodes: []Node{node}}).Encode(); !errors.Is(err, ErrFormat) {
		t.Fatalf("two heads for one blob encoded: %v", err)
	}
	bad = append([]byte(nil), v2...)
	bad[len(bad)-10] = 2 // the head count
	if _, err := Decode(bad); !errors.Is(err, ErrFormat) {
		t.Fatalf("two heads for one blob decoded: %v", err)
	}
}

func TestChunkHead(t *testing.T) {
	long := []byte("1\t1\t0\t" + string(make([]byte, 100)))
	if ChunkHead(long) != ChunkHead(long[:HeadLen]) {
		t.Fatal("bytes past HeadLen changed the head")
	}
	if ChunkHead(long) == ChunkHead(long[1:]) {
		t.Fatal("different heads collide")
	}
	// FNV-1a 64 of "": the offset basis. A stable function: heads are stored.
	if got := ChunkHead(nil); got != 0xcbf29ce484222325 {
		t.Fatalf("ChunkHead(nil) = %#x", got)
	}
}

// mapLoader serves encoded trees from a map; missing IDs fail.
type mapLoader map[crypto.ID][]byte

func (m mapLoader) LoadBlob(_ context.Context, id crypto.ID, dst []byte) ([]byte, error) {
	b, ok := m[id]
	if !ok {
		return nil, errors.New("no such blob")
	}
	return append(dst, b...), nil
}

// TestPreload builds a tree of 3 levels (one subtree shared by two
// directories, one missing) and checks what Preload loads.
func TestPreload(t *testing.T) {
	m := mapLoader{}
	put := m.putter(t)
	file := Node{Name: "f", Type: File}
	leaf := put(&Tree{Nodes: []Node{file}})
	missing := crypto.ID{7}
	var mids []Node
	for i := range 20 {
		sub := put(&Tree{Nodes: []Node{{Name: "a", Type: Dir, Subtree: leaf}, {Name: "b", Type: Dir, Subtree: put(&Tree{Nodes: []Node{{Name: fmt.Sprint("g", i), Type: File}}})}}})
		mids = append(mids, Node{Name: fmt.Sprintf("d%02d", i), Type: Dir, Subtree: sub})
	}
	mids = append(mids, Node{Name: "gone", Type: Dir, Subtree: missing})
	root := put(&Tree{Nodes: mids})
	got := Preload(context.Background(), m, root, 3, nil)
	if len(got) != len(m) {
		t.Fatalf("%d trees loaded, %d stored", len(got), len(m))
	}
	for id := range m {
		if got[id] == nil {
			t.Fatalf("tree %s not loaded", id.Short())
		}
	}
	// descend limits the walk: only /d03 and below.
	got = Preload(context.Background(), m, root, 2, func(dir string, n *Node) bool { return dir != "/" || n.Name == "d03" })
	if len(got) != 4 { // root, d03, its a (the shared leaf) and b
		t.Fatalf("%d trees loaded with a filter, want 4", len(got))
	}
	// A canceled context ends it.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if got := Preload(ctx, m, root, 2, nil); len(got) > 1 {
		t.Fatalf("%d trees loaded after cancel", len(got))
	}
}

func TestFindAndWalk(t *testing.T) {
	m := mapLoader{}
	put := m.putter(t)
	sub := put(&Tree{Nodes: []Node{{Name: "c", Type: File, Size: 3}, {Name: "d", Type: Dir, Subtree: put(&Tree{})}}})
	root := put(&Tree{Nodes: []Node{{Name: "a", Type: File}, {Name: "b", Type: Dir, Subtree: sub}}})
	ctx := context.Background()
	if n, err := Find(ctx, m, root, "/b/c"); err != nil || n.Size != 3 {
		t.Fatalf("find /b/c: %+v %v", n, err)
	}
	if n, err := Find(ctx, m, root, "/"); err != nil || n.Subtree != root {
		t.Fatalf("find /: %+v %v", n, err)
	}
	for _, p := range []string{"/x", "/a/c", "/b/c/e"} {
		if _, err := Find(ctx, m, root, p); !errors.Is(err, ErrNotFound) {
			t.Errorf("find %s: %v, want ErrNotFound", p, err)
		}
	}
	var seen []string
	err := Walk(ctx, m, root, "/", func(p string, n *Node) error {
		seen = append(seen, p)
		if p == "/b/d" {
			return SkipDir
		}
		return nil
	})
	if err != nil || strings.Join(seen, " ") != "/a /b /b/c /b/d" {
		t.Fatalf("walk: %v %v", seen, err)
	}
}

// TestWalkMax walks a tree whose directories name one subtree twice at
// every level (a DAG, legal in a content-addressed store): it unfolds into
// 3*2^20-2 entries, and the walk must stop at its bound with a typed error
// instead of visiting them all. A tree within the bound walks completely.
func TestWalkMax(t *testing.T) {
	m := mapLoader{}
	put := m.putter(t)
	id := put(&Tree{Nodes: []Node{{Name: "f", Type: File}}})
	for range 20 {
		id = put(&Tree{Nodes: []Node{{Name: "a", Type: Dir, Subtree: id}, {Name: "b", Type: Dir, Subtree: id}}})
	}
	ctx := context.Background()
	visited := 0
	err := WalkMax(ctx, m, id, "/", 10_000, func(string, *Node) error { visited++; return nil })
	var tooMany *TooManyEntriesError
	if !errors.As(err, &tooMany) || tooMany.Max != 10_000 || visited != 10_000 {
		t.Fatalf("walk of a DAG: %v after %d entries; want TooManyEntriesError after 10000", err, visited)
	}
	// Exactly at the bound: 2^21-2 directories and 2^20 files.
	visited = 0
	if err := WalkMax(ctx, m, id, "/", 3<<20-2, func(string, *Node) error { visited++; return nil }); err != nil || visited != 3<<20-2 {
		t.Fatalf("walk within the bound: %v after %d entries", err, visited)
	}
}

// putter returns a function that stores a tree in m and returns its ID.
func (m mapLoader) putter(t *testing.T) func(*Tree) crypto.ID {
	return func(tr *Tree) crypto.ID {
		b, err := tr.Encode()
		if err != nil {
			t.Fatal(err)
		}
		id := crypto.Hash(b)
		m[id] = b
		return id
	}
}
