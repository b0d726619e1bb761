package repo

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/cairn-backup/cairn/crypto"
	"github.com/cairn-backup/cairn/repo/backend"
)

// Summary records what a backup did, with restic's field names.
type Summary struct {
	BackupStart         time.Time `json:"backup_start"`
	BackupEnd           time.Time `json:"backup_end"`
	FilesNew            uint64    `json:"files_new"`
	FilesChanged        uint64    `json:"files_changed"`
	FilesUnmodified     uint64    `json:"files_unmodified"`
	DirsNew             uint64    `json:"dirs_new"`
	DirsChanged         uint64    `json:"dirs_changed"`
	DirsUnmodified      uint64    `json:"dirs_unmodified"`
	DataBlobs           uint64    `json:"data_blobs"`
	DeltaBlobs          uint64    `json:"delta_blobs,omitempty"` // of DataBlobs, stored as deltas
	TreeBlobs           uint64    `json:"tree_blobs"`
	DataAdded           uint64    `json:"data_added"`
	DataAddedPacked     uint64    `json:"data_added_packed"`
	TotalFilesProcessed uint64    `json:"total_files_processed"`
	TotalBytesProcessed uint64    `json:"total_bytes_processed"`
}

// Source records one captured source of a snapshot (a directory tree, a
// stream, a database): its status and what it holds.
type Source struct {
	Kind   string            `json:"kind"`            // "files", "stdin", "command", ...
	Name   string            `json:"name"`            // path in the snapshot tree
	Status string            `json:"status"`          // SourceOK, SourcePartial, SourceSkipped
	Error  string            `json:"error,omitempty"` // why not ok
	Size   uint64            `json:"size"`            // plaintext bytes
	Meta   map[string]string `json:"meta,omitempty"`  // source-specific facts
	// Details holds structured source-specific metadata (a database's
	// server version and per-table row counts, a Redis key space), in a
	// shape defined by the source.
	Details json.RawMessage `json:"details,omitempty"`
}

// Source statuses.
const (
	SourceOK      = "ok"      // captured whole
	SourcePartial = "partial" // captured, but some of it could not be read
	SourceSkipped = "skipped" // an optional source that failed: not in the snapshot
)

// Snapshot is the commit point of a backup: it names a root tree.
type Snapshot struct {
	Time           time.Time  `json:"time"`
	Tree           crypto.ID  `json:"tree"`
	Paths          []string   `json:"paths"`
	Hostname       string     `json:"hostname"`
	Username       string     `json:"username,omitempty"`
	Tags           []string   `json:"tags,omitempty"`
	Parent         *crypto.ID `json:"parent,omitempty"`
	ProgramVersion string     `json:"program_version"`
	Summary        *Summary   `json:"summary,omitempty"`
	Sources        []Source   `json:"sources,omitempty"`
	// Original is set on a snapshot made by 'repair snapshots': the
	// damaged snapshot it replaces.
	Original *crypto.ID `json:"original,omitempty"`
	// CopiedFrom is set on a snapshot made by 'copy': its ID in the
	// repository it was copied from.
	CopiedFrom *crypto.ID `json:"copied_from,omitempty"`

	// ID is the storage name; not stored.
	ID crypto.ID `json:"-"`
}

// SaveSnapshot stores sn and sets its ID. Call Flush first: a snapshot must
// only name data that is already durable.
func (r *Repository) SaveSnapshot(ctx context.Context, sn *Snapshot) (crypto.ID, error) {
	js, err := json.Marshal(sn)
	if err != nil {
		return crypto.ID{}, fmt.Errorf("encode snapshot: %w", err)
	}
	data := sealFile(r.key, r.cfg.Version, adSnapshot, js)
	id := crypto.Hash(data)
	if err := r.be.Save(ctx, backend.Handle{Type: backend.Snapshot, Name: id.String()}, data); err != nil {
		return id, fmt.Errorf("save snapshot: %w", err)
	}
	sn.ID = id
	return id, nil
}

// DecodeSnapshot opens a stored snapshot object.
func (r *Repository) DecodeSnapshot(name string, data []byte) (*Snapshot, error) {
	if crypto.Hash(data).String() != name {
		return nil, fmt.Errorf("snapshot %s: content does not match its name", ShortName(name))
	}
	var sn Snapshot
	if err := r.openJSON("snapshot", name, adSnapshot, data, &sn); err != nil {
		return nil, err
	}
	id, err := crypto.ParseID(name)
	if err != nil {
		return nil, err
	}
	sn.ID = id
	return &sn, nil
}

// LoadSnapshot loads the snapshot with the full ID.
func (r *Repository) LoadSnapshot(ctx context.Context, id crypto.ID) (*Snapshot, error) {
	data, err := r.be.Load(ctx, backend.Handle{Type: backend.Snapshot, Name: id.String()}, 0, 0)
	if err != nil {
		return nil, fmt.Errorf("load snapshot %s: %w", id.Short(), err)
	}
	return r.DecodeSnapshot(id.String(), data)
}

// ListSnapshots loads every snapshot, oldest first. Snapshots that cannot be
// read are reported in the error alongside the readable ones.
func (r *Repository) ListSnapshots(ctx context.Context) ([]*Snapshot, error) {
	var names []string
	if err := r.be.List(ctx, backend.Snapshot, func(fi backend.FileInfo) error {
		names = append(names, fi.Name)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("list snapshots: %w", err)
	}
	// Loaded a few at a time: on a remote bucket without a warm cache each
	// snapshot is a round trip.
	loaded := make([]*Snapshot, len(names))
	errs := make([]error, len(names))       // reading
	decodeErrs := make([]error, len(names)) // damage
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for i, n := range names {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			data, err := r.be.Load(ctx, backend.Handle{Type: backend.Snapshot, Name: n}, 0, 0)
			if err != nil {
				errs[i] = err
				return
			}
			loaded[i], decodeErrs[i] = r.DecodeSnapshot(n, data)
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var out []*Snapshot
	var bad []string
	for i, sn := range loaded {
		switch {
		case backend.IsNotFound(errs[i]):
			// removed concurrently
		case errs[i] != nil:
			return nil, errs[i]
		case decodeErrs[i] != nil:
			bad = append(bad, decodeErrs[i].Error())
		default:
			out = append(out, sn)
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		if !out[i].Time.Equal(out[j].Time) {
			return out[i].Time.Before(out[j].Time)
		}
		return out[i].ID.Compare(out[j].ID) < 0
	})
	if len(bad) > 0 {
		return out, fmt.Errorf("unreadable snapshots: %s", strings.Join(bad, "; "))
	}
	if r.opts.SnapshotsListed != nil {
		r.opts.SnapshotsListed(out)
	}
	return out, nil
}
