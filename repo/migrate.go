package repo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/cairn-backup/cairn/crypto"
	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/repo/backend"
)

// MigrateResult says what Migrate did.
type MigrateResult struct {
	From, To int
	// IndexFilesIn were replaced by IndexFilesOut files.
	IndexFilesIn, IndexFilesOut int
	// Snapshots lists the snapshots sealed again: a snapshot's ID is the
	// hash of its stored bytes, so it changes.
	Snapshots []SnapshotMove
}

// SnapshotMove is a snapshot's ID before and after a migration.
type SnapshotMove struct{ Old, New crypto.ID }

// ErrNoReplace is returned by Migrate for storage that cannot replace the
// config in one step.
var ErrNoReplace = errors.New("this storage cannot replace the config in one step")

// Migrate upgrades a version 1 repository to version 2 in place (docs/
// format.md §3.4): the index is written again as new index files bound to
// their type, superseding the old ones, which are then removed; each
// snapshot is sealed again, bound, under its new name, and the old one
// removed; then the config is replaced by a version 2 one. Data and tree
// packs are not touched. No other cairn process should use the
// repository meanwhile: files of the old format that one writes are bound
// at the end, and by running Migrate again.
//
// Stopped at any point, it leaves a version 1 repository that reads as
// before (version 1 accepts bound files, and a new index file names the
// ones it supersedes), and running it again finishes the work: a snapshot
// whose bound copy exists is only removed. On a version 2 repository it
// only binds files of the old format that a process which opened the
// repository before the migration wrote.
func (r *Repository) Migrate(ctx context.Context) (*MigrateResult, error) {
	res := &MigrateResult{From: r.cfg.Version, To: r.cfg.Version}
	if r.cfg.Version >= boundVersion {
		return res, r.bindStray(ctx, res)
	}
	replacer, ok := backend.Unwrap(r.be).(backend.Replacer)
	if !ok {
		return nil, fmt.Errorf("migrate %s: %w", r.be.Location(), ErrNoReplace)
	}
	if err := r.migrateIndex(ctx, res); err != nil {
		return nil, err
	}
	if err := r.bindStray(ctx, res); err != nil {
		return nil, err
	}
	cfg := r.cfg
	cfg.Version = boundVersion
	data, err := encodeConfig(r.key, &cfg)
	if err != nil {
		return nil, err
	}
	if err := replacer.Replace(ctx, backend.Handle{Type: backend.Config}, data); err != nil {
		return nil, fmt.Errorf("migrate: replace config: %w", err)
	}
	r.cfg.Version, res.To = cfg.Version, cfg.Version
	// What a process that opened the repository before the switch wrote
	// meanwhile is of the old format.
	return res, r.bindStray(ctx, res)
}

// migrateIndex writes the merged index as bound files, the last one
// superseding every file read, then removes those.
func (r *Repository) migrateIndex(ctx context.Context, res *MigrateResult) error {
	st, err := r.ReadIndexState(ctx, nil)
	if err != nil {
		return fmt.Errorf("migrate: read index: %w (run 'cairn check', then 'cairn repair index')", err)
	}
	live := make([]index.PackEntry, 0, len(st.Live))
	for _, p := range st.Live {
		live = append(live, p)
	}
	obsolete := make([]index.ObsoletePack, 0, len(st.Obsolete))
	for _, o := range st.Obsolete {
		obsolete = append(obsolete, o)
	}
	files := index.Split(live, obsolete)
	files[len(files)-1].Supersedes = st.All
	for _, f := range files {
		data := sealFile(r.key, boundVersion, adIndex, f.Encode())
		id := crypto.Hash(data)
		if err := r.be.Save(ctx, backend.Handle{Type: backend.Index, Name: id.String()}, data); err != nil {
			return fmt.Errorf("migrate: save index %s: %w", id.Short(), err)
		}
	}
	for _, id := range st.All {
		if err := r.Remove(ctx, backend.Handle{Type: backend.Index, Name: id.String()}); err != nil && !backend.IsNotFound(err) {
			return fmt.Errorf("migrate: remove index %s: %w", id.Short(), err)
		}
	}
	res.IndexFilesIn, res.IndexFilesOut = len(st.All), len(files)
	return nil
}

// bindStray seals every unbound index file and snapshot again, bound, and
// removes the unbound one (only removes it when its bound copy exists, left
// by an earlier run). A file is bound only if it decodes as its type: an
// object of another type planted there stays unbound, and so damage.
func (r *Repository) bindStray(ctx context.Context, res *MigrateResult) error {
	for _, t := range []backend.FileType{backend.Index, backend.Snapshot} {
		if err := r.bindStrayOf(ctx, t, res); err != nil {
			return err
		}
	}
	return nil
}

func (r *Repository) bindStrayOf(ctx context.Context, t backend.FileType, res *MigrateResult) error {
	ad, valid := adIndex, func(plain []byte) bool { _, err := index.DecodeFile(plain); return err == nil }
	if t == backend.Snapshot {
		ad, valid = adSnapshot, func(plain []byte) bool {
			var sn Snapshot
			return json.Unmarshal(plain, &sn) == nil && !sn.Tree.IsNull() && !sn.Time.IsZero()
		}
	}
	var names []string
	if err := r.be.List(ctx, t, func(fi backend.FileInfo) error {
		names = append(names, fi.Name)
		return nil
	}); err != nil {
		return fmt.Errorf("migrate: list %s: %w", t, err)
	}
	type stored struct {
		name  string
		plain []byte
		bound bool
	}
	var all []stored
	for _, name := range names {
		data, err := r.be.Load(ctx, backend.Handle{Type: t, Name: name}, 0, 0)
		if err != nil {
			return fmt.Errorf("migrate: load %s %s: %w", t, ShortName(name), err)
		}
		if crypto.Hash(data).String() != name {
			continue // damaged: check reports it
		}
		if plain, err := r.key.OpenFor(nil, data, ad); err == nil {
			all = append(all, stored{name, plain, true})
		} else if plain, err := r.key.Open(nil, data); err == nil && valid(plain) {
			all = append(all, stored{name, plain, false})
		}
	}
	for _, s := range all {
		if s.bound {
			continue
		}
		old, err := crypto.ParseID(s.name)
		if err != nil {
			continue
		}
		done := false
		for _, b := range all {
			done = done || b.bound && bytes.Equal(b.plain, s.plain)
		}
		if !done {
			data := sealFile(r.key, boundVersion, ad, s.plain)
			id := crypto.Hash(data)
			if err := r.be.Save(ctx, backend.Handle{Type: t, Name: id.String()}, data); err != nil {
				return fmt.Errorf("migrate: save %s %s: %w", t, id.Short(), err)
			}
			if t == backend.Snapshot {
				res.Snapshots = append(res.Snapshots, SnapshotMove{Old: old, New: id})
			}
		}
		if err := r.Remove(ctx, backend.Handle{Type: t, Name: s.name}); err != nil && !backend.IsNotFound(err) {
			return fmt.Errorf("migrate: remove %s %s: %w", t, old.Short(), err)
		}
	}
	return nil
}
