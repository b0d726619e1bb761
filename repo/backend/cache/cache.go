// Package cache keeps a local copy of a repository's metadata — index
// files, snapshots and whole tree packs — and serves reads of them from
// disk, so a command against a remote bucket does not pay a round trip per
// tree (docs/format.md, "Local cache").
//
// Cached objects are stored exactly as in the repository: encrypted, and
// named by the hash of their bytes. A cached object is hashed before its
// first use in a process and deleted if it does not match its name, so it
// is never stale and never trusted blindly. Objects the repository no
// longer lists are dropped at the next listing. Several processes may share
// one cache directory: files are written under a temporary name and
// renamed into place.
package cache

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/zeebo/blake3"

	"github.com/cairn-backup/cairn/repo/backend"
)

// Cached reports whether objects of type t are kept in the cache.
func Cached(t backend.FileType) bool {
	return t == backend.Index || t == backend.Snapshot || t == backend.TreePack
}

// tagFile marks the cache's parent directory for backup programs that
// honor the Cache Directory Tagging Specification (cairn, restic, tar
// --exclude-caches): there is nothing in it worth backing up.
const (
	tagFile    = "CACHEDIR.TAG"
	tagContent = "Signature: 8a477f597d28d172789f06886806bc55\n# This file is a cache directory tag created by cairn.\n# For information about cache directory tags see https://bford.info/cachedir/\n"
)

// staleTemp is the age after which a temporary file is left over from a
// process that died, not one still being written.
const staleTemp = time.Hour

// maxPrefetch bounds concurrent background fetches of tree packs.
const maxPrefetch = 8

// maxOpenPacks bounds the tree packs a cache keeps open between reads: a
// restore, ls or unchanged backup reads thousands of trees from a few
// packs, and an open, a stat and a close per tree cost more than the read.
const maxOpenPacks = 64

// DefaultBase is the directory that holds one cache directory per
// repository: $CAIRN_CACHE_DIR, else $XDG_CACHE_HOME/cairn, else
// ~/.cache/cairn.
func DefaultBase() (string, error) {
	if d := os.Getenv("CAIRN_CACHE_DIR"); d != "" {
		return d, nil
	}
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "cairn"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("no cache directory: %w (set CAIRN_CACHE_DIR or use --cache-dir)", err)
	}
	return filepath.Join(home, ".cache", "cairn"), nil
}

// Cache is the cache directory of one repository. Its methods are safe for
// concurrent use.
type Cache struct {
	dir  string
	warn func(error)

	mu sync.Mutex
	// verified holds objects whose cached file matched its name in this
	// process: later reads go straight to the file.
	verified map[backend.Handle]bool
	// open holds verified tree packs open for later reads (at most
	// maxOpenPacks). A cached file is only ever replaced by a rename, never
	// rewritten, so an open file keeps the bytes that were verified.
	open map[backend.Handle]*openObject
	// readOnly is set when a write failed (full disk, permissions): the
	// cache then only serves what it has.
	readOnly bool
	warned   bool
	// temp is set for a cache that lives as long as one command: its
	// directory is removed by Remove.
	temp bool
}

// Open prepares the cache directory of the repository with the given ID
// below base, creating it if needed. warn receives the first problem of
// the cache's lifetime (later ones are not repeated); the caller goes on
// without the cache when Open fails.
func Open(base, repoID string, warn func(error)) (*Cache, error) {
	if repoID == "" || strings.ContainsAny(repoID, `/\.`) {
		return nil, fmt.Errorf("cache: invalid repository ID %q", repoID)
	}
	if err := os.MkdirAll(base, 0o700); err != nil {
		return nil, fmt.Errorf("create cache directory: %w", err)
	}
	tag := filepath.Join(base, tagFile)
	if _, err := os.Stat(tag); errors.Is(err, fs.ErrNotExist) {
		_ = writeAtomic(tag, []byte(tagContent))
	}
	dir := filepath.Join(base, repoID)
	for _, t := range []backend.FileType{backend.Index, backend.Snapshot, backend.TreePack} {
		if err := os.MkdirAll(filepath.Join(dir, string(t)), 0o700); err != nil {
			return nil, fmt.Errorf("create cache directory: %w", err)
		}
	}
	// A probe write tells a read-only cache (a mounted home, a full disk)
	// from a working one now, with one warning, not at the first pack.
	if err := writeAtomic(filepath.Join(dir, "version"), []byte("1\n")); err != nil {
		return nil, fmt.Errorf("cache directory %s is not writable: %w", dir, err)
	}
	now := time.Now()
	_ = os.Chtimes(dir, now, now) // last use, for cleaning up old caches
	if warn == nil {
		warn = func(error) {}
	}
	c := &Cache{dir: dir, warn: warn, verified: map[backend.Handle]bool{}, open: map[backend.Handle]*openObject{}}
	c.removeStaleTemp()
	return c, nil
}

