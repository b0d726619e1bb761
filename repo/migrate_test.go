package repo

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/crypto"
	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/repo/backend"
)

// plant stores sealed bytes as an object of type t, named by their hash,
// as an attacker with write access to the storage could.
func plant(t *testing.T, r *Repository, ft backend.FileType, sealed []byte) string {
	t.Helper()
	name := crypto.Hash(sealed).String()
	if err := r.be.Save(context.Background(), backend.Handle{Type: ft, Name: name}, sealed); err != nil {
		t.Fatal(err)
	}
	return name
}

// TestTypeBinding: in a version 2 repository a sealed file opens only as
// its own type. The config's sealed body, an index file, or a snapshot
// sealed without its type, planted among the snapshots, are refused as
// damage; in version 1 the config's body passed for a snapshot.
func TestTypeBinding(t *testing.T) {
	ctx := context.Background()
	for _, version := range []int{1, 2} {
		r, dir := newTestRepo(t, Options{FormatVersion: version})
		if r.Config().Version != version {
			t.Fatalf("init wrote version %d, want %d", r.Config().Version, version)
		}
		if _, err := r.SaveBlob(ctx, index.DataBlob, []byte("data")); err != nil {
			t.Fatal(err)
		}
		if err := r.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := r.SaveSnapshot(ctx, &Snapshot{Time: time.Now(), Paths: []string{"/x"}}); err != nil {
			t.Fatal(err)
		}
		cfgData, err := ReadConfig(ctx, r.be)
		if err != nil {
			t.Fatal(err)
		}
		planted := []string{plant(t, r, backend.Snapshot, cfgData[len(configMagic)+1:])}
		if version == 2 {
			js, _ := json.Marshal(&Snapshot{Time: time.Now(), Paths: []string{"/planted"}})
			planted = append(planted, plant(t, r, backend.Snapshot, r.key.Seal(nil, js)))
			var idx []string
			_ = r.be.List(ctx, backend.Index, func(fi backend.FileInfo) error { idx = append(idx, fi.Name); return nil })
			data, err := os.ReadFile(filepath.Join(dir, string(backend.Index), idx[0]))
			if err != nil {
				t.Fatal(err)
			}
			planted = append(planted, plant(t, r, backend.Snapshot, data))
		}
		sns, err := r.ListSnapshots(ctx)
		switch version {
		case 1:
			if len(sns) != 2 {
				t.Errorf("version 1: %d snapshots listed (%v); the config's body was expected to pass for one", len(sns), err)
			}
		case 2:
			if len(sns) != 1 || err == nil {
				t.Errorf("version 2: %d snapshots listed, error %v; want the real one and an error for %d planted", len(sns), err, len(planted))
			}
			for _, p := range planted {
				if _, err := r.LoadSnapshot(ctx, mustID(t, p)); err == nil {
					t.Errorf("planted object %s loads as a snapshot", ShortName(p))
				}
			}
		}
		r.Close()
	}
}

func mustID(t *testing.T, s string) crypto.ID {
	t.Helper()
	id, err := crypto.ParseID(s)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// TestMigrate upgrades a version 1 repository: index files and snapshots
// are bound (snapshots get new IDs), the config says version 2, every blob
// still loads, and unbound files are refused afterwards. A migration
// stopped half-way reads as before and finishes when run again.
func TestMigrate(t *testing.T) {
	ctx := context.Background()
	r, dir := newTestRepo(t, Options{FormatVersion: 1})
	blobs := map[crypto.ID][]byte{}
	var trees []crypto.ID
	for i := range 3 { // three flushes: three index files
		data := bytes.Repeat([]byte{byte(i)}, 1000+i)
		res, err := r.SaveBlob(ctx, index.DataBlob, data)
		if err != nil {
			t.Fatal(err)
		}
		blobs[res.ID] = data
		if err := r.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		trees = append(trees, res.ID)
		if _, err := r.SaveSnapshot(ctx, &Snapshot{Time: time.Unix(int64(1e9+i), 0), Tree: res.ID, Paths: []string{"/x"}}); err != nil {
			t.Fatal(err)
		}
	}
	before, err := r.ListSnapshots(ctx)
	if err != nil || len(before) != 3 {
		t.Fatalf("%d snapshots, %v", len(before), err)
	}

	// Interrupted: the index was migrated and one snapshot has its bound
	// copy, but the config still says version 1.
	if err := r.migrateIndex(ctx, &MigrateResult{}); err != nil {
		t.Fatal(err)
	}
	js, _ := json.Marshal(before[0])
	plant(t, r, backend.Snapshot, sealFile(r.key, 2, adSnapshot, js))
	r.Close()
	r, err = reopen(t, dir, "secret")
	if err != nil {
		t.Fatal(err)
	}
	if err := r.LoadIndex(ctx); err != nil {
		t.Fatalf("half-migrated index: %v", err)
	}
	if sns, err := r.ListSnapshots(ctx); err != nil || len(sns) != 4 {
		t.Fatalf("half-migrated: %d snapshots, %v", len(sns), err)
	}

	res, err := r.Migrate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.From != 1 || res.To != 2 || res.IndexFilesIn != 1 || res.IndexFilesOut != 1 || len(res.Snapshots) != 2 {
		t.Errorf("migrate result %+v", res)
	}
	r.Close()
	r, err = reopen(t, dir, "secret")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if r.Config().Version != 2 {
		t.Fatalf("version %d after migrate", r.Config().Version)
	}
	if err := r.LoadIndex(ctx); err != nil {
		t.Fatal(err)
	}
	for id, want := range blobs {
		got, err := r.LoadBlob(ctx, id, nil)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("blob %s after migrate: %v", id.Short(), err)
		}
	}
	after, err := r.ListSnapshots(ctx)
	if err != nil || len(after) != 3 {
		t.Fatalf("%d snapshots after migrate, %v", len(after), err)
	}
	for i, sn := range after {
		if sn.Tree != trees[i] || !sn.Time.Equal(before[i].Time) {
			t.Errorf("snapshot %d changed: %+v", i, sn)
		}
		for _, b := range before {
			if b.ID == sn.ID {
				t.Errorf("snapshot %s kept its unbound ID", sn.ID.Short())
			}
		}
	}
	if again, err := r.Migrate(ctx); err != nil || again.From != 2 || len(again.Snapshots) != 0 {
		t.Errorf("second migrate: %+v %v", again, err)
	}
	// Unbound files are damage now.
	js, _ = json.Marshal(&Snapshot{Time: time.Unix(2e9, 0), Tree: trees[0], Paths: []string{"/late"}})
	plant(t, r, backend.Snapshot, r.key.Seal(nil, js))
	cfgData, err := ReadConfig(ctx, r.be)
	if err != nil {
		t.Fatal(err)
	}
	plant(t, r, backend.Snapshot, cfgData[len(configMagic)+1:])
	if sns, err := r.ListSnapshots(ctx); len(sns) != 3 || err == nil {
		t.Errorf("unbound snapshots after migrate: %d listed, %v", len(sns), err)
	}
	// Migrate again binds a real snapshot of the old format (written by a
	// backup that opened the repository before the switch), never an
	// object of another type.
	if _, err := r.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	sns, err := r.ListSnapshots(ctx)
	if len(sns) != 4 || err == nil || sns[3].Paths[0] != "/late" {
		t.Errorf("after binding the late snapshot: %d listed, %v", len(sns), err)
	}
}
