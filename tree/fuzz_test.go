package tree

import (
	"bytes"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/cairn-backup/cairn/crypto"
)

// decoderLenient relaxes the canonical-encoding checks below. It was true
// while Decode accepted padded varints, null subtree IDs and unsorted
// xattrs; those are rejected now, so it stays false: a successful decode
// re-encodes to exactly its input.
const decoderLenient = false

func fuzzSeedTrees() []*Tree {
	id := func(c byte) (id crypto.ID) {
		for i := range id {
			id[i] = c
		}
		return id
	}
	return []*Tree{
		{},
		{Nodes: []Node{{Name: "a", Type: File, Mode: 0o644, Size: 3, Content: []crypto.ID{id(1)}, ChunkSizes: []uint32{3}}}},
		{Nodes: []Node{
			{Name: "bin", Type: Symlink, Mode: 0o777, LinkTarget: "usr/bin", ModTime: -1, ChangeTime: 1 << 62},
			{Name: "dev", Type: CharDev, Rdev: 0x0501, UID: 1<<32 - 1, GID: 5, User: "root", Group: "tty"},
			{Name: "etc", Type: Dir, Mode: 0o755, Subtree: id(2), Inode: 12, Device: 2049, Links: 3},
			{Name: "f\xff\xfe", Type: File, Size: 1 << 40, Content: []crypto.ID{id(3), id(4)}, ChunkSizes: []uint32{1 << 20, 1<<32 - 1},
				Xattrs: []Xattr{{Name: "security.selinux", Value: []byte("system_u")}, {Name: "user.a", Value: []byte{}}}},
			{Name: "pipe", Type: FIFO}, {Name: "sda", Type: Dev, Rdev: 0x0800}, {Name: "sock", Type: Socket},
		}},
		{Nodes: []Node{ // version 2: a dump with chunk heads beside a file without
			{Name: "a.pgdump", Type: File, Size: 7, Content: []crypto.ID{id(5), id(6)}, ChunkSizes: []uint32{3, 4}, ChunkHeads: []uint64{1, 1<<64 - 1}},
			{Name: "b", Type: File, Size: 3, Content: []crypto.ID{id(1)}, ChunkSizes: []uint32{3}},
		}},
	}
}

func xattrsSorted(t *Tree) bool {
	for _, n := range t.Nodes {
		for i := 1; i < len(n.Xattrs); i++ {
			if n.Xattrs[i-1].Name >= n.Xattrs[i].Name {
				return false
			}
		}
	}
	return true
}

// normalized returns a copy of t with each node's xattrs sorted by name and value.
func normalized(t *Tree) *Tree {
	c := &Tree{Nodes: slices.Clone(t.Nodes)}
	for i := range c.Nodes {
		xs := slices.Clone(c.Nodes[i].Xattrs)
		slices.SortFunc(xs, func(a, b Xattr) int {
			if c := strings.Compare(a.Name, b.Name); c != 0 {
				return c
			}
			return bytes.Compare(a.Value, b.Value)
		})
		c.Nodes[i].Xattrs = xs
	}
	return c
}

// FuzzDecodeTree checks that Decode never panics, that errors wrap ErrFormat,
// and that the encoding is canonical: whatever Decode accepts re-encodes to
// exactly the input bytes (one tree, one encoding, one ID). See
// decoderLenient for the known exceptions.
func FuzzDecodeTree(f *testing.F) {
	for _, tr := range fuzzSeedTrees() {
		b, err := tr.Encode()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("CRNT\x01"))
	f.Fuzz(func(t *testing.T, data []byte) {
		tr, err := Decode(data)
		if err != nil {
			if !errors.Is(err, ErrFormat) {
				t.Fatalf("error does not wrap ErrFormat: %v", err)
			}
			if tr != nil {
				t.Fatal("Decode returned a tree and an error")
			}
			return
		}
		enc, err := tr.Encode()
		if err != nil {
			t.Fatalf("decoded tree does not encode: %v", err)
		}
		if bytes.Equal(enc, data) {
			return
		}
		if !decoderLenient || (len(enc) >= len(data) && xattrsSorted(tr)) {
			t.Fatalf("encoding is not canonical: decode(%x) encodes to %x", data, enc)
		}
		// A known non-canonical spelling: the canonical form must be a
		// fixed point that decodes to the same tree.
		tr2, err := Decode(enc)
		if err != nil {
			t.Fatalf("canonical re-encoding %x does not decode: %v", enc, err)
		}
		if enc2, err := tr2.Encode(); err != nil || !bytes.Equal(enc2, enc) {
			t.Fatalf("canonical encoding is not a fixed point: %x -> %x, %v", enc, enc2, err)
		}
		if !reflect.DeepEqual(normalized(tr), normalized(tr2)) {
			t.Fatalf("round trip changed the tree:\n%+v\n%+v", tr, tr2)
		}
	})
}

