package repo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"

	"github.com/cairn-backup/cairn/crypto"
	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/internal/delta"
)

// Delta blobs (docs/format.md §7.1) store a changed chunk of a dump as
// copies from the chunk it replaced plus the new bytes. A base is always a
// full blob, so reading a delta costs one extra blob load, never a chain.

// maxDeltaShare is the largest delta, as a fraction (1/maxDeltaShare) of
// the plaintext, that is stored instead of the full blob: a delta saves
// space only when most of the chunk is copied, and it costs a base load on
// every read.
const maxDeltaShare = 2

// goodDeltaShare ends the search among candidates early: a delta this small
// (1/goodDeltaShare of the plaintext) will not be beaten by much.
const goodDeltaShare = 8

// rebaseShare bounds drift. The chunk a new one replaced is usually itself
// a delta against an older root, so night after night the delta against
// that root carries every change since: it grows, and so does the time to
// encode it (twice as long after a week). When such a delta passes
// 1/rebaseShare of the plaintext, the chunk is stored in full instead and
// becomes the root of the next nights' deltas: one full chunk (about a
// quarter of the plaintext, compressed) every few nights buys deltas that
// stay small and fast. A chunk whose candidate is a full blob keeps any
// delta up to 1/maxDeltaShare.
const rebaseShare = 16

// maxDeltaTries bounds the bases a chunk is encoded against: each try
// decodes a base and runs the encoder over it, and the first candidate
// (the chunk the new one replaced, found by its head) is nearly always
// the best.
const maxDeltaTries = 2

// SaveDataBlob stores data (whose ID the caller computed) as a data blob,
// unless it is already stored: as a delta against the best of the
// candidate bases when that is less than half the plaintext, otherwise in
// full. candidates, called only when the blob is new, names blobs the data
// probably replaced (the same place in the previous version of a file); a
// candidate that is itself a delta contributes its base. Only blobs in the
// live index are used as bases, never ones prune marked obsolete.
// res.Base tells which base was used (null for a full blob).
func (r *Repository) SaveDataBlob(ctx context.Context, id crypto.ID, data []byte, candidates func() []crypto.ID) (SaveResult, error) {
	if len(data) > maxBlobSize {
		return SaveResult{}, fmt.Errorf("blob of %d bytes exceeds the %d-byte limit", len(data), maxBlobSize)
	}
	if known, err := r.claim(ctx, id); err != nil || known {
		return SaveResult{ID: id, Known: known}, err
	}
	res, ok, err := r.saveDelta(ctx, id, data, candidates())
	if err != nil || ok {
		if err != nil {
			r.unclaim(id)
		}
		return res, err
	}
	return r.saveFull(ctx, index.DataBlob, id, data)
}

// unclaim forgets an in-flight mark for a blob that was not stored.
func (r *Repository) unclaim(id crypto.ID) {
	r.mu.Lock()
	delete(r.inFlight, id)
	r.mu.Unlock()
}

