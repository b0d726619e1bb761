package index

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"slices"
	"sync"

	"github.com/cairn-backup/cairn/crypto"
)

// Location is where a blob is stored.
type Location struct {
	Pack   crypto.ID
	Type   BlobType
	Offset uint32
	Length uint32
}

// Memory layout (documented in docs/format.md, "In-memory index"):
// entries live in one sorted byte table of entrySize bytes each. The first
// two bytes of a blob ID are implied by a 65536-bucket offset table, so an
// entry holds the other 30 bytes plus a 72-bit location: pack number (23
// bits), offset (25 bits) and stored length (24 bits). Blobs whose location
// does not fit (more than 8M packs, offsets past 32 MiB or blobs of 16 MiB
// and more) go to a small overflow map. The result is 39 bytes per blob plus
// 256 KiB of buckets and 33 bytes per pack.
const (
	idTail     = crypto.IDSize - 2
	entrySize  = idTail + 9
	numBuckets = 1 << 16
	maxPackNum = 1<<23 - 1
	maxOffset  = 1<<25 - 1
	maxLength  = 1<<24 - 1
)

type loc struct {
	pack, offset, length uint32
}

func (l loc) fits() bool {
	return l.pack <= maxPackNum && l.offset <= maxOffset && l.length <= maxLength
}

func putLoc(b []byte, l loc) {
	lo := uint64(l.pack&0x7fff)<<49 | uint64(l.offset)<<24 | uint64(l.length)
	b[0] = byte(l.pack >> 15)
	binary.BigEndian.PutUint64(b[1:], lo)
}

func getLoc(b []byte) loc {
	lo := binary.BigEndian.Uint64(b[1:])
	return loc{
		pack:   uint32(b[0])<<15 | uint32(lo>>49),
		offset: uint32(lo>>24) & maxOffset,
		length: uint32(lo) & maxLength,
	}
}

// Index is the in-memory blob index. It is safe for concurrent use.
type Index struct {
	mu        sync.RWMutex
	packs     []crypto.ID
	packTypes []BlobType
	packNums  map[crypto.ID]uint32
	table     []byte   // sorted by ID, entrySize bytes per entry
	buckets   []uint32 // numBuckets+1 entry indexes into table
	pending   map[crypto.ID]loc
	overflow  map[crypto.ID]loc
}

// New returns an empty index.
func New() *Index {
	return &Index{
		packNums: make(map[crypto.ID]uint32),
		buckets:  make([]uint32, numBuckets+1),
		pending:  make(map[crypto.ID]loc),
		overflow: make(map[crypto.ID]loc),
	}
}

func (idx *Index) packNum(id crypto.ID, t BlobType) uint32 {
	if n, ok := idx.packNums[id]; ok {
		return n
	}
	n := uint32(len(idx.packs))
	idx.packs = append(idx.packs, id)
	idx.packTypes = append(idx.packTypes, t)
	idx.packNums[id] = n
	return n
}

// AddPack records the blobs of a pack. A blob that is already known keeps
// its first location.
func (idx *Index) AddPack(p PackEntry) {
	idx.mu.Lock()
	defer idx.mu.Unlock()
	pn := idx.packNum(p.ID, p.Type)
	for _, e := range p.Blobs {
		if _, ok := idx.lookup(e.ID); ok {
			continue
		}
		l := loc{pack: pn, offset: e.Offset, length: e.Length}
		if l.fits() {
			idx.pending[e.ID] = l
		} else {
			idx.overflow[e.ID] = l
		}
	}
	if len(idx.pending) > mergeAt+idx.Len()/16 {
		idx.merge()
	}
}

// mergeAt (plus a sixteenth of the table) is how many pending entries
// AddPack lets gather before it merges them into the table: each merge
// copies the whole table, and pending entries cost about twice a table
// entry, so an index of 50,000 blobs is merged once, at Compact (4 MB
// pending at most), and a large one every sixteenth of its size.
const mergeAt = 1 << 16

// Len returns the number of entries in the sorted table (excluding pending).
func (idx *Index) Len() int { return len(idx.table) / entrySize }

func bucketOf(id crypto.ID) int { return int(id[0])<<8 | int(id[1]) }

