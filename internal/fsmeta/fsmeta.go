// Package fsmeta reads file metadata into tree nodes and applies it back on
// restore: modes, ownership, nanosecond times, xattrs, links and devices.
package fsmeta

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"strconv"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/cairn-backup/cairn/tree"
)

// Names caches uid/gid to name lookups (they read /etc/passwd each time).
type Names struct {
	mu     sync.Mutex
	users  map[uint32]string
	groups map[uint32]string
}

// NewNames returns an empty cache.
func NewNames() *Names {
	return &Names{users: map[uint32]string{}, groups: map[uint32]string{}}
}

func (n *Names) user(uid uint32) string {
	n.mu.Lock()
	defer n.mu.Unlock()
	if s, ok := n.users[uid]; ok {
		return s
	}
	var s string
	if u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10)); err == nil {
		s = u.Username
	}
	n.users[uid] = s
	return s
}

func (n *Names) group(gid uint32) string {
	n.mu.Lock()
	defer n.mu.Unlock()
	if s, ok := n.groups[gid]; ok {
		return s
	}
	var s string
	if g, err := user.LookupGroupId(strconv.FormatUint(uint64(gid), 10)); err == nil {
		s = g.Name
	}
	n.groups[gid] = s
	return s
}

// NodeFromLstat fills a node's metadata from lstat(path) (links are not
// followed). Xattr failures are returned in xerr without failing the node.
func (n *Names) NodeFromLstat(path, name string) (node tree.Node, xerr error, err error) {
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		return node, nil, &fs.PathError{Op: "lstat", Path: path, Err: err}
	}
	node = tree.Node{
		Name:       name,
		Mode:       st.Mode & 0o7777,
		UID:        st.Uid,
		GID:        st.Gid,
		User:       n.user(st.Uid),
		Group:      n.group(st.Gid),
		ModTime:    st.Mtim.Nano(),
		ChangeTime: st.Ctim.Nano(),
		Inode:      st.Ino,
		Device:     st.Dev,
		Links:      uint64(st.Nlink),
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		node.Type = tree.File
		node.Size = uint64(st.Size)
	case unix.S_IFDIR:
		node.Type = tree.Dir
	case unix.S_IFLNK:
		node.Type = tree.Symlink
		target, err := os.Readlink(path)
		if err != nil {
			return node, nil, err
		}
		node.LinkTarget = target
	case unix.S_IFBLK:
		node.Type = tree.Dev
		node.Rdev = st.Rdev
	case unix.S_IFCHR:
		node.Type = tree.CharDev
		node.Rdev = st.Rdev
	case unix.S_IFIFO:
		node.Type = tree.FIFO
	case unix.S_IFSOCK:
		node.Type = tree.Socket
	default:
		return node, nil, fmt.Errorf("%s: unknown file type %o", path, st.Mode&unix.S_IFMT)
	}
	node.Xattrs, xerr = readXattrs(path)
	return node, xerr, nil
}

func readXattrs(path string) ([]tree.Xattr, error) {
	buf := make([]byte, 1024)
	var n int
	var err error
	for {
		n, err = unix.Llistxattr(path, buf)
		if errors.Is(err, unix.ERANGE) {
			buf = make([]byte, len(buf)*4)
			continue
		}
		break
	}
	if err != nil {
		if errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EOPNOTSUPP) {
			return nil, nil
		}
		return nil, fmt.Errorf("list xattrs of %s: %w", path, err)
	}
	var out []tree.Xattr
	var errs []error
	for _, name := range splitNul(buf[:n]) {
		val, err := getXattr(path, name)
		if err != nil {
			errs = append(errs, fmt.Errorf("xattr %s of %s: %w", name, path, err))
			continue
		}
		out = append(out, tree.Xattr{Name: name, Value: val})
	}
	return out, errors.Join(errs...)
}

