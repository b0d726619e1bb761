package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/cairn-backup/cairn/bench/latencyproxy"
	"github.com/cairn-backup/cairn/repo/backend/s3/s3test"
)

// The s3 data set's rows: one data set, its phases named after the input.
const (
	s3Dataset         = "s3"
	s3TreeFirst       = "tree: backup 1 (first)"
	s3TreeUnchanged   = "tree: backup 2 (unchanged)"
	s3TreeDay2        = "tree: backup 3 (day 2)"
	s3TreeRestore     = "tree: restore"
	s3TreeRestoreCold = "tree: restore (cold cache)"
	s3PGDay1          = "pg: backup day 1"
	s3PGDay2          = "pg: backup day 2"
	s3PGRestore       = "pg: restore (dump)"

	s3MinLarge    = 1 << 20
	s3MaxLarge    = 5 << 20
	restoreSample = 300 // files compared byte for byte after a tree restore
)

// s3TreeInfo describes the cached tree of the s3 data set (info.json).
type s3TreeInfo struct {
	Source          string  `json:"source"`
	UsrShareFiles   int     `json:"usr_share_files"`
	UsrShareBytes   int64   `json:"usr_share_bytes"`
	LargeFiles      int     `json:"large_files"`
	LargeBytes      int64   `json:"large_bytes"`
	Files           int     `json:"files"`
	Symlinks        int     `json:"symlinks"`
	Bytes           int64   `json:"bytes"`
	GenerateSeconds float64 `json:"generate_seconds"`
}

// s3Info describes the s3 data set of a run.
type s3Info struct {
	DelayMillis     float64    `json:"proxy_delay_ms"`
	Tree            s3TreeInfo `json:"tree"`
	Day2Rewritten   int        `json:"day2_files_rewritten"`
	Day2Bytes       int64      `json:"tree_bytes_day2"`
	PgDumpBytesDay1 int64      `json:"pg_dump_bytes_day1"`
	PgDumpBytesDay2 int64      `json:"pg_dump_bytes_day2"`
	Requests        string     `json:"request_classes"`
}

// treeCount is what a tree holds: regular files, their bytes, symlinks.
type treeCount struct {
	Files    int
	Bytes    int64
	Symlinks int
}

func countTree(dir string) (treeCount, error) {
	var c treeCount
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		switch {
		case d.Type().IsRegular():
			fi, err := d.Info()
			if err != nil {
				return err
			}
			c.Files++
			c.Bytes += fi.Size()
		case d.Type()&fs.ModeSymlink != 0:
			c.Symlinks++
		}
		return nil
	})
	return c, err
}

// sourceTag names a tree source in a corpus directory's name: "usrshare"
// for /usr/share, as the corpus has always been called.
func sourceTag(dir string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			return r
		}
		return -1
	}, dir)
}

// s3TreeCorpus returns the cached tree (generating it first if missing).
// The source (/usr/share by default) is copied once so that every run backs up the same files,
// whatever the machine installs later.
func (b *bench) s3TreeCorpus() (tree string, info *s3TreeInfo, err error) {
	p := b.prof
	share := "all"
	if p.S3UsrShareFiles > 0 {
		share = fmt.Sprint(p.S3UsrShareFiles)
	}
	dir, err := b.corpus(fmt.Sprintf("s3tree-%s-%s-l%d", sourceTag(b.o.treeSource), share, p.S3LargeFiles), b.genS3Tree)
	if err != nil {
		return "", nil, err
	}
	info = &s3TreeInfo{}
	if err := readJSONFile(filepath.Join(dir, "info.json"), info); err != nil {
		return "", nil, err
	}
	return filepath.Join(dir, "tree"), info, nil
}

