package repo

import (
	"context"
	"fmt"

	"github.com/cairn-backup/cairn/crypto"
	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/repo/backend"
)

// openBlob decrypts stored into plainBuf and, when the payload is
// compressed, decompresses it into outBuf; then it checks that the content
// hashes to id. content is a slice of plain (raw payload) or of out, whose
// first len(outBuf) bytes are outBuf's; out is nil for a raw payload.
//
// A delta payload is rebuilt from its base: base when it is given and
// names the delta's base, else loaded here. asBase refuses a delta (a base
// must be a full blob, so chains stay one deep).
func (r *Repository) openBlob(ctx context.Context, id crypto.ID, stored, plainBuf, outBuf []byte, asBase bool, base *sealedBase) (content, plain, out []byte, err error) {
	if plain, err = r.openPayload(id, stored, plainBuf); err != nil {
		return nil, plain, nil, err
	}
	if content, out, err = r.decodePayload(ctx, id, plain, outBuf, asBase, base); err != nil {
		return nil, plain, out, err
	}
	// A base's own hash is not checked: the delta's plaintext, rebuilt from
	// it, is, and that is what a reader gets.
	if asBase {
		return content, plain, out, nil
	}
	if got := r.key.BlobID(content); got != id {
		return nil, plain, out, fmt.Errorf("blob %s: %w: content hashes to %s", id.Short(), ErrBlobCorrupt, got.Short())
	}
	return content, plain, out, nil
}

// openPayload decrypts a stored blob into buf: flag || body.
func (r *Repository) openPayload(id crypto.ID, stored, buf []byte) ([]byte, error) {
	plain, err := r.key.Open(buf, stored)
	if err != nil {
		return nil, fmt.Errorf("blob %s: %w: %v", id.Short(), ErrBlobCorrupt, err)
	}
	if len(plain) < 1 {
		return plain, fmt.Errorf("blob %s: %w: empty payload", id.Short(), ErrBlobCorrupt)
	}
	return plain, nil
}

// decodePayload turns an opened payload into the blob's content, without
// checking its hash; content and out are as for openBlob.
func (r *Repository) decodePayload(ctx context.Context, id crypto.ID, plain, outBuf []byte, asBase bool, base *sealedBase) (content, out []byte, err error) {
	switch plain[0] {
	case payloadRaw:
		return plain[1:], nil, nil
	case payloadZstd:
		out, err = r.dec.DecodeAll(plain[1:], outBuf)
		if err != nil {
			return nil, nil, fmt.Errorf("blob %s: %w: decompress: %v", id.Short(), ErrBlobCorrupt, err)
		}
	case payloadDelta, payloadDeltaZstd:
		if asBase {
			return nil, nil, fmt.Errorf("blob %s: %w: a delta base is itself a delta", id.Short(), ErrBlobCorrupt)
		}
		if out, err = r.applyDelta(ctx, id, plain, outBuf, base); err != nil {
			return nil, nil, err
		}
	default:
		return nil, nil, fmt.Errorf("blob %s: %w: unknown payload flag %d", id.Short(), ErrBlobCorrupt, plain[0])
	}
	return out[len(outBuf):], out, nil
}

// DecodeBlob opens a stored blob, decompresses it and verifies that its
// plaintext hashes to id. The plaintext is appended to dst. A delta blob's
// base is loaded from the repository.
func (r *Repository) DecodeBlob(ctx context.Context, id crypto.ID, stored, dst []byte) ([]byte, error) {
	return r.decodeBlob(ctx, id, stored, dst, false, nil)
}

// sealedBase is a delta base already read from its pack (repo/read.go).
type sealedBase struct {
	id     crypto.ID
	stored []byte
}

