package s3_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/cairn-backup/cairn/repo/backend"
	"github.com/cairn-backup/cairn/repo/backend/backendtest"
	"github.com/cairn-backup/cairn/repo/backend/s3"
	"github.com/cairn-backup/cairn/repo/backend/s3/s3test"
)

func TestMain(m *testing.M) { os.Exit(s3test.RunShared(m)) }

var bucketSeq atomic.Int64

// newBucketName returns a bucket name no other test uses.
func newBucketName(tag string) string {
	return fmt.Sprintf("cairn-%s-%d-%d", tag, os.Getpid(), bucketSeq.Add(1))
}

// fastRetries keeps retry waits short in tests.
func fastRetries(c s3.Config) s3.Config {
	c.RetryDelay = 5 * time.Millisecond
	c.MaxRetryDelay = 100 * time.Millisecond
	c.MaxRetryTime = 30 * time.Second
	c.StallTimeout = 10 * time.Second
	return c
}

func configFor(srv *s3test.Server, endpoint, bucket, prefix string) s3.Config {
	return fastRetries(s3.Config{
		Endpoint: endpoint, Bucket: bucket, Prefix: prefix,
		AccessKeyID: srv.User, SecretAccessKey: srv.Password,
	})
}

func open(t testing.TB, cfg s3.Config) *s3.Backend {
	t.Helper()
	be, err := s3.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { be.Close() })
	return be
}

// seed returns CAIRN_FAULT_SEED or a fresh seed, and logs it.
func seed(t testing.TB) uint64 {
	t.Helper()
	if s := os.Getenv("CAIRN_FAULT_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("CAIRN_FAULT_SEED: %v", err)
		}
		t.Logf("fault seed %d (from CAIRN_FAULT_SEED)", v)
		return v
	}
	v := uint64(time.Now().UnixNano())
	t.Logf("fault seed %d (rerun with CAIRN_FAULT_SEED=%d)", v, v)
	return v
}

func TestParse(t *testing.T) {
	t.Setenv("AWS_ACCESS_KEY_ID", "AKID")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "SECRET")
	t.Setenv("AWS_SESSION_TOKEN", "")
	t.Setenv("AWS_DEFAULT_REGION", "eu-west-1")
	t.Setenv("CAIRN_S3_CA_FILE", "/etc/ca.pem")
	good := []struct {
		in       string
		endpoint string
		secure   bool
		bucket   string
		prefix   string
		location string
	}{
		{"s3:http://127.0.0.1:9000/bkt", "127.0.0.1:9000", false, "bkt", "", "s3:http://127.0.0.1:9000/bkt"},
		{"s3:https://minio.example.com/bkt/a/b/", "minio.example.com", true, "bkt", "a/b", "s3:https://minio.example.com/bkt/a/b"},
		{"s3:s3.amazonaws.com/bkt/prefix", "s3.amazonaws.com", true, "bkt", "prefix", "s3:https://s3.amazonaws.com/bkt/prefix"},
		{"s3:host:8443/my.bucket", "host:8443", true, "my.bucket", "", "s3:https://host:8443/my.bucket"},
		{"http://[::1]:9000/bkt/p", "[::1]:9000", false, "bkt", "p", "s3:http://[::1]:9000/bkt/p"},
	}
	for _, g := range good {
		c, err := s3.Parse(g.in)
		if err != nil {
			t.Errorf("Parse(%q): %v", g.in, err)
			continue
		}
		if c.Endpoint != g.endpoint || c.Secure != g.secure || c.Bucket != g.bucket || c.Prefix != g.prefix {
			t.Errorf("Parse(%q) = %+v", g.in, c)
		}
		if c.Location() != g.location {
			t.Errorf("Parse(%q).Location() = %q, want %q", g.in, c.Location(), g.location)
		}
		if c.AccessKeyID != "AKID" || c.SecretAccessKey != "SECRET" || c.Region != "eu-west-1" || c.CAFile != "/etc/ca.pem" {
			t.Errorf("Parse(%q) did not take the environment: %+v", g.in, c)
		}
	}
	for _, bad := range []string{
		"s3:", "s3:http://", "s3:http://host", "s3:http://host/", "s3:ftp://host/b",
		"s3:http://host:99999/bkt", "s3:http://host/ab", "s3:http://host/bad_name!", "s3:http://host/bkt/a//c", "s3:http://host/bkt/../c",
	} {
		if c, err := s3.Parse(bad); err == nil {
			t.Errorf("Parse(%q) = %+v, want an error", bad, c)
		} else if strings.Contains(err.Error(), "\n") {
			t.Errorf("Parse(%q): multi-line error %q", bad, err)
		}
	}
}

