package repo

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cairn-backup/cairn/crypto"
	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/repo/backend"
)

// Pack layout (docs/format.md, "Packs"):
//
//	blob_0 || blob_1 || ... || blob_n-1 || sealed header || header length (uint32 LE)
//
// Each blob is sealed on its own; the header, sealed with the same key,
// lists the blobs in order, so offsets are implied.
const (
	packHeaderMagic   = "CRNP"
	packHeaderVersion = 1
	// packHeaderVersionBases gives every entry a base field; written only
	// for packs holding a delta blob, so other headers stay version 1.
	packHeaderVersionBases = 2
	// headerEntryMax bounds one header entry: ID + two uvarints + base.
	headerEntryMax = 2*crypto.IDSize + 2*binary.MaxVarintLen32 + 1
	// maxHeaderLength bounds the header a reader accepts (1M blobs).
	maxHeaderLength = 1 << 26
)

// ErrPackFormat is wrapped by errors about a malformed pack.
var ErrPackFormat = errors.New("malformed pack")

func encodePackHeader(t index.BlobType, blobs []index.BlobEntry) []byte {
	b := make([]byte, 0, 16+len(blobs)*headerEntryMax)
	b = append(b, packHeaderMagic...)
	bases := index.HasDeltas(blobs)
	if bases {
		b = append(b, packHeaderVersionBases, byte(t))
	} else {
		b = append(b, packHeaderVersion, byte(t))
	}
	b = binary.AppendUvarint(b, uint64(len(blobs)))
	for _, e := range blobs {
		b = append(b, e.ID[:]...)
		b = binary.AppendUvarint(b, uint64(e.Length))
		b = binary.AppendUvarint(b, uint64(e.RawLength))
		if bases {
			b = index.AppendBase(b, e.Base)
		}
	}
	return b
}

// DecodePackHeader parses a pack header's plaintext. It never panics on bad input.
func DecodePackHeader(b []byte) (index.BlobType, []index.BlobEntry, error) {
	if len(b) < len(packHeaderMagic)+2 || string(b[:len(packHeaderMagic)]) != packHeaderMagic {
		return 0, nil, fmt.Errorf("%w: bad header magic", ErrPackFormat)
	}
	version := b[len(packHeaderMagic)]
	if version != packHeaderVersion && version != packHeaderVersionBases {
		return 0, nil, fmt.Errorf("%w: header version %d is not supported", ErrPackFormat, version)
	}
	t := index.BlobType(b[len(packHeaderMagic)+1])
	if !t.Valid() {
		return 0, nil, fmt.Errorf("%w: unknown pack type %d", ErrPackFormat, t)
	}
	b = b[len(packHeaderMagic)+2:]
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)/(crypto.IDSize+2)) {
		return 0, nil, fmt.Errorf("%w: bad blob count", ErrPackFormat)
	}
	b = b[k:]
	blobs := make([]index.BlobEntry, 0, n)
	var off uint64
	for i := uint64(0); i < n; i++ {
		if len(b) < crypto.IDSize {
			return 0, nil, fmt.Errorf("%w: truncated header entry %d", ErrPackFormat, i)
		}
		var e index.BlobEntry
		copy(e.ID[:], b)
		b = b[crypto.IDSize:]
		l, k1 := binary.Uvarint(b)
		if k1 <= 0 || l > 1<<32-1 || l < crypto.Overhead+1 {
			return 0, nil, fmt.Errorf("%w: bad length in header entry %d", ErrPackFormat, i)
		}
		b = b[k1:]
		r, k2 := binary.Uvarint(b)
		if k2 <= 0 || r > 1<<32-1 {
			return 0, nil, fmt.Errorf("%w: bad raw length in header entry %d", ErrPackFormat, i)
		}
		b = b[k2:]
		if version == packHeaderVersionBases {
			var err error
			if e.Base, b, err = index.DecodeBase(b); err != nil {
				return 0, nil, fmt.Errorf("%w: header entry %d: %v", ErrPackFormat, i, err)
			}
		}
		if off+l > 1<<32-1 {
			return 0, nil, fmt.Errorf("%w: pack larger than 4 GiB", ErrPackFormat)
		}
		e.Offset, e.Length, e.RawLength = uint32(off), uint32(l), uint32(r)
		off += l
		blobs = append(blobs, e)
	}
	if len(b) != 0 {
		return 0, nil, fmt.Errorf("%w: %d trailing header bytes", ErrPackFormat, len(b))
	}
	if version == packHeaderVersionBases && !index.HasDeltas(blobs) {
		return 0, nil, fmt.Errorf("%w: version 2 header without delta blobs", ErrPackFormat)
	}
	return t, blobs, nil
}

// ReadPackHeader decrypts and decodes the header of a complete pack and
// checks that the listed blobs fit before it.
func ReadPackHeader(key *crypto.Key, pack []byte) (index.BlobType, []index.BlobEntry, error) {
	return ReadPackTail(key, pack, int64(len(pack)))
}