// rawNode spells out a FIFO "pipe" owned by "root" field by field (see
// Encode), with the given bytes for mode, mtime, xattrs and subtree.
func rawNode(mode, mtime, xattrs, subtree []byte) []byte {
	b := []byte{4, 'p', 'i', 'p', 'e', byte(FIFO)}
	b = append(b, mode...)
	b = append(b, 0, 0, 4, 'r', 'o', 'o', 't', 0) // uid, gid, user, group
	b = append(b, mtime...)
	b = append(b, 0, 0, 0, 0, 0, 0, 0) // ctime, size, inode, device, links, rdev, link target
	b = append(b, xattrs...)
	b = append(b, 0) // content count
	return append(b, subtree...)
}

func rawTree(count []byte, nodes ...[]byte) []byte {
	b := append([]byte(magic+"\x01"), count...)
	for _, n := range nodes {
		b = append(b, n...)
	}
	return b
}

// TestDecodeNonCanonical lists concrete encodings that Encode never
// produces. Decode should reject each; while decoderLenient is set the
// accepted ones are only logged.
func TestDecodeNonCanonical(t *testing.T) {
	zero := []byte{0}
	baseline := rawTree([]byte{1}, rawNode(zero, zero, zero, zero))
	tr, err := Decode(baseline)
	if err != nil {
		t.Fatalf("baseline does not decode (has the format changed?): %v", err)
	}
	if enc, err := tr.Encode(); err != nil || !bytes.Equal(enc, baseline) {
		t.Fatalf("baseline re-encodes as %x, %v (has the format changed?)", enc, err)
	}
	cases := map[string][]byte{
		"non-minimal node count": rawTree([]byte{0x81, 0x00}, rawNode(zero, zero, zero, zero)),
		"non-minimal mode":       rawTree([]byte{1}, rawNode([]byte{0x80, 0x00}, zero, zero, zero)),
		"non-minimal mtime":      rawTree([]byte{1}, rawNode(zero, []byte{0x80, 0x80, 0x00}, zero, zero)),
		"subtree flag with null": rawTree([]byte{1}, rawNode(zero, zero, zero, append([]byte{1}, make([]byte, crypto.IDSize)...))),
		"xattrs unsorted":        rawTree([]byte{1}, rawNode(zero, zero, []byte{2, 1, 'b', 1, 'v', 1, 'a', 1, 'v'}, zero)),
		"xattrs duplicate":       rawTree([]byte{1}, rawNode(zero, zero, []byte{2, 1, 'a', 1, 'v', 1, 'a', 1, 'w'}, zero)),
	}
	for name, data := range cases {
		tr, err := Decode(data)
		switch {
		case err != nil && decoderLenient:
			t.Logf("%s: now rejected (%v); set decoderLenient = false once all are", name, err)
		case err != nil:
		case decoderLenient:
			enc, _ := tr.Encode()
			t.Logf("known bug: %s accepted: %x re-encodes as %x", name, data, enc)
		default:
			t.Errorf("%s: Decode accepted non-canonical %x", name, data)
		}
	}
}

// TestDecodeSmallestNodes round-trips trees of the smallest possible nodes.
func TestDecodeSmallestNodes(t *testing.T) {
	for _, tr := range []*Tree{
		{Nodes: []Node{{Name: "p", Type: FIFO}}},
		{Nodes: []Node{{Name: "a", Type: File}, {Name: "b", Type: Socket}, {Name: "c", Type: Symlink}}},
	} {
		b, err := tr.Encode()
		if err != nil {
			t.Fatal(err)
		}
		got, err := Decode(b)
		switch {
		case err != nil && decoderLenient:
			t.Logf("known bug: %d-node tree of %d bytes does not decode: %v", len(tr.Nodes), len(b), err)
		case err != nil:
			t.Errorf("%d-node tree of %d bytes does not decode: %v", len(tr.Nodes), len(b), err)
		case !reflect.DeepEqual(got, tr):
			t.Errorf("round trip changed the tree:\n%+v\n%+v", got, tr)
		}
	}
}
