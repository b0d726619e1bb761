package s3

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/cairn-backup/cairn/repo/backend"
)

// errStalled cancels an attempt during which nothing moved for StallTimeout.
var errStalled = errors.New("no data moved")

// attempt is one try of an operation: a context canceled when the caller's
// is, or when no byte moved through reader() for StallTimeout.
type attempt struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
	stall  time.Duration
	mu     sync.Mutex
	timer  *time.Timer
}

func newAttempt(parent context.Context, stall time.Duration) *attempt {
	ctx, cancel := context.WithCancelCause(parent)
	a := &attempt{ctx: ctx, cancel: cancel, stall: stall}
	a.timer = time.AfterFunc(stall, func() { cancel(errStalled) })
	return a
}

// touch records progress: the stall timer starts over.
func (a *attempt) touch() {
	a.mu.Lock()
	a.timer.Reset(a.stall)
	a.mu.Unlock()
}

// pause stops the stall timer while the caller (not the network) works.
func (a *attempt) pause() {
	a.mu.Lock()
	a.timer.Stop()
	a.mu.Unlock()
}

// stallError describes an attempt given up by its stall timer. The
// cancellation that ended it is not the caller's: it is left out of the
// chain, so that nobody mistakes it for an interrupt.
func stallError(timeout time.Duration, err error) error {
	if errors.Is(err, context.Canceled) {
		return fmt.Errorf("no data moved for %v (the stall timeout)", timeout)
	}
	return fmt.Errorf("no data moved for %v: %w", timeout, err)
}

func (a *attempt) stalled() bool { return errors.Is(context.Cause(a.ctx), errStalled) }

// err returns why the attempt's context ended, if it did.
func (a *attempt) err() error {
	if a.ctx.Err() == nil {
		return nil
	}
	return context.Cause(a.ctx)
}

func (a *attempt) done() {
	a.pause()
	a.cancel(nil)
}

// reader counts reads of r (request or response bodies) as progress.
func (a *attempt) reader(r io.Reader) io.Reader { return &progressReader{r: r, a: a} }

type progressReader struct {
	r io.Reader
	a *attempt
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if n > 0 {
		p.a.touch()
	}
	return n, err
}

// permanentError marks an error as not worth retrying.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

func permanent(err error) error { return &permanentError{err} }

func permanentf(format string, args ...any) error {
	return &permanentError{fmt.Errorf(format, args...)}
}

// kind classifies an error of one attempt.
type kind int

const (
	kindOK kind = iota
	kindTransient
	kindPermanent
	kindNotFound       // no such object
	kindNoBucket       // no such bucket
	kindExists         // 412: a conditional PUT found the object
	kindNotImplemented // 501
	kindInvalidRange   // 416: range starts at or past the end
	kindAccess         // 403 and credential errors
	kindCanceled       // the caller's context ended
)

// S3 error codes that describe a passing condition (throttling, timeouts,
// server trouble, a body damaged in transit) rather than a mistake.
var transientCodes = map[string]bool{
	"RequestTimeout": true, "RequestError": true, "InternalError": true,
	"SlowDown": true, "SlowDownRead": true, "SlowDownWrite": true,
	"Throttling": true, "ThrottlingException": true, "RequestLimitExceeded": true,
	"RequestThrottled": true, "ServiceUnavailable": true, "OperationAborted": true,
	"ConditionalRequestConflict": true, "XMinioServerNotInitialized": true,
	"BadDigest": true, "IncompleteBody": true, "XAmzContentSHA256Mismatch": true,
	"XMinioBackendDown": true,
}

// permissionOf names the S3 permission each operation needs.
var permissionOf = map[string]string{
	"remove": "s3:DeleteObject (forget and prune delete: run them with credentials that may, for instance from a trusted host)",
	"save":   "s3:PutObject", "load": "s3:GetObject", "open": "s3:GetObject", "stat": "s3:GetObject",
	"list": "s3:ListBucket",
	// Object lock: writes carry a retention, prune purges old versions.
	"retain": "s3:PutObjectRetention", "get retention": "s3:GetObjectRetention",
	"list versions": "s3:ListBucketVersions", "remove version": "s3:DeleteObjectVersion (prune deletes what has come unlocked: run it with credentials that may)",
	"check object lock": "s3:GetBucketObjectLockConfiguration",
}

