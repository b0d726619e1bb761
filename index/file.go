// Package index maps blob IDs to their place in a pack: the on-disk index
// file format and a compact in-memory lookup table.
package index

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sort"

	"github.com/cairn-backup/cairn/crypto"
)

// BlobType says whether a blob holds file data or tree metadata.
type BlobType uint8

// Blob types. Each kind is kept in its own packs.
const (
	DataBlob BlobType = 0
	TreeBlob BlobType = 1
)

func (t BlobType) String() string {
	switch t {
	case DataBlob:
		return "data"
	case TreeBlob:
		return "tree"
	}
	return fmt.Sprintf("blobtype(%d)", uint8(t))
}

// Valid reports whether t is a known blob type.
func (t BlobType) Valid() bool { return t == DataBlob || t == TreeBlob }

// BlobEntry is one blob of a pack as recorded in an index file.
type BlobEntry struct {
	ID        crypto.ID
	Offset    uint32 // start of the stored (sealed) blob in the pack
	Length    uint32 // stored length
	RawLength uint32 // plaintext length
	// Base is the blob a delta blob is decoded against (docs/format.md §7);
	// the null ID for every other blob.
	Base crypto.ID
}

// IsDelta reports whether the blob is stored as a delta against Base.
func (e BlobEntry) IsDelta() bool { return !e.Base.IsNull() }

// PackEntry lists the blobs of one pack.
type PackEntry struct {
	ID    crypto.ID
	Type  BlobType
	Blobs []BlobEntry
}

// ObsoletePack is a pack that prune found unused and will delete once it
// has been obsolete for the grace period (two-phase deletion). Its blobs
// are not part of the live index, so new backups do not deduplicate
// against them, but they can still be read.
type ObsoletePack struct {
	Pack PackEntry
	// Since is when prune first found the pack unused (Unix seconds).
	Since int64
}

// File is the decoded content of one index file.
type File struct {
	// Supersedes names index files this one replaces (written by prune and
	// repair): a reader that sees both ignores the superseded ones.
	Supersedes []crypto.ID
	Packs      []PackEntry
	// Obsolete packs awaiting deletion (version 2 files only).
	Obsolete []ObsoletePack
}

const (
	fileMagic = "CRNI"
	// fileVersion is written when there are no obsolete packs (so plain
	// index files stay byte-identical to format v1); fileVersionObsolete
	// adds the obsolete section.
	fileVersion         = 1
	fileVersionObsolete = 2
	// fileVersionBases gives every blob a base field (delta blobs) and
	// always has an obsolete section, possibly empty. It is written only
	// when some blob is a delta.
	fileVersionBases = 3
	// maxCount bounds counts read from untrusted input before allocation.
	maxCount = 1 << 24
)

// ErrFormat is wrapped by every decoding error of a malformed index file.
var ErrFormat = errors.New("malformed index file")

// Encode serializes f (plaintext; the repository seals it).
func (f *File) Encode() []byte {
	n := 16 + len(f.Supersedes)*crypto.IDSize
	for _, p := range f.Packs {
		n += 40 + len(p.Blobs)*48
	}
	b := make([]byte, 0, n)
	b = append(b, fileMagic...)
	bases := f.hasDeltas()
	switch {
	case bases:
		b = append(b, fileVersionBases)
	case len(f.Obsolete) > 0:
		b = append(b, fileVersionObsolete)
	default:
		b = append(b, fileVersion)
	}
	b = binary.AppendUvarint(b, uint64(len(f.Supersedes)))
	for _, id := range f.Supersedes {
		b = append(b, id[:]...)
	}
	b = binary.AppendUvarint(b, uint64(len(f.Packs)))
	for _, p := range f.Packs {
		b = appendPack(b, p, bases)
	}
	if len(f.Obsolete) > 0 || bases {
		b = binary.AppendUvarint(b, uint64(len(f.Obsolete)))
		for _, o := range f.Obsolete {
			b = binary.AppendVarint(b, o.Since)
			b = appendPack(b, o.Pack, bases)
		}
	}
	return b
}

