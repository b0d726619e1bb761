// Package latencyproxy is an HTTP reverse proxy for benchmarks against an S3
// server on the same machine: it holds every request for a fixed delay
// before forwarding it, as a round trip to a remote object store would, and
// counts the requests by class, so that a benchmark can tell how many round
// trips each phase of a backup tool costs.
//
// Clients must be pointed at the proxy's address. S3 signatures (SigV4)
// cover the Host header, so the proxy forwards each request with the Host
// it received; the server (MinIO) checks the signature against that header,
// not against its own address.
package latencyproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
	"sync/atomic"
	"time"
)

// Class is a kind of S3 request.
type Class int

// The classes. A bucket-level GET that lists objects is List; other
// bucket- or service-level GETs (?location, ?versioning, the bucket list)
// are Other, as are methods S3 clients do not use.
const (
	Get    Class = iota // GET of an object (a read)
	List                // GET on the bucket with list-type, prefix, ...
	Head                // HEAD (object or bucket)
	Put                 // PUT (objects, parts, bucket creation)
	Delete              // DELETE
	Post                // POST (multi-object delete, multipart uploads)
	Other
	numClasses
)

var classNames = [numClasses]string{"GET", "LIST", "HEAD", "PUT", "DELETE", "POST", "other"}

func (c Class) String() string {
	if c >= 0 && c < numClasses {
		return classNames[c]
	}
	return fmt.Sprintf("class(%d)", int(c))
}

// listParams are query parameters of the object listing calls (ListObjects
// v1 and v2, ListObjectVersions, ListMultipartUploads).
var listParams = []string{"list-type", "prefix", "delimiter", "marker", "continuation-token", "start-after", "max-keys", "versions", "uploads"}

// Classify returns the class of an S3 request in path style
// (http://host/bucket/key), which is how S3 clients address a server given
// by IP address.
func Classify(r *http.Request) Class {
	switch r.Method {
	case http.MethodHead:
		return Head
	case http.MethodPut:
		return Put
	case http.MethodDelete:
		return Delete
	case http.MethodPost:
		return Post
	case http.MethodGet:
	default:
		return Other
	}
	path := strings.Trim(r.URL.Path, "/")
	if path == "" {
		return Other // the list of buckets
	}
	if strings.Contains(path, "/") {
		return Get // bucket/key
	}
	q := r.URL.Query()
	if len(q) == 0 {
		return List // ListObjects v1 without parameters
	}
	for _, p := range listParams {
		if q.Has(p) {
			return List
		}
	}
	return Other
}

// Counts are the requests seen in a period, by class, and the body bytes
// that went through.
type Counts struct {
	Get    int64 `json:"get"`
	List   int64 `json:"list"`
	Head   int64 `json:"head"`
	Put    int64 `json:"put"`
	Delete int64 `json:"delete"`
	Post   int64 `json:"post"`
	Other  int64 `json:"other"`
	// BytesUp is request body bytes (client to server), BytesDown
	// response body bytes.
	BytesUp   int64 `json:"bytes_up"`
	BytesDown int64 `json:"bytes_down"`
	// Errors counts requests the proxy could not forward (the client saw
	// a 502 or gave up).
	Errors int64 `json:"proxy_errors,omitempty"`
}

func (c *Counts) of(k Class) *int64 {
	return [numClasses]*int64{&c.Get, &c.List, &c.Head, &c.Put, &c.Delete, &c.Post, &c.Other}[k]
}

// Total is the number of requests of all classes.
func (c Counts) Total() int64 {
	var n int64
	for k := range numClasses {
		n += *c.of(k)
	}
	return n
}

// String lists the non-zero classes, e.g. "GET 8, LIST 4, PUT 2".
func (c Counts) String() string {
	var parts []string
	for k := range numClasses {
		if n := *c.of(k); n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", k, n))
		}
	}
	if c.Errors > 0 {
		parts = append(parts, fmt.Sprintf("proxy errors %d", c.Errors))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// Proxy is a running latency proxy.
type Proxy struct {
	// Endpoint is the proxy's host:port on the loopback interface.
	Endpoint string

	delay     time.Duration
	srv       *http.Server
	transport *http.Transport
	rp        *httputil.ReverseProxy
	counts    [numClasses]atomic.Int64
	up, down  atomic.Int64
	errs      atomic.Int64
}

// Start listens on a free port of 127.0.0.1 and forwards every request to
// target (host:port, plain HTTP) after delay (0: at once).
func Start(target string, delay time.Duration) (*Proxy, error) {
	if delay < 0 {
		return nil, fmt.Errorf("latency proxy: negative delay %s", delay)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("latency proxy: listen: %w", err)
	}
	p := &Proxy{
		Endpoint: ln.Addr().String(),
		delay:    delay,
		// The default transport keeps 2 idle connections per host: the
		// tools' parallel uploads would open a new connection for most
		// requests, a cost that is not the server's.
		transport: &http.Transport{
			DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:        256,
			MaxIdleConnsPerHost: 64,
			IdleConnTimeout:     90 * time.Second,
			// Forward bodies as they are: no gzip negotiated on the
			// client's behalf.
			DisableCompression: true,
		},
	}
	p.rp = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			// Only the address changes: path and query are signed and
			// must reach the server byte for byte, and so must Host.
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = target
			pr.Out.Host = pr.In.Host
		},
		Transport: p.transport,
		ModifyResponse: func(resp *http.Response) error {
			resp.Body = &countingBody{ReadCloser: resp.Body, n: &p.down}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			p.errs.Add(1)
			w.WriteHeader(http.StatusBadGateway)
		},
		ErrorLog: log.New(io.Discard, "", 0),
	}
	p.srv = &http.Server{Handler: p, ReadHeaderTimeout: time.Minute, ErrorLog: log.New(io.Discard, "", 0)}
	go func() { _ = p.srv.Serve(ln) }()
	return p, nil
}

// Delay is the delay added to every request.
func (p *Proxy) Delay() time.Duration { return p.delay }

// ServeHTTP counts, delays and forwards one request. The bodies stream
// through (the reverse proxy copies them in small buffers), so a large
// object is neither held in memory nor delayed by more than the fixed time.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.counts[Classify(r)].Add(1)
	if p.delay > 0 {
		t := time.NewTimer(p.delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			p.errs.Add(1)
			return
		}
	}
	if r.Body != nil && r.ContentLength != 0 {
		r.Body = &countingBody{ReadCloser: r.Body, n: &p.up}
	}
	p.rp.ServeHTTP(w, r)
}

// Take returns the counts since the last Take (or the start) and resets
// them, so each phase of a benchmark reads its own.
func (p *Proxy) Take() Counts {
	var c Counts
	for k := range numClasses {
		*c.of(k) = p.counts[k].Swap(0)
	}
	c.BytesUp, c.BytesDown, c.Errors = p.up.Swap(0), p.down.Swap(0), p.errs.Swap(0)
	return c
}

// Close stops the proxy, dropping connections still open.
func (p *Proxy) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := p.srv.Shutdown(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		err = p.srv.Close()
	}
	p.transport.CloseIdleConnections()
	return err
}

// countingBody adds what is read through it to n.
type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}