// saveDelta tries the candidates and stores the best delta if it is small
// enough; ok is false when no delta qualified (nothing was stored).
func (r *Repository) saveDelta(ctx context.Context, id crypto.ID, data []byte, candidates []crypto.ID) (res SaveResult, ok bool, err error) {
	if len(data) == 0 || len(candidates) == 0 {
		return res, false, nil
	}
	enc, _ := r.deltaEncs.Get().(*delta.Encoder)
	if enc == nil {
		enc = new(delta.Encoder)
	}
	defer r.deltaEncs.Put(enc)
	// Two slots of (delta, base) buffers: the best so far and the current
	// try, swapped when the try wins, so the winner's base stays in memory
	// for the check below.
	type slot struct{ delta, base *[]byte }
	newSlot := func() slot { return slot{r.getBuf(len(data)/maxDeltaShare + 64), r.getBuf(len(data) + 4096)} }
	best, cur := newSlot(), newSlot()
	defer func() {
		for _, s := range []slot{best, cur} {
			r.putBuf(s.delta)
			r.putBuf(s.base)
		}
	}()
	var bestBase, bestFrom crypto.ID
	var bestDrifted bool
	var tried []crypto.ID
	limit := len(data) / maxDeltaShare
	for _, cand := range candidates {
		if len(tried) == maxDeltaTries {
			break
		}
		root := r.deltaRoot(cand)
		if root.IsNull() || root == id || containsID(tried, root) {
			continue
		}
		tried = append(tried, root)
		base, err := r.loadBlob(ctx, root, (*cur.base)[:0], true)
		if err != nil {
			if ctx.Err() != nil {
				return res, false, ctx.Err()
			}
			continue // an unreadable candidate is just not used; check reports it
		}
		*cur.base = base
		// Readers check a delta's rebuilt content, not its base; the
		// writer checks the base, so that a new delta never depends on
		// whatever the storage served in its place (another blob of the
		// same length swapped in): it would break once that is repaired.
		if r.key.BlobID(base) != root {
			continue
		}
		d := enc.Encode((*cur.delta)[:0], base, data)
		*cur.delta = d
		if len(d) > limit || (!bestBase.IsNull() && len(d) >= len(*best.delta)) {
			continue
		}
		best, cur, bestBase, bestFrom, bestDrifted = cur, best, root, cand, root != cand
		if len(d) <= len(data)/goodDeltaShare {
			break
		}
	}
	if bestBase.IsNull() || bestDrifted && len(*best.delta) > len(data)/rebaseShare {
		return res, false, nil
	}
	bestBuf := *best.delta
	// The delta is checked against its base before it is sealed, so an
	// encoder bug can never store a blob that does not rebuild data: the
	// chunk is then stored in full instead.
	if delta.Verify(*best.base, bestBuf, data) != nil {
		return res, false, nil
	}

	pbp := r.getBuf(len(bestBuf) + 64)
	plain := append((*pbp)[:0], payloadDeltaZstd)
	plain = append(plain, bestBase[:]...)
	plain = r.enc.EncodeAll(bestBuf, plain)
	if len(plain)-1-crypto.IDSize >= len(bestBuf) {
		plain = append(plain[:0], payloadDelta)
		plain = append(plain, bestBase[:]...)
		plain = append(plain, bestBuf...)
	}
	// Highly compressible data (blank filler) can compress better whole
	// than as a delta. The base's own compression ratio predicts the full
	// blob's size; the delta must beat it.
	if loc, ok := r.Lookup(bestBase); ok && len(*best.base) > 0 {
		if est := int64(len(data)) * int64(loc.Length) / int64(len(*best.base)); int64(len(plain)+crypto.Overhead) >= est {
			r.keepBuf(pbp, plain)
			return res, false, nil
		}
	}
	sbp := r.getBuf(len(plain) + crypto.Overhead)
	sealed := r.key.Seal((*sbp)[:0], plain)
	r.keepBuf(pbp, plain)
	n := len(sealed)
	err = r.addToPacker(ctx, index.DataBlob, index.BlobEntry{ID: id, Length: uint32(n), RawLength: uint32(len(data)), Base: bestBase}, sealed)
	r.keepBuf(sbp, sealed)
	if err != nil {
		return res, false, err
	}
	return SaveResult{ID: id, Stored: n, Base: bestBase, BaseFrom: bestFrom}, true, nil
}

func containsID(ids []crypto.ID, id crypto.ID) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}

// deltaBaseOf returns the base a payload (flag || body) is a delta
// against; isDelta is false for a full blob.
func deltaBaseOf(id crypto.ID, plain []byte) (base crypto.ID, isDelta bool, err error) {
	if plain[0] != payloadDelta && plain[0] != payloadDeltaZstd {
		return base, false, nil
	}
	if len(plain) < 1+crypto.IDSize {
		return base, true, fmt.Errorf("blob %s: %w: truncated delta", id.Short(), ErrBlobCorrupt)
	}
	return crypto.ID(plain[1 : 1+crypto.IDSize]), true, nil
}