// genS3Tree writes the tree: a copy of /usr/share (or, in the quick profile,
// of an even spread of its files) and random files of 1 to 5 MiB, which
// stand for the photos, archives and binaries of a production machine.
func (b *bench) genS3Tree(dir string) error {
	t0 := time.Now()
	p := b.prof
	tree := filepath.Join(dir, "tree")
	share := filepath.Join(tree, "usr-share")
	if err := os.MkdirAll(tree, 0o755); err != nil {
		return err
	}
	src := b.o.treeSource
	b.logf("   s3: copying %s ...", src)
	if p.S3UsrShareFiles == 0 {
		if out, err := exec.CommandContext(b.ctx, "cp", "-a", src, share).CombinedOutput(); err != nil {
			return fmt.Errorf("cp -a %s: %v: %s", src, err, strings.TrimSpace(string(out)))
		}
	} else if err := copySpread(b.ctx, src, share, p.S3UsrShareFiles); err != nil {
		return err
	}
	info := s3TreeInfo{Source: src, LargeFiles: p.S3LargeFiles}
	c, err := countTree(share)
	if err != nil {
		return err
	}
	info.UsrShareFiles, info.UsrShareBytes = c.Files, c.Bytes
	large := filepath.Join(tree, "large")
	if err := os.MkdirAll(large, 0o755); err != nil {
		return err
	}
	rng, cc := newRand(21)
	for i := range p.S3LargeFiles {
		data := randomBytes(cc, s3MinLarge+rng.IntN(s3MaxLarge-s3MinLarge+1))
		if err := os.WriteFile(filepath.Join(large, fmt.Sprintf("blob-%03d.bin", i)), data, 0o644); err != nil {
			return err
		}
		info.LargeBytes += int64(len(data))
	}
	if c, err = countTree(tree); err != nil {
		return err
	}
	info.Files, info.Bytes, info.Symlinks = c.Files, c.Bytes, c.Symlinks
	if err := b.checkS3Count(c.Files); err != nil {
		return err
	}
	info.GenerateSeconds = time.Since(t0).Seconds()
	return writeJSONFile(filepath.Join(dir, "info.json"), info)
}

// checkS3Count fails when the tree is too small to stand for a production
// machine (a /usr/share of a minimal container image).
func (b *bench) checkS3Count(files int) error {
	if files < b.prof.S3MinFiles {
		return fmt.Errorf("the s3 tree has %d files, fewer than the %d the %s profile needs: %s on this machine is too small (install some packages, e.g. scripts/install-deps.sh)",
			files, b.prof.S3MinFiles, b.prof.Name, b.o.treeSource)
	}
	return nil
}

// copySpread copies n regular files of src, evenly spaced in lexical order
// so that they come from all over the tree, and the same share of its
// symlinks, keeping their paths (cp -a --parents).
func copySpread(ctx context.Context, src, dst string, n int) error {
	var files, links []string
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		switch {
		case d.Type().IsRegular():
			files = append(files, rel)
		case d.Type()&fs.ModeSymlink != 0:
			links = append(links, rel)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("list %s: %w", src, err)
	}
	var pick []string
	for _, list := range [][]string{files, links} {
		m := len(list)
		if len(files) > n {
			m = len(list) * n / len(files)
		}
		for i := range m {
			pick = append(pick, list[i*len(list)/m])
		}
	}
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	for len(pick) > 0 {
		batch := pick[:min(500, len(pick))]
		pick = pick[len(batch):]
		cmd := exec.CommandContext(ctx, "cp", append([]string{"-a", "--parents", "-t", dst, "--"}, batch...)...)
		cmd.Dir = src
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("cp -a --parents from %s: %v: %s", src, err, strings.TrimSpace(string(out)))
		}
	}
	return nil
}

// copyS3Tree copies the cached tree to dst, where day 2 may change it,
// and counts the copy.
func (b *bench) copyS3Tree(ds, src, dst string, info *s3TreeInfo) (treeCount, error) {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return treeCount{}, err
	}
	t := time.Now()
	if out, err := exec.CommandContext(b.ctx, "cp", "-a", src, dst).CombinedOutput(); err != nil {
		return treeCount{}, fmt.Errorf("copy the tree to %s: %v: %s", dst, err, strings.TrimSpace(string(out)))
	}
	count, err := countTree(dst)
	if err != nil {
		return treeCount{}, err
	}
	if err := b.checkS3Count(count.Files); err != nil {
		return treeCount{}, err
	}
	b.logf("   %s: tree of %d files (%d of %s, %d random of 1-5 MiB), %d symlinks, %s, copied in %s", ds, count.Files, info.UsrShareFiles,
		info.Source, info.LargeFiles, count.Symlinks, fmtBytes(count.Bytes), time.Since(t).Round(100*time.Millisecond))
	return count, nil
}

