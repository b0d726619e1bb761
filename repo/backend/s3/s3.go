// Package s3 stores a repository in an S3 bucket (AWS S3, MinIO or any
// S3-compatible store) through minio-go, with write-once uploads and
// bounded retries of transient failures.
package s3

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/minio/minio-go/v7/pkg/s3utils"

	"github.com/cairn-backup/cairn/repo/backend"
)

// Defaults of the retry policy and connection pool.
const (
	DefaultMaxAttempts   = 8
	DefaultMaxRetryTime  = 2 * time.Minute
	DefaultRetryDelay    = 200 * time.Millisecond
	DefaultMaxRetryDelay = 10 * time.Second
	DefaultStallTimeout  = time.Minute
	DefaultConnections   = 16
)

// Config describes a bucket and how to reach it. Parse fills it from a
// repository location and the environment; zero values of the tuning
// fields take the defaults above.
type Config struct {
	// Endpoint is host[:port] of the S3 service.
	Endpoint string
	// Secure selects https (the default when the location has no scheme).
	Secure bool
	Bucket string
	// Prefix is prepended (with a slash) to every object key; may be empty.
	Prefix string
	// Region of the bucket; empty lets the client ask the server.
	Region string

	AccessKeyID, SecretAccessKey, SessionToken string

	// CAFile is a PEM file of extra certificate authorities trusted for TLS.
	CAFile string
	// SendMD5 adds Content-MD5 to uploads, for servers that demand it (AWS
	// buckets with object lock). Without it the server checks the body
	// against the signed SHA-256 alone.
	SendMD5 bool

	// MaxAttempts bounds the attempts of one operation (default 8).
	MaxAttempts int
	// MaxRetryTime bounds the time over which one operation is retried: no
	// new attempt starts later than this after the first (default 2m).
	MaxRetryTime time.Duration
	// RetryDelay is the first backoff delay (default 200ms); it doubles per
	// attempt up to MaxRetryDelay (default 10s), with random jitter.
	RetryDelay, MaxRetryDelay time.Duration
	// StallTimeout aborts (and retries) an attempt during which no byte was
	// sent or received for this long (default 1m).
	StallTimeout time.Duration
	// Connections is the number of idle connections kept to the endpoint
	// (default 16). Concurrency itself is up to the caller.
	Connections int

	// OnRetry, when set, is called before each retry (for logs and tests).
	OnRetry func(op string, attempt int, err error, delay time.Duration)
}

// PlainOverNetwork reports whether the configuration talks plain HTTP to a
// host that is not this machine: request signatures, object names and
// sizes then cross the network unencrypted (the objects themselves are
// encrypted by cairn).
func (c Config) PlainOverNetwork() bool {
	if c.Secure {
		return false
	}
	host := c.Endpoint
	if h, _, err := net.SplitHostPort(c.Endpoint); err == nil {
		host = h
	}
	if strings.EqualFold(host, "localhost") {
		return false
	}
	ip := net.ParseIP(host)
	return ip == nil || !ip.IsLoopback()
}

