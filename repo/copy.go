package repo

import (
	"context"
	"errors"
	"fmt"

	"github.com/cairn-backup/cairn/index"
)

// ErrOtherIDs is returned when blobs are copied between repositories that
// name blobs differently (neither was made from the other with init
// --from-repo): a blob's ID would not be its ID in the destination.
var ErrOtherIDs = errors.New("the repositories name blobs differently (make the destination with 'cairn init --from-repo')")

// ImportBlob stores a blob read from repository from: sealed is its stored
// bytes there and e its entry in from's index (type, lengths, base). The
// payload is opened with from's key and sealed again with this
// repository's, as it is: a compressed blob stays compressed, a delta a
// delta against the same base (which the caller copies too). Like every
// blob, it is decrypted and re-hashed before its pack is stored. A blob
// this repository holds, or is storing, is skipped (known).
func (r *Repository) ImportBlob(ctx context.Context, from *Repository, t index.BlobType, e index.BlobEntry, sealed []byte) (known bool, stored int, err error) {
	if from.key.IDKey() != r.key.IDKey() {
		return false, 0, ErrOtherIDs
	}
	if known, err := r.claim(ctx, e.ID); err != nil || known {
		return known, 0, err
	}
	pbp := r.getBuf(len(sealed))
	payload, err := from.openPayload(e.ID, sealed, (*pbp)[:0])
	if err != nil {
		r.unclaim(e.ID)
		r.keepBuf(pbp, payload)
		return false, 0, fmt.Errorf("copy blob %s: %w", e.ID.Short(), err)
	}
	sbp := r.getBuf(len(payload) + 64)
	out := r.key.Seal((*sbp)[:0], payload)
	r.keepBuf(pbp, payload)
	entry := index.BlobEntry{ID: e.ID, Length: uint32(len(out)), RawLength: e.RawLength, Base: e.Base}
	err = r.addToPacker(ctx, t, entry, out)
	r.keepBuf(sbp, out)
	if err != nil {
		return false, 0, err
	}
	return false, len(out), nil
}