// regularFiles lists the regular files under dir in lexical order.
func regularFiles(dir string) ([]string, error) {
	var files []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			files = append(files, p)
		}
		return nil
	})
	return files, err
}

// day2S3Tree rewrites 1% of the tree's regular files, a seeded choice, with
// new content: text of about the old size (half to one and a half times)
// for /usr/share's, new random bytes of the same size for the large ones.
// It returns the rewritten files.
func (b *bench) day2S3Tree(tree string) ([]string, error) {
	files, err := regularFiles(tree)
	if err != nil {
		return nil, err
	}
	n := len(files) / 100
	rng, cc := newRand(23)
	large := filepath.Join(tree, "large") + string(filepath.Separator)
	var changed []string
	for _, i := range rand.New(rand.NewPCG(22, 22)).Perm(len(files))[:n] {
		p := files[i]
		fi, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		size := int(fi.Size())
		var data []byte
		if strings.HasPrefix(p, large) {
			data = randomBytes(cc, size)
		} else {
			data = textBytes(rng, max(64, size/2+rng.IntN(size+1)))
		}
		if err := rewriteFile(p, data, fi.Mode()); err != nil {
			return nil, fmt.Errorf("day 2: %w", err)
		}
		changed = append(changed, p)
	}
	return changed, nil
}

// rewriteFile replaces a file's content in place (keeping its inode, hard
// links and mode); read-only files are made writable for the time of it.
func rewriteFile(p string, data []byte, mode fs.FileMode) error {
	if mode&0o200 == 0 {
		if err := os.Chmod(p, mode|0o200); err != nil {
			return err
		}
		defer os.Chmod(p, mode)
	}
	return os.WriteFile(p, data, mode)
}

// s3Env is the section's MinIO server and the latency proxy in front of it.
type s3Env struct {
	ctx    context.Context
	server *s3test.Server
	proxy  *latencyproxy.Proxy
	// client talks to MinIO directly, so that measuring a bucket's size
	// is not counted as a request of the tools.
	client *minio.Client
	once   sync.Once
}

// startS3 starts MinIO with its data under the work directory, and the
// proxy. Both stop with the bench if the section fails half-way.
func (b *bench) startS3() (*s3Env, error) {
	srv, err := s3test.StartServer(filepath.Join(b.work, "minio"))
	if err != nil {
		return nil, fmt.Errorf("start MinIO: %w", err)
	}
	e := &s3Env{ctx: b.ctx, server: srv}
	b.cleanups = append(b.cleanups, e.stop)
	if e.proxy, err = latencyproxy.Start(srv.Endpoint, b.o.s3Delay); err != nil {
		return nil, err
	}
	e.client, err = minio.New(srv.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(srv.User, srv.Password, "")})
	if err != nil {
		return nil, fmt.Errorf("MinIO client: %w", err)
	}
	return e, nil
}

func (e *s3Env) stop() {
	e.once.Do(func() {
		if e.proxy != nil {
			e.proxy.Close()
		}
		e.server.Stop()
	})
}

// bucketBytes is the sum of the sizes of a bucket's objects (0 before the
// bucket exists).
func (e *s3Env) bucketBytes(bucket string) int64 {
	var n int64
	for obj := range e.client.ListObjects(e.ctx, bucket, minio.ListObjectsOptions{Recursive: true}) {
		if obj.Err != nil {
			return n
		}
		n += obj.Size
	}
	return n
}

// s3Repo is a tool's repository in its bucket (bucket-cairn,
// bucket-restic), reached through the proxy, with its local cache in
// cacheDir. cairn learns the cache directory from CAIRN_CACHE_DIR (an older
// cairn without a cache ignores it), restic from --cache-dir.
func (b *bench) s3Repo(e *s3Env, tool, cacheDir string) *repoT {
	bucket := "bucket-" + tool
	r := &repoT{tool: tool, bin: b.o.cairn, dir: "s3:http://" + e.proxy.Endpoint + "/" + bucket, proxy: e.proxy,
		env:  []string{"AWS_ACCESS_KEY_ID=" + s3test.User, "AWS_SECRET_ACCESS_KEY=" + s3test.Password},
		size: func() int64 { return e.bucketBytes(bucket) }}
	if tool == "restic" {
		r.bin = b.o.restic
		r.flags = []string{"--cache-dir", cacheDir}
	} else {
		r.env = append(r.env, "CAIRN_CACHE_DIR="+cacheDir)
	}
	return r
}

