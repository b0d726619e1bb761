package repo

import (
	"context"
	"fmt"

	"github.com/cairn-backup/cairn/crypto"
	"github.com/cairn-backup/cairn/index"
)

// SaveResult says what SaveBlob did.
type SaveResult struct {
	ID     crypto.ID
	Known  bool // already stored (or being stored): nothing was added
	Stored int  // bytes added to a pack (sealed, compressed)
	// Base is the blob a delta was stored against (SaveDataBlob); null
	// for a full blob. BaseFrom is the candidate that led to it: Base
	// itself, or the delta whose base it is.
	Base, BaseFrom crypto.ID
}

// SaveBlob stores data as a blob of type t unless a blob with the same ID is
// already indexed or in flight. It compresses and encrypts in the calling
// goroutine, so callers get parallelism by calling from several goroutines.
func (r *Repository) SaveBlob(ctx context.Context, t index.BlobType, data []byte) (SaveResult, error) {
	if len(data) > maxBlobSize {
		return SaveResult{}, fmt.Errorf("blob of %d bytes exceeds the %d-byte limit", len(data), maxBlobSize)
	}
	id := r.key.BlobID(data)
	return r.SaveBlobWithID(ctx, t, id, data)
}

// SaveBlobWithID is SaveBlob for callers that already computed the ID.
func (r *Repository) SaveBlobWithID(ctx context.Context, t index.BlobType, id crypto.ID, data []byte) (SaveResult, error) {
	if known, err := r.claim(ctx, id); err != nil || known {
		return SaveResult{ID: id, Known: known}, err
	}
	return r.saveFull(ctx, t, id, data)
}

// claim reports whether id is already stored or in flight, and otherwise
// marks it in flight: the caller must then store it.
func (r *Repository) claim(ctx context.Context, id crypto.ID) (known bool, err error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.uploadErr != nil {
		return false, r.uploadErr
	}
	if _, ok := r.inFlight[id]; ok || r.idx.Has(id) {
		return true, nil
	}
	r.inFlight[id] = struct{}{}
	return false, nil
}

// saveFull seals data as a full (raw or zstd) blob and adds it to a pack.
func (r *Repository) saveFull(ctx context.Context, t index.BlobType, id crypto.ID, data []byte) (SaveResult, error) {
	bp := r.getBuf(len(data) + crypto.Overhead + 64)
	sealed := r.sealBlob((*bp)[:0], data)
	n := len(sealed)
	err := r.addToPacker(ctx, t, index.BlobEntry{ID: id, Length: uint32(n), RawLength: uint32(len(data))}, sealed)
	*bp = sealed
	r.putBuf(bp)
	if err != nil {
		return SaveResult{}, err
	}
	return SaveResult{ID: id, Stored: n}, nil
}

// CopyBlob adds a blob that is already sealed (read from another pack) to
// a new pack without decrypting it; prune uses it to repack. Unlike
// SaveBlob it ignores the index, which still lists the old copy.
func (r *Repository) CopyBlob(ctx context.Context, t index.BlobType, e index.BlobEntry, sealed []byte) error {
	id := e.ID
	e.Length = uint32(len(sealed))
	r.mu.Lock()
	if r.uploadErr != nil {
		err := r.uploadErr
		r.mu.Unlock()
		return err
	}
	if _, ok := r.inFlight[id]; ok {
		r.mu.Unlock()
		return nil
	}
	r.inFlight[id] = struct{}{}
	r.mu.Unlock()
	return r.addToPacker(ctx, t, e, sealed)
}

// getBuf returns an empty pooled buffer with room for n bytes.
func (r *Repository) getBuf(n int) *[]byte {
	bp := r.bufs.Get(n)
	*bp = (*bp)[:0]
	return bp
}

func (r *Repository) putBuf(bp *[]byte) { r.bufs.Put(bp) }

// verifyBlob checks a stored blob like DecodeBlob, into pooled buffers. A
// delta is only opened and its base compared with the entry's: its
// plaintext was checked against the base when it was encoded (saveDelta),
// and loading the base here would read it a second time.
func (r *Repository) verifyBlob(ctx context.Context, e index.BlobEntry, stored []byte) error {
	pbp, obp := r.getBuf(len(stored)), r.getBuf(int(e.RawLength))
	var plain, out []byte
	var err error
	if e.IsDelta() {
		if plain, err = r.openPayload(e.ID, stored, (*pbp)[:0]); err == nil {
			if base, isDelta, berr := deltaBaseOf(e.ID, plain); berr != nil || !isDelta || base != e.Base {
				err = fmt.Errorf("blob %s: %w: not a delta against %s", e.ID.Short(), ErrBlobCorrupt, e.Base.Short())
			}
		}
	} else {
		_, plain, out, err = r.openBlob(ctx, e.ID, stored, (*pbp)[:0], (*obp)[:0], false, nil)
	}
	r.keepBuf(pbp, plain)
	r.keepBuf(obp, out)
	return err
}

// keepBuf returns a pooled buffer, keeping what an append may have grown.
func (r *Repository) keepBuf(bp *[]byte, grown []byte) {
	if grown != nil {
		*bp = grown
	}
	r.putBuf(bp)
}

// sealBlob compresses data when that shrinks it and seals flag || payload.
func (r *Repository) sealBlob(dst, data []byte) []byte {
	pbp := r.getBuf(len(data) + 1)
	plain := append((*pbp)[:0], payloadZstd)
	plain = r.enc.EncodeAll(data, plain)
	if len(plain)-1 >= len(data) {
		plain = append(plain[:0], payloadRaw)
		plain = append(plain, data...)
	}
	out := r.key.Seal(dst, plain)
	*pbp = plain
	r.putBuf(pbp)
	return out
}
