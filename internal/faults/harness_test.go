package faults

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/internal/clitest"
)

// cairnBin is the binary built by TestMain.
var cairnBin string

func TestMain(m *testing.M) { os.Exit(clitest.Main(m, &cairnBin)) }

type result struct {
	stdout, stderr string
	code           int
}

// env is the environment of one repository: the variables cairn gets
// beyond the test process's own (without its CAIRN_ ones).
type env struct {
	t    testing.TB
	repo string
	vars []string
}

func newEnv(t testing.TB, repo string) *env {
	return &env{t: t, repo: repo, vars: []string{"CAIRN_PASSWORD=fault test", "CAIRN_REPOSITORY=" + repo}}
}

func (e *env) runner() *clitest.Runner {
	return &clitest.Runner{Bin: cairnBin, Env: e.vars, Timeout: 10 * time.Minute}
}

// cmd is a cairn command not started (for tests that kill it).
func (e *env) cmd(args ...string) *exec.Cmd {
	return e.runner().Command(context.Background(), args...)
}

func (e *env) run(args ...string) result {
	e.t.Helper()
	r := e.runner().Run(e.t, nil, args...)
	return result{r.Stdout, r.Stderr, r.Code}
}

func (e *env) must(args ...string) result {
	e.t.Helper()
	r := e.run(args...)
	if r.code != 0 {
		e.t.Fatalf("cairn %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r
}

// checkClean runs check --read-data and fails on any error finding, and on
// crashes of the checker itself.
func (e *env) checkClean(context string) {
	e.t.Helper()
	r := e.run("check", "--read-data")
	if r.code != 0 || strings.Contains(r.stderr, "panic") || strings.Contains(r.stdout, "error:") {
		e.t.Fatalf("%s: check --read-data: exit %d\n%s\n%s", context, r.code, r.stdout, r.stderr)
	}
}

type snapshotInfo struct {
	ID    string   `json:"id"`
	Paths []string `json:"paths"`
	Tags  []string `json:"tags"`
}

func (e *env) snapshots() []snapshotInfo {
	e.t.Helper()
	r := e.must("snapshots", "--json")
	var out []snapshotInfo
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		e.t.Fatalf("snapshots --json: %v\n%s", err, r.stdout)
	}
	return out
}

// treeDigest maps relative paths under root to a digest of their content.
func treeDigest(t testing.TB, root string) map[string]string {
	t.Helper()
	m := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		switch {
		case d.Type().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			m[rel] = fmt.Sprintf("%x", sha256.Sum256(b))
		case d.IsDir():
			m[rel] = "dir"
		case d.Type()&fs.ModeSymlink != 0:
			l, _ := os.Readlink(p)
			m[rel] = "link:" + l
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func sameTree(t testing.TB, want, got map[string]string, what string) {
	t.Helper()
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("%s: %s differs (want %.16s, got %.16s)", what, k, v, got[k])
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Fatalf("%s: unexpected %s", what, k)
		}
	}
}

// restoreAndCompare restores a snapshot and compares the restored copy of
// src with the digest taken when the snapshot was made.
func (e *env) restoreAndCompare(snap, src string, want map[string]string) {
	e.t.Helper()
	target := e.t.TempDir()
	e.must("restore", snap, "--target", target)
	sameTree(e.t, want, treeDigest(e.t, filepath.Join(target, src)), "restore of "+snap)
}

// makeTree writes a tree of random files (n files, sizes up to maxSize).
func makeTree(t testing.TB, root string, rng *rand.Rand, n, maxSize int) {
	t.Helper()
	for i := 0; i < n; i++ {
		dir := filepath.Join(root, fmt.Sprintf("d%02d", i%7))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		size := rng.IntN(maxSize)
		b := make([]byte, size)
		for j := 0; j < size; j += 8 {
			v := rng.Uint64()
			for k := 0; k < 8 && j+k < size; k++ {
				b[j+k] = byte(v >> (8 * k))
			}
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%04d.bin", i)), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// mutate changes a few files so the next backup has new data.
func mutate(t testing.TB, root string, rng *rand.Rand) {
	t.Helper()
	var files []string
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			files = append(files, p)
		}
		return nil
	})
	for i := 0; i < 3 && len(files) > 0; i++ {
		p := files[rng.IntN(len(files))]
		b := make([]byte, 64<<10+rng.IntN(1<<20))
		for j := range b {
			b[j] = byte(rng.Uint32())
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
