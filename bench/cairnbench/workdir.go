package main

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// shmDir is the tmpfs the work directory goes to when it has room: the
// repositories, restore targets and temporary files then live in memory,
// so a slow or busy disk does not blur the figures (the inputs are read
// warm from the page cache anyway).
const shmDir = "/dev/shm"

// workParent picks the parent of the work directory: -work when given,
// else /dev/shm when it is a directory with at least need bytes free, else
// the usual temporary directory. why says which and why, for the log and
// the notes of the results.
func workParent(flagWork string, need int64) (dir, why string) {
	if flagWork != "" {
		return flagWork, fmt.Sprintf("-work, %s free", freeCell(flagWork))
	}
	free, err := freeBytes(shmDir)
	switch {
	case err != nil:
		return os.TempDir(), fmt.Sprintf("disk: %s unusable (%v), %s free", shmDir, err, freeCell(os.TempDir()))
	case free < need:
		return os.TempDir(), fmt.Sprintf("disk: %s has %s free, fewer than the %s wanted; %s free", shmDir, fmtBytes(free), fmtBytes(need), freeCell(os.TempDir()))
	}
	return shmDir, fmt.Sprintf("tmpfs, %s free", fmtBytes(free))
}

// freeBytes is what an unprivileged user may still write under dir.
func freeBytes(dir string) (int64, error) {
	fi, err := os.Stat(dir)
	if err != nil {
		return 0, err
	}
	if !fi.IsDir() {
		return 0, fmt.Errorf("%s is not a directory", dir)
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", dir, err)
	}
	return int64(st.Bavail) * st.Bsize, nil
}

func freeCell(dir string) string {
	n, err := freeBytes(dir)
	if err != nil {
		return "?"
	}
	return fmtBytes(n)
}

// workDirs are the parts of the work directory that outlive a data set:
// the private cairn binary, the tools' temporary directory, and the
// (emptied) parents of repositories and restic's cache.
var workDirs = []string{"bin", "tmp", "restic-cache", "repos"}

func (b *bench) makeWorkDirs() error {
	for _, d := range workDirs {
		if err := os.MkdirAll(filepath.Join(b.work, d), 0o755); err != nil {
			return fmt.Errorf("work directory: %w", err)
		}
	}
	return nil
}

// tidy removes what a data set left in the work directory (repositories,
// working copies, MinIO's data), unless -keep: in tmpfs it takes memory,
// and the data sets together would need more than they do one at a time.
func (b *bench) tidy() error {
	if b.o.keep {
		return nil
	}
	entries, err := os.ReadDir(b.work)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if e.Name() == "bin" {
			continue
		}
		if err := os.RemoveAll(filepath.Join(b.work, e.Name())); err != nil {
			return err
		}
	}
	return b.makeWorkDirs()
}