func (r *Repository) decodeBlob(ctx context.Context, id crypto.ID, stored, dst []byte, asBase bool, base *sealedBase) ([]byte, error) {
	pbp := r.getBuf(len(stored))
	content, plain, out, err := r.openBlob(ctx, id, stored, (*pbp)[:0], dst, asBase, base)
	if err != nil {
		r.keepBuf(pbp, plain)
		return nil, err
	}
	if out == nil { // raw payload: the content lives in the pooled buffer
		out = append(dst, content...)
	}
	r.keepBuf(pbp, plain)
	return out, nil
}

// decodeBlobInPlace is decodeBlob (a full or delta blob, not as a base)
// for stored bytes the caller will not read again: it decrypts over them,
// and returns a raw blob's content where it lies, in stored; other content
// is appended to dst. inPlace reports which.
func (r *Repository) decodeBlobInPlace(ctx context.Context, id crypto.ID, stored, dst []byte, base *sealedBase) (content []byte, inPlace bool, err error) {
	plain, err := r.key.OpenInPlace(stored)
	if err != nil {
		return nil, false, fmt.Errorf("blob %s: %w: %v", id.Short(), ErrBlobCorrupt, err)
	}
	if len(plain) < 1 {
		return nil, false, fmt.Errorf("blob %s: %w: empty payload", id.Short(), ErrBlobCorrupt)
	}
	content, out, err := r.decodePayload(ctx, id, plain, dst, false, base)
	if err != nil {
		return nil, false, err
	}
	if got := r.key.BlobID(content); got != id {
		return nil, false, fmt.Errorf("blob %s: %w: content hashes to %s", id.Short(), ErrBlobCorrupt, got.Short())
	}
	if out == nil {
		return content, true, nil
	}
	return out, false, nil
}

// LoadBlob reads, decrypts and verifies a blob, appending it to dst.
func (r *Repository) LoadBlob(ctx context.Context, id crypto.ID, dst []byte) ([]byte, error) {
	return r.loadBlob(ctx, id, dst, false)
}

func (r *Repository) loadBlob(ctx context.Context, id crypto.ID, dst []byte, asBase bool) ([]byte, error) {
	stored, err := r.loadStored(ctx, id, asBase)
	if err != nil {
		return nil, err
	}
	return r.decodeBlob(ctx, id, stored, dst, asBase, nil)
}

// loadStored reads a blob's stored (sealed) bytes. viaWindow reads
// through the pack-window cache (window.go), for delta bases, which are
// read in the order they were written; the result must then not be
// modified.
func (r *Repository) loadStored(ctx context.Context, id crypto.ID, viaWindow bool) ([]byte, error) {
	loc, ok := r.Lookup(id)
	if !ok {
		return nil, fmt.Errorf("load blob %s: %w", id.Short(), ErrBlobNotFound)
	}
	length := int64(loc.Length)
	if viaWindow {
		if b := r.windows.get(loc); b != nil {
			return b, nil
		}
		length = max(int64(r.opts.BaseWindow), length)
	}
	stored, err := r.be.Load(ctx, backend.Handle{Type: PackType(loc.Type), Name: loc.Pack.String()}, int64(loc.Offset), length)
	if err != nil {
		return nil, fmt.Errorf("load blob %s from pack %s: %w", id.Short(), loc.Pack.Short(), err)
	}
	if len(stored) < int(loc.Length) || !viaWindow && len(stored) != int(loc.Length) {
		return nil, fmt.Errorf("load blob %s from pack %s: %w: pack is truncated", id.Short(), loc.Pack.Short(), ErrBlobCorrupt)
	}
	if viaWindow {
		r.windows.put(packWindow{pack: loc.Pack, off: int64(loc.Offset), data: stored})
	}
	return stored[:loc.Length:loc.Length], nil
}

// Lookup finds a blob in the live index, then among obsolete packs that
// prune has not deleted yet.
func (r *Repository) Lookup(id crypto.ID) (index.Location, bool) {
	if loc, ok := r.idx.Lookup(id); ok {
		return loc, true
	}
	return r.obsolete.Lookup(id)
}