// OpenTemp creates a cache in a new temporary directory, for a command run
// without the persistent cache (--no-cache, check, or when that cannot be
// created): it still reads tree packs whole, once. Remove deletes it.
func OpenTemp(warn func(error)) (*Cache, error) {
	base, err := os.MkdirTemp("", "cairn-cache-")
	if err != nil {
		return nil, fmt.Errorf("create temporary cache directory: %w", err)
	}
	c, err := Open(base, "run", warn)
	if err != nil {
		_ = os.RemoveAll(base)
		return nil, err
	}
	c.temp = true
	return c, nil
}

// Close closes the files the cache holds open; a temporary cache is
// removed (Remove). The cache stays usable: later reads open files again.
func (c *Cache) Close() error {
	c.mu.Lock()
	open := c.open
	c.open = map[backend.Handle]*openObject{}
	c.mu.Unlock()
	for _, o := range open {
		o.f.Close()
	}
	return c.Remove()
}

// Remove deletes a temporary cache; it does nothing to a persistent one.
func (c *Cache) Remove() error {
	if !c.temp {
		return nil
	}
	return os.RemoveAll(filepath.Dir(c.dir))
}

// Dir is the repository's cache directory.
func (c *Cache) Dir() string { return c.dir }

func (c *Cache) path(h backend.Handle) string {
	if h.Type == backend.TreePack && len(h.Name) > 2 {
		return filepath.Join(c.dir, string(h.Type), h.Name[:2], h.Name)
	}
	return filepath.Join(c.dir, string(h.Type), h.Name)
}

// validName accepts the names of content-addressed objects only.
func validName(h backend.Handle) bool { return Cached(h.Type) && objectName(h.Name) }

// objectName reports whether name is an object's name (64 hex digits),
// safe as a file name in the cache.
func objectName(name string) bool {
	if len(name) != 64 {
		return false
	}
	_, err := hex.DecodeString(name)
	return err == nil
}

// problem reports err once and, for write failures, stops writing.
func (c *Cache) problem(err error, stopWriting bool) {
	c.mu.Lock()
	first := !c.warned
	c.warned = true
	if stopWriting {
		c.readOnly = true
	}
	c.mu.Unlock()
	if first {
		c.warn(err)
	}
}

func (c *Cache) writable() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.readOnly
}

func (c *Cache) isVerified(h backend.Handle) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.verified[h]
}

func (c *Cache) setVerified(h backend.Handle, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ok {
		c.verified[h] = true
	} else {
		delete(c.verified, h)
	}
}

type openObject struct {
	f    *os.File
	size int64
}

