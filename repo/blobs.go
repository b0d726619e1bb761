package repo

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/zeebo/blake3"

	"github.com/cairn-backup/cairn/crypto"
	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/repo/backend"
)

// maxBlobSize bounds a blob's plaintext (and zstd's window when decoding).
const maxBlobSize = 64 << 20

// Payload flags: the first byte of every blob's plaintext payload.
const (
	payloadRaw  = 0
	payloadZstd = 1
	// A delta payload is base ID || delta (docs/format.md §7.1), the delta
	// raw or zstd-compressed. The base is always a full (raw or zstd) blob.
	payloadDelta     = 2
	payloadDeltaZstd = 3
)

// indexFlushBlobs is how many uploaded blobs trigger writing an index file
// during a long backup, so a crash loses little indexing work.
const indexFlushBlobs = 50000

// ErrBlobNotFound is wrapped when a blob is not in the index.
var ErrBlobNotFound = errors.New("blob not in index")

// ErrBlobCorrupt is wrapped when a stored blob fails decryption or its hash.
var ErrBlobCorrupt = errors.New("blob is corrupt")

// packer collects the blobs of one pack. Packs are built in a temporary
// file when the backend can store from one (all real backends can), so a
// backup holds no pack in memory; otherwise in buf.
type packer struct {
	t     index.BlobType
	f     *os.File
	w     *bufio.Writer
	buf   []byte
	size  int64
	blobs []index.BlobEntry
}

func (r *Repository) newPacker(t index.BlobType) (*packer, error) {
	p := &packer{t: t}
	if fs, ok := r.be.(backend.FileSaver); ok {
		f, err := os.CreateTemp(fs.TempDir(), ".tmp-pack-")
		if err != nil {
			return nil, fmt.Errorf("create temporary pack file: %w", err)
		}
		p.f, p.w = f, bufio.NewWriterSize(f, 1<<20)
	}
	return p, nil
}

func (p *packer) write(b []byte) error {
	p.size += int64(len(b))
	if p.w != nil {
		if _, err := p.w.Write(b); err != nil {
			return fmt.Errorf("write temporary pack file: %w", err)
		}
		return nil
	}
	p.buf = append(p.buf, b...)
	return nil
}

// readAt reads back what was written.
func (p *packer) readAt(b []byte, off int64) error {
	if p.f == nil {
		copy(b, p.buf[off:])
		return nil
	}
	if _, err := p.f.ReadAt(b, off); err != nil {
		return fmt.Errorf("read back temporary pack file: %w", err)
	}
	return nil
}

// discard removes the temporary file.
func (p *packer) discard() {
	if p.f != nil {
		p.f.Close()
		os.Remove(p.f.Name())
		p.f, p.w = nil, nil
	}
}

// PackType is the object type of the packs that hold blobs of type t.
func PackType(t index.BlobType) backend.FileType {
	if t == index.TreeBlob {
		return backend.TreePack
	}
	return backend.DataPack
}

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