func getXattr(path, name string) ([]byte, error) {
	buf := make([]byte, 256)
	for {
		n, err := unix.Lgetxattr(path, name, buf)
		if errors.Is(err, unix.ERANGE) {
			buf = make([]byte, len(buf)*4)
			if len(buf) > 1<<26 {
				return nil, err
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		return buf[:n], nil
	}
}

func splitNul(b []byte) []string {
	var out []string
	start := 0
	for i, c := range b {
		if c == 0 {
			if i > start {
				out = append(out, string(b[start:i]))
			}
			start = i + 1
		}
	}
	return out
}

// Owners maps the user and group names recorded in snapshots to this
// system's ids, caching the lookups (each one reads /etc/passwd or
// /etc/group). It is safe for concurrent use.
type Owners struct {
	mu     sync.Mutex
	users  map[string]int
	groups map[string]int
}

// NewOwners returns an empty cache.
func NewOwners() *Owners { return &Owners{users: map[string]int{}, groups: map[string]int{}} }

// ids returns the uid and gid to give a restored node: those of its user
// and group names on this system when they exist, else the recorded ids.
func (o *Owners) ids(n *tree.Node) (int, int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	uid, gid := int(n.UID), int(n.GID)
	if n.User != "" {
		v, ok := o.users[n.User]
		if !ok {
			v = -1
			if u, err := user.Lookup(n.User); err == nil {
				if id, err := strconv.Atoi(u.Uid); err == nil {
					v = id
				}
			}
			o.users[n.User] = v
		}
		if v >= 0 {
			uid = v
		}
	}
	if n.Group != "" {
		v, ok := o.groups[n.Group]
		if !ok {
			v = -1
			if g, err := user.LookupGroup(n.Group); err == nil {
				if id, err := strconv.Atoi(g.Gid); err == nil {
					v = id
				}
			}
			o.groups[n.Group] = v
		}
		if v >= 0 {
			gid = v
		}
	}
	return uid, gid
}

// Apply sets ownership (when owners is not nil), xattrs, mode and times of
// an already created entry at path, in that order (chown clears setuid
// bits, so mode comes after it; times come last). Links are never followed.
// It returns every failure joined; the caller decides what is fatal.
func Apply(path string, n *tree.Node, owners *Owners) error {
	var errs []error
	if owners != nil {
		uid, gid := owners.ids(n)
		if err := os.Lchown(path, uid, gid); err != nil {
			errs = append(errs, err)
		}
	}
	for _, x := range n.Xattrs {
		if err := unix.Lsetxattr(path, x.Name, x.Value, 0); err != nil {
			errs = append(errs, fmt.Errorf("set xattr %s on %s: %w", x.Name, path, err))
		}
	}
	if n.Type != tree.Symlink {
		if err := unix.Fchmodat(unix.AT_FDCWD, path, n.Mode&0o7777, 0); err != nil {
			errs = append(errs, &fs.PathError{Op: "chmod", Path: path, Err: err})
		}
	}
	ts := []unix.Timespec{unix.NsecToTimespec(n.ModTime), unix.NsecToTimespec(n.ModTime)}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, path, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		errs = append(errs, &fs.PathError{Op: "utimes", Path: path, Err: err})
	}
	return errors.Join(errs...)
}

// ApplyFD is Apply for a regular file through its open descriptor, which
// saves the path lookups of a restore of many small files.
func ApplyFD(fd int, path string, n *tree.Node, owners *Owners) error {
	var errs []error
	if owners != nil {
		uid, gid := owners.ids(n)
		if err := unix.Fchown(fd, uid, gid); err != nil {
			errs = append(errs, &fs.PathError{Op: "chown", Path: path, Err: err})
		}
	}
	for _, x := range n.Xattrs {
		if err := unix.Fsetxattr(fd, x.Name, x.Value, 0); err != nil {
			errs = append(errs, fmt.Errorf("set xattr %s on %s: %w", x.Name, path, err))
		}
	}
	if err := unix.Fchmod(fd, n.Mode&0o7777); err != nil {
		errs = append(errs, &fs.PathError{Op: "chmod", Path: path, Err: err})
	}
	if err := futimens(fd, n.ModTime); err != nil {
		errs = append(errs, &fs.PathError{Op: "utimes", Path: path, Err: err})
	}
	return errors.Join(errs...)
}

// futimens sets atime and mtime of an open file in nanoseconds:
// utimensat(fd, NULL, times, 0), which x/sys/unix does not wrap.
func futimens(fd int, ns int64) error {
	ts := [2]unix.Timespec{unix.NsecToTimespec(ns), unix.NsecToTimespec(ns)}
	_, _, errno := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafe.Pointer(&ts)), 0, 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}

// Mknod creates a device, FIFO or socket node.
func Mknod(path string, n *tree.Node) error {
	var mode uint32
	switch n.Type {
	case tree.Dev:
		mode = syscall.S_IFBLK
	case tree.CharDev:
		mode = syscall.S_IFCHR
	case tree.FIFO:
		mode = syscall.S_IFIFO
	case tree.Socket:
		mode = syscall.S_IFSOCK
	default:
		return fmt.Errorf("mknod %s: not a special file", path)
	}
	if err := unix.Mknod(path, mode|(n.Mode&0o7777), int(n.Rdev)); err != nil {
		return &fs.PathError{Op: "mknod", Path: path, Err: err}
	}
	return nil
}