func TestConformance(t *testing.T) {
	srv := s3test.Shared(t)
	// A new bucket per subtest, without prefix: Create makes it.
	backendtest.RunWithOptions(t, backendtest.Options{ManyObjects: 1100, Workers: 16}, func(t *testing.T) backend.Backend {
		cfg := configFor(srv, srv.Endpoint, newBucketName("conf"), "")
		cfg.Region = "us-east-1"
		return open(t, cfg)
	})
}

func TestConformanceWithFaults(t *testing.T) {
	srv := s3test.Shared(t)
	proxy := s3test.NewFaultProxy(srv.Endpoint, s3test.FaultConfig{Seed: seed(t), Rate: 0.1, MaxDelay: 50 * time.Millisecond})
	t.Cleanup(proxy.Close)
	bucket := newBucketName("faults")
	var retries atomic.Int64
	var n atomic.Int64
	// One bucket, a new prefix per subtest; the region is left to discovery.
	backendtest.RunWithOptions(t, backendtest.Options{ManyObjects: 1100, Workers: 16}, func(t *testing.T) backend.Backend {
		cfg := configFor(srv, proxy.Endpoint, bucket, fmt.Sprintf("repo/%d", n.Add(1)))
		cfg.OnRetry = func(string, int, error, time.Duration) { retries.Add(1) }
		return open(t, cfg)
	})
	t.Logf("proxy: %s; %d retries", proxy.Stats(), retries.Load())
	if retries.Load() == 0 {
		t.Error("no retries: the proxy injected no faults?")
	}
}

// rawKeys lists every key in bucket directly.
func rawKeys(t *testing.T, srv *s3test.Server, bucket string) []string {
	t.Helper()
	c, err := minio.New(srv.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(srv.User, srv.Password, "")})
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for obj := range c.ListObjectsIter(context.Background(), bucket, minio.ListObjectsOptions{Recursive: true}) {
		if obj.Err != nil {
			t.Fatal(obj.Err)
		}
		keys = append(keys, obj.Key)
	}
	sort.Strings(keys)
	return keys
}

func TestKeyLayout(t *testing.T) {
	srv := s3test.Shared(t)
	ctx := context.Background()
	for _, prefix := range []string{"", "some/prefix"} {
		bucket := newBucketName("layout")
		be := open(t, configFor(srv, srv.Endpoint, bucket, prefix))
		if err := be.Create(ctx); err != nil {
			t.Fatal(err)
		}
		if err := be.Create(ctx); err != nil {
			t.Fatalf("create on an existing bucket: %v", err)
		}
		name := strings.Repeat("ab", 32)
		var want []string
		for _, typ := range backend.AllTypes() {
			h := backend.Handle{Type: typ, Name: name}
			k := string(typ) + "/" + name
			switch typ {
			case backend.Config:
				h.Name, k = "", "config"
			case backend.DataPack, backend.TreePack:
				k = string(typ) + "/ab/" + name
			}
			if prefix != "" {
				k = prefix + "/" + k
			}
			want = append(want, k)
			if err := be.Save(ctx, h, []byte(k)); err != nil {
				t.Fatal(err)
			}
		}
		sort.Strings(want)
		got := rawKeys(t, srv, bucket)
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("prefix %q: keys\n%v\nwant\n%v", prefix, got, want)
		}
		wantLoc := "s3:http://" + srv.Endpoint + "/" + bucket
		if prefix != "" {
			wantLoc += "/" + prefix
		}
		if be.Location() != wantLoc {
			t.Errorf("Location() = %q, want %q", be.Location(), wantLoc)
		}
	}
}