// addToPacker appends a sealed blob to the open pack of its type and
// starts the upload when the pack is full.
func (r *Repository) addToPacker(ctx context.Context, t index.BlobType, e index.BlobEntry, sealed []byte) error {
	r.mu.Lock()
	p := r.packers[t]
	if p == nil {
		var err error
		if p, err = r.newPacker(t); err != nil {
			r.mu.Unlock()
			return err
		}
		r.packers[t] = p
	}
	e.Offset = uint32(p.size)
	if err := p.write(sealed); err != nil {
		r.mu.Unlock()
		return err
	}
	p.blobs = append(p.blobs, e)
	var full *packer
	if p.size >= int64(r.cfg.PackSize) {
		full = p
		r.packers[t] = nil
	}
	r.mu.Unlock()
	if full != nil {
		return r.startUpload(ctx, full)
	}
	return nil
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

// startUpload seals the pack's header and uploads it in the background,
// blocking while the configured number of uploads is already running.
func (r *Repository) startUpload(ctx context.Context, p *packer) error {
	select {
	case r.uploadSem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	r.uploadWG.Add(1)
	go func() {
		defer r.uploadWG.Done()
		defer func() { <-r.uploadSem }()
		if err := r.uploadPack(r.bgCtx, p); err != nil {
			r.mu.Lock()
			if r.uploadErr == nil {
				r.uploadErr = err
			}
			r.mu.Unlock()
		}
	}()
	return nil
}

func (r *Repository) uploadPack(ctx context.Context, p *packer) error {
	defer p.discard()
	hdr := r.key.Seal(nil, encodePackHeader(p.t, p.blobs))
	if err := p.write(binary.LittleEndian.AppendUint32(hdr, uint32(len(hdr)))); err != nil {
		return err
	}
	if p.w != nil {
		if err := p.w.Flush(); err != nil {
			return fmt.Errorf("write temporary pack file: %w", err)
		}
	}
	// Read every blob back from what will be stored, decrypt and re-hash
	// it, and hash the pack for its name on the way: a bug, bad RAM or a
	// failing temporary disk must not produce a pack that cannot be read.
	h := blake3.New()
	var off int64
	for _, b := range p.blobs {
		bp := r.getBuf(int(b.Length))
		stored := (*bp)[:b.Length]
		if err := p.readAt(stored, int64(b.Offset)); err != nil {
			r.putBuf(bp)
			return err
		}
		_, _ = h.Write(stored)
		err := r.verifyBlob(ctx, b, stored)
		r.putBuf(bp)
		if err != nil {
			return fmt.Errorf("verify pack before upload: %w", err)
		}
		off = int64(b.Offset) + int64(b.Length)
	}
	tail := make([]byte, p.size-off)
	if err := p.readAt(tail, off); err != nil {
		return err
	}
	_, _ = h.Write(tail)
	var id crypto.ID
	h.Sum(id[:0])
	handle := backend.Handle{Type: PackType(p.t), Name: id.String()}
	var err error
	if fs, ok := r.be.(backend.FileSaver); ok && p.f != nil {
		err = fs.SaveFile(ctx, handle, p.f, p.size)
	} else {
		err = r.be.Save(ctx, handle, p.buf)
	}
	if err != nil {
		return fmt.Errorf("save pack %s: %w", id.Short(), err)
	}
	entry := index.PackEntry{ID: id, Type: p.t, Blobs: p.blobs}
	r.idx.AddPack(entry)
	r.noteBases(entry)
	r.mu.Lock()
	for _, b := range p.blobs {
		delete(r.inFlight, b.ID)
	}
	r.unindexed = append(r.unindexed, entry)
	r.idxBlobs += len(p.blobs)
	var toWrite []index.PackEntry
	if r.idxBlobs >= indexFlushBlobs {
		toWrite, r.unindexed, r.idxBlobs = r.unindexed, nil, 0
	}
	r.mu.Unlock()
	if toWrite != nil {
		if _, err := r.SaveIndexFile(ctx, &index.File{Packs: toWrite}); err != nil {
			return err
		}
	}
	return nil
}

// Flush uploads the open packs, waits for every upload and writes an index
// file for them. After Flush returns nil, every blob saved so far is durable
// and indexed.
func (r *Repository) Flush(ctx context.Context) error {
	r.mu.Lock()
	var open []*packer
	for t, p := range r.packers {
		if p != nil && len(p.blobs) > 0 {
			open = append(open, p)
		}
		r.packers[t] = nil
	}
	r.mu.Unlock()
	for _, p := range open {
		if err := r.startUpload(ctx, p); err != nil {
			r.uploadWG.Wait()
			return err
		}
	}
	r.uploadWG.Wait()
	r.mu.Lock()
	err := r.uploadErr
	toWrite := r.unindexed
	r.unindexed, r.idxBlobs = nil, 0
	r.mu.Unlock()
	if err != nil {
		return err
	}
	if len(toWrite) > 0 {
		if _, err := r.SaveIndexFile(ctx, &index.File{Packs: toWrite}); err != nil {
			return err
		}
	}
	return nil
}

// SaveIndexFile seals and stores an index file, returning its name.
func (r *Repository) SaveIndexFile(ctx context.Context, f *index.File) (crypto.ID, error) {
	data := r.key.Seal(nil, f.Encode())
	id := crypto.Hash(data)
	if err := r.be.Save(ctx, backend.Handle{Type: backend.Index, Name: id.String()}, data); err != nil {
		return id, fmt.Errorf("save index %s: %w", id.Short(), err)
	}
	return id, nil
}

// LoadIndexFile loads, verifies and decodes one index file.
func (r *Repository) LoadIndexFile(ctx context.Context, name string) (*index.File, error) {
	data, err := r.be.Load(ctx, backend.Handle{Type: backend.Index, Name: name}, 0, 0)
	if err != nil {
		return nil, fmt.Errorf("load index %s: %w", ShortName(name), err)
	}
	if crypto.Hash(data).String() != name {
		return nil, fmt.Errorf("index %s: content does not match its name", ShortName(name))
	}
	plain, err := r.key.Open(nil, data)
	if err != nil {
		return nil, fmt.Errorf("index %s: %w", ShortName(name), err)
	}
	f, err := index.DecodeFile(plain)
	if err != nil {
		return nil, fmt.Errorf("index %s: %w", ShortName(name), err)
	}
	return f, nil
}

// ShortName is the first eight characters of an object name, for messages.
func ShortName(n string) string {
	if len(n) > 8 {
		return n[:8]
	}
	return n
}

// IndexState is the merged content of a repository's index files.
type IndexState struct {
	// InEffect are the index files not superseded by another; All are
	// every index file that was listed.
	InEffect, All []crypto.ID
	// Live maps each live pack to its blobs (merged across files).
	Live map[crypto.ID]index.PackEntry
	// Obsolete packs await deletion; a pack live in any file is not here.
	Obsolete map[crypto.ID]index.ObsoletePack
}

// ReadIndexState reads every index file. With onError nil, the first
// unreadable file fails the call; otherwise onError is told and the file is
// skipped (check uses that to report every damaged file).
func (r *Repository) ReadIndexState(ctx context.Context, onError func(name string, err error)) (*IndexState, error) {
	// A prune running meanwhile may remove index files between the listing
	// and the reading, after writing the files that supersede them: read
	// again, the new listing holds those.
	for attempt := 0; ; attempt++ {
		st, vanished, err := r.readIndexState(ctx, onError, attempt < 5)
		if !vanished {
			return st, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Duration(50*(attempt+1)) * time.Millisecond):
		}
	}
}

func (r *Repository) readIndexState(ctx context.Context, onError func(name string, err error), retry bool) (*IndexState, bool, error) {
	var names []string
	if err := r.be.List(ctx, backend.Index, func(fi backend.FileInfo) error {
		names = append(names, fi.Name)
		return nil
	}); err != nil {
		return nil, false, fmt.Errorf("list index files: %w", err)
	}
	files := make([]*index.File, len(names))
	errs := make([]error, len(names))
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for i, n := range names {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			files[i], errs[i] = r.LoadIndexFile(ctx, n)
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, false, err
	}
	if retry {
		for _, err := range errs {
			if backend.IsNotFound(err) {
				return nil, true, nil
			}
		}
	}
	st := &IndexState{Live: map[crypto.ID]index.PackEntry{}, Obsolete: map[crypto.ID]index.ObsoletePack{}}
	superseded := make(map[crypto.ID]bool)
	for i, f := range files {
		if errs[i] != nil {
			if onError == nil {
				return nil, false, errs[i]
			}
			onError(names[i], errs[i])
			continue
		}
		for _, s := range f.Supersedes {
			superseded[s] = true
		}
	}
	for i, f := range files {
		id, err := crypto.ParseID(names[i])
		if err != nil {
			if onError == nil {
				return nil, false, fmt.Errorf("index file name %q is not an ID", names[i])
			}
			onError(names[i], fmt.Errorf("index file name is not an ID"))
			continue
		}
		st.All = append(st.All, id)
		if f == nil || superseded[id] {
			continue
		}
		st.InEffect = append(st.InEffect, id)
		for _, p := range f.Packs {
			if prev, ok := st.Live[p.ID]; ok {
				if len(prev.Blobs) < len(p.Blobs) {
					st.Live[p.ID] = p
				}
			} else {
				st.Live[p.ID] = p
			}
		}
		for _, o := range f.Obsolete {
			if prev, ok := st.Obsolete[o.Pack.ID]; !ok || o.Since < prev.Since {
				st.Obsolete[o.Pack.ID] = o
			}
		}
	}
	for id := range st.Obsolete {
		if _, ok := st.Live[id]; ok {
			delete(st.Obsolete, id) // live anywhere means live
		}
	}
	return st, false, nil
}

// LoadIndex reads every index file into memory, skipping files superseded
// by others. Blobs of obsolete packs (awaiting deletion by prune) stay
// readable but are not used for deduplication.
func (r *Repository) LoadIndex(ctx context.Context) error {
	start := time.Now()
	st, err := r.ReadIndexState(ctx, nil)
	if err != nil {
		return err
	}
	r.UseIndexState(st)
	r.dropUnindexedTreePacks(st, start)
	return nil
}

// treePackCache is implemented by a backend that keeps tree packs locally
// (repo/backend/cache).
type treePackCache interface {
	KeepOnly(t backend.FileType, since time.Time, keep func(name string) bool)
	Prefetch(ctx context.Context, packs []backend.Handle)
}

// dropUnindexedTreePacks removes cached tree packs that no index lists
// (pruned by another process), except ones written since start.
func (r *Repository) dropUnindexedTreePacks(st *IndexState, start time.Time) {
	c, ok := r.be.(treePackCache)
	if !ok {
		return
	}
	c.KeepOnly(backend.TreePack, start, func(name string) bool {
		id, err := crypto.ParseID(name)
		if err != nil {
			return false
		}
		_, live := st.Live[id]
		_, obsolete := st.Obsolete[id]
		return live || obsolete
	})
}

// PrefetchBlobs asks a caching backend to start fetching the packs that
// hold these blobs (trees about to be read), so the reads that follow do
// not wait on a round trip each. It does nothing for other backends.
func (r *Repository) PrefetchBlobs(ctx context.Context, ids []crypto.ID) {
	c, ok := r.be.(treePackCache)
	if !ok || len(ids) == 0 {
		return
	}
	var packs []backend.Handle
	seen := map[crypto.ID]bool{}
	for _, id := range ids {
		loc, ok := r.Lookup(id)
		if !ok || seen[loc.Pack] {
			continue
		}
		seen[loc.Pack] = true
		packs = append(packs, backend.Handle{Type: PackType(loc.Type), Name: loc.Pack.String()})
	}
	c.Prefetch(ctx, packs)
}

// UseIndexState loads a merged index state into memory.
func (r *Repository) UseIndexState(st *IndexState) {
	for _, p := range st.Live {
		r.idx.AddPack(p)
		r.noteBases(p)
	}
	r.idx.Compact()
	for _, o := range st.Obsolete {
		r.obsolete.AddPack(o.Pack)
		r.noteBases(o.Pack)
	}
	r.obsolete.Compact()
}

// noteBases remembers the bases of a pack's delta blobs.
func (r *Repository) noteBases(p index.PackEntry) {
	if !p.HasDeltas() {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.bases == nil {
		r.bases = map[crypto.ID]crypto.ID{}
	}
	for _, b := range p.Blobs {
		if b.IsDelta() {
			r.bases[b.ID] = b.Base
		}
	}
}

// DeltaBase returns the base of an indexed delta blob; ok is false for a
// full blob (or one not indexed).
func (r *Repository) DeltaBase(id crypto.ID) (base crypto.ID, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	base, ok = r.bases[id]
	return base, ok
}