// ReadPackTail is ReadPackHeader for the last len(tail) bytes of a pack of
// packSize bytes (a reader streaming the pack keeps only its end); the
// header and its length must lie within tail.
func ReadPackTail(key *crypto.Key, tail []byte, packSize int64) (index.BlobType, []index.BlobEntry, error) {
	if len(tail) < 4 || int64(len(tail)) > packSize {
		return 0, nil, fmt.Errorf("%w: %d bytes is too short", ErrPackFormat, packSize)
	}
	hl := int64(binary.LittleEndian.Uint32(tail[len(tail)-4:]))
	if hl < crypto.Overhead || hl > maxHeaderLength || hl+4 > packSize {
		return 0, nil, fmt.Errorf("%w: header length %d does not fit a %d-byte pack", ErrPackFormat, hl, packSize)
	}
	if hl+4 > int64(len(tail)) {
		return 0, nil, fmt.Errorf("%w: header length %d is more than the %d bytes after the blobs", ErrPackFormat, hl, len(tail)-4)
	}
	plain, err := key.Open(nil, tail[int64(len(tail))-4-hl:len(tail)-4])
	if err != nil {
		return 0, nil, fmt.Errorf("pack header: %w", err)
	}
	t, blobs, err := DecodePackHeader(plain)
	if err != nil {
		return 0, nil, err
	}
	hstart := packSize - 4 - hl
	if len(blobs) > 0 {
		last := blobs[len(blobs)-1]
		if int64(last.Offset)+int64(last.Length) != hstart {
			return 0, nil, fmt.Errorf("%w: blobs end at %d but the header starts at %d", ErrPackFormat, int64(last.Offset)+int64(last.Length), hstart)
		}
	}
	return t, blobs, nil
}

// MaxPackTail is the most a pack holds after its last blob: the largest
// header and its length.
const MaxPackTail = maxHeaderLength + 4

// LoadPackHeader reads only the tail of a stored pack and returns its blob
// type and blobs (repair index uses it to rebuild the index from packs).
func (r *Repository) LoadPackHeader(ctx context.Context, t backend.FileType, id crypto.ID) (index.BlobType, []index.BlobEntry, error) {
	h := backend.Handle{Type: t, Name: id.String()}
	fi, err := r.be.Stat(ctx, h)
	if err != nil {
		return 0, nil, err
	}
	if fi.Size < 4+crypto.Overhead {
		return 0, nil, fmt.Errorf("%v: %w: %d bytes is too short", h, ErrPackFormat, fi.Size)
	}
	// Read a generous tail at once; most headers fit in it.
	tailLen := min(fi.Size, 64<<10)
	tail, err := r.be.Load(ctx, h, fi.Size-tailLen, tailLen)
	if err != nil {
		return 0, nil, err
	}
	if int64(len(tail)) != tailLen {
		return 0, nil, fmt.Errorf("%v: %w: short read", h, ErrPackFormat)
	}
	hl := int64(binary.LittleEndian.Uint32(tail[len(tail)-4:]))
	if hl < crypto.Overhead || hl > maxHeaderLength || hl+4 > fi.Size {
		return 0, nil, fmt.Errorf("%v: %w: header length %d does not fit a %d-byte pack", h, ErrPackFormat, hl, fi.Size)
	}
	var sealed []byte
	if hl+4 <= tailLen {
		sealed = tail[tailLen-4-hl : tailLen-4]
	} else {
		sealed, err = r.be.Load(ctx, h, fi.Size-4-hl, hl)
		if err != nil {
			return 0, nil, err
		}
	}
	plain, err := r.key.Open(nil, sealed)
	if err != nil {
		return 0, nil, fmt.Errorf("%v: header: %w", h, err)
	}
	bt, blobs, err := DecodePackHeader(plain)
	if err != nil {
		return 0, nil, fmt.Errorf("%v: %w", h, err)
	}
	hstart := fi.Size - 4 - hl
	if len(blobs) > 0 {
		last := blobs[len(blobs)-1]
		if int64(last.Offset)+int64(last.Length) != hstart {
			return 0, nil, fmt.Errorf("%v: %w: blobs end at %d but the header starts at %d", h, ErrPackFormat, int64(last.Offset)+int64(last.Length), hstart)
		}
	}
	return bt, blobs, nil
}

// StoredPack is a pack object as the backend lists it.
type StoredPack struct {
	Type backend.FileType // DataPack or TreePack
	Name string
	ID   crypto.ID // null when Name is not a pack ID
	Size int64
}

// ListPacks calls fn for every data pack, then every tree pack, the
// backend holds.
func (r *Repository) ListPacks(ctx context.Context, fn func(StoredPack) error) error {
	for _, t := range []backend.FileType{backend.DataPack, backend.TreePack} {
		err := r.be.List(ctx, t, func(fi backend.FileInfo) error {
			p := StoredPack{Type: t, Name: fi.Name, Size: fi.Size}
			if id, err := crypto.ParseID(fi.Name); err == nil {
				p.ID = id
			}
			return fn(p)
		})
		if err != nil {
			return fmt.Errorf("list packs: %w", err)
		}
	}
	return nil
}
