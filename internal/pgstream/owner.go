package pgstream

import (
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
)

// UserIDs returns the user and group IDs of the named user (the server's
// user, postgres, whom PostgreSQL's files must belong to).
func UserIDs(name string) (uid, gid int, err error) {
	u, err := user.Lookup(name)
	if err != nil {
		return 0, 0, fmt.Errorf("user %s: %w", name, err)
	}
	uid, _ = strconv.Atoi(u.Uid)
	gid, _ = strconv.Atoi(u.Gid)
	return uid, gid, nil
}

// ChownTree gives dir and everything below it (symlinks themselves) to
// uid and gid.
func ChownTree(dir string, uid, gid int) error {
	return filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
	})
}
