// Package tree defines snapshot tree nodes and their deterministic binary
// encoding: the same tree always encodes to the same bytes, hence the same ID.
package tree

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strings"

	"github.com/cairn-backup/cairn/crypto"
)

// NodeType is the kind of a directory entry.
type NodeType uint8

// Node types.
const (
	File    NodeType = 1
	Dir     NodeType = 2
	Symlink NodeType = 3
	Dev     NodeType = 4 // block device
	CharDev NodeType = 5
	FIFO    NodeType = 6
	Socket  NodeType = 7
)

func (t NodeType) String() string {
	switch t {
	case File:
		return "file"
	case Dir:
		return "dir"
	case Symlink:
		return "symlink"
	case Dev:
		return "dev"
	case CharDev:
		return "chardev"
	case FIFO:
		return "fifo"
	case Socket:
		return "socket"
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// Xattr is one extended attribute.
type Xattr struct {
	Name  string
	Value []byte
}

// Node is one entry of a directory. Names and link targets are raw bytes
// held in strings, so any file name round-trips, valid UTF-8 or not.
type Node struct {
	Name       string
	Type       NodeType
	Mode       uint32 // permission bits plus setuid, setgid, sticky (07777)
	UID, GID   uint32
	User       string
	Group      string
	ModTime    int64 // nanoseconds since the Unix epoch
	ChangeTime int64
	Size       uint64
	Inode      uint64
	Device     uint64
	Links      uint64
	Rdev       uint64 // device number of Dev and CharDev nodes
	LinkTarget string
	Xattrs     []Xattr
	Content    []crypto.ID // data blobs of a File, in order
	ChunkSizes []uint32    // plaintext length of each Content blob
	// ChunkHeads, when set (database streams), holds ChunkHead of each
	// Content blob: the next backup of the stream finds the chunk a
	// changed chunk replaced by its first bytes without reading this one.
	ChunkHeads []uint64
	Subtree    crypto.ID // tree blob of a Dir
}

// Tree is a directory's entries, sorted by name.
type Tree struct {
	Nodes []Node
}

// Version 1 trees have no chunk heads; version 2 adds them to every node
// (usually an empty list). A tree is written as version 2 only when one of
// its nodes has heads, so a tree without any has the same bytes, and ID,
// as before version 2 existed.
const (
	magic     = "CRNT"
	version   = 1
	versionV2 = 2
)

// HeadLen is how many leading bytes of a chunk ChunkHead covers: enough to
// hold the start of a row and its key.
const HeadLen = 48

// ChunkHead identifies a chunk by its first HeadLen bytes (FNV-1a, 64 bit):
// a changed chunk of a dump usually starts like the chunk it replaced,
// because chunk boundaries depend on content only.
func ChunkHead(b []byte) uint64 {
	h := fnv.New64a()
	_, _ = h.Write(b[:min(HeadLen, len(b))])
	return h.Sum64()
}

// ErrFormat is wrapped by every error about a malformed tree blob.
var ErrFormat = errors.New("malformed tree")

// Sort orders nodes by name (bytewise) as encoding requires.
func (t *Tree) Sort() {
	slices.SortFunc(t.Nodes, func(a, b Node) int { return strings.Compare(a.Name, b.Name) })
}

// Find returns the node called name, or nil.
func (t *Tree) Find(name string) *Node {
	i, ok := slices.BinarySearchFunc(t.Nodes, name, func(n Node, s string) int { return strings.Compare(n.Name, s) })
	if !ok {
		return nil
	}
	return &t.Nodes[i]
}

func appendBytes(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// Encode returns the canonical bytes of t. Nodes must be sorted with
// unique names; Encode returns an error otherwise.
func (t *Tree) Encode() ([]byte, error) {
	b := make([]byte, 0, 64+len(t.Nodes)*128)
	b = append(b, magic...)
	v2 := slices.ContainsFunc(t.Nodes, func(n Node) bool { return len(n.ChunkHeads) > 0 })
	if v2 {
		b = append(b, versionV2)
	} else {
		b = append(b, version)
	}
	b = binary.AppendUvarint(b, uint64(len(t.Nodes)))
	for i := range t.Nodes {
		n := &t.Nodes[i]
		if i > 0 && t.Nodes[i-1].Name >= n.Name {
			return nil, fmt.Errorf("encode tree: names not sorted or not unique at %q", n.Name)
		}
		if err := n.validate(); err != nil {
			return nil, fmt.Errorf("encode tree: %w", err)
		}
		b = appendBytes(b, n.Name)
		b = append(b, byte(n.Type))
		b = binary.AppendUvarint(b, uint64(n.Mode))
		b = binary.AppendUvarint(b, uint64(n.UID))
		b = binary.AppendUvarint(b, uint64(n.GID))
		b = appendBytes(b, n.User)
		b = appendBytes(b, n.Group)
		b = binary.AppendVarint(b, n.ModTime)
		b = binary.AppendVarint(b, n.ChangeTime)
		b = binary.AppendUvarint(b, n.Size)
		b = binary.AppendUvarint(b, n.Inode)
		b = binary.AppendUvarint(b, n.Device)
		b = binary.AppendUvarint(b, n.Links)
		b = binary.AppendUvarint(b, n.Rdev)
		b = appendBytes(b, n.LinkTarget)
		xs := slices.Clone(n.Xattrs)
		slices.SortStableFunc(xs, func(a, b Xattr) int { return strings.Compare(a.Name, b.Name) })
		for j := 1; j < len(xs); j++ {
			if xs[j-1].Name == xs[j].Name {
				return nil, fmt.Errorf("encode tree: node %q has xattr %q twice", n.Name, xs[j].Name)
			}
		}
		b = binary.AppendUvarint(b, uint64(len(xs)))
		for _, x := range xs {
			b = appendBytes(b, x.Name)
			b = appendBytes(b, string(x.Value))
		}
		if len(n.ChunkSizes) != len(n.Content) {
			return nil, fmt.Errorf("encode tree: node %q has %d blobs but %d sizes", n.Name, len(n.Content), len(n.ChunkSizes))
		}
		b = binary.AppendUvarint(b, uint64(len(n.Content)))
		for j, id := range n.Content {
			b = append(b, id[:]...)
			b = binary.AppendUvarint(b, uint64(n.ChunkSizes[j]))
		}
		if v2 {
			b = binary.AppendUvarint(b, uint64(len(n.ChunkHeads)))
			for _, h := range n.ChunkHeads {
				b = binary.LittleEndian.AppendUint64(b, h)
			}
		}
		if n.Subtree.IsNull() {
			b = append(b, 0)
		} else {
			b = append(b, 1)
			b = append(b, n.Subtree[:]...)
		}
	}
	return b, nil
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: truncated or invalid %s", ErrFormat, what)
	}
}

func (d *decoder) uvarint(what string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 || (n > 1 && d.b[n-1] == 0) {
		// A padded varint is rejected: one tree, one encoding, one ID.
		d.fail(what)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint(what string) int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 || (n > 1 && d.b[n-1] == 0) {
		d.fail(what)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) u32(what string) uint32 {
	v := d.uvarint(what)
	if v > 1<<32-1 {
		d.fail(what)
	}
	return uint32(v)
}

func (d *decoder) bytes(what string) string {
	l := d.uvarint(what)
	if d.err != nil {
		return ""
	}
	if l > uint64(len(d.b)) {
		d.fail(what)
		return ""
	}
	s := string(d.b[:l])
	d.b = d.b[l:]
	return s
}

func (d *decoder) byte(what string) byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) == 0 {
		d.fail(what)
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

// heads reads a chunk head list, which is empty or has one head per blob.
func (d *decoder) heads(blobs uint64) []uint64 {
	nh := d.uvarint("chunk head count")
	if d.err != nil || nh == 0 {
		return nil
	}
	if nh != blobs || nh > uint64(len(d.b)/8) {
		d.fail("chunk head count")
		return nil
	}
	out := make([]uint64, nh)
	for j := range out {
		out[j] = binary.LittleEndian.Uint64(d.b[8*j:])
	}
	d.b = d.b[8*nh:]
	return out
}

func (d *decoder) id(what string) (id crypto.ID) {
	if d.err != nil {
		return
	}
	if len(d.b) < crypto.IDSize {
		d.fail(what)
		return
	}
	copy(id[:], d.b)
	d.b = d.b[crypto.IDSize:]
	return
}

// validate applies the rules both Encode and Decode enforce, so nothing is
// written that cannot be read back.
func (n *Node) validate() error {
	if n.Type < File || n.Type > Socket {
		return fmt.Errorf("%w: node %q has unknown type %d", ErrFormat, n.Name, n.Type)
	}
	if n.Name == "" || n.Name == "." || n.Name == ".." || strings.ContainsRune(n.Name, '/') || strings.ContainsRune(n.Name, 0) {
		return fmt.Errorf("%w: invalid node name %q", ErrFormat, n.Name)
	}
	if (n.Type == Dir) == n.Subtree.IsNull() {
		return fmt.Errorf("%w: node %q: a directory needs a subtree and only a directory has one", ErrFormat, n.Name)
	}
	if len(n.Content) > 0 && n.Type != File {
		return fmt.Errorf("%w: node %q: only files have content", ErrFormat, n.Name)
	}
	if len(n.ChunkHeads) != 0 && len(n.ChunkHeads) != len(n.Content) {
		return fmt.Errorf("%w: node %q has %d blobs but %d chunk heads", ErrFormat, n.Name, len(n.Content), len(n.ChunkHeads))
	}
	return nil
}

// minNodeSize is the smallest encoding of a node, to bound allocations.
const minNodeSize = 19

// Decode parses a tree blob. It never panics on bad input.
func Decode(data []byte) (*Tree, error) {
	if len(data) < len(magic)+1 || string(data[:len(magic)]) != magic {
		return nil, fmt.Errorf("%w: bad magic", ErrFormat)
	}
	v := data[len(magic)]
	if v != version && v != versionV2 {
		return nil, fmt.Errorf("%w: version %d is not supported", ErrFormat, v)
	}
	d := &decoder{b: data[len(magic)+1:]}
	count := d.uvarint("node count")
	if count > uint64(len(d.b)/minNodeSize) {
		return nil, fmt.Errorf("%w: node count %d too large", ErrFormat, count)
	}
	t := &Tree{Nodes: make([]Node, 0, count)}
	for i := uint64(0); i < count && d.err == nil; i++ {
		var n Node
		n.Name = d.bytes("name")
		n.Type = NodeType(d.byte("type"))
		n.Mode = d.u32("mode")
		n.UID = d.u32("uid")
		n.GID = d.u32("gid")
		n.User = d.bytes("user")
		n.Group = d.bytes("group")
		n.ModTime = d.varint("mtime")
		n.ChangeTime = d.varint("ctime")
		n.Size = d.uvarint("size")
		n.Inode = d.uvarint("inode")
		n.Device = d.uvarint("device")
		n.Links = d.uvarint("links")
		n.Rdev = d.uvarint("rdev")
		n.LinkTarget = d.bytes("link target")
		nx := d.uvarint("xattr count")
		if nx > uint64(len(d.b)/2) {
			d.fail("xattr count")
		}
		for j := uint64(0); j < nx && d.err == nil; j++ {
			x := Xattr{Name: d.bytes("xattr name"), Value: []byte(d.bytes("xattr value"))}
			if j > 0 && n.Xattrs[j-1].Name >= x.Name {
				d.fail("xattr order")
			}
			n.Xattrs = append(n.Xattrs, x)
		}
		nc := d.uvarint("content count")
		if nc > uint64(len(d.b)/crypto.IDSize) {
			d.fail("content count")
		}
		if d.err == nil && nc > 0 {
			n.Content = make([]crypto.ID, nc)
			n.ChunkSizes = make([]uint32, nc)
			for j := range n.Content {
				n.Content[j] = d.id("content id")
				n.ChunkSizes[j] = d.u32("chunk size")
			}
		}
		if v == versionV2 {
			n.ChunkHeads = d.heads(nc)
		}
		switch d.byte("subtree flag") {
		case 0:
		case 1:
			n.Subtree = d.id("subtree id")
			if d.err == nil && n.Subtree.IsNull() {
				d.fail("subtree id")
			}
		default:
			d.fail("subtree flag")
		}
		if d.err != nil {
			break
		}
		if err := n.validate(); err != nil {
			return nil, err
		}
		if len(t.Nodes) > 0 && t.Nodes[len(t.Nodes)-1].Name >= n.Name {
			return nil, fmt.Errorf("%w: names not sorted at %q", ErrFormat, n.Name)
		}
		t.Nodes = append(t.Nodes, n)
	}
	if d.err != nil {
		return nil, d.err
	}
	if len(d.b) != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes", ErrFormat, len(d.b))
	}
	if v == versionV2 && !slices.ContainsFunc(t.Nodes, func(n Node) bool { return len(n.ChunkHeads) > 0 }) {
		// The same tree encodes as version 1: one tree, one ID.
		return nil, fmt.Errorf("%w: version 2 tree without chunk heads", ErrFormat)
	}
	return t, nil
}
