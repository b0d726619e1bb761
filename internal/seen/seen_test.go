package seen

import (
	"testing"
	"time"

	"github.com/cairn-backup/cairn/crypto"
	"github.com/cairn-backup/cairn/repo"
)

func snap(id byte, host string, t int64, paths ...string) *repo.Snapshot {
	return &repo.Snapshot{ID: crypto.ID{id}, Hostname: host, Time: time.Unix(t, 0), Paths: paths}
}

// TestObserve: the newest snapshot of a group vanishing is reported once;
// older ones going (retention), the newest forgotten here, or replaced by
// a copy that names it, are not.
func TestObserve(t *testing.T) {
	dir := t.TempDir()
	m := Open(dir, []byte("config"))
	a1, a2 := snap(1, "h", 100, "/srv"), snap(2, "h", 200, "/srv")
	b1 := snap(3, "h", 150, "/db")
	if gone := m.Observe([]*repo.Snapshot{a1, a2, b1}); len(gone) != 0 {
		t.Fatalf("first listing: %v", gone)
	}
	if err := m.Save(); err != nil {
		t.Fatal(err)
	}
	m = Open(dir, []byte("config")) // what the next run loads
	if gone := m.Observe([]*repo.Snapshot{a2, b1}); len(gone) != 0 {
		t.Errorf("an older snapshot forgotten: %v", gone)
	}
	// Rolled back: a2, the newest of /srv, is gone.
	gone := m.Observe([]*repo.Snapshot{a1, b1})
	if len(gone) != 1 || gone[0].ID != a2.ID {
		t.Fatalf("rollback: gone %v, want %s", gone, a2.ID.Short())
	}
	if gone := m.Observe([]*repo.Snapshot{a1, b1}); len(gone) != 0 {
		t.Errorf("reported twice: %v", gone)
	}
	// Forgotten on this machine: no warning.
	m.Forget([]crypto.ID{b1.ID})
	if gone := m.Observe([]*repo.Snapshot{a1}); len(gone) != 0 {
		t.Errorf("forgotten here: %v", gone)
	}
	// Repaired (names its original) or migrated (renamed): present.
	orig := a1.ID
	repaired := snap(9, "h", 100, "/srv")
	repaired.Original = &orig
	if gone := m.Observe([]*repo.Snapshot{repaired}); len(gone) != 0 {
		t.Errorf("repaired: %v", gone)
	}
	m.Rename(repaired.ID, crypto.ID{10})
	if gone := m.Observe([]*repo.Snapshot{snap(10, "h", 100, "/srv")}); len(gone) != 0 {
		t.Errorf("migrated: %v", gone)
	}
	// Another repository has its own memory.
	if len(Open(dir, []byte("other config")).Groups) != 0 {
		t.Error("memories of two repositories mixed")
	}
}