// Parse reads a location of the form s3:http(s)://host[:port]/bucket[/prefix]
// or s3:host[:port]/bucket[/prefix] (https). The "s3:" prefix is optional.
// Credentials come from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and
// AWS_SESSION_TOKEN, the region from AWS_DEFAULT_REGION (or AWS_REGION),
// and the CA file from CAIRN_S3_CA_FILE; callers may override any field.
func Parse(location string) (Config, error) {
	bad := func(format string, args ...any) (Config, error) {
		return Config{}, fmt.Errorf("invalid S3 repository %q: %s (use s3:https://host[:port]/bucket[/prefix])", location, fmt.Sprintf(format, args...))
	}
	s := strings.TrimPrefix(location, "s3:")
	cfg := Config{Secure: true}
	switch {
	case strings.HasPrefix(s, "https://"):
		s = strings.TrimPrefix(s, "https://")
	case strings.HasPrefix(s, "http://"):
		s = strings.TrimPrefix(s, "http://")
		cfg.Secure = false
	case strings.Contains(s, "://"):
		return bad("unsupported scheme %q", s[:strings.Index(s, "://")])
	}
	host, rest, _ := strings.Cut(s, "/")
	if host == "" {
		return bad("no host")
	}
	if h, port, err := net.SplitHostPort(host); err == nil {
		if h == "" {
			return bad("no host")
		}
		if p, err := strconv.Atoi(port); err != nil || p <= 0 || p > 65535 {
			return bad("invalid port %q", port)
		}
	} else if strings.ContainsAny(host, "@?#[] ") || strings.Count(host, ":") > 0 {
		return bad("invalid host %q", host)
	}
	bucket, prefix, _ := strings.Cut(rest, "/")
	if bucket == "" {
		return bad("no bucket")
	}
	if err := s3utils.CheckValidBucketName(bucket); err != nil {
		return bad("bucket %q: %v", bucket, err)
	}
	prefix = strings.Trim(prefix, "/")
	if prefix != "" {
		for _, seg := range strings.Split(prefix, "/") {
			if seg == "" || seg == "." || seg == ".." {
				return bad("invalid prefix %q", prefix)
			}
		}
	}
	cfg.Endpoint, cfg.Bucket, cfg.Prefix = host, bucket, prefix
	cfg.AccessKeyID = os.Getenv("AWS_ACCESS_KEY_ID")
	cfg.SecretAccessKey = os.Getenv("AWS_SECRET_ACCESS_KEY")
	cfg.SessionToken = os.Getenv("AWS_SESSION_TOKEN")
	cfg.Region = os.Getenv("AWS_DEFAULT_REGION")
	if cfg.Region == "" {
		cfg.Region = os.Getenv("AWS_REGION")
	}
	cfg.CAFile = os.Getenv("CAIRN_S3_CA_FILE")
	return cfg, nil
}

// Location returns the canonical location string of c.
func (c Config) Location() string {
	scheme := "https"
	if !c.Secure {
		scheme = "http"
	}
	loc := "s3:" + scheme + "://" + c.Endpoint + "/" + c.Bucket
	if c.Prefix != "" {
		loc += "/" + c.Prefix
	}
	return loc
}

func (c *Config) withDefaults() {
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = DefaultMaxAttempts
	}
	if c.MaxRetryTime <= 0 {
		c.MaxRetryTime = DefaultMaxRetryTime
	}
	if c.RetryDelay <= 0 {
		c.RetryDelay = DefaultRetryDelay
	}
	if c.MaxRetryDelay <= 0 {
		c.MaxRetryDelay = DefaultMaxRetryDelay
	}
	if c.MaxRetryDelay < c.RetryDelay {
		c.MaxRetryDelay = c.RetryDelay
	}
	if c.StallTimeout <= 0 {
		c.StallTimeout = DefaultStallTimeout
	}
	if c.Connections <= 0 {
		c.Connections = DefaultConnections
	}
}

// Backend is a repository in a bucket (below an optional prefix). It is
// safe for concurrent use.
type Backend struct {
	cfg       Config
	client    *minio.Client
	core      *minio.Core
	transport *http.Transport
	// noConditional is set once the server answered a conditional PUT
	// (If-None-Match: *) with 501 Not Implemented; from then on Save checks
	// for the object first and uploads unconditionally.
	noConditional atomic.Bool
	// lock, once set (UseObjectLock), is the retention every write gets.
	lock atomic.Pointer[backend.ObjectLock]
	// ahead holds listings started before they were asked for.
	ahead listings
}