// TestConditionalWrite checks that saves are conditional (If-None-Match: *)
// and that an existing object answers 412, which counts as success.
func TestConditionalWrite(t *testing.T) {
	srv := s3test.Shared(t)
	proxy := s3test.NewFaultProxy(srv.Endpoint, s3test.FaultConfig{})
	t.Cleanup(proxy.Close)
	var puts, conditional atomic.Int64
	proxy.Intercept = func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/data/") {
			puts.Add(1)
			if r.Header.Get("If-None-Match") == "*" {
				conditional.Add(1)
			}
		}
		return false
	}
	cfg := configFor(srv, proxy.Endpoint, newBucketName("cond"), "")
	var retries atomic.Int64
	cfg.OnRetry = func(op string, n int, err error, d time.Duration) { retries.Add(1) }
	be := open(t, cfg)
	ctx := context.Background()
	if err := be.Create(ctx); err != nil {
		t.Fatal(err)
	}
	data := backendtest.Random(t, 1000)
	h := backend.Handle{Type: backend.DataPack, Name: backendtest.NameOf(data)}
	for i := 0; i < 3; i++ {
		if err := be.Save(ctx, h, data); err != nil {
			t.Fatal(err)
		}
	}
	if puts.Load() != 3 || conditional.Load() != 3 {
		t.Errorf("%d PUTs, %d conditional; want 3 and 3", puts.Load(), conditional.Load())
	}
	if retries.Load() != 0 {
		t.Errorf("%d retries; an existing object must count as saved at once", retries.Load())
	}
}

// TestConditionalFallback: a server answering conditional PUTs with 501
// gets plain PUTs (after a HEAD) from then on; objects stay write-once.
func TestConditionalFallback(t *testing.T) {
	srv := s3test.Shared(t)
	proxy := s3test.NewFaultProxy(srv.Endpoint, s3test.FaultConfig{})
	t.Cleanup(proxy.Close)
	var notImplemented, plain atomic.Int64
	proxy.Intercept = func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodPut || !strings.Contains(r.URL.Path, "/keys/") {
			return false
		}
		if r.Header.Get("If-None-Match") != "" {
			notImplemented.Add(1)
			s3test.WriteError(w, http.StatusNotImplemented, "NotImplemented", "A header you provided implies functionality that is not implemented.")
			return true
		}
		plain.Add(1)
		return false
	}
	be := open(t, configFor(srv, proxy.Endpoint, newBucketName("fallback"), "p"))
	ctx := context.Background()
	if err := be.Create(ctx); err != nil {
		t.Fatal(err)
	}
	var handles []backend.Handle
	var datas [][]byte
	for i := 0; i < 5; i++ {
		d := backendtest.Random(t, 100+i)
		h := backend.Handle{Type: backend.Key, Name: backendtest.NameOf(d)}
		if err := be.Save(ctx, h, d); err != nil {
			t.Fatal(err)
		}
		handles, datas = append(handles, h), append(datas, d)
	}
	if notImplemented.Load() != 1 {
		t.Errorf("%d conditional PUTs answered 501; after the first the backend must stop sending them", notImplemented.Load())
	}
	if plain.Load() != 5 {
		t.Errorf("%d plain PUTs, want 5", plain.Load())
	}
	// Write-once without conditional PUTs: the existing object is kept.
	if err := be.Save(ctx, handles[0], []byte("other")); err != nil {
		t.Fatal(err)
	}
	if plain.Load() != 5 {
		t.Errorf("saving an existing object uploaded it again")
	}
	for i, h := range handles {
		got, err := be.Load(ctx, h, 0, 0)
		if err != nil || !bytes.Equal(got, datas[i]) {
			t.Fatalf("load %v: %v (equal %v)", h, err, bytes.Equal(got, datas[i]))
		}
	}
}

func oneLine(t *testing.T, err error) string {
	t.Helper()
	if err == nil {
		t.Fatal("no error")
	}
	msg := err.Error()
	if strings.Contains(msg, "\n") {
		t.Errorf("multi-line error: %q", msg)
	}
	return msg
}