// object opens the cached file of h, hashing it first if this process has
// not yet; a file that does not match its name is deleted. shared files
// (tree packs kept open) must not be closed by the caller.
func (c *Cache) object(h backend.Handle) (o *openObject, shared, ok bool) {
	c.mu.Lock()
	o = c.open[h]
	verified := c.verified[h]
	c.mu.Unlock()
	if o != nil {
		return o, true, true
	}
	f, err := os.Open(c.path(h))
	if err != nil {
		if verified {
			c.setVerified(h, false) // removed by another process meanwhile
		}
		return nil, false, false
	}
	if !verified {
		hash := blake3.New()
		if _, err := io.Copy(hash, f); err != nil || hex.EncodeToString(hash.Sum(nil)) != h.Name {
			f.Close()
			_ = os.Remove(c.path(h))
			return nil, false, false
		}
		c.setVerified(h, true)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, false, false
	}
	o = &openObject{f: f, size: fi.Size()}
	if h.Type != backend.TreePack {
		return o, false, true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if kept := c.open[h]; kept != nil {
		f.Close() // another reader opened it meanwhile
		return kept, true, true
	}
	if len(c.open) >= maxOpenPacks {
		return o, false, true
	}
	c.open[h] = o
	return o, true, true
}

// forget closes the kept-open file of h, if any; a reader still using it
// gets an error and takes the object as not cached.
func (c *Cache) forget(h backend.Handle) {
	c.mu.Lock()
	o := c.open[h]
	delete(c.open, h)
	c.mu.Unlock()
	if o != nil {
		o.f.Close()
	}
}

// read returns length bytes at offset of a cached object (the rest when
// length is 0), or ok false when it is not cached (or was damaged and has
// been deleted).
func (c *Cache) read(h backend.Handle, offset, length int64) (data []byte, ok bool) {
	o, shared, ok := c.object(h)
	if !ok {
		return nil, false
	}
	if !shared {
		defer o.f.Close()
	}
	if offset >= o.size {
		return []byte{}, true
	}
	if length == 0 || offset+length > o.size {
		length = o.size - offset
	}
	buf := make([]byte, length)
	if _, err := o.f.ReadAt(buf, offset); err != nil {
		c.forget(h)
		c.setVerified(h, false)
		return nil, false
	}
	return buf, true
}

// has reports whether h is in the cache without reading it.
func (c *Cache) has(h backend.Handle) bool {
	if c.isVerified(h) {
		return true
	}
	_, err := os.Stat(c.path(h))
	return err == nil
}

// store writes an object whose bytes match its name.
func (c *Cache) store(h backend.Handle, data []byte) {
	if !validName(h) || !c.writable() {
		return
	}
	p := c.path(h)
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		c.problem(fmt.Errorf("cache: %w; going on without writing to the cache", err), true)
		return
	}
	if err := writeAtomic(p, data); err != nil {
		c.problem(fmt.Errorf("cache: %w; going on without writing to the cache", err), true)
		return
	}
	c.setVerified(h, true)
}

// storeFile copies the first size bytes of f, which match h's name.
func (c *Cache) storeFile(h backend.Handle, f *os.File, size int64) {
	if !validName(h) || !c.writable() {
		return
	}
	data := make([]byte, size)
	if _, err := f.ReadAt(data, 0); err != nil {
		return
	}
	c.store(h, data)
}

func (c *Cache) remove(h backend.Handle) {
	if !validName(h) {
		return
	}
	c.forget(h)
	c.setVerified(h, false)
	_ = os.Remove(c.path(h))
}

// names lists the cached objects of type t with their modification times.
func (c *Cache) names(t backend.FileType) map[string]time.Time {
	out := map[string]time.Time{}
	dirs := []string{filepath.Join(c.dir, string(t))}
	if t == backend.TreePack {
		entries, _ := os.ReadDir(dirs[0])
		dirs = dirs[:0]
		for _, e := range entries {
			if e.IsDir() {
				dirs = append(dirs, filepath.Join(c.dir, string(t), e.Name()))
			}
		}
	}
	for _, d := range dirs {
		entries, _ := os.ReadDir(d)
		for _, e := range entries {
			if !e.Type().IsRegular() || strings.HasPrefix(e.Name(), ".tmp-") {
				continue
			}
			if fi, err := e.Info(); err == nil {
				out[e.Name()] = fi.ModTime()
			}
		}
	}
	return out
}

// KeepOnly removes the cached objects of type t that keep rejects, except
// files written after since (by a concurrent process whose objects the
// caller may not know yet).
func (c *Cache) KeepOnly(t backend.FileType, since time.Time, keep func(name string) bool) {
	for name, mtime := range c.names(t) {
		if !keep(name) && mtime.Before(since) {
			c.remove(backend.Handle{Type: t, Name: name})
		}
	}
}

// removeStaleTemp deletes temporary files that a killed process left.
func (c *Cache) removeStaleTemp() {
	_ = filepath.WalkDir(c.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasPrefix(d.Name(), ".tmp-") {
			return nil
		}
		if fi, err := d.Info(); err == nil && time.Since(fi.ModTime()) > staleTemp {
			_ = os.Remove(p)
		}
		return nil
	})
}

// writeAtomic writes data to a temporary file next to p and renames it
// into place, so a reader sees the whole file or none.
func writeAtomic(p string, data []byte) error {
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	tmp := filepath.Join(filepath.Dir(p), ".tmp-"+hex.EncodeToString(rnd[:]))
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, p)
	}
	if err != nil {
		_ = os.Remove(tmp)
	}
	return err
}
