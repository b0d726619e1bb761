// Package seen remembers, per repository on this machine, the newest
// snapshot cairn listed for each host and set of paths, so that one which
// later disappears is noticed: deleted by someone else, or the whole
// repository put back to an older state. The repository itself cannot
// tell (docs/security.md); only a client that saw the newer state can.
package seen

import (
	"encoding/json"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/cairn-backup/cairn/crypto"
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/repo/backend/cache"
)

// Entry is the newest snapshot seen of one group.
type Entry struct {
	ID    crypto.ID `json:"id"`
	Time  time.Time `json:"time"`
	Host  string    `json:"host"`
	Paths []string  `json:"paths"`
}

// Memory is the state remembered for one repository. Its zero value (no
// file) remembers nothing.
type Memory struct {
	path   string
	Groups map[string]Entry `json:"groups"`
}

// dir is where the memories live below a cache base directory.
const dir = "seen"

// Open loads the memory of the repository whose sealed config is given,
// kept below base (the cache directory); a missing or unreadable file is
// an empty memory.
func Open(base string, sealedConfig []byte) *Memory {
	m := &Memory{path: cache.ClientFile(base, dir, sealedConfig), Groups: map[string]Entry{}}
	if b, err := os.ReadFile(m.path); err == nil {
		var loaded Memory
		if json.Unmarshal(b, &loaded) == nil && loaded.Groups != nil {
			m.Groups = loaded.Groups
		}
	}
	return m
}

func groupKey(host string, paths []string) string {
	p := slices.Clone(paths)
	slices.Sort(p)
	return host + "\x00" + strings.Join(p, "\x00")
}

// Observe takes a complete listing of the repository's snapshots. It
// returns the remembered newest snapshots that are gone from it (neither
// listed nor replaced by a listed one: a repaired or migrated copy names
// its original), then remembers the newest of each group listed.
func (m *Memory) Observe(sns []*repo.Snapshot) []Entry {
	present := map[crypto.ID]bool{}
	newest := map[string]*repo.Snapshot{}
	for _, sn := range sns {
		present[sn.ID] = true
		if sn.Original != nil {
			present[*sn.Original] = true
		}
		k := groupKey(sn.Hostname, sn.Paths)
		if n := newest[k]; n == nil || !sn.Time.Before(n.Time) {
			newest[k] = sn
		}
	}
	var gone []Entry
	for k, e := range m.Groups {
		if !present[e.ID] {
			gone = append(gone, e)
			delete(m.Groups, k)
		}
	}
	slices.SortFunc(gone, func(a, b Entry) int { return a.Time.Compare(b.Time) })
	for k, sn := range newest {
		if e, ok := m.Groups[k]; !ok || !sn.Time.Before(e.Time) {
			m.Groups[k] = Entry{ID: sn.ID, Time: sn.Time, Host: sn.Hostname, Paths: sn.Paths}
		}
	}
	return gone
}

// Forget drops snapshots this machine removed (forget), so that their
// absence is no surprise.
func (m *Memory) Forget(ids []crypto.ID) {
	for k, e := range m.Groups {
		if slices.Contains(ids, e.ID) {
			delete(m.Groups, k)
		}
	}
}

// Rename follows snapshots whose ID changed (migrate).
func (m *Memory) Rename(old, new crypto.ID) {
	for k, e := range m.Groups {
		if e.ID == old {
			e.ID = new
			m.Groups[k] = e
		}
	}
}

// Save writes the memory (through a temporary file and a rename, so
// processes sharing it never read half of one).
func (m *Memory) Save() error {
	if m.path == "" {
		return nil
	}
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	return cache.WriteClientFile(m.path, b)
}