func TestPermanentErrors(t *testing.T) {
	srv := s3test.Shared(t)
	ctx := context.Background()
	bucket := newBucketName("perm")
	good := open(t, configFor(srv, srv.Endpoint, bucket, ""))
	if err := good.Create(ctx); err != nil {
		t.Fatal(err)
	}
	h := backend.Handle{Type: backend.Key, Name: "00ff"}
	var retries atomic.Int64
	onRetry := func(op string, n int, err error, d time.Duration) {
		retries.Add(1)
		t.Logf("retry %s #%d: %v", op, n, err)
	}

	cases := []struct {
		name string
		cfg  func(c *s3.Config)
		want string
	}{
		{"wrong secret", func(c *s3.Config) { c.SecretAccessKey = "wrong-secret" }, `s3 bucket "` + bucket + `": save keys/00ff: signature does not match (check AWS_SECRET_ACCESS_KEY)`},
		{"unknown key", func(c *s3.Config) { c.AccessKeyID = "nobody" }, `s3 bucket "` + bucket + `": save keys/00ff: unknown access key (check AWS_ACCESS_KEY_ID)`},
		{"anonymous", func(c *s3.Config) { c.AccessKeyID, c.SecretAccessKey = "", "" }, `s3 bucket "` + bucket + `": save keys/00ff: access denied (check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)`},
		{"no bucket", func(c *s3.Config) { c.Bucket = "cairn-missing-bucket" }, `s3 bucket "cairn-missing-bucket": save keys/00ff: the bucket does not exist (create it with 'cairn init')`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			retries.Store(0)
			cfg := configFor(srv, srv.Endpoint, bucket, "")
			cfg.RetryDelay = time.Second // a retry would show in the time taken
			cfg.OnRetry = onRetry
			c.cfg(&cfg)
			be := open(t, cfg)
			start := time.Now()
			err := be.Save(ctx, h, []byte("x"))
			if msg := oneLine(t, err); msg != c.want {
				t.Errorf("error %q\nwant     %q", msg, c.want)
			}
			if retries.Load() != 0 || time.Since(start) > 2*time.Second {
				t.Errorf("a permanent error was retried (%d retries, %v)", retries.Load(), time.Since(start))
			}
		})
	}

	// A missing bucket reads as a missing repository; listing it is empty.
	missing := open(t, configFor(srv, srv.Endpoint, "cairn-missing-bucket", "x"))
	if _, err := missing.Stat(ctx, backend.Handle{Type: backend.Config}); !errors.Is(err, backend.ErrNotFound) {
		t.Errorf("stat config in a missing bucket: %v, want ErrNotFound", err)
	}
	if _, err := missing.Load(ctx, backend.Handle{Type: backend.Config}, 0, 0); !errors.Is(err, backend.ErrNotFound) {
		t.Errorf("load config from a missing bucket: %v, want ErrNotFound", err)
	}
	if err := missing.List(ctx, backend.Key, func(backend.FileInfo) error { return errors.New("listed") }); err != nil {
		t.Errorf("list a missing bucket: %v", err)
	}
	if err := missing.Remove(ctx, h); err != nil {
		t.Errorf("remove from a missing bucket: %v", err)
	}
}

func TestUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	cfg := s3.Config{Endpoint: addr, Bucket: "bkt", AccessKeyID: "a", SecretAccessKey: "b",
		RetryDelay: 50 * time.Millisecond, MaxRetryTime: time.Second}
	be := open(t, cfg)
	start := time.Now()
	_, err = be.Stat(context.Background(), backend.Handle{Type: backend.Config})
	took := time.Since(start)
	msg := oneLine(t, err)
	t.Logf("%v after %v", msg, took)
	if !strings.HasPrefix(msg, `s3 bucket "bkt": stat config: gave up after `) || !strings.Contains(msg, "connection refused") {
		t.Errorf("unexpected message %q", msg)
	}
	if errors.Is(err, backend.ErrNotFound) {
		t.Error("an unreachable server reads as a missing object")
	}
	if took > 3*time.Second {
		t.Errorf("gave up after %v with a 1s bound", took)
	}

	// https to a plain-HTTP server: a permanent error.
	srv := s3test.Shared(t)
	cfg = configFor(srv, srv.Endpoint, "bkt", "")
	cfg.Secure = true
	cfg.RetryDelay = time.Second
	start = time.Now()
	_, err = open(t, cfg).Stat(context.Background(), backend.Handle{Type: backend.Config})
	t.Logf("%v", oneLine(t, err))
	if time.Since(start) > 2*time.Second {
		t.Errorf("a TLS mismatch was retried for %v", time.Since(start))
	}
}