func (f *File) hasDeltas() bool {
	for _, p := range f.Packs {
		if p.HasDeltas() {
			return true
		}
	}
	for _, o := range f.Obsolete {
		if o.Pack.HasDeltas() {
			return true
		}
	}
	return false
}

// HasDeltas reports whether any blob of the pack is a delta.
func (p PackEntry) HasDeltas() bool { return HasDeltas(p.Blobs) }

// HasDeltas reports whether any of the blobs is a delta.
func HasDeltas(blobs []BlobEntry) bool {
	for _, e := range blobs {
		if e.IsDelta() {
			return true
		}
	}
	return false
}

// AppendBase appends a blob's base field: 0x00 for a full blob, 0x01 and
// the base ID for a delta.
func AppendBase(b []byte, base crypto.ID) []byte {
	if base.IsNull() {
		return append(b, 0)
	}
	b = append(b, 1)
	return append(b, base[:]...)
}

// DecodeBase reads a base field written by AppendBase, returning the base
// and the rest of b. A flag of 1 with a null ID is refused, so the encoding
// is unique.
func DecodeBase(b []byte) (crypto.ID, []byte, error) {
	var id crypto.ID
	if len(b) < 1 {
		return id, nil, errors.New("truncated base flag")
	}
	switch b[0] {
	case 0:
		return id, b[1:], nil
	case 1:
		if len(b) < 1+crypto.IDSize {
			return id, nil, errors.New("truncated base id")
		}
		copy(id[:], b[1:])
		if id.IsNull() {
			return id, nil, errors.New("null base id")
		}
		return id, b[1+crypto.IDSize:], nil
	}
	return id, nil, fmt.Errorf("bad base flag %d", b[0])
}

func appendPack(b []byte, p PackEntry, bases bool) []byte {
	b = append(b, p.ID[:]...)
	b = append(b, byte(p.Type))
	b = binary.AppendUvarint(b, uint64(len(p.Blobs)))
	for _, e := range p.Blobs {
		b = append(b, e.ID[:]...)
		b = binary.AppendUvarint(b, uint64(e.Offset))
		b = binary.AppendUvarint(b, uint64(e.Length))
		b = binary.AppendUvarint(b, uint64(e.RawLength))
		if bases {
			b = AppendBase(b, e.Base)
		}
	}
	return b
}

type reader struct {
	b   []byte
	err error
}

func (r *reader) fail(what string) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: truncated or invalid %s", ErrFormat, what)
	}
}

func (r *reader) id(what string) (id crypto.ID) {
	if r.err != nil {
		return
	}
	if len(r.b) < crypto.IDSize {
		r.fail(what)
		return
	}
	copy(id[:], r.b)
	r.b = r.b[crypto.IDSize:]
	return
}

func (r *reader) byte(what string) byte {
	if r.err != nil {
		return 0
	}
	if len(r.b) < 1 {
		r.fail(what)
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *reader) uvarint(what string, max uint64) uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 || v > max {
		r.fail(what)
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) varint(what string) int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.fail(what)
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) base() crypto.ID {
	if r.err != nil {
		return crypto.ID{}
	}
	id, rest, err := DecodeBase(r.b)
	if err != nil {
		r.err = fmt.Errorf("%w: %v", ErrFormat, err)
		return id
	}
	r.b = rest
	return id
}

