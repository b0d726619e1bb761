package s3_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/archiver"
	"github.com/cairn-backup/cairn/chunk"
	"github.com/cairn-backup/cairn/crypto"
	"github.com/cairn-backup/cairn/internal/checker"
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/repo/backend"
	"github.com/cairn-backup/cairn/repo/backend/s3"
	"github.com/cairn-backup/cairn/repo/backend/s3/s3test"
	"github.com/cairn-backup/cairn/restorer"
)

// testKDF keeps key derivation cheap; these tests are not about passwords.
var testKDF = crypto.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}

const password = "secret"

// words make compressible text that does not deduplicate.
var words = strings.Fields("the quick brown fox jumps over a lazy dog while backup tools chunk encrypt and store every byte of postgres dumps redis snapshots and static files in packs")

// fillCompressible writes n bytes of random word soup from rng.
func fillCompressible(w io.Writer, rng *rand.Rand, n int64) error {
	var buf bytes.Buffer
	for n > 0 {
		buf.Reset()
		for buf.Len() < 64<<10 {
			buf.WriteString(words[rng.IntN(len(words))])
			if rng.IntN(12) == 0 {
				fmt.Fprintf(&buf, " %d\n", rng.Uint32())
			} else {
				buf.WriteByte(' ')
			}
		}
		b := buf.Bytes()
		if int64(len(b)) > n {
			b = b[:n]
		}
		if _, err := w.Write(b); err != nil {
			return err
		}
		n -= int64(len(b))
	}
	return nil
}

// fillRandom writes n incompressible bytes from rng.
func fillRandom(w io.Writer, rng *rand.Rand, n int64) error {
	buf := make([]byte, 64<<10)
	for n > 0 {
		for i := 0; i+8 <= len(buf); i += 8 {
			v := rng.Uint64()
			for j := 0; j < 8; j++ {
				buf[i+j] = byte(v >> (8 * j))
			}
		}
		b := buf
		if int64(len(b)) > n {
			b = b[:n]
		}
		if _, err := w.Write(b); err != nil {
			return err
		}
		n -= int64(len(b))
	}
	return nil
}

// makeTree writes files of about total bytes below dir: half random, half
// compressible, in a few subdirectories, with a few small and empty files.
func makeTree(t testing.TB, dir string, seed uint64, total int64, fileSize int64) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 1))
	var written int64
	for i := 0; written < total; i++ {
		sub := filepath.Join(dir, fmt.Sprintf("d%d", i%3))
		if err := os.MkdirAll(sub, 0o755); err != nil {
			t.Fatal(err)
		}
		size := fileSize/2 + rng.Int64N(fileSize)
		size = min(size, total-written)
		f, err := os.Create(filepath.Join(sub, fmt.Sprintf("f%03d", i)))
		if err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			err = fillRandom(f, rng, size)
		} else {
			err = fillCompressible(f, rng, size)
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			t.Fatal(err)
		}
		written += size
	}
	for i, s := range []string{"", "x", "small file\n"} {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("s%d", i)), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// sameTree compares regular files below a and b.
func sameTree(t testing.TB, a, b string) {
	t.Helper()
	n := 0
	err := filepath.WalkDir(a, func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		rel, _ := filepath.Rel(a, p)
		want, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		got, err := os.ReadFile(filepath.Join(b, rel))
		if err != nil {
			return err
		}
		if !bytes.Equal(got, want) {
			return fmt.Errorf("%s differs after restore (%d bytes, want %d)", rel, len(got), len(want))
		}
		n++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Fatal("no files compared")
	}
}

// backup runs one backup of dir: archiver, flush, snapshot.
func backup(ctx context.Context, r *repo.Repository, dir string) (*repo.Snapshot, error) {
	res, err := archiver.Run(ctx, r, []string{dir}, nil, archiver.Options{})
	if err != nil {
		return nil, err
	}
	if err := r.Flush(ctx); err != nil {
		return nil, err
	}
	sn := &repo.Snapshot{Time: time.Now(), Tree: res.Tree, Paths: []string{dir}, Hostname: "test", Summary: &res.Summary}
	if _, err := r.SaveSnapshot(ctx, sn); err != nil {
		return nil, err
	}
	return sn, nil
}