// Open returns a backend for cfg. It does not contact the server: the
// first operation does.
func Open(ctx context.Context, cfg Config) (*Backend, error) {
	cfg.withDefaults()
	if cfg.Endpoint == "" || cfg.Bucket == "" {
		return nil, errors.New("s3: endpoint and bucket are required")
	}
	tr, err := newTransport(cfg)
	if err != nil {
		return nil, err
	}
	var creds *credentials.Credentials
	if cfg.AccessKeyID != "" || cfg.SecretAccessKey != "" {
		creds = credentials.NewStaticV4(cfg.AccessKeyID, cfg.SecretAccessKey, cfg.SessionToken)
	} else {
		creds = credentials.New(&credentials.Static{Value: credentials.Value{SignerType: credentials.SignatureAnonymous}})
	}
	core, err := minio.NewCore(cfg.Endpoint, &minio.Options{
		Creds:     creds,
		Secure:    cfg.Secure,
		Transport: tr,
		Region:    cfg.Region,
		// The retry loop is ours (bounded in count and time, honoring ctx).
		MaxRetries: 1,
	})
	if err != nil {
		return nil, fmt.Errorf("s3 bucket %q: %v", cfg.Bucket, err)
	}
	return &Backend{cfg: cfg, client: core.Client, core: core, transport: tr}, nil
}

func newTransport(cfg Config) (*http.Transport, error) {
	tr, err := minio.DefaultTransport(cfg.Secure)
	if err != nil {
		return nil, err
	}
	tr.DialContext = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	tr.MaxIdleConns = 4 * cfg.Connections
	tr.MaxIdleConnsPerHost = cfg.Connections
	tr.ResponseHeaderTimeout = cfg.StallTimeout
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("s3: read CA file: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("s3: CA file %s holds no PEM certificate", cfg.CAFile)
		}
		if tr.TLSClientConfig == nil {
			tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		tr.TLSClientConfig.RootCAs = pool
	}
	return tr, nil
}

// Location returns the canonical s3: location.
func (b *Backend) Location() string { return b.cfg.Location() }

// Config returns the backend's configuration (with defaults applied).
func (b *Backend) Config() Config { return b.cfg }

// Close stops listings started ahead and drops idle connections.
func (b *Backend) Close() error {
	b.ahead.stop()
	b.transport.CloseIdleConnections()
	return nil
}

func sharded(t backend.FileType) bool { return t == backend.DataPack || t == backend.TreePack }

func (b *Backend) dir(t backend.FileType) string {
	if b.cfg.Prefix == "" {
		return string(t)
	}
	return b.cfg.Prefix + "/" + string(t)
}

