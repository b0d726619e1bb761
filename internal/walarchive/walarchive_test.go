package walarchive

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/crypto"
	"github.com/cairn-backup/cairn/internal/pgwal"
	"github.com/cairn-backup/cairn/internal/pruner"
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/repo/backend"
	"github.com/cairn-backup/cairn/repo/backend/local"
)

const (
	sysID   = 7312345678901234567
	segSize = 1 << 20 // the smallest segment size initdb allows
)

var testKDF = crypto.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}

// segment returns a synthetic WAL segment number no of system sys: a long
// page header, then random bytes.
func segment(sys uint64, tl uint32, no uint64) []byte {
	seed := no
	b := make([]byte, segSize)
	rng := rand.New(rand.NewPCG(seed, seed))
	for i := 64; i < len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], rng.Uint64())
	}
	le := binary.LittleEndian
	le.PutUint16(b[0:], 0xD110)
	le.PutUint16(b[2:], 0x0002)
	le.PutUint32(b[4:], tl)
	le.PutUint64(b[8:], no*segSize)
	le.PutUint64(b[24:], sys)
	le.PutUint32(b[32:], segSize)
	le.PutUint32(b[36:], 8192)
	return b
}

func openRepo(t *testing.T) *repo.Repository {
	t.Helper()
	be, _ := local.Open(filepath.Join(t.TempDir(), "repo"))
	r, err := repo.Init(context.Background(), be, "pw", repo.Options{PackSize: 1 << 20, KDF: &testKDF})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// TestPushFetch archives segments (one with another system's header, one
// conflicting), fetches them back byte for byte, and checks that prune
// keeps their data and forget's selection drops only what no base backup
// needs.
func TestPushFetch(t *testing.T) {
	ctx := context.Background()
	r := openRepo(t)
	wal := t.TempDir()
	var paths []string
	contents := map[string][]byte{}
	for i := range 6 {
		name := pgwal.SegmentName(1, uint64(i+1), segSize)
		data := segment(sysID, 1, uint64(i+1))
		contents[name] = data
		p := filepath.Join(wal, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if i != 3 { // a gap at segment 4
			paths = append(paths, p)
		}
	}
	foreign := filepath.Join(wal, pgwal.SegmentName(1, 9, segSize))
	if err := os.WriteFile(foreign, segment(42, 1, 9), 0o600); err != nil {
		t.Fatal(err)
	}
	// The first segment of timeline 2 still has timeline 1's header (a
	// copy up to the switch): accepted. One whose address is not its
	// own: refused.
	switched := filepath.Join(wal, pgwal.SegmentName(2, 6, segSize))
	if err := os.WriteFile(switched, segment(sysID, 1, 6), 0o600); err != nil {
		t.Fatal(err)
	}
	misnamed := filepath.Join(wal, pgwal.SegmentName(1, 7, segSize))
	if err := os.WriteFile(misnamed, segment(sysID, 1, 8), 0o600); err != nil {
		t.Fatal(err)
	}
	p := &Pusher{Repo: r, SystemID: sysID, Hostname: "db1"}
	res, err := p.Push(ctx, append(paths, switched, foreign, misnamed))
	if err != nil {
		t.Fatal(err)
	}
	for i, pr := range res {
		if want := i <= len(paths); pr.Stored != want || (pr.Err == nil) != want {
			t.Errorf("%s: stored %v, err %v", pr.Name, pr.Stored, pr.Err)
		}
	}
	// Again: present, nothing stored.
	res, err = p.Push(ctx, paths[:2])
	if err != nil || !res[0].Present || !res[1].Present || res[0].Stored {
		t.Fatalf("second push: %+v %v", res, err)
	}
	// Other content under an archived name.
	changed := append([]byte(nil), contents[filepath.Base(paths[0])]...)
	changed[segSize/2] ^= 1
	if err := os.WriteFile(paths[0], changed, 0o600); err != nil {
		t.Fatal(err)
	}
	res, err = p.Push(ctx, paths[:1])
	if err != nil || !errors.Is(res[0].Err, ErrConflict) {
		t.Fatalf("push of changed content: %+v %v", res, err)
	}

	// Fetch: the asked file and the next ones, until one is missing.
	sys := strconv.FormatUint(sysID, 10)
	out := t.TempDir()
	first := filepath.Base(paths[0])
	names := append([]string{first}, NextSegments(first, 5, segSize)...)
	done, err := Fetch(ctx, r, sys, names, func(n string) string { return filepath.Join(out, n) }, 2)
	if err != nil || len(done) != 3 {
		t.Fatalf("fetched %v (%v), want the three segments before the gap", done, err)
	}
	for _, n := range done {
		got, err := os.ReadFile(filepath.Join(out, n))
		if err != nil || !bytes.Equal(got, contents[n]) {
			t.Errorf("%s fetched differs (%v)", n, err)
		}
	}

	files, err := r.ListWALFiles(ctx)
	if err != nil || len(files) != 6 {
		t.Fatalf("%d records (%v)", len(files), err)
	}
	servers := Summarize(files)
	if len(servers) != 1 || len(servers[0].Timelines) != 2 {
		t.Fatalf("summary: %+v", servers)
	}
	tl := servers[0].Timelines[0]
	if tl.Segments != 5 || len(tl.Gaps) != 1 || tl.Gaps[0].Missing != 1 || tl.Gaps[0].After != pgwal.SegmentName(1, 3, segSize) {
		t.Errorf("timeline: %+v", tl)
	}

	// Prune keeps what the records use: fetch again after it.
	if _, err := pruner.Prune(ctx, r, pruner.Options{MaxUnused: 1e-12}); err != nil {
		t.Fatal(err)
	}
	if err := r.LoadIndex(ctx); err != nil {
		t.Fatal(err)
	}
	out2 := t.TempDir()
	if done, err := Fetch(ctx, r, sys, names[:1], func(n string) string { return filepath.Join(out2, n) }, 2); err != nil || len(done) != 1 {
		t.Fatalf("fetch after prune: %v %v", done, err)
	}

	// A base backup starting at segment 3 needs segments 3 on.
	base := BaseBackup{SystemID: sys, Timeline: 1, StartSegment: pgwal.SegmentName(1, 3, segSize), SegmentSize: segSize}
	det, _ := json.Marshal(base)
	sn := &repo.Snapshot{Sources: []repo.Source{{Kind: KindBase, Status: repo.SourceOK, Details: det}}}
	old := Unneeded(files, []*repo.Snapshot{sn})
	if len(old) != 2 || old[0].Name != pgwal.SegmentName(1, 1, segSize) || old[1].Name != pgwal.SegmentName(1, 2, segSize) {
		t.Errorf("unneeded: %v", old)
	}
	if len(Unneeded(files, nil)) != 0 {
		t.Error("WAL of a server without a kept base backup is unneeded")
	}
}

// TestRecordName: a record stored under another record's name is refused.
func TestRecordName(t *testing.T) {
	ctx := context.Background()
	r := openRepo(t)
	a := &repo.WALFile{SystemID: "1", Name: "000000010000000000000001", Time: time.Now()}
	b := &repo.WALFile{SystemID: "1", Name: "000000010000000000000002", Time: time.Now()}
	for _, f := range []*repo.WALFile{a, b} {
		if err := r.SaveWALFile(ctx, f); err != nil {
			t.Fatal(err)
		}
	}
	be := r.Backend()
	data, err := be.Load(ctx, backend.Handle{Type: backend.WAL, Name: b.Object}, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.DecodeWALFile(a.Object, data); err == nil {
		t.Error("the record of segment 2 decodes under segment 1's name")
	}
	if f, err := r.LoadWALFile(ctx, "1", a.Name); err != nil || f.Name != a.Name {
		t.Errorf("load: %+v %v", f, err)
	}
	if _, err := r.LoadWALFile(ctx, "2", a.Name); !backend.IsNotFound(err) {
		t.Errorf("another system's segment: %v", err)
	}
}