func (b *bench) runS3() error {
	src, treeInfo, err := b.s3TreeCorpus()
	if err != nil {
		return err
	}
	if err := b.checkS3Count(treeInfo.Files); err != nil {
		return err
	}
	day1, day2, pgi, err := b.pgCorpus()
	if err != nil {
		return err
	}
	info := &s3Info{DelayMillis: float64(b.o.s3Delay) / float64(time.Millisecond), Tree: *treeInfo,
		PgDumpBytesDay1: pgi.DumpBytesDay1, PgDumpBytesDay2: pgi.DumpBytesDay2,
		Requests: "GET: object reads; LIST: bucket listings; HEAD, PUT, DELETE, POST by method; other: the rest (e.g. GET ?location)"}
	b.res.Datasets[s3Dataset] = info
	b.res.Notes = append(b.res.Notes, fmt.Sprintf("s3: MinIO on loopback behind a proxy that delays every request by %s; "+
		"each tool has one repository (bucket-cairn, bucket-restic) holding the tree, then the pg dumps, and keeps its local cache in the work directory; "+
		"repository sizes are the buckets' object bytes.", b.o.s3Delay))

	// Work on a copy: day 2 changes it.
	tree := filepath.Join(b.work, "s3", "tree")
	count1, err := b.copyS3Tree(s3Dataset, src, tree, treeInfo)
	if err != nil {
		return err
	}
	warm(tree, day1, day2)

	e, err := b.startS3()
	if err != nil {
		return err
	}
	defer e.stop()
	b.logf("   s3: MinIO on %s, latency proxy on %s adding %s to every request", e.server.Endpoint, e.proxy.Endpoint, b.o.s3Delay)
	c := b.s3Repo(e, "cairn", filepath.Join(b.work, "cairn-s3-cache"))
	r := b.s3Repo(e, "restic", filepath.Join(b.work, "restic-s3-cache"))
	for _, repo := range []*repoT{c, r} {
		if err := b.initRepo(repo); err != nil {
			return err
		}
	}
	if err := b.runS3Tree(e, c, r, tree, count1, info); err != nil {
		return err
	}
	return b.runS3PG(c, r, day1, day2)
}

// runS3Tree runs the tree's phases: three backups, a restore with the
// cache the backups left, and one with empty caches.
func (b *bench) runS3Tree(e *s3Env, c, r *repoT, tree string, count1 treeCount, info *s3Info) error {
	count2, changed, err := b.treeBackups(s3Dataset, [3]string{s3TreeFirst, s3TreeUnchanged, s3TreeDay2}, c, r, tree, count1)
	if err != nil {
		return err
	}
	info.Day2Rewritten, info.Day2Bytes = len(changed), count2.Bytes
	sample, err := restoreSampleOf(tree, changed)
	if err != nil {
		return err
	}
	restore := func(repo *repoT, name string) inv {
		target := filepath.Join(b.work, "s3", "restore-"+name)
		return inv{repo: repo, args: []string{"restore", "latest", "--target", target}, input: count2.Bytes, check: func() error {
			defer os.RemoveAll(target)
			return checkTreeRestore(target, tree, count2, sample)
		}}
	}
	if _, err := b.pairRepeated(s3Dataset, s3TreeRestore, restore(c, "cairn"), restore(r, "restic"), 5); err != nil {
		return err
	}
	// Empty caches: what a restore on a new machine pays.
	cc := b.s3Repo(e, "cairn", filepath.Join(b.work, "cairn-s3-cache-cold"))
	rc := b.s3Repo(e, "restic", filepath.Join(b.work, "restic-s3-cache-cold"))
	row, err := b.pair(s3Dataset, s3TreeRestoreCold, restore(cc, "cairn-cold"), restore(rc, "restic-cold"))
	if err != nil {
		return err
	}
	row.Note = "informative, not a target: both tools start with an empty local cache"
	return nil
}