// key returns the object key of h: <prefix>/config, <prefix>/<type>/<name>,
// or <prefix>/<type>/<name[:2]>/<name> for packs (the local layout).
func (b *Backend) key(h backend.Handle) (string, error) {
	if h.Type == backend.Config {
		if b.cfg.Prefix == "" {
			return "config", nil
		}
		return b.cfg.Prefix + "/config", nil
	}
	if h.Type == "" || strings.ContainsAny(string(h.Type), `/\`) {
		return "", fmt.Errorf("invalid object type %q", h.Type)
	}
	if h.Name == "" || strings.ContainsAny(h.Name, `/\`) || h.Name == "." || h.Name == ".." {
		return "", fmt.Errorf("invalid object name %q", h.Name)
	}
	if sharded(h.Type) {
		if len(h.Name) < 2 {
			return "", fmt.Errorf("invalid pack name %q", h.Name)
		}
		return b.dir(h.Type) + "/" + h.Name[:2] + "/" + h.Name, nil
	}
	return b.dir(h.Type) + "/" + h.Name, nil
}

// nameOf returns the object name of a listed key of type t, or false for
// keys that are not objects of the layout.
func (b *Backend) nameOf(t backend.FileType, key string) (string, bool) {
	rel, ok := strings.CutPrefix(key, b.dir(t)+"/")
	if !ok {
		return "", false
	}
	if sharded(t) {
		shard, name, ok := strings.Cut(rel, "/")
		if !ok || len(shard) != 2 || name == "" || strings.Contains(name, "/") {
			return "", false
		}
		return name, true
	}
	if rel == "" || strings.Contains(rel, "/") {
		return "", false
	}
	return rel, true
}

// Create makes the bucket if it does not exist.
func (b *Backend) Create(ctx context.Context) error {
	var exists bool
	err := b.retry(ctx, "check bucket", func(a *attempt) error {
		var err error
		exists, err = b.client.BucketExists(a.ctx, b.cfg.Bucket)
		return err
	})
	if err != nil {
		return b.fail("check bucket", "", err)
	}
	if exists {
		return nil
	}
	err = b.retry(ctx, "create bucket", func(a *attempt) error {
		// A bucket for locked objects must be made with locking (which
		// also turns on versioning); it cannot be added afterwards.
		err := b.client.MakeBucket(a.ctx, b.cfg.Bucket, minio.MakeBucketOptions{Region: b.cfg.Region, ObjectLocking: b.lock.Load() != nil})
		switch minio.ToErrorResponse(err).Code {
		case "BucketAlreadyOwnedByYou":
			return nil // a retry after a lost response, or a concurrent init
		case "BucketAlreadyExists":
			if ok, err2 := b.client.BucketExists(a.ctx, b.cfg.Bucket); err2 == nil && ok {
				return nil
			}
			return permanentf("the bucket name is taken (by another account)")
		}
		return err
	})
	if err != nil {
		return b.fail("create bucket", "", err)
	}
	return nil
}

// Save uploads data in one PUT (never multipart) signed with its SHA-256,
// and with its MD5 if SendMD5 is set; the server checks them, so an object
// is either complete or absent. The PUT is conditional (If-None-Match: *):
// an existing object (412) counts as success since names are content
// hashes, which also makes a retry after a lost response idempotent. Once a
// server answers a conditional PUT with 501 Not Implemented, this backend
// checks with a HEAD and uploads unconditionally from then on.
func (b *Backend) Save(ctx context.Context, h backend.Handle, data []byte) error {
	return b.save(ctx, h, func() io.Reader { return bytes.NewReader(data) }, int64(len(data)), false)
}

// Replace stores data under h over whatever is there, with an
// unconditional PUT: S3 replaces an object atomically (backend.Replacer).
func (b *Backend) Replace(ctx context.Context, h backend.Handle, data []byte) error {
	return b.save(ctx, h, func() io.Reader { return bytes.NewReader(data) }, int64(len(data)), true)
}

// TempDir is the system's temporary directory: packs are built there and
// uploaded from the file.
func (b *Backend) TempDir() string { return os.TempDir() }

// SaveFile uploads the first size bytes of f; every attempt reads the file
// again from the start.
func (b *Backend) SaveFile(ctx context.Context, h backend.Handle, f *os.File, size int64) error {
	return b.save(ctx, h, func() io.Reader { return io.NewSectionReader(f, 0, size) }, size, false)
}

// save uploads the body that open returns (called once for the checksums
// and once per attempt): write-once unless overwrite is set.
func (b *Backend) save(ctx context.Context, h backend.Handle, open func() io.Reader, size int64, overwrite bool) error {
	key, err := b.key(h)
	if err != nil {
		return err
	}
	b.ahead.drop(h.Type)
	if err := ctx.Err(); err != nil {
		return b.fail("save", h.String(), err)
	}
	sha := sha256.New()
	var md5h hash.Hash
	w := io.Writer(sha)
	lock := b.lock.Load()
	// S3 demands Content-MD5 (or another checksum) on a PUT that sets a
	// retention.
	if b.cfg.SendMD5 || lock != nil {
		md5h = md5.New()
		w = io.MultiWriter(sha, md5h)
	}
	if n, err := io.Copy(w, open()); err != nil || n != size {
		return b.fail("save", h.String(), fmt.Errorf("read the object to upload: %d of %d bytes: %v", n, size, err))
	}
	shaHex := hex.EncodeToString(sha.Sum(nil))
	md5b64 := ""
	if md5h != nil {
		md5b64 = base64.StdEncoding.EncodeToString(md5h.Sum(nil))
	}
	err = b.retry(ctx, "save "+h.String(), func(a *attempt) error {
		for {
			conditional := !b.noConditional.Load() && !overwrite
			if !conditional && !overwrite {
				_, err := b.client.StatObject(a.ctx, b.cfg.Bucket, key, minio.StatObjectOptions{})
				if err == nil {
					return nil // write-once: the name is the content
				}
				if kindOf(err) != kindNotFound {
					return err
				}
			}
			opts := minio.PutObjectOptions{
				ContentType:          "application/octet-stream",
				DisableMultipart:     true,
				DisableContentSha256: true, // sign the SHA-256 we pass instead of streaming signatures
			}
			if conditional {
				opts.SetMatchETagExcept("*")
			}
			if lock != nil {
				opts.Mode = minio.RetentionMode(lock.Mode)
				opts.RetainUntilDate = time.Now().Add(lock.Period)
			}
			_, err := b.core.PutObject(a.ctx, b.cfg.Bucket, key, a.reader(open()), size, md5b64, shaHex, opts)
			switch kindOf(err) {
			case kindOK, kindExists:
				return nil
			case kindNotImplemented:
				if conditional {
					b.noConditional.Store(true)
					continue
				}
			}
			return err
		}
	})
	if err != nil {
		return b.fail("save", h.String(), err)
	}
	return nil
}

// Load reads length bytes at offset (the rest of the object when length is
// 0) with ranged GETs. A body cut short is resumed where it stopped.
func (b *Backend) Load(ctx context.Context, h backend.Handle, offset, length int64) ([]byte, error) {
	key, err := b.key(h)
	if err != nil {
		return nil, err
	}
	if offset < 0 || length < 0 {
		return nil, fmt.Errorf("load %v: invalid range %d+%d", h, offset, length)
	}
	if err := ctx.Err(); err != nil {
		return nil, b.fail("load", h.String(), err)
	}
	var out []byte
	if length > 0 && length <= 64<<20 {
		out = make([]byte, 0, length)
	}
	err = b.retry(ctx, "load "+h.String(), func(a *attempt) error {
		start := offset + int64(len(out))
		var opts minio.GetObjectOptions
		if length > 0 {
			remaining := length - int64(len(out))
			if remaining <= 0 {
				return nil
			}
			if err := opts.SetRange(start, start+remaining-1); err != nil {
				return permanent(err)
			}
		} else if start > 0 {
			if err := opts.SetRange(start, 0); err != nil {
				return permanent(err)
			}
		}
		ranged := opts.Header().Get("Range") != ""
		body, info, hdr, err := b.core.GetObject(a.ctx, b.cfg.Bucket, key, opts)
		if err != nil {
			if kindOf(err) == kindInvalidRange {
				return nil // offset at or past the end: nothing (more) to read
			}
			return err
		}
		defer body.Close()
		r := a.reader(body)
		if ranged && hdr.Get("Content-Range") == "" {
			// The server ignored the range and sent the whole object.
			if _, err := io.CopyN(io.Discard, r, start); err != nil {
				if errors.Is(err, io.EOF) {
					return nil // the object ends before start
				}
				return err
			}
			if info.Size >= 0 {
				info.Size -= start
			}
			if length > 0 {
				r = io.LimitReader(r, length-int64(len(out)))
				if info.Size < 0 || info.Size > length-int64(len(out)) {
					info.Size = length - int64(len(out))
				}
			}
		}
		if info.Size < 0 {
			rest, err := io.ReadAll(io.LimitReader(r, backend.MaxLoadSize(h.Type)+1))
			out = append(out, rest...)
			if err == nil {
				err = backend.CheckLoadSize(h, int64(len(out)))
			}
			if err != nil && errors.Is(err, backend.ErrTooLarge) {
				return permanent(err)
			}
			return err
		}
		if err := backend.CheckLoadSize(h, int64(len(out))+info.Size); err != nil {
			return permanent(err)
		}
		n := int(info.Size)
		if cap(out)-len(out) < n {
			grown := make([]byte, len(out), len(out)+n)
			copy(grown, out)
			out = grown
		}
		m, err := io.ReadFull(r, out[len(out):len(out)+n])
		out = out[:len(out)+m]
		if err != nil {
			return fmt.Errorf("read body: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, b.fail("load", h.String(), err)
	}
	if out == nil {
		out = []byte{}
	}
	return out, nil
}

// Stat returns the object's size.
func (b *Backend) Stat(ctx context.Context, h backend.Handle) (backend.FileInfo, error) {
	key, err := b.key(h)
	if err != nil {
		return backend.FileInfo{}, err
	}
	if err := ctx.Err(); err != nil {
		return backend.FileInfo{}, b.fail("stat", h.String(), err)
	}
	var fi backend.FileInfo
	err = b.retry(ctx, "stat "+h.String(), func(a *attempt) error {
		info, err := b.client.StatObject(a.ctx, b.cfg.Bucket, key, minio.StatObjectOptions{})
		if err != nil {
			return err
		}
		fi = backend.FileInfo{Name: h.Name, Size: info.Size}
		return nil
	})
	if err != nil {
		return backend.FileInfo{}, b.fail("stat", h.String(), err)
	}
	return fi, nil
}

// callbackError carries an error of List's callback through the retry loop.
type callbackError struct{ err error }

func (e *callbackError) Error() string { return e.err.Error() }

// List calls fn for every object of type t. The listing is paginated by the
// client; a page that fails is fetched again from the last key seen, so fn
// sees each object once.
func (b *Backend) List(ctx context.Context, t backend.FileType, fn func(backend.FileInfo) error) error {
	if done, err := b.listAhead(ctx, t, fn); done {
		return err
	}
	return b.list(ctx, t, fn)
}

// list is List without the listings started ahead.
func (b *Backend) list(ctx context.Context, t backend.FileType, fn func(backend.FileInfo) error) error {
	if err := ctx.Err(); err != nil {
		return b.fail("list", string(t), err)
	}
	prefix := b.dir(t) + "/"
	after := ""
	fetchOwner := false
	err := b.retry(ctx, "list "+string(t), func(a *attempt) error {
		opts := minio.ListObjectsOptions{Prefix: prefix, Recursive: true, StartAfter: after, FetchOwner: &fetchOwner}
		for obj := range b.client.ListObjectsIter(a.ctx, b.cfg.Bucket, opts) {
			if obj.Err != nil {
				return obj.Err
			}
			a.touch()
			after = obj.Key
			name, ok := b.nameOf(t, obj.Key)
			if !ok {
				continue
			}
			a.pause()
			err := fn(backend.FileInfo{Name: name, Size: obj.Size})
			a.touch()
			if err != nil {
				return &callbackError{err}
			}
		}
		// The iterator ends silently when its context is canceled; that
		// must not pass for the end of the listing.
		if err := a.err(); err != nil {
			return err
		}
		return nil
	})
	var cbErr *callbackError
	if errors.As(err, &cbErr) {
		return cbErr.err
	}
	if err != nil {
		if kindOf(err) == kindNoBucket {
			return nil // like a missing directory: no objects
		}
		return b.fail("list", string(t), err)
	}
	return nil
}

// Remove deletes the object; a missing object (or bucket) is not an error.
func (b *Backend) Remove(ctx context.Context, h backend.Handle) error {
	key, err := b.key(h)
	if err != nil {
		return err
	}
	b.ahead.drop(h.Type)
	if err := ctx.Err(); err != nil {
		return b.fail("remove", h.String(), err)
	}
	err = b.retry(ctx, "remove "+h.String(), func(a *attempt) error {
		err := b.client.RemoveObject(a.ctx, b.cfg.Bucket, key, minio.RemoveObjectOptions{})
		if k := kindOf(err); k == kindNotFound || k == kindNoBucket {
			return nil
		}
		return err
	})
	if err != nil {
		return b.fail("remove", h.String(), err)
	}
	return nil
}

// Open streams the range with one GET. A body that breaks off (reset,
// cut short, stalled) is resumed with a new ranged GET from the first
// byte not yet delivered, within the retry policy's bounds; the reader
// only ends early if the object does.
func (b *Backend) Open(ctx context.Context, h backend.Handle, offset, length int64) (io.ReadCloser, error) {
	key, err := b.key(h)
	if err != nil {
		return nil, err
	}
	if offset < 0 || length < 0 {
		return nil, fmt.Errorf("open %v: invalid range %d+%d", h, offset, length)
	}
	rr := &rangeReader{b: b, ctx: ctx, key: key, h: h, pos: offset, end: -1}
	if length > 0 {
		rr.end = offset + length
	}
	if err := rr.reopen(); err != nil {
		return nil, err
	}
	return rr, nil
}

// rangeReader is the body of a ranged GET that reopens itself after a
// transient failure.
type rangeReader struct {
	b        *Backend
	ctx      context.Context
	key      string
	h        backend.Handle
	pos, end int64 // next byte to deliver; end of the range, -1 for the object's end
	attempt  *attempt
	body     io.ReadCloser
	r        io.Reader
	resumes  int
	eof      bool
}

// reopen issues the GET for [pos, end) under the retry policy.
func (rr *rangeReader) reopen() error {
	rr.closeBody()
	if rr.end >= 0 && rr.pos >= rr.end {
		rr.eof = true
		return nil
	}
	err := rr.b.retry(rr.ctx, "load "+rr.h.String(), func(*attempt) error {
		var opts minio.GetObjectOptions
		last := int64(0)
		if rr.end >= 0 {
			last = rr.end - 1
		}
		if rr.pos > 0 || rr.end >= 0 {
			if err := opts.SetRange(rr.pos, last); err != nil {
				return permanent(err)
			}
		}
		ranged := opts.Header().Get("Range") != ""
		// The body outlives this attempt of the retry loop, so it gets an
		// attempt (context and stall timer) of its own.
		ba := newAttempt(rr.ctx, rr.b.cfg.StallTimeout)
		body, _, hdr, err := rr.b.core.GetObject(ba.ctx, rr.b.cfg.Bucket, rr.key, opts)
		if err != nil {
			stalled := ba.stalled()
			ba.done()
			if kindOf(err) == kindInvalidRange {
				rr.eof = true // offset at or past the end
				return nil
			}
			if stalled {
				return stallError(rr.b.cfg.StallTimeout, err)
			}
			return err
		}
		r := ba.reader(body)
		if ranged && hdr.Get("Content-Range") == "" {
			// The server ignored the range and sent the whole object.
			if _, err := io.CopyN(io.Discard, r, rr.pos); err != nil {
				body.Close()
				ba.done()
				if errors.Is(err, io.EOF) {
					rr.eof = true
					return nil
				}
				return err
			}
			if rr.end >= 0 {
				r = io.LimitReader(r, rr.end-rr.pos)
			}
		}
		rr.attempt, rr.body, rr.r = ba, body, r
		return nil
	})
	if err != nil {
		return rr.b.fail("load", rr.h.String(), err)
	}
	return nil
}

func (rr *rangeReader) closeBody() {
	if rr.body != nil {
		rr.body.Close()
		rr.body, rr.r = nil, nil
	}
	if rr.attempt != nil {
		rr.attempt.done()
		rr.attempt = nil
	}
}

func (rr *rangeReader) Read(p []byte) (int, error) {
	for {
		if rr.eof {
			return 0, io.EOF
		}
		if rr.end >= 0 && int64(len(p)) > rr.end-rr.pos {
			p = p[:rr.end-rr.pos]
		}
		n, err := rr.r.Read(p)
		rr.pos += int64(n)
		if err == nil || n > 0 && errors.Is(err, io.EOF) && rr.end < 0 {
			return n, nil
		}
		switch {
		case errors.Is(err, io.EOF) && (rr.end < 0 || rr.pos >= rr.end):
			rr.eof = true
			rr.closeBody()
			return n, nil
		case rr.ctx.Err() != nil:
			return n, rr.b.fail("load", rr.h.String(), rr.ctx.Err())
		}
		// The body broke off (or ended before the range did): resume.
		rr.resumes++
		if rr.resumes >= rr.b.cfg.MaxAttempts {
			return n, rr.b.fail("load", rr.h.String(), fmt.Errorf("body broke off %d times, last: %w", rr.resumes, err))
		}
		if rerr := rr.reopen(); rerr != nil {
			return n, rerr
		}
		if n > 0 {
			return n, nil
		}
	}
}

func (rr *rangeReader) Close() error {
	rr.closeBody()
	rr.eof = true
	return nil
}
