package repo

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/cairn-backup/cairn/crypto"
	"github.com/cairn-backup/cairn/repo/backend"
)

var adRemovals = []byte("cairn removals")

// removalRecord is what a repository with object lock records before cairn
// removes objects: a removal there only hides an object, and a purge later
// deletes for good only what such a record names; anything else it finds
// hidden was hidden by someone else and is brought back.
type removalRecord struct {
	Time     time.Time `json:"time"`
	Hostname string    `json:"hostname,omitempty"`
	Objects  []string  `json:"objects"` // type/name, as backend.Handle prints
}

// Remove removes objects of the repository. With object lock it first
// stores a removal record naming them.
func (r *Repository) Remove(ctx context.Context, hs ...backend.Handle) error {
	if len(hs) == 0 {
		return nil
	}
	if r.cfg.ObjectLock != nil && r.cfg.Version >= boundVersion {
		rec := removalRecord{Time: time.Now().UTC()}
		rec.Hostname, _ = os.Hostname()
		for _, h := range hs {
			rec.Objects = append(rec.Objects, h.String())
		}
		js, err := json.Marshal(rec)
		if err != nil {
			return err
		}
		data := sealFile(r.key, r.cfg.Version, adRemovals, js)
		if err := r.be.Save(ctx, backend.Handle{Type: backend.Removals, Name: crypto.Hash(data).String()}, data); err != nil {
			return fmt.Errorf("record the removal of %d objects: %w", len(hs), err)
		}
	}
	for _, h := range hs {
		if err := r.be.Remove(ctx, h); err != nil && !backend.IsNotFound(err) {
			return err
		}
	}
	return nil
}

// removedObjects reads every removal record: the objects cairn removed.
func (r *Repository) removedObjects(ctx context.Context) (map[string]bool, error) {
	var names []string
	if err := r.be.List(ctx, backend.Removals, func(fi backend.FileInfo) error {
		names = append(names, fi.Name)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("list removal records: %w", err)
	}
	out := map[string]bool{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	var firstErr error
	sem := make(chan struct{}, 16)
	for _, n := range names {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			rec, err := r.loadRemovalRecord(ctx, n)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case backend.IsNotFound(err):
			case err != nil:
				if firstErr == nil {
					firstErr = err
				}
			default:
				for _, o := range rec.Objects {
					out[o] = true
				}
			}
		}()
	}
	wg.Wait()
	return out, firstErr
}

func (r *Repository) loadRemovalRecord(ctx context.Context, name string) (*removalRecord, error) {
	data, err := r.be.Load(ctx, backend.Handle{Type: backend.Removals, Name: name}, 0, 0)
	if err != nil {
		return nil, err
	}
	if crypto.Hash(data).String() != name {
		return nil, fmt.Errorf("removal record %s: content does not match its name", ShortName(name))
	}
	var rec removalRecord
	if err := r.openJSON("removal record", name, adRemovals, data, &rec); err != nil {
		return nil, err
	}
	return &rec, nil
}
