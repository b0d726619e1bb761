// Package local stores a repository in a directory on a local file system.
package local

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/cairn-backup/cairn/repo/backend"
)

// Backend is a repository directory.
type Backend struct {
	root string
}

// Open returns a backend for an existing or future repository at dir.
// It does not create anything.
func Open(dir string) (*Backend, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("resolve repository path %q: %w", dir, err)
	}
	return &Backend{root: abs}, nil
}

// Create makes the repository's directory layout (mode 0700).
func (b *Backend) Create(ctx context.Context) error {
	dirs := []string{b.root}
	for _, t := range backend.AllTypes() {
		if t == backend.Config {
			continue
		}
		dirs = append(dirs, filepath.Join(b.root, string(t)))
	}
	for _, t := range []backend.FileType{backend.DataPack, backend.TreePack} {
		for i := 0; i < 256; i++ {
			dirs = append(dirs, filepath.Join(b.root, string(t), fmt.Sprintf("%02x", i)))
		}
	}
	for _, d := range dirs {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("create repository directory: %w", err)
		}
	}
	return nil
}

// Location returns the repository directory.
func (b *Backend) Location() string { return b.root }

func sharded(t backend.FileType) bool { return t == backend.DataPack || t == backend.TreePack }

func (b *Backend) path(h backend.Handle) (string, error) {
	if h.Type == backend.Config {
		return filepath.Join(b.root, "config"), nil
	}
	if h.Name == "" || strings.ContainsAny(h.Name, `/\`) || h.Name == "." || h.Name == ".." {
		return "", fmt.Errorf("invalid object name %q", h.Name)
	}
	if sharded(h.Type) {
		if len(h.Name) < 2 {
			return "", fmt.Errorf("invalid pack name %q", h.Name)
		}
		return filepath.Join(b.root, string(h.Type), h.Name[:2], h.Name), nil
	}
	return filepath.Join(b.root, string(h.Type), h.Name), nil
}

// Save writes data to a temporary file in the target directory, fsyncs it,
// links it into place (never replacing an existing object) and fsyncs the
// directory, so a crash leaves either the complete object or none.
func (b *Backend) Save(ctx context.Context, h backend.Handle, data []byte) error {
	return b.save(ctx, h, data, false)
}

func (b *Backend) save(ctx context.Context, h backend.Handle, data []byte, replace bool) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	p, err := b.path(h)
	if err != nil {
		return err
	}
	if _, err := os.Lstat(p); err == nil && !replace {
		return nil // write-once: same name means same content
	}
	dir := filepath.Dir(p)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("save %v: %w", h, err)
	}
	f, err := os.CreateTemp(dir, ".tmp-"+filepath.Base(p)+"-")
	if err != nil {
		return fmt.Errorf("save %v: %w", h, err)
	}
	tmp := f.Name()
	fail := func(err error) error {
		_ = f.Close()
		_ = os.Remove(tmp)
		return fmt.Errorf("save %v: %w", h, err)
	}
	if err := f.Chmod(0o600); err != nil {
		return fail(err)
	}
	if _, err := f.Write(data); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("save %v: %w", h, err)
	}
	if replace {
		err = os.Rename(tmp, p)
	} else {
		err = placeNoReplace(tmp, p)
	}
	_ = os.Remove(tmp)
	if err != nil {
		return fmt.Errorf("save %v: %w", h, err)
	}
	return syncDir(dir)
}

// Replace stores data under h over whatever is there, in one step (a
// rename): backend.Replacer.
func (b *Backend) Replace(ctx context.Context, h backend.Handle, data []byte) error {
	return b.save(ctx, h, data, true)
}

// placeNoReplace gives the complete file tmp the name p unless p exists:
// a hard link fails on an existing name, atomically, where a rename would
// replace it. Two writers racing for one name (two inits writing config)
// cannot both win. An existing p counts as success: names are content
// hashes, so it holds the same bytes (config is checked by its writer).
// The caller removes tmp.
func placeNoReplace(tmp, p string) error {
	err := os.Link(tmp, p)
	switch {
	case err == nil || errors.Is(err, fs.ErrExist):
		return nil
	case errors.Is(err, syscall.EPERM), errors.Is(err, syscall.ENOTSUP), errors.Is(err, syscall.EOPNOTSUPP), errors.Is(err, syscall.EMLINK):
		// A file system without hard links: rename, which is atomic but
		// would replace an object written at the same instant.
		return os.Rename(tmp, p)
	}
	return err
}

// TempDir is inside the repository (data/), on the same file system as
// every pack, so SaveFile renames. Names there start with ".tmp-" and
// listings skip them.
func (b *Backend) TempDir() string { return filepath.Join(b.root, string(backend.DataPack)) }

// SaveFile fsyncs f and links it into place (f must have been created in
// TempDir), then fsyncs the directory.
func (b *Backend) SaveFile(ctx context.Context, h backend.Handle, f *os.File, size int64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	p, err := b.path(h)
	if err != nil {
		return err
	}
	if fi, err := f.Stat(); err != nil || fi.Size() != size {
		return fmt.Errorf("save %v: temporary file has the wrong size", h)
	}
	if _, err := os.Lstat(p); err == nil {
		return nil // write-once: same name means same content
	}
	dir := filepath.Dir(p)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("save %v: %w", h, err)
	}
	if err := f.Chmod(0o600); err != nil {
		return fmt.Errorf("save %v: %w", h, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("save %v: %w", h, err)
	}
	if err := placeNoReplace(f.Name(), p); err != nil {
		return fmt.Errorf("save %v: %w", h, err)
	}
	_ = os.Remove(f.Name())
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open directory %s for sync: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, fs.ErrInvalid) {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}

func notFound(h backend.Handle, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%v: %w", h, backend.ErrNotFound)
	}
	return fmt.Errorf("%v: %w", h, err)
}

// Load reads length bytes at offset (all of the rest when length is 0).
func (b *Backend) Load(ctx context.Context, h backend.Handle, offset, length int64) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	p, err := b.path(h)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, notFound(h, err)
	}
	defer f.Close()
	if offset < 0 || length < 0 {
		return nil, fmt.Errorf("load %v: invalid range %d+%d", h, offset, length)
	}
	if length == 0 {
		fi, err := f.Stat()
		if err != nil {
			return nil, fmt.Errorf("load %v: %w", h, err)
		}
		length = fi.Size() - offset
		if length <= 0 {
			return []byte{}, nil
		}
	}
	if err := backend.CheckLoadSize(h, length); err != nil {
		return nil, err
	}
	buf := make([]byte, length)
	n, err := f.ReadAt(buf, offset)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("load %v: %w", h, err)
	}
	return buf[:n], nil
}

// Open returns a buffered reader of the range.
func (b *Backend) Open(ctx context.Context, h backend.Handle, offset, length int64) (io.ReadCloser, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	p, err := b.path(h)
	if err != nil {
		return nil, err
	}
	if offset < 0 || length < 0 {
		return nil, fmt.Errorf("open %v: invalid range %d+%d", h, offset, length)
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, notFound(h, err)
	}
	if length == 0 {
		fi, err := f.Stat()
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("open %v: %w", h, err)
		}
		length = max(0, fi.Size()-offset)
	}
	return &fileRange{Reader: bufio.NewReaderSize(io.NewSectionReader(f, offset, length), 256<<10), f: f}, nil
}

type fileRange struct {
	*bufio.Reader
	f *os.File
}

func (r *fileRange) Close() error { return r.f.Close() }

// Stat returns the object's size.
func (b *Backend) Stat(ctx context.Context, h backend.Handle) (backend.FileInfo, error) {
	p, err := b.path(h)
	if err != nil {
		return backend.FileInfo{}, err
	}
	fi, err := os.Stat(p)
	if err != nil {
		return backend.FileInfo{}, notFound(h, err)
	}
	return backend.FileInfo{Name: h.Name, Size: fi.Size()}, nil
}

// List walks the type's directory, skipping temporary files.
func (b *Backend) List(ctx context.Context, t backend.FileType, fn func(backend.FileInfo) error) error {
	dir := filepath.Join(b.root, string(t))
	var subdirs []string
	if sharded(t) {
		entries, err := os.ReadDir(dir)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return fmt.Errorf("list %s: %w", t, err)
		}
		for _, e := range entries {
			if e.IsDir() {
				subdirs = append(subdirs, filepath.Join(dir, e.Name()))
			}
		}
	} else {
		subdirs = []string{dir}
	}
	for _, d := range subdirs {
		entries, err := os.ReadDir(d)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			return fmt.Errorf("list %s: %w", t, err)
		}
		for _, e := range entries {
			if err := ctx.Err(); err != nil {
				return err
			}
			if !e.Type().IsRegular() || strings.HasPrefix(e.Name(), ".tmp-") {
				continue
			}
			fi, err := e.Info()
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					continue // removed concurrently
				}
				return fmt.Errorf("list %s: %w", t, err)
			}
			if err := fn(backend.FileInfo{Name: e.Name(), Size: fi.Size()}); err != nil {
				return err
			}
		}
	}
	return nil
}

// Remove deletes the object.
func (b *Backend) Remove(ctx context.Context, h backend.Handle) error {
	p, err := b.path(h)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove %v: %w", h, err)
	}
	return nil
}

// Close does nothing for a local directory.
func (b *Backend) Close() error { return nil }
