package repo

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/crypto"
)

// FuzzDecodeSnapshot feeds arbitrary JSON, sealed with the right key and
// named by its hash, to Repository.DecodeSnapshot: it never panics, and a snapshot it
// accepts encodes and decodes again to the same fields.
func FuzzDecodeSnapshot(f *testing.F) {
	key, err := crypto.KeyFromMaster([crypto.MasterKeySize]byte{7})
	if err != nil {
		f.Fatal(err)
	}
	r := &Repository{key: key, cfg: Config{Version: FormatVersion}}
	parent := fuzzID(9)
	seed, _ := json.Marshal(&Snapshot{Time: time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC), Tree: fuzzID(1), Paths: []string{"/srv", "/postgres/db.pgdump"},
		Hostname: "h", Tags: []string{"a", "profile:x"}, Parent: &parent, ProgramVersion: "cairn test",
		Summary: &Summary{FilesNew: 3, DataAdded: 1 << 40}, Sources: []Source{{Kind: "postgres", Name: "/postgres/db.pgdump", Status: "ok",
			Meta: map[string]string{"rows": "5"}, Details: json.RawMessage(`{"tables":{"public.t":5}}`)}}})
	f.Add(seed)
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"time":"not a time"}`))
	f.Add([]byte(`{"tree":"00"}`))
	f.Add([]byte(`[1,2,3]`))
	f.Fuzz(func(t *testing.T, js []byte) {
		stored := sealFile(key, FormatVersion, adSnapshot, js)
		name := crypto.Hash(stored).String()
		sn, err := r.DecodeSnapshot(name, stored)
		if err != nil {
			return
		}
		again, err := json.Marshal(sn)
		if err != nil {
			t.Fatalf("accepted snapshot does not encode: %v", err)
		}
		stored2 := sealFile(key, FormatVersion, adSnapshot, again)
		sn2, err := r.DecodeSnapshot(crypto.Hash(stored2).String(), stored2)
		if err != nil {
			t.Fatalf("re-encoded snapshot does not decode: %v", err)
		}
		if sn2.Tree != sn.Tree || !sn2.Time.Equal(sn.Time) || sn2.Hostname != sn.Hostname || len(sn2.Sources) != len(sn.Sources) {
			t.Fatalf("round trip changed the snapshot: %+v vs %+v", sn, sn2)
		}
		// A wrong name is always refused.
		if _, err := r.DecodeSnapshot(crypto.ID{}.String(), stored); err == nil {
			t.Fatal("a snapshot whose name is not its hash was accepted")
		}
	})
}