// TestCancelStopsRetries: cancellation ends a retry loop at once.
func TestCancelStopsRetries(t *testing.T) {
	srv := s3test.Shared(t)
	proxy := s3test.NewFaultProxy(srv.Endpoint, s3test.FaultConfig{})
	t.Cleanup(proxy.Close)
	proxy.Intercept = func(w http.ResponseWriter, r *http.Request) bool {
		s3test.WriteError(w, http.StatusServiceUnavailable, "SlowDown", "Please reduce your request rate.")
		return true
	}
	cfg := configFor(srv, proxy.Endpoint, "bkt", "")
	cfg.RetryDelay, cfg.MaxRetryDelay = 2*time.Second, 10*time.Second
	be := open(t, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(300*time.Millisecond, cancel)
	start := time.Now()
	_, err := be.Load(ctx, backend.Handle{Type: backend.Index, Name: "abcd"}, 0, 0)
	took := time.Since(start)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("load: %v, want context.Canceled", err)
	}
	oneLine(t, err)
	if took > time.Second {
		t.Errorf("canceled after 300ms, returned after %v", took)
	}
}

// TestStall: an attempt during which nothing moves is abandoned after
// StallTimeout and retried; a caller's deadline ends everything.
func TestStall(t *testing.T) {
	srv := s3test.Shared(t)
	ctx := context.Background()
	proxy := s3test.NewFaultProxy(srv.Endpoint, s3test.FaultConfig{})
	t.Cleanup(proxy.Close)
	var hang atomic.Int64 // requests left to hang
	proxy.Intercept = func(w http.ResponseWriter, r *http.Request) bool {
		if hang.Add(-1) < 0 {
			return false
		}
		<-r.Context().Done()
		return true
	}
	cfg := configFor(srv, proxy.Endpoint, newBucketName("stall"), "")
	cfg.StallTimeout = 300 * time.Millisecond
	be := open(t, cfg)
	if err := be.Create(ctx); err != nil {
		t.Fatal(err)
	}
	data := backendtest.Random(t, 3<<20)
	h := backend.Handle{Type: backend.DataPack, Name: backendtest.NameOf(data)}
	if err := be.Save(ctx, h, data); err != nil {
		t.Fatal(err)
	}
	hang.Store(2)
	start := time.Now()
	got, err := be.Load(ctx, h, 0, 0)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("load after two stalled attempts: %v", err)
	}
	t.Logf("load after two stalls took %v", time.Since(start))

	hang.Store(1 << 30)
	dctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	start = time.Now()
	_, err = be.Load(dctx, h, 0, 0)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("load past the deadline: %v", err)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("deadline 200ms, returned after %v", took)
	}
	hang.Store(0)
}

