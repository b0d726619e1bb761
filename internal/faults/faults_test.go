package faults

import (
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// seed returns CAIRN_FAULT_SEED when set (to replay a failure), else a new
// one; it is always printed.
func seed(t *testing.T) uint64 {
	s := uint64(time.Now().UnixNano())
	if v := os.Getenv("CAIRN_FAULT_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("CAIRN_FAULT_SEED: %v", err)
		}
		s = n
	}
	t.Logf("seed %d (replay with CAIRN_FAULT_SEED=%d)", s, s)
	return s
}

// killRuns kills `cairn backup` with SIGKILL at random moments, and after
// each kill checks that the repository is consistent and that the next
// backup works and restores byte-identical.
func killRuns(t *testing.T, e *env, runs int, src string, rng *rand.Rand) {
	makeTree(t, src, rng, 60, 600<<10)
	// Kills land anywhere in a backup's life: from key derivation to the
	// snapshot write. The first full backup sets the time scale.
	start := time.Now()
	e.must("backup", src, "--tag", "first")
	span := time.Since(start)
	killed := 0
	defer func() { t.Logf("%d of %d backups were killed before they finished (span %v)", killed, runs, span) }()
	for i := 0; i < runs; i++ {
		mutate(t, src, rng)
		mutate(t, src, rng)
		delay := time.Duration(rng.Int64N(int64(span)))
		c := e.cmd("backup", src, "--tag", "killed")
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- c.Wait() }()
		select {
		case <-time.After(delay):
			_ = c.Process.Signal(syscall.SIGKILL)
			if err := <-done; err != nil {
				killed++
			}
		case <-done: // finished before the kill
		}
		e.checkClean("after SIGKILL at " + delay.String() + " in run " + strconv.Itoa(i))
		if i%5 == 4 || i == runs-1 {
			want := treeDigest(t, src)
			e.must("backup", src, "--tag", "after-kill")
			sns := e.snapshots()
			e.restoreAndCompare(sns[len(sns)-1].ID, src, want)
			e.checkClean("after the backup that followed the kills")
		}
	}
}

func TestKill9Local(t *testing.T) {
	rng := rand.New(rand.NewPCG(seed(t), 1))
	dir := t.TempDir()
	e := newEnv(t, filepath.Join(dir, "repo"))
	e.must("init", "--pack-size", "1")
	killRuns(t, e, 30, filepath.Join(dir, "src"), rng)
}

func TestSigintStopsCleanly(t *testing.T) {
	rng := rand.New(rand.NewPCG(seed(t), 2))
	dir := t.TempDir()
	e := newEnv(t, filepath.Join(dir, "repo"))
	e.must("init", "--pack-size", "1")
	src := filepath.Join(dir, "src")
	makeTree(t, src, rng, 120, 2<<20)
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		before := len(e.snapshots())
		c := e.cmd("backup", src)
		var stderr strings.Builder
		c.Stderr = &stderr
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(700 * time.Millisecond)
		_ = c.Process.Signal(sig)
		err := c.Wait()
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Logf("backup finished before %v arrived (%v); the machine is fast", sig, err)
			continue
		}
		if ee.ExitCode() != 130 {
			t.Fatalf("%v: exit code %d, want 130; stderr: %s", sig, ee.ExitCode(), stderr.String())
		}
		if !strings.Contains(stderr.String(), "interrupted") || strings.Contains(stderr.String(), "goroutine") {
			t.Fatalf("%v: stderr should say interrupted: %s", sig, stderr.String())
		}
		if got := len(e.snapshots()); got != before {
			t.Fatalf("%v: an interrupted backup wrote a snapshot", sig)
		}
		e.checkClean("after " + sig.String())
	}
	want := treeDigest(t, src)
	e.must("backup", src)
	sns := e.snapshots()
	e.restoreAndCompare(sns[len(sns)-1].ID, src, want)
}

func concurrentWriters(t *testing.T, e *env, n int, dir string, rng *rand.Rand) {
	srcs := make([]string, n)
	wants := make([]map[string]string, n)
	for i := range srcs {
		srcs[i] = filepath.Join(dir, "src"+strconv.Itoa(n)+"-"+strconv.Itoa(i))
		makeTree(t, srcs[i], rng, 30, 800<<10)
		// Every writer also has one file in common, to race on dedup.
		if err := os.WriteFile(filepath.Join(srcs[i], "common.bin"), []byte(strings.Repeat("shared content ", 100000)), 0o644); err != nil {
			t.Fatal(err)
		}
		wants[i] = treeDigest(t, srcs[i])
	}
	var wg sync.WaitGroup
	results := make([]result, n)
	for i := range srcs {
		wg.Go(func() { results[i] = e.run("backup", srcs[i], "--host", "writer"+strconv.Itoa(i)) })
	}
	wg.Wait()
	for i, r := range results {
		if r.code != 0 {
			t.Fatalf("writer %d of %d: exit %d: %s", i, n, r.code, r.stderr)
		}
	}
	e.checkClean("after " + strconv.Itoa(n) + " concurrent writers")
	sns := e.snapshots()
	for i, src := range srcs {
		found := false
		for _, sn := range sns {
			if len(sn.Paths) == 1 && sn.Paths[0] == src {
				e.restoreAndCompare(sn.ID, src, wants[i])
				found = true
			}
		}
		if !found {
			t.Fatalf("no snapshot of %s", src)
		}
	}
}

