package repo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/cairn-backup/cairn/crypto"
	"github.com/cairn-backup/cairn/repo/backend"
)

var adWAL = []byte("cairn wal")

// WALFile is the record of one archived file of a PostgreSQL server's
// write-ahead log (a segment, a timeline history file, a backup history
// file): its content is stored as data blobs like a file's.
type WALFile struct {
	// SystemID is the database system identifier (decimal) of the server
	// that wrote it: WAL of different servers never mixes.
	SystemID string `json:"system_id"`
	Name     string `json:"name"` // its name in pg_wal
	Size     int64  `json:"size"`
	// SegmentSize is the server's WAL segment size, for segments.
	SegmentSize int64       `json:"segment_size,omitempty"`
	Hash        crypto.ID   `json:"hash"` // keyed hash of the content, as a blob ID
	Blobs       []crypto.ID `json:"blobs"`
	Time        time.Time   `json:"time"` // when it was archived
	Hostname    string      `json:"hostname,omitempty"`

	// Object is the record's object name (not stored).
	Object string `json:"-"`
}

// ErrWALNeedsV2 is returned by the WAL operations of a version 1
// repository.
var ErrWALNeedsV2 = errors.New("WAL archiving needs a repository of format version 2 (run 'cairn migrate')")

// WALObjectName is the object name of the record of file name of the
// server systemID: a keyed hash of both, so that a file is found with one
// request and the names say nothing without the key.
func (r *Repository) WALObjectName(systemID, name string) string {
	return r.key.BlobID([]byte("cairn wal\x00" + systemID + "\x00" + name)).String()
}

func (r *Repository) walSupported() error {
	if r.cfg.Version < boundVersion {
		return ErrWALNeedsV2
	}
	return nil
}

// SaveWALFile stores the record of an archived file whose blobs are
// already durable (Flush). Records are written once: the caller checks
// with LoadWALFile that none exists.
func (r *Repository) SaveWALFile(ctx context.Context, f *WALFile) error {
	if err := r.walSupported(); err != nil {
		return err
	}
	js, err := json.Marshal(f)
	if err != nil {
		return fmt.Errorf("encode WAL record: %w", err)
	}
	f.Object = r.WALObjectName(f.SystemID, f.Name)
	if err := r.be.Save(ctx, backend.Handle{Type: backend.WAL, Name: f.Object}, sealFile(r.key, r.cfg.Version, adWAL, js)); err != nil {
		return fmt.Errorf("save WAL record of %s: %w", f.Name, err)
	}
	return nil
}

// LoadWALFile returns the record of file name of server systemID; the
// error wraps backend.ErrNotFound when it was not archived.
func (r *Repository) LoadWALFile(ctx context.Context, systemID, name string) (*WALFile, error) {
	if err := r.walSupported(); err != nil {
		return nil, err
	}
	obj := r.WALObjectName(systemID, name)
	data, err := r.be.Load(ctx, backend.Handle{Type: backend.WAL, Name: obj}, 0, 0)
	if err != nil {
		return nil, fmt.Errorf("load WAL record of %s: %w", name, err)
	}
	return r.DecodeWALFile(obj, data)
}

// DecodeWALFile opens a stored WAL record and checks that it is stored
// under its own name.
func (r *Repository) DecodeWALFile(obj string, data []byte) (*WALFile, error) {
	var f WALFile
	if err := r.openJSON("WAL record", obj, adWAL, data, &f); err != nil {
		return nil, err
	}
	if r.WALObjectName(f.SystemID, f.Name) != obj {
		return nil, fmt.Errorf("WAL record %s: holds the record of %s, stored under another name", ShortName(obj), f.Name)
	}
	f.Object = obj
	return &f, nil
}

// ListWALFiles loads every WAL record, ordered by server and name. Records
// that cannot be read are reported in the error alongside the readable
// ones.
func (r *Repository) ListWALFiles(ctx context.Context) ([]*WALFile, error) {
	if r.cfg.Version < boundVersion {
		return nil, nil // none can exist
	}
	var names []string
	if err := r.be.List(ctx, backend.WAL, func(fi backend.FileInfo) error {
		names = append(names, fi.Name)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("list WAL records: %w", err)
	}
	files := make([]*WALFile, len(names))
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i, n := range names {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			data, err := r.be.Load(ctx, backend.Handle{Type: backend.WAL, Name: n}, 0, 0)
			if err == nil {
				files[i], err = r.DecodeWALFile(n, data)
			} else if backend.IsNotFound(err) {
				err = nil // removed meanwhile
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	var out []*WALFile
	for _, f := range files {
		if f != nil {
			out = append(out, f)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].SystemID != out[j].SystemID {
			return out[i].SystemID < out[j].SystemID
		}
		return out[i].Name < out[j].Name
	})
	if err := ctx.Err(); err != nil {
		return out, err
	}
	return out, errors.Join(errs...)
}

// RemoveWALFiles deletes WAL records (forget: no kept base backup needs
// them); prune then frees their blobs.
func (r *Repository) RemoveWALFiles(ctx context.Context, files []*WALFile) error {
	hs := make([]backend.Handle, len(files))
	for i, f := range files {
		hs[i] = backend.Handle{Type: backend.WAL, Name: f.Object}
	}
	if err := r.Remove(ctx, hs...); err != nil {
		return fmt.Errorf("remove WAL records: %w", err)
	}
	return nil
}