// TestTruncatedBodies: loads cut short resume where they stopped.
func TestTruncatedBodies(t *testing.T) {
	srv := s3test.Shared(t)
	ctx := context.Background()
	proxy := s3test.NewFaultProxy(srv.Endpoint, s3test.FaultConfig{Seed: seed(t), Faults: []s3test.Fault{s3test.FaultTruncate}})
	t.Cleanup(proxy.Close)
	var mu sync.Mutex
	var ranges []string
	proxy.Intercept = func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/data/") {
			mu.Lock()
			ranges = append(ranges, r.Header.Get("Range"))
			mu.Unlock()
		}
		return false
	}
	be := open(t, configFor(srv, proxy.Endpoint, newBucketName("trunc"), ""))
	if err := be.Create(ctx); err != nil {
		t.Fatal(err)
	}
	data := backendtest.Random(t, 4<<20)
	h := backend.Handle{Type: backend.DataPack, Name: backendtest.NameOf(data)}
	if err := be.Save(ctx, h, data); err != nil {
		t.Fatal(err)
	}
	// Each load may take 8 attempts; at a quarter of responses cut short,
	// eight in a row happen about once in 65,000 loads.
	proxy.SetRate(0.25)
	cases := []struct{ off, n int64 }{{0, 0}, {1000, 0}, {12345, 1 << 20}, {0, 4 << 20}}
	for i := 0; i < 3; i++ {
		cases = append(cases, cases...)
	}
	for _, c := range cases {
		mu.Lock()
		ranges = nil
		mu.Unlock()
		got, err := be.Load(ctx, h, c.off, c.n)
		want := data[c.off:]
		if c.n > 0 {
			want = want[:c.n]
		}
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("load %d+%d: %v", c.off, c.n, err)
		}
		mu.Lock()
		t.Logf("load %d+%d: ranges %q", c.off, c.n, ranges)
		mu.Unlock()
	}
	t.Logf("proxy: %s", proxy.Stats())
	if proxy.Count(s3test.FaultTruncate) == 0 {
		t.Error("no body was truncated")
	}
}