// treeBackups runs the three backups of a tree (phases: first,
// unchanged, day 2) with day2S3Tree's changes before the third. It returns
// the tree's count after day 2 and the files day 2 rewrote.
func (b *bench) treeBackups(ds string, phases [3]string, c, r *repoT, tree string, count1 treeCount) (treeCount, []string, error) {
	backup := func(repo *repoT, size int64) inv {
		return inv{repo: repo, args: []string{"--json", "backup", tree}, input: size, backup: true}
	}
	if _, err := b.pair(ds, phases[0], backup(c, count1.Bytes), backup(r, count1.Bytes)); err != nil {
		return treeCount{}, nil, err
	}
	if _, err := b.pair(ds, phases[1], backup(c, count1.Bytes), backup(r, count1.Bytes)); err != nil {
		return treeCount{}, nil, err
	}
	changed, err := b.day2S3Tree(tree)
	if err != nil {
		return treeCount{}, nil, err
	}
	count2, err := countTree(tree)
	if err != nil {
		return treeCount{}, nil, err
	}
	b.logf("   %s: day 2: %d files rewritten (%s now)", ds, len(changed), fmtBytes(count2.Bytes))
	if _, err := b.pair(ds, phases[2], backup(c, count2.Bytes), backup(r, count2.Bytes)); err != nil {
		return treeCount{}, nil, err
	}
	return count2, changed, nil
}

// restoreSampleOf picks the files compared after a restore: those day 2
// rewrote and a seeded choice of the others.
func restoreSampleOf(tree string, changed []string) ([]string, error) {
	files, err := regularFiles(tree)
	if err != nil {
		return nil, err
	}
	sample := append([]string(nil), changed[:min(len(changed), restoreSample/2)]...)
	for _, i := range rand.New(rand.NewPCG(24, 24)).Perm(len(files))[:min(len(files), restoreSample-len(sample))] {
		sample = append(sample, files[i])
	}
	return sample, nil
}

// checkTreeRestore compares the restored tree with the source: the counts
// of files, bytes and symlinks, and the bytes of the sample.
func checkTreeRestore(target, tree string, want treeCount, sample []string) error {
	got, err := countTree(filepath.Join(target, tree))
	if err != nil {
		return fmt.Errorf("restored tree: %w", err)
	}
	if got != want {
		return fmt.Errorf("restored %d files, %d bytes, %d symlinks; want %d files, %d bytes, %d symlinks",
			got.Files, got.Bytes, got.Symlinks, want.Files, want.Bytes, want.Symlinks)
	}
	for _, p := range sample {
		if err := sameFile(p, filepath.Join(target, p)); err != nil {
			return err
		}
	}
	return nil
}

// runS3PG backs up the pg dumps through standard input and restores day 2
// with dump, into the same repositories as the tree.
func (b *bench) runS3PG(c, r *repoT, day1, day2 string) error {
	want, err := sha256File(day2)
	if err != nil {
		return err
	}
	backup := func(repo *repoT, file string) inv {
		return inv{repo: repo, args: []string{"--json", "backup", "--stdin", "--stdin-filename", "db.pgdump"}, stdin: file,
			input: fileSize(file), backup: true}
	}
	if _, err := b.pair(s3Dataset, s3PGDay1, backup(c, day1), backup(r, day1)); err != nil {
		return err
	}
	if _, err := b.pair(s3Dataset, s3PGDay2, backup(c, day2), backup(r, day2)); err != nil {
		return err
	}
	// The pg day-2 snapshot is the latest of each repository.
	dump := func(repo *repoT) inv {
		out := filepath.Join(b.work, "s3", "dump-"+repo.tool+".pgdump")
		return inv{repo: repo, args: []string{"dump", "latest", "/db.pgdump"}, stdout: out, input: fileSize(day2), check: func() error {
			defer os.Remove(out)
			got, err := sha256File(out)
			if err != nil {
				return err
			}
			if got != want {
				return fmt.Errorf("dumped %s (%d bytes) has sha256 %s, want %s (%s)", out, fileSize(out), got, want, day2)
			}
			return nil
		}}
	}
	_, err = b.pair(s3Dataset, s3PGRestore, dump(c), dump(r))
	return err
}

func sha256File(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("read %s: %w", p, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