var accessCodes = map[string]bool{
	"AccessDenied": true, "InvalidAccessKeyId": true, "SignatureDoesNotMatch": true,
	"InvalidToken": true, "ExpiredToken": true, "AllAccessDisabled": true,
	"AccountProblem": true, "InvalidSecurity": true,
}

func kindOf(err error) kind {
	if err == nil {
		return kindOK
	}
	var perm *permanentError
	if errors.As(err, &perm) {
		return kindPermanent
	}
	var cb *callbackError
	if errors.As(err, &cb) {
		return kindPermanent
	}
	var resp minio.ErrorResponse
	if errors.As(err, &resp) && (resp.StatusCode != 0 || resp.Code != "") {
		return kindOfResponse(resp)
	}
	if errors.Is(err, backend.ErrNotFound) {
		return kindNotFound
	}
	// Client-side problems that another attempt cannot fix.
	var (
		unknownAuthority x509.UnknownAuthorityError
		hostname         x509.HostnameError
		invalidCert      x509.CertificateInvalidError
		recordHeader     tls.RecordHeaderError
		dns              *net.DNSError
	)
	switch {
	case errors.As(err, &unknownAuthority), errors.As(err, &hostname), errors.As(err, &invalidCert):
		return kindPermanent
	case errors.As(err, &recordHeader):
		return kindPermanent // e.g. https to an http port
	case errors.As(err, &dns) && dns.IsNotFound:
		return kindPermanent
	case strings.Contains(err.Error(), "server gave HTTP response to HTTPS client"):
		return kindPermanent
	}
	// Everything else is the network: resets, refusals, timeouts, bodies
	// cut short, garbled responses.
	return kindTransient
}

func kindOfResponse(r minio.ErrorResponse) kind {
	switch {
	case r.Code == "NoSuchKey" || r.Code == "NoSuchObject":
		return kindNotFound
	case r.Code == "NoSuchBucket":
		return kindNoBucket
	case r.Code == "PreconditionFailed" || r.StatusCode == http.StatusPreconditionFailed:
		return kindExists
	case r.Code == "NotImplemented" || r.StatusCode == http.StatusNotImplemented:
		return kindNotImplemented
	case r.Code == "InvalidRange" || r.StatusCode == http.StatusRequestedRangeNotSatisfiable:
		return kindInvalidRange
	case transientCodes[r.Code]:
		return kindTransient
	case accessCodes[r.Code] || r.StatusCode == http.StatusForbidden:
		return kindAccess
	case r.StatusCode == http.StatusNotFound:
		return kindNotFound
	case r.StatusCode >= 500, r.StatusCode == http.StatusTooManyRequests, r.StatusCode == http.StatusRequestTimeout:
		return kindTransient
	}
	return kindPermanent
}

