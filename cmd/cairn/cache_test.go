package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/cairn-backup/cairn/crypto"
	"github.com/cairn-backup/cairn/repo/backend"
	"github.com/cairn-backup/cairn/repo/backend/s3"
	"github.com/cairn-backup/cairn/repo/backend/s3/s3test"
)

// withCache returns a copy of c that keeps its local cache in dir.
func (c *cli) withCache(dir string) *cli {
	cc := *c
	cc.env = append(slices.Clone(c.env), "CAIRN_CACHE_DIR="+dir)
	return &cc
}

// cachedObjects lists the objects of type t in the (only) repository cache
// below base, by name.
func cachedObjects(t *testing.T, base string, typ backend.FileType) []string {
	t.Helper()
	dirs, _ := filepath.Glob(filepath.Join(base, strings.Repeat("[0-9a-f]", 64)))
	if len(dirs) != 1 {
		t.Fatalf("%d repository caches in %s, want 1", len(dirs), base)
	}
	var out []string
	err := filepath.WalkDir(filepath.Join(dirs[0], string(typ)), func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() && !strings.HasPrefix(d.Name(), ".tmp-") {
			out = append(out, d.Name())
		}
		return err
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

func cachedPath(t *testing.T, base string, typ backend.FileType, name string) string {
	dirs, _ := filepath.Glob(filepath.Join(base, strings.Repeat("[0-9a-f]", 64)))
	if typ == backend.TreePack {
		return filepath.Join(dirs[0], string(typ), name[:2], name)
	}
	return filepath.Join(dirs[0], string(typ), name)
}

// bucketObjects lists the repository's objects of type t.
func bucketObjects(t *testing.T, be backend.Backend, typ backend.FileType) []string {
	t.Helper()
	var out []string
	if err := be.List(context.Background(), typ, func(fi backend.FileInfo) error {
		out = append(out, fi.Name)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

// TestS3Cache checks the local metadata cache against a real MinIO: the
// same results with and without it, damaged cached objects replaced,
// an unusable cache directory survived, a shared cache under concurrent
// backups, objects removed from the repository dropped from the cache, and
// check reporting the repository's state, not the cache's.
func TestS3Cache(t *testing.T) {
	srv := s3test.StartT(t)
	loc := "s3:" + srv.URL() + "/cairn-cache/repo"
	creds := []string{"AWS_ACCESS_KEY_ID=" + srv.User, "AWS_SECRET_ACCESS_KEY=" + srv.Password}
	base := newCLI(t, loc)
	base.env = creds
	cacheA := t.TempDir()
	c := base.withCache(cacheA)
	cfg, err := s3.Parse(loc)
	if err != nil {
		t.Fatal(err)
	}
	cfg.AccessKeyID, cfg.SecretAccessKey = srv.User, srv.Password
	raw, err := s3.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}

	c.init("--pack-size", "1")
	src := t.TempDir()
	for i := range 40 {
		writeFile(t, filepath.Join(src, fmt.Sprintf("d%d", i%7), fmt.Sprintf("s%d", i%3), fmt.Sprintf("f%d.txt", i)), []byte(strings.Repeat(fmt.Sprintf("file %d\n", i), i+1)), 0o644)
	}
	writeFile(t, filepath.Join(src, "big.bin"), randomBytes(5, 3<<20), 0o600)
	if err := os.Symlink("d1/s1/f1.txt", filepath.Join(src, "link")); err != nil {
		t.Fatal(err)
	}
	s1 := c.backupJSON(src)
	writeFile(t, filepath.Join(src, "d3", "new.txt"), []byte("new\n"), 0o644)
	s2 := c.backupJSON(src)

	// The cache holds the repository's index files, snapshots and tree packs.
	for _, typ := range []backend.FileType{backend.Index, backend.Snapshot, backend.TreePack} {
		if got, want := cachedObjects(t, cacheA, typ), bucketObjects(t, raw, typ); !slices.Equal(got, want) {
			t.Fatalf("cached %s: %v, repository: %v", typ, got, want)
		}
	}
	if got := cachedObjects(t, cacheA, backend.DataPack); len(got) != 0 {
		t.Fatalf("data packs cached: %v", got)
	}

	// Cache on and off: the same results.
	same := func(args ...string) string {
		t.Helper()
		with := c.ok(args...).stdout
		without := c.ok(append([]string{"--no-cache"}, args...)...).stdout
		if with != without {
			t.Fatalf("cairn %q with the cache:\n%s\nwithout:\n%s", args, with, without)
		}
		return with
	}
	same("ls", "-l", s2.SnapshotID)
	same("diff", s1.SnapshotID, s2.SnapshotID)
	same("snapshots")
	same("dump", s2.SnapshotID, filepath.Join(src, "d1", "s1", "f1.txt"))
	same("prune", "--dry-run")
	same("check")
	for _, args := range [][]string{{"restore"}, {"--no-cache", "restore"}} {
		target := t.TempDir()
		c.ok(append(args, s2.SnapshotID, "--target", target)...)
		compareTrees(t, src, restoredPath(target, src), false)
	}
	b1 := c.backupJSON(src)
	b2 := c.backupJSON("--no-cache", src)
	if b1.FilesUnmodified != b2.FilesUnmodified || b1.FilesUnmodified == 0 || b2.FilesNew+b2.FilesChanged != 0 {
		t.Fatalf("unchanged backups with and without the cache differ: %+v / %+v", b1, b2)
	}
	// --no-cache leaves nothing behind.
	if tmp, _ := filepath.Glob(filepath.Join(os.TempDir(), "cairn-cache-*")); len(tmp) > 0 {
		t.Logf("temporary caches present (maybe another test's): %v", tmp)
	}

	// Damaged cached objects are detected, discarded and fetched again.
	lsBefore := c.ok("ls", "-l", s2.SnapshotID).stdout
	for _, typ := range []backend.FileType{backend.Index, backend.Snapshot, backend.TreePack} {
		for _, name := range cachedObjects(t, cacheA, typ) {
			p := cachedPath(t, cacheA, typ, name)
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			b[len(b)/2] ^= 0x40
			if err := os.WriteFile(p, b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	if got := c.ok("ls", "-l", s2.SnapshotID).stdout; got != lsBefore {
		t.Fatalf("ls with a damaged cache:\n%s\nwant:\n%s", got, lsBefore)
	}
	// Every object is checked at its first use: reading every snapshot's
	// trees uses them all.
	for _, sn := range c.snapshots() {
		c.ok("ls", sn.ID)
	}
	for _, typ := range []backend.FileType{backend.Index, backend.Snapshot, backend.TreePack} {
		for _, name := range cachedObjects(t, cacheA, typ) {
			b, err := os.ReadFile(cachedPath(t, cacheA, typ, name))
			if err != nil {
				t.Fatal(err)
			}
			if crypto.Hash(b).String() != name {
				t.Fatalf("cached %s/%s is still damaged", typ, name[:8])
			}
		}
	}

	// A cache that cannot be created: one warning, a working command.
	blocker := filepath.Join(t.TempDir(), "file")
	writeFile(t, blocker, nil, 0o600)
	res := base.withCache(filepath.Join(blocker, "cache")).ok("ls", "-l", s2.SnapshotID)
	if res.stdout != lsBefore || strings.Count(res.stderr, "warning") != 1 {
		t.Fatalf("ls with an unusable cache directory: %s", res)
	}

	// Concurrent backups sharing one cache.
	var wg sync.WaitGroup
	srcs := make([]string, 3)
	for i := range srcs {
		srcs[i] = t.TempDir()
		for j := range 10 {
			writeFile(t, filepath.Join(srcs[i], fmt.Sprintf("f%d", j)), randomBytes(uint64(100*i+j), 50_000+j), 0o644)
		}
	}
	results := make([]result, len(srcs))
	for i := range srcs {
		wg.Go(func() { results[i] = c.run("backup", "--tag", fmt.Sprintf("w%d", i), srcs[i]) })
	}
	wg.Wait()
	for i, r := range results {
		if r.code != 0 {
			t.Fatalf("concurrent backup %d: %s", i, r)
		}
	}
	c.ok("check")
	for i := range srcs {
		target := t.TempDir()
		c.ok("restore", "latest", "--tag", fmt.Sprintf("w%d", i), "--target", target)
		compareTrees(t, srcs[i], restoredPath(target, srcs[i]), false)
	}

	// A prune by this host drops what it deletes from the cache; a prune by
	// another host (with its own cache) is noticed at the next listing.
	c.ok("forget", s1.SnapshotID)
	c.ok("prune", "--grace", "0s")
	for _, typ := range []backend.FileType{backend.Index, backend.Snapshot, backend.TreePack} {
		if got, want := cachedObjects(t, cacheA, typ), bucketObjects(t, raw, typ); !slices.Equal(got, want) {
			t.Fatalf("after prune, cached %s: %v, repository: %v", typ, got, want)
		}
	}
	other := base.withCache(t.TempDir())
	for _, sn := range c.snapshots() {
		if sn.ID != b2.SnapshotID {
			other.ok("forget", sn.ID)
		}
	}
	other.ok("prune", "--grace", "0s")
	c.ok("ls", "latest")
	for _, typ := range []backend.FileType{backend.Index, backend.Snapshot, backend.TreePack} {
		got, want := cachedObjects(t, cacheA, typ), bucketObjects(t, raw, typ)
		for _, name := range got {
			if !slices.Contains(want, name) {
				t.Fatalf("%s/%s was pruned by another host but stays in the cache", typ, name[:8])
			}
		}
	}

	// check tells what the repository holds, even where the cache still
	// has a copy.
	packs := cachedObjects(t, cacheA, backend.TreePack)
	if len(packs) == 0 {
		t.Fatal("no tree pack cached")
	}
	if err := raw.Remove(context.Background(), backend.Handle{Type: backend.TreePack, Name: packs[0]}); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"check"}, {"check", "--with-cache"}, {"check", "--read-data"}, {"check", "--with-cache", "--read-data"}} {
		res := c.run(args...)
		if res.code != 1 || !strings.Contains(res.stdout, packs[0][:8]) {
			t.Fatalf("cairn %q with a tree pack missing from the bucket: %s", args, res)
		}
	}
}

// TestS3KeyCopy: the cache keeps a copy of the key file that opened a
// repository, so that the next command derives its key while the config
// arrives; a damaged copy is ignored and replaced, and a key removed from
// the repository (revoked) does not open it again through its copy.
func TestS3KeyCopy(t *testing.T) {
	srv := s3test.StartT(t)
	loc := "s3:" + srv.URL() + "/cairn-keycopy/repo"
	cfg, err := s3.Parse(loc)
	if err != nil {
		t.Fatal(err)
	}
	cacheDir := t.TempDir()
	first := newCLI(t, loc).withCache(cacheDir)
	first.env = append(first.env, "AWS_ACCESS_KEY_ID="+srv.User, "AWS_SECRET_ACCESS_KEY="+srv.Password)
	first.password = "first password"
	first.init()
	add := *first
	add.env = append(slices.Clone(first.env), "CAIRN_NEW_PASSWORD=second password")
	add.ok("key", "add")
	second := *first
	second.password = "second password"
	var secondKey string
	for _, k := range second.keys() {
		if k.Current {
			secondKey = k.ID
		}
	}

	early := startEarlyKey(cacheDir, cfg.Location(), "second password")
	if early == nil || early.name != secondKey {
		t.Fatalf("no copy of key %s after opening the repository with it: %+v", secondKey, early)
	}
	if k, err := early.wait(); err != nil || k == nil {
		t.Fatalf("key derived from the copy: %v", err)
	}
	second.ok("snapshots")

	// A damaged copy is not used, and the next command keeps a good one.
	copyPath := filepath.Join(cacheDir, "keyfiles", secondKey)
	data, err := os.ReadFile(copyPath)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 1
	if err := os.WriteFile(copyPath, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if startEarlyKey(cacheDir, cfg.Location(), "second password") != nil {
		t.Fatal("a damaged key copy was used")
	}
	second.ok("snapshots")
	if startEarlyKey(cacheDir, cfg.Location(), "second password") == nil {
		t.Fatal("the damaged key copy was not replaced")
	}

	// Revoked: removing the key drops its copy here; on another machine
	// (simulated: the copy and the hints as they were before the removal)
	// the copy stays until the key fails to open the repository.
	saved := map[string][]byte{}
	names, _ := filepath.Glob(filepath.Join(cacheDir, "keys", "*"))
	for _, p := range append(names, copyPath) {
		if saved[p], err = os.ReadFile(p); err != nil {
			t.Fatal(err)
		}
	}
	first.ok("key", "remove", secondKey[:12])
	if _, err := os.Stat(copyPath); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("key remove left the removed key's copy in the cache: %v", err)
	}
	for p, b := range saved {
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if e := startEarlyKey(cacheDir, cfg.Location(), "second password"); e == nil || e.name != secondKey {
		t.Fatal("the test needs the hints to name the removed key, and its copy")
	} else if _, err := e.wait(); err != nil {
		t.Fatalf("the removed key's copy does not open with its password: %v", err)
	}
	if res := second.run("snapshots"); res.code != 12 {
		t.Errorf("the removed key's password: exit %d, want 12: %s", res.code, res)
	}
	if _, err := os.Stat(copyPath); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the removed key's copy is still in the cache: %v", err)
	}
	first.ok("snapshots")
}
