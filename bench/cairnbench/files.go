package main

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

const (
	phaseFirst     = "backup 1 (first)"
	phaseUnchanged = "backup 2 (unchanged)"
	phaseDay2      = "backup 3 (day 2)"
	filesPerDir    = 50
	minSmall       = 100
	maxSmall       = 32 << 10
)

// filesInfo describes the file-tree corpus.
type filesInfo struct {
	SmallFiles      int     `json:"small_files"`
	SmallBytes      int64   `json:"small_bytes"`
	LargeFiles      int     `json:"large_files"`
	LargeBytes      int64   `json:"large_bytes"`
	Day2Rewritten   int     `json:"day2_small_files_rewritten"`
	Day2Appended    int64   `json:"day2_bytes_appended_to_one_large_file"`
	Day1Bytes       int64   `json:"tree_bytes_day1"`
	Day2Bytes       int64   `json:"tree_bytes_day2"`
	GenerateSeconds float64 `json:"generate_seconds"`
}

// smallPath is where small file i lives: 50 files a directory, 10
// directories a parent; three in five are text, the others random bytes.
func smallPath(tree string, i int) (string, bool) {
	d := i / filesPerDir
	text := i%5 < 3
	ext := ".bin"
	if text {
		ext = ".txt"
	}
	return filepath.Join(tree, "small", fmt.Sprintf("d%03d", d/10), fmt.Sprintf("s%02d", d%10), fmt.Sprintf("f%06d%s", i, ext)), text
}

func smallContent(rng *rand.Rand, cc *rand.ChaCha8, text bool) []byte {
	n := logUniform(rng, minSmall, maxSmall)
	if text {
		return textBytes(rng, n)
	}
	return randomBytes(cc, n)
}

func largePath(tree string, i int) string {
	if i%2 == 0 {
		return filepath.Join(tree, "large", fmt.Sprintf("big-%d.bin", i))
	}
	return filepath.Join(tree, "large", fmt.Sprintf("big-%d.log", i))
}

// genFiles writes the day-1 tree: small files of 100 B to 32 KiB (log-uniform
// sizes, text and random) and large files (random, or log-like text).
func (b *bench) genFiles(dir string) error {
	t0 := time.Now()
	p := b.prof
	tree := filepath.Join(dir, "tree")
	info := filesInfo{SmallFiles: p.SmallFiles, LargeFiles: p.LargeFiles}
	rng, cc := newRand(1)
	for i := range p.SmallFiles {
		if i%5000 == 0 {
			if err := b.ctx.Err(); err != nil {
				return err
			}
		}
		path, text := smallPath(tree, i)
		if i%filesPerDir == 0 {
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				return err
			}
		}
		data := smallContent(rng, cc, text)
		if err := os.WriteFile(path, data, 0o644); err != nil {
			return err
		}
		info.SmallBytes += int64(len(data))
	}
	if err := os.MkdirAll(filepath.Join(tree, "large"), 0o755); err != nil {
		return err
	}
	for i := range p.LargeFiles {
		f, err := os.Create(largePath(tree, i))
		if err != nil {
			return err
		}
		for left := p.LargeFileBytes; left > 0; {
			n := min(left, 4<<20)
			var data []byte
			if i%2 == 0 {
				data = randomBytes(cc, n)
			} else {
				data = textBytes(rng, n)
			}
			if _, err := f.Write(data); err != nil {
				f.Close()
				return err
			}
			left -= n
		}
		if err := f.Close(); err != nil {
			return err
		}
		info.LargeBytes += int64(p.LargeFileBytes)
	}
	info.Day1Bytes = info.SmallBytes + info.LargeBytes
	info.GenerateSeconds = time.Since(t0).Seconds()
	return writeJSONFile(filepath.Join(dir, "info.json"), info)
}

// day2Files rewrites 1% of the small files and appends to one large file.
func (b *bench) day2Files(tree string, info *filesInfo) error {
	p := b.prof
	rng, cc := newRand(2)
	n := p.SmallFiles / 100
	for _, i := range rand.New(rand.NewPCG(3, 3)).Perm(p.SmallFiles)[:n] {
		path, text := smallPath(tree, i)
		if err := os.WriteFile(path, smallContent(rng, cc, text), 0o644); err != nil {
			return err
		}
	}
	f, err := os.OpenFile(largePath(tree, 0), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	if _, err := f.Write(randomBytes(cc, p.AppendBytes)); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	info.Day2Rewritten, info.Day2Appended = n, int64(p.AppendBytes)
	return nil
}

func (b *bench) runFiles() error {
	p := b.prof
	dir, err := b.corpus(fmt.Sprintf("files-n%d-l%dx%d", p.SmallFiles, p.LargeFiles, p.LargeFileBytes), b.genFiles)
	if err != nil {
		return err
	}
	var info filesInfo
	if err := readJSONFile(filepath.Join(dir, "info.json"), &info); err != nil {
		return err
	}
	b.res.Datasets["files"] = &info
	// Work on a copy: day 2 changes it.
	tree := filepath.Join(b.work, "files", "tree")
	if err := os.MkdirAll(filepath.Dir(tree), 0o755); err != nil {
		return err
	}
	t := time.Now()
	if out, err := exec.CommandContext(b.ctx, "cp", "-a", filepath.Join(dir, "tree"), tree).CombinedOutput(); err != nil {
		return fmt.Errorf("copy the corpus: %v: %s", err, out)
	}
	nFiles, size1, err := treeStats(tree)
	if err != nil {
		return err
	}
	b.logf("   files: %d files, %s (%d small, %s; %d large), copied in %s", nFiles, fmtBytes(size1), info.SmallFiles,
		fmtBytes(info.SmallBytes), info.LargeFiles, time.Since(t).Round(100*time.Millisecond))
	warm(tree)
	c, r, err := b.newRepos("files")
	if err != nil {
		return err
	}
	backup := func(repo *repoT, size int64) inv {
		return inv{repo: repo, args: []string{"--json", "backup", tree}, input: size, backup: true}
	}
	if _, err := b.pair("files", phaseFirst, backup(c, size1), backup(r, size1)); err != nil {
		return err
	}
	if _, err := b.pair("files", phaseUnchanged, backup(c, size1), backup(r, size1)); err != nil {
		return err
	}
	if err := b.day2Files(tree, &info); err != nil {
		return err
	}
	nFiles2, size2, err := treeStats(tree)
	if err != nil {
		return err
	}
	info.Day2Bytes = size2
	b.logf("   files: day 2: %d small files rewritten, %s appended to %s", info.Day2Rewritten, fmtBytes(info.Day2Appended), filepath.Base(largePath(tree, 0)))
	if _, err := b.pair("files", phaseDay2, backup(c, size2), backup(r, size2)); err != nil {
		return err
	}
	restore := func(repo *repoT) inv {
		target := filepath.Join(b.work, "restore-"+filepath.Base(repo.dir))
		return inv{repo: repo, args: []string{"restore", "latest", "--target", target}, input: size2, check: func() error {
			defer os.RemoveAll(target)
			n, s, err := treeStats(filepath.Join(target, tree))
			if err != nil {
				return err
			}
			if n != nFiles2 || s != size2 {
				return fmt.Errorf("restored %d files, %d bytes; want %d files, %d bytes", n, s, nFiles2, size2)
			}
			return nil
		}}
	}
	_, err = b.pair("files", "restore: --target", restore(c), restore(r))
	return err
}