// merge folds pending entries into the sorted table. Caller holds the lock.
// The pending IDs are put in their buckets (the first two bytes) by a
// counting sort, and each bucket's few are sorted and merged with the
// bucket's entries: linear in the table, where sorting all pending IDs and
// comparing whole IDs along the table made opening an index of 50,000
// blobs take 35 ms.
func (idx *Index) merge() {
	if len(idx.pending) == 0 {
		return
	}
	start := make([]int32, numBuckets+1) // of each bucket's pending IDs in ids
	for id := range idx.pending {
		start[bucketOf(id)+1]++
	}
	for b := range numBuckets {
		start[b+1] += start[b]
	}
	ids := make([]crypto.ID, len(idx.pending))
	next := slices.Clone(start[:numBuckets])
	for id := range idx.pending {
		b := bucketOf(id)
		ids[next[b]] = id
		next[b]++
	}
	old := idx.table
	table := make([]byte, 0, len(old)+len(ids)*entrySize)
	var ent [entrySize]byte
	for b := range numBuckets {
		// Read before buckets[b] is rewritten; buckets[b+1] still holds
		// the old table's bound.
		lo, hi := int(idx.buckets[b]), int(idx.buckets[b+1])
		idx.buckets[b] = uint32(len(table) / entrySize)
		add := ids[start[b]:start[b+1]]
		if len(add) > 1 {
			slices.SortFunc(add, compareIDs)
		}
		for _, id := range add {
			// The old entries before id, in one copy.
			at := lo
			for at < hi && bytes.Compare(old[at*entrySize:at*entrySize+idTail], id[2:]) < 0 {
				at++
			}
			table = append(table, old[lo*entrySize:at*entrySize]...)
			lo = at
			copy(ent[:], id[2:])
			putLoc(ent[idTail:], idx.pending[id])
			table = append(table, ent[:]...)
		}
		table = append(table, old[lo*entrySize:hi*entrySize]...)
	}
	idx.buckets[numBuckets] = uint32(len(table) / entrySize)
	idx.table = table
	idx.pending = make(map[crypto.ID]loc) // clear() would keep the grown table
}

// compareIDs orders IDs as bytes.Compare does, a word at a time: the sort
// of a merge is most of the time it takes to open a repository's index.
func compareIDs(a, b crypto.ID) int {
	for i := 0; i < crypto.IDSize; i += 8 {
		x, y := binary.BigEndian.Uint64(a[i:]), binary.BigEndian.Uint64(b[i:])
		if x != y {
			return cmp.Compare(x, y)
		}
	}
	return 0
}

func (idx *Index) lookup(id crypto.ID) (loc, bool) {
	if l, ok := idx.pending[id]; ok {
		return l, true
	}
	if l, ok := idx.overflow[id]; ok {
		return l, true
	}
	b := bucketOf(id)
	lo, hi := int(idx.buckets[b]), int(idx.buckets[b+1])
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		e := idx.table[m*entrySize : m*entrySize+idTail]
		switch c := bytes.Compare(e, id[2:]); {
		case c == 0:
			return getLoc(idx.table[m*entrySize+idTail:]), true
		case c < 0:
			lo = m + 1
		default:
			hi = m
		}
	}
	return loc{}, false
}

// Has reports whether the blob is indexed.
func (idx *Index) Has(id crypto.ID) bool {
	idx.mu.RLock()
	defer idx.mu.RUnlock()
	_, ok := idx.lookup(id)
	return ok
}

// Lookup returns the blob's location.
func (idx *Index) Lookup(id crypto.ID) (Location, bool) {
	idx.mu.RLock()
	defer idx.mu.RUnlock()
	l, ok := idx.lookup(id)
	if !ok {
		return Location{}, false
	}
	return Location{Pack: idx.packs[l.pack], Type: idx.packTypes[l.pack], Offset: l.offset, Length: l.length}, true
}

// Compact merges pending entries into the sorted table; call it after
// loading many index files to reach the compact layout.
func (idx *Index) Compact() {
	idx.mu.Lock()
	defer idx.mu.Unlock()
	idx.merge()
}

// Count returns the number of indexed blobs.
func (idx *Index) Count() int {
	idx.mu.RLock()
	defer idx.mu.RUnlock()
	return idx.Len() + len(idx.pending) + len(idx.overflow)
}

// Packs returns the IDs and types of every pack that holds an indexed blob
// (or held one when it was added).
func (idx *Index) Packs() map[crypto.ID]BlobType {
	idx.mu.RLock()
	defer idx.mu.RUnlock()
	m := make(map[crypto.ID]BlobType, len(idx.packs))
	for i, id := range idx.packs {
		m[id] = idx.packTypes[i]
	}
	return m
}

// Each calls fn for every indexed blob, in no particular order, and stops at
// the first error. fn must not call back into the index.
func (idx *Index) Each(fn func(id crypto.ID, l Location) error) error {
	idx.mu.RLock()
	defer idx.mu.RUnlock()
	emit := func(id crypto.ID, l loc) error {
		return fn(id, Location{Pack: idx.packs[l.pack], Type: idx.packTypes[l.pack], Offset: l.offset, Length: l.length})
	}
	for b := 0; b < numBuckets; b++ {
		for i := idx.buckets[b]; i < idx.buckets[b+1]; i++ {
			var id crypto.ID
			id[0], id[1] = byte(b>>8), byte(b)
			e := idx.table[int(i)*entrySize:]
			copy(id[2:], e[:idTail])
			if err := emit(id, getLoc(e[idTail:])); err != nil {
				return err
			}
		}
	}
	for id, l := range idx.pending {
		if err := emit(id, l); err != nil {
			return err
		}
	}
	for id, l := range idx.overflow {
		if err := emit(id, l); err != nil {
			return err
		}
	}
	return nil
}

// MemoryBytes estimates the heap bytes held by the table, buckets and pack list
// (the pending and overflow maps are counted at 80 bytes an entry).
func (idx *Index) MemoryBytes() int {
	idx.mu.RLock()
	defer idx.mu.RUnlock()
	return cap(idx.table) + 4*len(idx.buckets) + len(idx.packs)*(crypto.IDSize+1) +
		80*(len(idx.pending)+len(idx.overflow)+len(idx.packNums))
}