// verify opens the repository through be (no faults), checks every byte
// and restores every snapshot, comparing it with src. It returns the
// number of snapshots.
func verify(t *testing.T, be backend.Backend, src string) int {
	t.Helper()
	ctx := context.Background()
	r, err := repo.Open(ctx, be, password, repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	res, err := checker.Check(ctx, r, checker.Options{ReadData: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range res.Findings {
		t.Logf("check: %v", f)
	}
	if res.Errors() != 0 {
		t.Fatalf("check --read-data: %d errors", res.Errors())
	}
	snaps, err := r.ListSnapshots(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, sn := range snaps {
		target := t.TempDir()
		st, err := restorer.Restore(ctx, r, sn.Tree, restorer.Options{Target: target, Warn: func(p string, err error) {
			t.Errorf("restore %s: %s: %v", sn.ID.Short(), p, err)
		}})
		if err != nil || st.Warnings > 0 {
			t.Fatalf("restore %s: %v (%d warnings)", sn.ID.Short(), err, st.Warnings)
		}
		sameTree(t, src, filepath.Join(target, src))
	}
	return len(snaps)
}

// TestBackupWithFaults backs up and restores through the fault proxy. A
// backup either completes, and then every byte checks and restores, or
// fails with a one-line error and leaves no snapshot pointing at missing
// data. The last seeds run at a fault rate high enough that backups
// usually fail, to see that side too.
func TestBackupWithFaults(t *testing.T) {
	srv := s3test.Shared(t)
	src := t.TempDir()
	makeTree(t, src, 1, 12<<20, 600<<10)
	chunking := map[string]chunk.Params{repo.ChunkingFiles: {Min: 64 << 10, Max: 1 << 20, AvgBits: 17}}
	base := seed(t)
	runs := []struct {
		rate     float64
		attempts int
	}{{0.25, 0}, {0.25, 0}, {0.25, 0}, {0.6, 4}, {0.6, 4}}
	for i, run := range runs {
		sd := base + uint64(i)
		t.Run(fmt.Sprintf("rate%.2f-seed%d", run.rate, sd), func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			proxy := s3test.NewFaultProxy(srv.Endpoint, s3test.FaultConfig{Seed: sd, Rate: run.rate, MaxDelay: 50 * time.Millisecond})
			defer proxy.Close()
			bucket := newBucketName("backup")
			var retries atomic.Int64
			cfg := configFor(srv, proxy.Endpoint, bucket, "repo")
			cfg.MaxAttempts = run.attempts
			cfg.OnRetry = func(string, int, error, time.Duration) { retries.Add(1) }
			be := open(t, cfg)
			defer func() { t.Logf("proxy: %s; %d retries", proxy.Stats(), retries.Load()) }()
			r, err := repo.Init(ctx, be, password, repo.Options{KDF: &testKDF, PackSize: 1 << 20, Uploads: 4, Chunking: chunking})
			direct := open(t, configFor(srv, srv.Endpoint, bucket, "repo"))
			if err != nil {
				t.Logf("init failed: %v", oneLine(t, err))
				if _, err := repo.Open(ctx, direct, password, repo.Options{}); err != nil && !errors.Is(err, repo.ErrNoRepository) {
					t.Fatalf("after a failed init: %v", err)
				}
				return
			}
			var sn *repo.Snapshot
			for j := 0; j < 2 && err == nil; j++ { // the second run is incremental
				sn, err = backup(ctx, r, src)
			}
			if err != nil {
				t.Logf("backup failed: %v", oneLine(t, err))
				r.Flush(ctx) // wait for uploads still running
			} else {
				t.Logf("snapshot %s", sn.ID.Short())
				// Restore through the faults as well.
				target := t.TempDir()
				var warnings []string
				_, err := restorer.Restore(ctx, r, sn.Tree, restorer.Options{Target: target, Warn: func(p string, err error) {
					warnings = append(warnings, oneLine(t, err))
				}})
				switch {
				case err != nil || len(warnings) > 0:
					// At a high fault rate with few attempts, a restore may fail;
					// it must say so.
					t.Logf("restore through faults failed: %v; %d warnings %q", err, len(warnings), warnings)
					if run.attempts == 0 {
						t.Error("restore through faults failed")
					}
				default:
					sameTree(t, src, filepath.Join(target, src))
				}
			}
			r.Close()
			n := verify(t, direct, src)
			t.Logf("%d snapshots verified", n)
			if err == nil && n == 0 {
				t.Fatal("the backup succeeded but no snapshot is stored")
			}
		})
	}
}

// TestServerDiesDuringBackup kills MinIO while a large backup uploads: the
// backup must fail within the retry bound instead of hanging.
//
// The input keeps flowing while the backend gives up, so the archiver
// fails while chunks are in flight (it once panicked there). With
// CAIRN_TEST_STALL_INPUT=1 the input stalls at the kill instead.
func TestServerDiesDuringBackup(t *testing.T) {
	t.Parallel() // its own server
	srv := s3test.StartT(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cfg := configFor(srv, srv.Endpoint, newBucketName("dies"), "")
	cfg.RetryDelay, cfg.MaxRetryDelay = 100*time.Millisecond, time.Second
	cfg.MaxRetryTime = 5 * time.Second
	cfg.StallTimeout = 5 * time.Second
	plain := os.Getenv("CAIRN_TEST_STALL_INPUT") != "1"
	be := &watchBackend{Backend: open(t, cfg), failed: make(chan struct{})}
	r, err := repo.Init(ctx, be, password, repo.Options{KDF: &testKDF, PackSize: 4 << 20, Uploads: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()

	// An endless stream of random data; the kill comes once packs flow.
	var read atomic.Int64
	rng := rand.New(rand.NewPCG(7, 7))
	pr, pw := io.Pipe()
	go func() {
		pw.CloseWithError(fillRandom(pw, rng, 1<<40))
	}()
	defer pr.Close()
	in := &stallReader{r: pr, n: &read, release: make(chan struct{})}
	defer in.end(errors.New("input released"))
	done := make(chan error, 1)
	go func() {
		_, err := archiver.Run(ctx, r, nil, []archiver.Stream{{Path: "/big", Reader: in}}, archiver.Options{})
		if err == nil {
			err = r.Flush(ctx)
		}
		done <- err
	}()
	for read.Load() < 40<<20 {
		select {
		case err := <-done:
			t.Fatalf("backup of an endless stream ended: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
	}
	in.stop.Store(!plain)
	srv.Kill()
	killed := time.Now()
	bound := time.After(cfg.MaxRetryTime + 30*time.Second)
	var result error
	if !plain {
		select {
		case <-be.failed:
		case <-bound:
			t.Fatal("the backend did not give up after the server died")
		}
		select {
		case result = <-done: // the archiver failed on its own
			in.end(errors.New("input released"))
		case <-time.After(300 * time.Millisecond):
			in.end(io.EOF) // the last chunk goes in, and fails
			select {
			case result = <-done:
			case <-bound:
				t.Fatal("the backup hangs after the server died")
			}
		}
	} else {
		select {
		case result = <-done:
		case <-bound:
			t.Fatal("the backup hangs after the server died")
		}
	}
	took := time.Since(killed)
	t.Logf("backup failed %v after the kill: %v", took.Round(time.Millisecond), result)
	if result == nil {
		t.Fatal("the backup succeeded without a server")
	}
	oneLine(t, result)
	if !strings.Contains(result.Error(), "gave up after") {
		t.Errorf("the error does not say the retries ran out: %v", result)
	}
	if took > cfg.MaxRetryTime+10*time.Second {
		t.Errorf("the backup failed only %v after the server died (retry bound %v)", took, cfg.MaxRetryTime)
	}
	// Flushing what is left fails too, and as fast.
	start := time.Now()
	if err := r.Flush(ctx); err == nil {
		t.Error("flush without a server succeeded")
	}
	if took := time.Since(start); took > cfg.MaxRetryTime+10*time.Second {
		t.Errorf("flush took %v", took)
	}
}

// watchBackend closes failed when a save fails for the first time.
type watchBackend struct {
	*s3.Backend
	once   sync.Once
	failed chan struct{}
}

func (b *watchBackend) Save(ctx context.Context, h backend.Handle, data []byte) error {
	err := b.Backend.Save(ctx, h, data)
	if err != nil {
		b.once.Do(func() { close(b.failed) })
	}
	return err
}

// stallReader counts what is read; once stop is set, reads wait for end
// and then return its error.
type stallReader struct {
	r       io.Reader
	n       *atomic.Int64
	stop    atomic.Bool
	once    sync.Once
	endErr  error
	release chan struct{}
}

func (s *stallReader) end(err error) {
	s.once.Do(func() {
		s.endErr = err
		close(s.release)
	})
}

func (s *stallReader) Read(b []byte) (int, error) {
	if s.stop.Load() {
		<-s.release
		return 0, s.endErr
	}
	n, err := s.r.Read(b)
	s.n.Add(int64(n))
	return n, err
}

func (b *watchBackend) SaveFile(ctx context.Context, h backend.Handle, f *os.File, size int64) error {
	err := b.Backend.SaveFile(ctx, h, f, size)
	if err != nil {
		b.once.Do(func() { close(b.failed) })
	}
	return err
}