func TestConcurrentWritersLocal(t *testing.T) {
	rng := rand.New(rand.NewPCG(seed(t), 3))
	dir := t.TempDir()
	e := newEnv(t, filepath.Join(dir, "repo"))
	e.must("init", "--pack-size", "1")
	concurrentWriters(t, e, 2, dir, rng)
	concurrentWriters(t, e, 4, dir, rng)
}

// TestPruneDuringBackups runs backups (forgetting old snapshots) and
// prunes side by side, then restores every remaining snapshot.
func TestPruneDuringBackups(t *testing.T) {
	rng := rand.New(rand.NewPCG(seed(t), 4))
	dir := t.TempDir()
	repoDir := filepath.Join(dir, "repo")
	e := newEnv(t, repoDir)
	e.must("init", "--pack-size", "1")
	src := filepath.Join(dir, "src")
	makeTree(t, src, rng, 40, 500<<10)

	const grace = "10s" // far longer than one backup here, even on a loaded machine
	deadline := time.Now().Add(25 * time.Second)
	var mu sync.Mutex
	wants := map[string]map[string]string{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var pruneErr error
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Duration(300+rng.IntN(700)) * time.Millisecond):
			}
			r := e.run("prune", "--grace", grace)
			if r.code != 0 {
				mu.Lock()
				pruneErr = &pruneFailure{r}
				mu.Unlock()
				return
			}
		}
	})
	backups := 0
	for time.Now().Before(deadline) {
		mutate(t, src, rng)
		want := treeDigest(t, src)
		e.must("backup", src)
		backups++
		sns := e.snapshots()
		mu.Lock()
		wants[sns[len(sns)-1].ID] = want
		mu.Unlock()
		// Keep the two newest snapshots, like a tight retention policy.
		for len(sns) > 2 {
			if err := os.Remove(filepath.Join(repoDir, "snapshots", sns[0].ID)); err != nil {
				t.Fatal(err)
			}
			sns = sns[1:]
		}
	}
	close(stop)
	wg.Wait()
	if pruneErr != nil {
		t.Fatal(pruneErr)
	}
	t.Logf("%d backups ran while prune ran in a loop", backups)
	e.checkClean("after prune raced backups")
	for _, sn := range e.snapshots() {
		e.restoreAndCompare(sn.ID, src, wants[sn.ID])
	}
	// Everything forgotten is eventually freed, and what is kept survives.
	e.must("prune", "--grace", "0s")
	e.checkClean("after the final prune")
	for _, sn := range e.snapshots() {
		e.restoreAndCompare(sn.ID, src, wants[sn.ID])
	}
}

type pruneFailure struct{ r result }

func (p *pruneFailure) Error() string {
	return "prune failed: exit " + strconv.Itoa(p.r.code) + ": " + p.r.stderr
}

func TestDiskFullLocal(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("the disk-full test mounts a tmpfs and needs root; CI runs as root")
		}
		t.Skip("needs root to mount a small tmpfs")
	}
	rng := rand.New(rand.NewPCG(seed(t), 5))
	dir := t.TempDir()
	repoDir := filepath.Join(dir, "repo")
	if err := os.MkdirAll(repoDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", repoDir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", repoDir).Run() })
	e := newEnv(t, repoDir)
	e.must("init", "--pack-size", "1")
	src := filepath.Join(dir, "src")
	makeTree(t, src, rng, 30, 1<<20) // ~15 MB of random data: does not fit
	r := e.run("backup", src)
	if r.code != 1 || !strings.Contains(r.stderr, "no space left") || strings.Contains(r.stderr, "goroutine") {
		t.Fatalf("backup into a full disk: exit %d, stderr %q", r.code, r.stderr)
	}
	if n := len(e.snapshots()); n != 0 {
		t.Fatalf("a failed backup left %d snapshots", n)
	}
	e.checkClean("after disk full")
	if out, err := exec.Command("mount", "-o", "remount,size=200m", repoDir).CombinedOutput(); err != nil {
		t.Fatalf("remount: %v: %s", err, out)
	}
	want := treeDigest(t, src)
	e.must("backup", src)
	sns := e.snapshots()
	e.restoreAndCompare(sns[len(sns)-1].ID, src, want)
	e.checkClean("after space was freed")
}