func (r *reader) pack(bases bool) (PackEntry, error) {
	p := PackEntry{ID: r.id("pack id")}
	p.Type = BlobType(r.byte("pack type"))
	if r.err == nil && !p.Type.Valid() {
		return p, fmt.Errorf("%w: pack %v has unknown type %d", ErrFormat, p.ID.Short(), p.Type)
	}
	nb := r.uvarint("blob count", min(maxCount, uint64(len(r.b)/(crypto.IDSize+3))))
	p.Blobs = make([]BlobEntry, 0, nb)
	for j := uint64(0); j < nb && r.err == nil; j++ {
		e := BlobEntry{ID: r.id("blob id")}
		e.Offset = uint32(r.uvarint("blob offset", 1<<32-1))
		e.Length = uint32(r.uvarint("blob length", 1<<32-1))
		e.RawLength = uint32(r.uvarint("blob raw length", 1<<32-1))
		if bases {
			e.Base = r.base()
		}
		p.Blobs = append(p.Blobs, e)
	}
	return p, r.err
}

// DecodeFile parses an index file's plaintext. It never panics on bad input.
func DecodeFile(data []byte) (*File, error) {
	if len(data) < len(fileMagic)+1 || string(data[:len(fileMagic)]) != fileMagic {
		return nil, fmt.Errorf("%w: bad magic", ErrFormat)
	}
	version := data[len(fileMagic)]
	if version != fileVersion && version != fileVersionObsolete && version != fileVersionBases {
		return nil, fmt.Errorf("%w: version %d is not supported", ErrFormat, version)
	}
	r := &reader{b: data[len(fileMagic)+1:]}
	f := &File{}
	ns := r.uvarint("supersedes count", uint64(len(r.b)/crypto.IDSize))
	for i := uint64(0); i < ns && r.err == nil; i++ {
		f.Supersedes = append(f.Supersedes, r.id("superseded index id"))
	}
	np := r.uvarint("pack count", uint64(len(r.b)/(crypto.IDSize+2)))
	for i := uint64(0); i < np && r.err == nil; i++ {
		p, err := r.pack(version == fileVersionBases)
		if err != nil {
			return nil, err
		}
		f.Packs = append(f.Packs, p)
	}
	if version != fileVersion {
		no := r.uvarint("obsolete count", uint64(len(r.b)/(crypto.IDSize+3)))
		if r.err == nil && no == 0 && version == fileVersionObsolete {
			return nil, fmt.Errorf("%w: empty obsolete section in a version 2 file", ErrFormat)
		}
		for i := uint64(0); i < no && r.err == nil; i++ {
			since := r.varint("obsolete since")
			p, err := r.pack(version == fileVersionBases)
			if err != nil {
				return nil, err
			}
			f.Obsolete = append(f.Obsolete, ObsoletePack{Pack: p, Since: since})
		}
	}
	if r.err != nil {
		return nil, r.err
	}
	if len(r.b) != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes", ErrFormat, len(r.b))
	}
	if version == fileVersionBases && !f.hasDeltas() {
		return nil, fmt.Errorf("%w: a version 3 file without delta blobs", ErrFormat)
	}
	return f, nil
}

// FileBlobs bounds the blobs of an index file that Split writes.
const FileBlobs = 100000

// Split spreads packs over index files of at most about FileBlobs blobs
// (prune, migrate); it always returns at least one file, sorted by pack.
func Split(live []PackEntry, obsolete []ObsoletePack) []*File {
	sort.Slice(live, func(i, j int) bool { return live[i].ID.Compare(live[j].ID) < 0 })
	sort.Slice(obsolete, func(i, j int) bool { return obsolete[i].Pack.ID.Compare(obsolete[j].Pack.ID) < 0 })
	files := []*File{{}}
	n := 0
	next := func(blobs int) *File {
		if n+blobs > FileBlobs && n > 0 {
			files = append(files, &File{})
			n = 0
		}
		n += blobs
		return files[len(files)-1]
	}
	for _, p := range live {
		f := next(len(p.Blobs))
		f.Packs = append(f.Packs, p)
	}
	for _, o := range obsolete {
		f := next(len(o.Pack.Blobs) + 1)
		f.Obsolete = append(f.Obsolete, o)
	}
	return files
}
