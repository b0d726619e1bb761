package repo

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"os"

	"github.com/zeebo/blake3"

	"github.com/cairn-backup/cairn/crypto"
	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/repo/backend"
)

// indexFlushBlobs is how many uploaded blobs trigger writing an index file
// during a long backup, so a crash loses little indexing work.
const indexFlushBlobs = 50000

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
