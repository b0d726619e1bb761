package restorer_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/cairn-backup/cairn/archiver"
	"github.com/cairn-backup/cairn/crypto"
	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/repo/backend/local"
	"github.com/cairn-backup/cairn/restorer"
	"github.com/cairn-backup/cairn/tree"
)

// testKDF keeps key derivation cheap; these tests are not about passwords.
var testKDF = crypto.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}

func newRepo(t *testing.T) *repo.Repository {
	t.Helper()
	be, err := local.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	r, err := repo.Init(context.Background(), be, "secret", repo.Options{KDF: &testKDF})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// snapshotOf backs up paths and streams and returns the root tree.
func snapshotOf(t *testing.T, r *repo.Repository, paths []string, streams ...archiver.Stream) crypto.ID {
	t.Helper()
	ctx := context.Background()
	res, err := archiver.Run(ctx, r, paths, streams, archiver.Options{
		Warn: func(p string, err error) { t.Errorf("backup warning: %s: %v", p, err) },
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	return res.Tree
}

// dirState is what must not change in a directory outside the target.
type dirState struct {
	names []string
	mode  uint32
	mtime int64
}

func stateOf(t *testing.T, dir string) dirState {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(dir, &st); err != nil {
		t.Fatal(err)
	}
	s := dirState{mode: st.Mode, mtime: st.Mtim.Nano()}
	for _, e := range ents {
		s.names = append(s.names, e.Name())
	}
	return s
}

func (s dirState) equal(o dirState) bool {
	return s.mode == o.mode && s.mtime == o.mtime && strings.Join(s.names, "\x00") == strings.Join(o.names, "\x00")
}

func restore(t *testing.T, r *repo.Repository, root crypto.ID, target string) (restorer.Stats, error, []string) {
	t.Helper()
	var warned []string
	st, err := restorer.Restore(context.Background(), r, root, restorer.Options{
		Target: target,
		Warn:   func(p string, err error) { warned = append(warned, p+": "+err.Error()) },
	})
	return st, err, warned
}

// TestRestoreNeverFollowsPlantedSymlinks restores into targets where a
// directory (or file) the snapshot needs is already a symlink pointing
// outside the target: nothing may be written outside, and the restore must
// report a problem.
func TestRestoreNeverFollowsPlantedSymlinks(t *testing.T) {
	r := newRepo(t)
	root := snapshotOf(t, r, nil,
		archiver.Stream{Path: "/a/b/file.txt", Reader: strings.NewReader("payload from the snapshot\n"), Mode: 0o644},
		archiver.Stream{Path: "/a/other.txt", Reader: strings.NewReader("more\n"), Mode: 0o600},
	)

	cases := []struct {
		name  string
		plant func(t *testing.T, target, outside string)
		// victim, when set, is a file outside whose content must not change.
		victim bool
	}{
		{name: "top directory is a symlink", plant: func(t *testing.T, target, outside string) {
			mustSymlink(t, outside, filepath.Join(target, "a"))
		}},
		{name: "nested directory is a symlink", plant: func(t *testing.T, target, outside string) {
			mustMkdir(t, filepath.Join(target, "a"))
			mustSymlink(t, outside, filepath.Join(target, "a", "b"))
		}},
		{name: "relative symlink climbing out", plant: func(t *testing.T, target, outside string) {
			mustMkdir(t, filepath.Join(target, "a"))
			rel, err := filepath.Rel(filepath.Join(target, "a"), outside)
			if err != nil {
				t.Fatal(err)
			}
			mustSymlink(t, rel, filepath.Join(target, "a", "b"))
		}},
		{name: "file is a symlink", victim: true, plant: func(t *testing.T, target, outside string) {
			mustMkdir(t, filepath.Join(target, "a", "b"))
			mustSymlink(t, filepath.Join(outside, "victim"), filepath.Join(target, "a", "b", "file.txt"))
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			base := t.TempDir()
			target := filepath.Join(base, "target")
			outside := filepath.Join(base, "outside")
			mustMkdir(t, target)
			mustMkdir(t, outside)
			const victimContent = "must stay as it is\n"
			if tc.victim {
				if err := os.WriteFile(filepath.Join(outside, "victim"), []byte(victimContent), 0o640); err != nil {
					t.Fatal(err)
				}
			}
			tc.plant(t, target, outside)
			before := stateOf(t, outside)

			st, err, warned := restore(t, r, root, target)

			if after := stateOf(t, outside); !after.equal(before) {
				t.Errorf("restore changed the directory outside the target: %+v -> %+v", before, after)
			}
			if tc.victim {
				b, rerr := os.ReadFile(filepath.Join(outside, "victim"))
				if rerr != nil || string(b) != victimContent {
					t.Errorf("restore wrote through a symlink into a file outside the target: %q, %v", b, rerr)
				}
				var vst unix.Stat_t
				if err := unix.Stat(filepath.Join(outside, "victim"), &vst); err == nil && vst.Mode&0o7777 != 0o640 {
					t.Errorf("restore changed the mode of a file outside the target to %o", vst.Mode&0o7777)
				}
				// Either the symlink was replaced by the restored file, or
				// the restore said it could not restore it.
				fi, lerr := os.Lstat(filepath.Join(target, "a", "b", "file.txt"))
				replaced := lerr == nil && fi.Mode().IsRegular()
				t.Logf("replaced=%v err=%v warnings=%q", replaced, err, warned)
				if !replaced && err == nil && st.Warnings == 0 {
					t.Errorf("file.txt was neither restored nor reported (stats %+v, warnings %q)", st, warned)
				}
				return
			}
			if err == nil && st.Warnings == 0 {
				t.Errorf("restore through a planted directory symlink reported no problem (stats %+v)", st)
			}
			t.Logf("reported: err=%v warnings=%q", err, warned)
		})
	}
}

// TestRestoreDoesNotWriteThroughPlantedHardlink: a regular file in the
// target that is a hardlink to a file outside it shares that file's inode;
// writing the restored content into it in place would change the outside
// file. The README promises that a restore never writes outside the target.
func TestRestoreDoesNotWriteThroughPlantedHardlink(t *testing.T) {
	r := newRepo(t)
	root := snapshotOf(t, r, nil,
		archiver.Stream{Path: "/a/file.txt", Reader: strings.NewReader("payload from the snapshot\n"), Mode: 0o644})
	base := t.TempDir()
	target := filepath.Join(base, "target")
	outside := filepath.Join(base, "outside")
	mustMkdir(t, filepath.Join(target, "a"))
	mustMkdir(t, outside)
	const victimContent = "must stay as it is\n"
	victim := filepath.Join(outside, "victim")
	if err := os.WriteFile(victim, []byte(victimContent), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(victim, filepath.Join(target, "a", "file.txt")); err != nil {
		t.Skipf("cannot hardlink here: %v", err)
	}
	var before unix.Stat_t
	if err := unix.Stat(victim, &before); err != nil {
		t.Fatal(err)
	}
	st, err, warned := restore(t, r, root, target)
	b, rerr := os.ReadFile(victim)
	if rerr != nil || string(b) != victimContent {
		t.Errorf("BUG: restore wrote through a hardlink planted in the target into a file outside it: now %q (%v)", b, rerr)
	}
	var after unix.Stat_t
	if err := unix.Stat(victim, &after); err == nil && (after.Mode != before.Mode || after.Mtim != before.Mtim || after.Uid != before.Uid) {
		t.Errorf("BUG: restore changed the metadata of a file outside the target through a planted hardlink: mode %o -> %o, mtime %v -> %v",
			before.Mode, after.Mode, before.Mtim, after.Mtim)
	}
	// The restored file itself must be right (or the failure reported).
	got, gerr := os.ReadFile(filepath.Join(target, "a", "file.txt"))
	if (gerr != nil || string(got) != "payload from the snapshot\n") && err == nil && st.Warnings == 0 {
		t.Errorf("file.txt restored as %q (%v) without any reported problem (warnings %q)", got, gerr, warned)
	}
}

// TestRestoreTargetIsSymlink: a target that is itself a symlink is refused.
func TestRestoreTargetIsSymlink(t *testing.T) {
	r := newRepo(t)
	root := snapshotOf(t, r, nil, archiver.Stream{Path: "/x/f", Reader: strings.NewReader("x")})
	base := t.TempDir()
	outside := filepath.Join(base, "outside")
	mustMkdir(t, outside)
	mustSymlink(t, outside, filepath.Join(base, "target"))
	before := stateOf(t, outside)
	st, err, _ := restore(t, r, root, filepath.Join(base, "target"))
	if err == nil && st.Warnings == 0 {
		t.Errorf("restore into a symlinked target reported nothing")
	}
	if after := stateOf(t, outside); !after.equal(before) {
		t.Errorf("restore wrote through a symlinked target: %+v -> %+v", before, after)
	}
}

// TestRestoreReplacesPlantedEntries: links, hardlinks and special files are
// created in place of whatever is there, without touching what a planted
// symlink points to.
func TestRestoreReplacesPlantedEntries(t *testing.T) {
	r := newRepo(t)
	src := filepath.Join(t.TempDir(), "src")
	mustMkdir(t, src)
	if err := os.WriteFile(filepath.Join(src, "h1"), []byte("linked"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(src, "h1"), filepath.Join(src, "h2")); err != nil {
		t.Fatal(err)
	}
	mustSymlink(t, "h1", filepath.Join(src, "sym"))
	if err := unix.Mkfifo(filepath.Join(src, "fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	root := snapshotOf(t, r, []string{src})

	base := t.TempDir()
	target := filepath.Join(base, "target")
	outside := filepath.Join(base, "outside")
	mustMkdir(t, outside)
	dst := filepath.Join(target, src)
	if err := os.MkdirAll(dst, 0o700); err != nil {
		t.Fatal(err)
	}
	victims := []string{"h2", "sym", "fifo"}
	for _, v := range victims {
		if err := os.WriteFile(filepath.Join(outside, v), []byte("outside "+v), 0o600); err != nil {
			t.Fatal(err)
		}
		mustSymlink(t, filepath.Join(outside, v), filepath.Join(dst, v))
	}
	before := stateOf(t, outside)
	st, err, warned := restore(t, r, root, target)
	if err != nil || st.Warnings != 0 {
		t.Errorf("restore over planted links: err %v, warnings %q", err, warned)
	}
	if after := stateOf(t, outside); !after.equal(before) {
		t.Errorf("restore changed the outside directory: %+v -> %+v", before, after)
	}
	for _, v := range victims {
		b, err := os.ReadFile(filepath.Join(outside, v))
		if err != nil || string(b) != "outside "+v {
			t.Errorf("outside file %s changed: %q %v", v, b, err)
		}
	}
	var s1, s2 unix.Stat_t
	if err := unix.Lstat(filepath.Join(dst, "h1"), &s1); err != nil {
		t.Fatal(err)
	}
	if err := unix.Lstat(filepath.Join(dst, "h2"), &s2); err != nil {
		t.Fatal(err)
	}
	if s1.Ino != s2.Ino {
		t.Errorf("h1 and h2 are not one inode after the restore")
	}
	if tgt, err := os.Readlink(filepath.Join(dst, "sym")); err != nil || tgt != "h1" {
		t.Errorf("sym restored as %q, %v; want a link to h1", tgt, err)
	}
	var sf unix.Stat_t
	if err := unix.Lstat(filepath.Join(dst, "fifo"), &sf); err != nil || sf.Mode&unix.S_IFMT != unix.S_IFIFO {
		t.Errorf("fifo not restored as a FIFO: mode %o, %v", sf.Mode, err)
	}
}

func mustMkdir(t *testing.T, p string) {
	t.Helper()
	if err := os.MkdirAll(p, 0o755); err != nil {
		t.Fatal(err)
	}
}

func mustSymlink(t *testing.T, oldname, newname string) {
	t.Helper()
	if err := os.Symlink(oldname, newname); err != nil {
		t.Fatal(err)
	}
}

// TestRestoreIncompleteFileKeepsPartialName: a file whose content cannot
// all be read is left as NAME.cairn-partial, never under its real name;
// when the snapshot has an entry of that name too, as
// NAME.cairn-partial-2, and the entry is restored as it was.
func TestRestoreIncompleteFileKeepsPartialName(t *testing.T) {
	for _, nameTaken := range []bool{false, true} {
		t.Run(fmt.Sprintf("name taken %v", nameTaken), func(t *testing.T) {
			dir := t.TempDir()
			be, err := local.Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			r, err := repo.Init(context.Background(), be, "secret", repo.Options{KDF: &testKDF, PackSize: 1 << 20})
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			data := make([]byte, 12<<20)
			_, _ = rand.NewChaCha8([32]byte{1}).Read(data)
			streams := []archiver.Stream{{Path: "/big.bin", Reader: bytes.NewReader(data), Chunking: repo.ChunkingFiles}}
			if nameTaken {
				// Empty: no blob, so nothing the missing pack takes.
				streams = append(streams, archiver.Stream{Path: "/" + restorer.PartialName("big.bin"), Reader: bytes.NewReader(nil), Chunking: repo.ChunkingFiles})
			}
			root := snapshotOf(t, r, nil, streams...)
			var packs []string
			_ = filepath.WalkDir(filepath.Join(dir, "data"), func(p string, d fs.DirEntry, err error) error {
				if err == nil && !d.IsDir() {
					packs = append(packs, p)
				}
				return nil
			})
			if len(packs) < 2 {
				t.Fatalf("%d data packs, want several", len(packs))
			}
			// Packs are read in the order of their IDs, one at a time here:
			// the last one is missing, after the others were written.
			sort.Strings(packs)
			if err := os.Remove(packs[len(packs)-1]); err != nil {
				t.Fatal(err)
			}
			target := t.TempDir()
			var warned []string
			st, err := restorer.Restore(context.Background(), r, root, restorer.Options{Target: target, Downloads: 1, Workers: 1,
				Warn: func(p string, err error) { warned = append(warned, p+": "+err.Error()) }})
			if err != nil {
				t.Fatal(err)
			}
			final := filepath.Join(target, "big.bin")
			partial := restorer.PartialName(final)
			if nameTaken {
				partial += "-2"
			}
			if st.FilesFailed != 1 || len(warned) == 0 || len(st.Partial) != 1 || st.Partial[0] != partial {
				t.Fatalf("stats %+v, want %s partial; warnings %q", st, partial, warned)
			}
			if _, err := os.Stat(final); !os.IsNotExist(err) {
				t.Fatalf("the incomplete file has its real name: %v", err)
			}
			if fi, err := os.Stat(partial); err != nil || fi.Size() != int64(len(data)) {
				t.Fatalf("partial file: %v", err)
			}
			if nameTaken {
				if fi, err := os.Lstat(restorer.PartialName(final)); err != nil || !fi.Mode().IsRegular() || fi.Size() != 0 {
					t.Fatalf("the snapshot's entry named like the partial file: %v %v", fi, err)
				}
			}
		})
	}
}

// TestRestoreFileOverDirectory: a directory in the target where the
// snapshot has a file is never replaced or written into; that file fails
// with a warning, keeps its partial name, and the rest is restored.
func TestRestoreFileOverDirectory(t *testing.T) {
	r := newRepo(t)
	src := filepath.Join(t.TempDir(), "src")
	mustMkdir(t, src)
	for name, content := range map[string]string{"f": "file content", "g": "other"} {
		if err := os.WriteFile(filepath.Join(src, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	root := snapshotOf(t, r, []string{src})
	target := t.TempDir()
	dst := filepath.Join(target, src)
	mustMkdir(t, filepath.Join(dst, "f"))
	if err := os.WriteFile(filepath.Join(dst, "f", "inside"), []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	st, err, warned := restore(t, r, root, target)
	if err != nil {
		t.Fatal(err)
	}
	if st.FilesFailed != 1 || len(warned) != 1 || !strings.Contains(warned[0], "rename") {
		t.Errorf("file over a directory: %d failed, warnings %q; want one rename failure", st.FilesFailed, warned)
	}
	if b, err := os.ReadFile(filepath.Join(dst, "f", "inside")); err != nil || string(b) != "keep" {
		t.Errorf("the directory in the way changed: %q %v", b, err)
	}
	if b, err := os.ReadFile(restorer.PartialName(filepath.Join(dst, "f"))); err != nil || string(b) != "file content" {
		t.Errorf("the file's content is not under its partial name: %q %v", b, err)
	}
	if b, err := os.ReadFile(filepath.Join(dst, "g")); err != nil || string(b) != "other" {
		t.Errorf("the other file was not restored: %q %v", b, err)
	}
}

// TestRestoreMaxEntries: a tree whose directories name one subtree twice
// at every level unfolds into 3*2^12-2 entries; a restore with a lower
// bound fails with a typed error before it writes anything.
func TestRestoreMaxEntries(t *testing.T) {
	ctx := context.Background()
	r := newRepo(t)
	put := func(tr *tree.Tree) crypto.ID {
		b, err := tr.Encode()
		if err != nil {
			t.Fatal(err)
		}
		res, err := r.SaveBlob(ctx, index.TreeBlob, b)
		if err != nil {
			t.Fatal(err)
		}
		return res.ID
	}
	id := put(&tree.Tree{Nodes: []tree.Node{{Name: "f", Type: tree.File, Mode: 0o644}}})
	for range 12 {
		id = put(&tree.Tree{Nodes: []tree.Node{{Name: "a", Type: tree.Dir, Mode: 0o755, Subtree: id}, {Name: "b", Type: tree.Dir, Mode: 0o755, Subtree: id}}})
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	target := t.TempDir()
	_, err := restorer.Restore(ctx, r, id, restorer.Options{Target: target, MaxEntries: 5_000})
	var tooMany *tree.TooManyEntriesError
	if !errors.As(err, &tooMany) || tooMany.Max != 5_000 {
		t.Fatalf("restore of a DAG: %v; want TooManyEntriesError", err)
	}
	if ents, _ := os.ReadDir(target); len(ents) != 0 {
		t.Errorf("the failed restore wrote %d entries", len(ents))
	}
	// Within the bound it restores every entry.
	st, err := restorer.Restore(ctx, r, id, restorer.Options{Target: target, MaxEntries: 3<<12 - 2})
	if err != nil || st.Files != 1<<12 || st.Dirs != 1<<13-2 {
		t.Fatalf("restore within the bound: %+v %v", st, err)
	}
}

// TestRestoreEntryNamedLikePartial: entries named like a file's partial
// name (NAME.cairn-partial: a file, a symlink; and the next choice,
// NAME.cairn-partial-2) next to the file NAME are restored as they were,
// whichever is written first: the file is written under a name its
// directory does not hold.
func TestRestoreEntryNamedLikePartial(t *testing.T) {
	src := t.TempDir()
	files := map[string]string{}
	links := map[string]string{}
	for i := range 20 {
		name := fmt.Sprintf("data%02d", i)
		files[name] = fmt.Sprintf("the content of %s\n", name)
		if i%2 == 0 {
			// A regular file of the partial name, and a symlink of the
			// next choice.
			files[restorer.PartialName(name)] = fmt.Sprintf("a file named like %s's partial file\n", name)
			links[restorer.PartialName(name)+"-2"] = "elsewhere-" + name
		} else {
			links[restorer.PartialName(name)] = "elsewhere-" + name
		}
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(src, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for name, to := range links {
		mustSymlink(t, to, filepath.Join(src, name))
	}
	r := newRepo(t)
	root := snapshotOf(t, r, []string{src})
	target := t.TempDir()
	st, err, warned := restore(t, r, root, target)
	if err != nil || len(warned) > 0 {
		t.Fatalf("restore: %v, warnings %q", err, warned)
	}
	dir := filepath.Join(target, src)
	for name, content := range files {
		if b, err := os.ReadFile(filepath.Join(dir, name)); err != nil || string(b) != content {
			t.Errorf("%s: %q, %v; want %q", name, b, err, content)
		}
	}
	for name, to := range links {
		if l, err := os.Readlink(filepath.Join(dir, name)); err != nil || l != to {
			t.Errorf("symlink %s: %q, %v; want %q", name, l, err, to)
		}
	}
	ents, err := os.ReadDir(dir)
	if err != nil || len(ents) != len(files)+len(links) {
		t.Errorf("%d entries in the target (%v), want %d", len(ents), err, len(files)+len(links))
	}
	if st.Files != len(files) || st.Links != len(links) {
		t.Errorf("stats %+v, want %d files and %d links", st, len(files), len(links))
	}
}