// TestListResumes: a listing whose next page fails goes on after the last
// key seen, so every object is listed exactly once.
func TestListResumes(t *testing.T) {
	srv := s3test.Shared(t)
	ctx := context.Background()
	bucket := newBucketName("list")
	direct := open(t, configFor(srv, srv.Endpoint, bucket, "r"))
	if err := direct.Create(ctx); err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for w := 0; w < 16; w++ {
		wg.Go(func() {
			for i := 0; i < 1100/16+1; i++ {
				d := backendtest.Random(t, 10)
				name := backendtest.NameOf(d)
				if err := direct.Save(ctx, backend.Handle{Type: backend.Snapshot, Name: name}, d); err != nil {
					errs <- err
					return
				}
				mu.Lock()
				want[name] = true
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	proxy := s3test.NewFaultProxy(srv.Endpoint, s3test.FaultConfig{})
	t.Cleanup(proxy.Close)
	var failed atomic.Bool
	var resumed atomic.Value
	proxy.Intercept = func(w http.ResponseWriter, r *http.Request) bool {
		q := r.URL.Query()
		if q.Get("list-type") == "" {
			return false
		}
		if q.Get("continuation-token") != "" && !failed.Swap(true) {
			s3test.WriteError(w, http.StatusInternalServerError, "InternalError", "injected")
			return true
		}
		if failed.Load() && q.Get("start-after") != "" {
			resumed.Store(q.Get("start-after"))
		}
		return false
	}
	be := open(t, configFor(srv, proxy.Endpoint, bucket, "r"))
	got := map[string]int{}
	err := be.List(ctx, backend.Snapshot, func(fi backend.FileInfo) error {
		got[fi.Name]++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !failed.Load() {
		t.Fatal("the listing had no second page")
	}
	if s, _ := resumed.Load().(string); s == "" {
		t.Error("the failed page was not fetched again with start-after")
	} else {
		t.Logf("resumed after %s", s)
	}
	if len(got) != len(want) {
		t.Errorf("listed %d objects, want %d", len(got), len(want))
	}
	for name, n := range got {
		if n != 1 || !want[name] {
			t.Errorf("%s listed %d times (known: %v)", name, n, want[name])
		}
	}
}

// TestPlainOverNetwork: plain HTTP is warned about unless the server is
// this machine.
func TestPlainOverNetwork(t *testing.T) {
	for loc, want := range map[string]bool{
		"s3:http://127.0.0.1:9000/bkt":       false,
		"s3:http://localhost:9000/bkt":       false,
		"s3:http://[::1]:9000/bkt":           false,
		"s3:http://minio.internal:9000/bkt":  true,
		"s3:http://192.0.2.10/bkt":           true,
		"s3:https://minio.internal:9000/bkt": false,
		"s3:s3.amazonaws.com/bkt":            false,
	} {
		cfg, err := s3.Parse(loc)
		if err != nil {
			t.Fatal(err)
		}
		if got := cfg.PlainOverNetwork(); got != want {
			t.Errorf("%s: plain over the network %v, want %v", loc, got, want)
		}
	}
}

// TestReplace: Replace overwrites the config (a format migration), which
// the write-once conditional PUT of Save would keep as it is.
func TestReplace(t *testing.T) {
	srv := s3test.Shared(t)
	be := open(t, configFor(srv, srv.Endpoint, newBucketName("replace"), "p"))
	ctx := context.Background()
	if err := be.Create(ctx); err != nil {
		t.Fatal(err)
	}
	h := backend.Handle{Type: backend.Config}
	for _, body := range []string{"old config", "new config"} {
		if err := be.Replace(ctx, h, []byte(body)); err != nil {
			t.Fatal(err)
		}
		got, err := be.Load(ctx, h, 0, 0)
		if err != nil || string(got) != body {
			t.Fatalf("after Replace with %q the config holds %q (%v)", body, got, err)
		}
	}
}

// TestListAhead: a listing started ahead serves the first List of its type
// without another request; later Lists ask the server again; a write of
// the type through the same backend drops the listing so that the writer
// sees what it wrote; Close stops a listing nobody asked for.
func TestListAhead(t *testing.T) {
	srv := s3test.Shared(t)
	ctx := context.Background()
	bucket := newBucketName("ahead")
	direct := open(t, configFor(srv, srv.Endpoint, bucket, "r"))
	if err := direct.Create(ctx); err != nil {
		t.Fatal(err)
	}
	want := map[backend.FileType][]string{}
	for _, ft := range []backend.FileType{backend.Snapshot, backend.Snapshot, backend.Snapshot, backend.Index, backend.Index} {
		d := backendtest.Random(t, 10)
		name := backendtest.NameOf(d)
		if err := direct.Save(ctx, backend.Handle{Type: ft, Name: name}, d); err != nil {
			t.Fatal(err)
		}
		want[ft] = append(want[ft], name)
	}
	proxy := s3test.NewFaultProxy(srv.Endpoint, s3test.FaultConfig{})
	t.Cleanup(proxy.Close)
	var lists atomic.Int64
	proxy.Intercept = func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Query().Get("list-type") != "" {
			lists.Add(1)
		}
		return false
	}
	be := open(t, configFor(srv, proxy.Endpoint, bucket, "r"))
	list := func(ft backend.FileType) []string {
		t.Helper()
		var names []string
		if err := be.List(ctx, ft, func(fi backend.FileInfo) error {
			names = append(names, fi.Name)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		slices.Sort(names)
		return names
	}
	for _, names := range want {
		slices.Sort(names)
	}

	be.ListAhead(ctx, backend.Snapshot, backend.Index)
	deadline := time.Now().Add(10 * time.Second)
	for lists.Load() < 2 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if n := lists.Load(); n != 2 {
		t.Fatalf("%d listings started ahead, want 2", n)
	}
	if got := list(backend.Snapshot); !slices.Equal(got, want[backend.Snapshot]) {
		t.Errorf("listed ahead %v, want %v", got, want[backend.Snapshot])
	}
	if n := lists.Load(); n != 2 {
		t.Errorf("the first List asked the server again: %d listings", n)
	}
	if got := list(backend.Snapshot); !slices.Equal(got, want[backend.Snapshot]) || lists.Load() != 3 {
		t.Errorf("second List: %v after %d listings, want %v after 3", got, lists.Load(), want[backend.Snapshot])
	}

	// The index listing ahead is older than this write: it is dropped.
	d := backendtest.Random(t, 10)
	if err := be.Save(ctx, backend.Handle{Type: backend.Index, Name: backendtest.NameOf(d)}, d); err != nil {
		t.Fatal(err)
	}
	want[backend.Index] = append(want[backend.Index], backendtest.NameOf(d))
	slices.Sort(want[backend.Index])
	if got := list(backend.Index); !slices.Equal(got, want[backend.Index]) || lists.Load() != 4 {
		t.Errorf("List after a write: %v after %d listings, want %v after 4", got, lists.Load(), want[backend.Index])
	}

	// A listing nobody takes ends with Close.
	be.ListAhead(ctx, backend.Key)
	done := make(chan struct{})
	go func() { be.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close hangs on a listing started ahead")
	}
}