// retry runs fn until it succeeds, fails permanently, MaxAttempts attempts
// were made or MaxRetryTime has passed since the first began, or ctx ends.
// Between attempts it waits RetryDelay·2^(n-1) (capped at MaxRetryDelay,
// quadrupled for throttling), jittered to between half and all of it. It
// returns fn's last error, wrapped with the attempt count when it gave up.
func (b *Backend) retry(ctx context.Context, op string, fn func(a *attempt) error) error {
	start := time.Now()
	for n := 1; ; n++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		a := newAttempt(ctx, b.cfg.StallTimeout)
		err := fn(a)
		stalled := a.stalled()
		a.done()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if stalled {
			err = stallError(b.cfg.StallTimeout, err)
		} else if kindOf(err) != kindTransient {
			return err
		}
		elapsed := time.Since(start)
		if n >= b.cfg.MaxAttempts {
			return &gaveUpError{attempts: n, elapsed: elapsed, err: err}
		}
		delay := b.backoff(n, err)
		if elapsed+delay > b.cfg.MaxRetryTime {
			return &gaveUpError{attempts: n, elapsed: elapsed, err: err}
		}
		if b.cfg.OnRetry != nil {
			b.cfg.OnRetry(op, n, err, delay)
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

func (b *Backend) backoff(n int, err error) time.Duration {
	d := b.cfg.RetryDelay
	var resp minio.ErrorResponse
	if errors.As(err, &resp) && (resp.StatusCode == http.StatusServiceUnavailable || resp.StatusCode == http.StatusTooManyRequests || strings.HasPrefix(resp.Code, "SlowDown") || strings.Contains(resp.Code, "Throttl")) {
		d *= 4 // the server asks for less
	}
	for i := 1; i < n && d < b.cfg.MaxRetryDelay; i++ {
		d *= 2
	}
	d = min(d, b.cfg.MaxRetryDelay)
	return d/2 + rand.N(d/2+1)
}

// gaveUpError is a transient error that outlasted the retry bounds.
type gaveUpError struct {
	attempts int
	elapsed  time.Duration
	err      error
}

func (e *gaveUpError) Error() string {
	return fmt.Sprintf("gave up after %d attempts in %v: %v", e.attempts, e.elapsed.Round(time.Millisecond), describe(e.err))
}

func (e *gaveUpError) Unwrap() error { return e.err }

// describe turns an attempt's error into a short phrase.
func describe(err error) string {
	var resp minio.ErrorResponse
	if errors.As(err, &resp) && (resp.StatusCode != 0 || resp.Code != "") {
		msg := strings.TrimSpace(resp.Message)
		if msg == "" || strings.HasPrefix(msg, "<") {
			msg = resp.Code
		}
		if i := strings.IndexByte(msg, '\n'); i >= 0 {
			msg = msg[:i]
		}
		if resp.StatusCode != 0 {
			return fmt.Sprintf("%s (HTTP %d %s)", msg, resp.StatusCode, resp.Code)
		}
		return msg
	}
	var perm *permanentError
	if errors.As(err, &perm) {
		err = perm.err
	}
	if strings.Contains(err.Error(), "server gave HTTP response to HTTPS client") {
		return "the server speaks plain HTTP (use an s3:http:// location)"
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		// Drop the method and URL: the message names the operation.
		err = ue.Err
	}
	return strings.ReplaceAll(err.Error(), "\n", " ")
}

// fail turns the final error of an operation into a one-line message that
// names the bucket, the operation and the cause. The result wraps err;
// missing objects also wrap backend.ErrNotFound.
func (b *Backend) fail(op, obj string, err error) error {
	what := op
	if obj != "" {
		what += " " + obj
	}
	prefix := fmt.Sprintf("s3 bucket %q: %s: ", b.cfg.Bucket, what)
	var gu *gaveUpError
	if errors.As(err, &gu) {
		return &opError{prefix + gu.Error(), []error{err}}
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return &opError{prefix + describe(err), []error{err}}
	}
	switch kindOf(err) {
	case kindNotFound:
		return &opError{fmt.Sprintf("s3 bucket %q: %s: %v", b.cfg.Bucket, obj, backend.ErrNotFound), []error{backend.ErrNotFound, err}}
	case kindNoBucket:
		if op == "load" || op == "stat" {
			return &opError{fmt.Sprintf("s3 bucket %q: %s: %v (the bucket does not exist)", b.cfg.Bucket, obj, backend.ErrNotFound), []error{backend.ErrNotFound, err}}
		}
		return &opError{prefix + "the bucket does not exist (create it with 'cairn init')", []error{err}}
	case kindAccess:
		var resp minio.ErrorResponse
		errors.As(err, &resp)
		msg := "access denied (check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)"
		// Credentials that work but lack one permission (a backup-only
		// user) say which.
		if perm, ok := permissionOf[op]; ok && resp.Code == "AccessDenied" && b.cfg.AccessKeyID != "" {
			if op == "save" && b.lock.Load() != nil {
				perm += " or s3:PutObjectRetention (the repository locks its objects)"
			}
			msg = "access denied: these credentials lack " + perm
		}
		switch resp.Code {
		case "InvalidAccessKeyId":
			msg = "unknown access key (check AWS_ACCESS_KEY_ID)"
		case "SignatureDoesNotMatch":
			msg = "signature does not match (check AWS_SECRET_ACCESS_KEY)"
		case "ExpiredToken", "InvalidToken":
			msg = "session token rejected (check AWS_SESSION_TOKEN)"
		case "RequestTimeTooSkewed":
			msg = "the clock of this machine is too far from the server's"
		}
		return &opError{prefix + msg, []error{err}}
	}
	return &opError{prefix + describe(err), []error{err}}
}

// opError is a final error: a one-line message over the errors it wraps.
type opError struct {
	msg  string
	errs []error
}

func (e *opError) Error() string   { return e.msg }
func (e *opError) Unwrap() []error { return e.errs }