// deltaRoot returns the full blob a delta against cand would use: cand
// itself when it is a full blob, its base when it is a delta (both known
// from the index, so nothing is read to decide). The root must be in the
// live index; a null ID means cand cannot serve.
func (r *Repository) deltaRoot(cand crypto.ID) crypto.ID {
	root := cand
	if base, ok := r.DeltaBase(cand); ok {
		root = base
	}
	if !r.idx.Has(root) {
		return crypto.ID{}
	}
	return root
}

// applyDelta rebuilds a delta payload (flag || base ID || delta) against
// its base, appending the plaintext to dst. The base's stored bytes come
// from sb when it names the right blob, else from the repository.
func (r *Repository) applyDelta(ctx context.Context, id crypto.ID, plain, dst []byte, sb *sealedBase) ([]byte, error) {
	baseID, _, err := deltaBaseOf(id, plain)
	if err != nil {
		return nil, err
	}
	ops := plain[1+crypto.IDSize:]
	if plain[0] == payloadDeltaZstd {
		obp := r.getBuf(4 * len(ops))
		defer r.putBuf(obp)
		ops, err = r.dec.DecodeAll(ops, (*obp)[:0])
		if err != nil {
			return nil, fmt.Errorf("blob %s: %w: decompress delta: %v", id.Short(), ErrBlobCorrupt, err)
		}
		*obp = ops
	}
	// Base buffers keep the capacity they grew to: bases are whole chunks,
	// whose size the stored length does not tell.
	bbp, _ := r.baseBufs.Get().(*[]byte)
	if bbp == nil {
		bbp = new([]byte)
	}
	defer r.baseBufs.Put(bbp)
	var base []byte
	if sb != nil && sb.id == baseID {
		base, err = r.decodeBlob(ctx, baseID, sb.stored, (*bbp)[:0], true, nil)
	} else {
		base, err = r.loadBlob(ctx, baseID, (*bbp)[:0], true)
	}
	if err != nil {
		return nil, fmt.Errorf("blob %s: base %s: %w", id.Short(), baseID.Short(), err)
	}
	*bbp = base
	out, err := delta.Decode(dst, base, ops)
	if err != nil {
		return nil, fmt.Errorf("blob %s: %w: %v", id.Short(), ErrBlobCorrupt, err)
	}
	return out, nil
}

// BlobHead returns the first n bytes of a data blob's plaintext (all of it
// when shorter), decoding no more than it must: a zstd blob only up to its
// first block. Writers of deltas use it to index the previous version of a
// stream by content (archiver/delta.go). The stored bytes are read through
// the window cache, so a sequential walk costs one request per megabyte.
func (r *Repository) BlobHead(ctx context.Context, id crypto.ID, n int) ([]byte, error) {
	stored, err := r.loadStored(ctx, id, true)
	if err != nil {
		return nil, err
	}
	pbp := r.getBuf(len(stored))
	defer r.putBuf(pbp)
	plain, err := r.openPayload(id, stored, (*pbp)[:0])
	if err != nil {
		return nil, err
	}
	*pbp = plain
	if plain[0] == payloadZstd {
		dec, _ := r.headDecs.Get().(*zstd.Decoder)
		if dec == nil {
			if dec, err = zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(maxBlobSize)); err != nil {
				return nil, err
			}
		}
		defer r.headDecs.Put(dec)
		if err := dec.Reset(bytes.NewReader(plain[1:])); err != nil {
			return nil, fmt.Errorf("blob %s: %w: %v", id.Short(), ErrBlobCorrupt, err)
		}
		out := make([]byte, n)
		m, err := io.ReadFull(dec, out)
		if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("blob %s: %w: decompress: %v", id.Short(), ErrBlobCorrupt, err)
		}
		return out[:m], nil
	}
	// Raw, or a delta (rebuilt whole from its base).
	content, _, err := r.decodePayload(ctx, id, plain, nil, false, nil)
	if err != nil {
		return nil, err
	}
	return bytes.Clone(content[:min(n, len(content))]), nil
}
