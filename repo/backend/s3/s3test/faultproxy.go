package s3test

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Fault is a failure the proxy injects into one request.
type Fault int

// The faults. Some happen before the request reaches the server (it has no
// effect), some after (it took effect, but the client does not learn so).
const (
	FaultNone        Fault = iota
	Fault503               // 503 SlowDown, not forwarded
	Fault500               // forwarded, then 500 InternalError instead of the answer
	FaultResetBefore       // connection reset (RST), not forwarded
	FaultResetAfter        // forwarded, then connection reset instead of the answer
	FaultTruncate          // forwarded, half the response body, then the connection closes
	FaultDelay             // forwarded, answered after a delay
	numFaults
)

var faultNames = [numFaults]string{"none", "503", "500", "reset-before", "reset-after", "truncate", "delay"}

func (f Fault) String() string {
	if f >= 0 && f < numFaults {
		return faultNames[f]
	}
	return "fault(" + strconv.Itoa(int(f)) + ")"
}

// AllFaults lists every fault.
func AllFaults() []Fault {
	return []Fault{Fault503, Fault500, FaultResetBefore, FaultResetAfter, FaultTruncate, FaultDelay}
}

// FaultConfig sets what the proxy does.
type FaultConfig struct {
	// Seed of the random choices. Concurrent requests interleave, so a
	// seed fixes the sequence of decisions, not which request gets which.
	Seed uint64
	// Rate is the probability that a request meets a fault.
	Rate float64
	// Faults to choose from, uniformly (default AllFaults).
	Faults []Fault
	// MaxDelay bounds FaultDelay (default 200ms).
	MaxDelay time.Duration
}

// FaultProxy is an HTTP reverse proxy in front of an S3 server that injects
// faults at random. Requests keep their Host header, so signatures made for
// the proxy's address verify at the server.
type FaultProxy struct {
	// Endpoint is the proxy's host:port.
	Endpoint string
	// Intercept, when set, sees every request first; returning true means
	// it answered (tests use it for special servers: a 501 here, a hang
	// there). Set it before use.
	Intercept func(w http.ResponseWriter, r *http.Request) bool

	target    string
	srv       *httptest.Server
	transport *http.Transport
	faults    []Fault
	maxDelay  time.Duration
	rate      atomic.Uint64 // math.Float64bits
	mu        sync.Mutex
	rng       *rand.Rand
	requests  atomic.Int64
	counts    [numFaults]atomic.Int64
}

// NewFaultProxy starts a proxy to target (host:port, plain HTTP).
func NewFaultProxy(target string, cfg FaultConfig) *FaultProxy {
	p := &FaultProxy{
		target:   target,
		faults:   cfg.Faults,
		maxDelay: cfg.MaxDelay,
		rng:      rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15)),
		transport: &http.Transport{
			MaxIdleConnsPerHost: 64,
			DisableCompression:  true,
			IdleConnTimeout:     time.Minute,
		},
	}
	if len(p.faults) == 0 {
		p.faults = AllFaults()
	}
	if p.maxDelay <= 0 {
		p.maxDelay = 200 * time.Millisecond
	}
	p.SetRate(cfg.Rate)
	p.srv = httptest.NewServer(http.HandlerFunc(p.serve))
	p.Endpoint = strings.TrimPrefix(p.srv.URL, "http://")
	return p
}

// SetRate changes the fault rate (0 turns faults off).
func (p *FaultProxy) SetRate(rate float64) {
	p.rate.Store(uint64(rate * 1e9))
}

// Close stops the proxy.
func (p *FaultProxy) Close() {
	p.srv.CloseClientConnections()
	p.srv.Close()
	p.transport.CloseIdleConnections()
}

// Requests returns the number of requests seen.
func (p *FaultProxy) Requests() int64 { return p.requests.Load() }

// Count returns how often f was injected.
func (p *FaultProxy) Count(f Fault) int64 { return p.counts[f].Load() }

// Stats describes the requests and injected faults.
func (p *FaultProxy) Stats() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d requests", p.Requests())
	for _, f := range AllFaults() {
		fmt.Fprintf(&b, ", %s %d", f, p.Count(f))
	}
	return b.String()
}

func (p *FaultProxy) choose() (Fault, time.Duration) {
	rate := float64(p.rate.Load()) / 1e9
	p.mu.Lock()
	defer p.mu.Unlock()
	if rate <= 0 || p.rng.Float64() >= rate {
		return FaultNone, 0
	}
	f := p.faults[p.rng.IntN(len(p.faults))]
	return f, time.Duration(p.rng.Int64N(int64(p.maxDelay) + 1))
}

var hopHeaders = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

func (p *FaultProxy) serve(w http.ResponseWriter, r *http.Request) {
	p.requests.Add(1)
	if p.Intercept != nil && p.Intercept(w, r) {
		return
	}
	fault, delay := p.choose()
	p.counts[fault].Add(1)
	switch fault {
	case Fault503:
		WriteError(w, http.StatusServiceUnavailable, "SlowDown", "Please reduce your request rate.")
		return
	case FaultResetBefore:
		reset(w)
		return
	}
	resp, err := p.forward(r)
	if err != nil {
		reset(w)
		return
	}
	defer resp.Body.Close()
	switch fault {
	case Fault500:
		io.Copy(io.Discard, resp.Body)
		WriteError(w, http.StatusInternalServerError, "InternalError", "We encountered an internal error, please try again.")
		return
	case FaultResetAfter:
		io.Copy(io.Discard, resp.Body)
		reset(w)
		return
	case FaultDelay:
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
			return
		}
	}
	h := w.Header()
	for k, v := range resp.Header {
		h[k] = v
	}
	for _, k := range hopHeaders {
		h.Del(k)
	}
	w.WriteHeader(resp.StatusCode)
	if fault == FaultTruncate && r.Method != http.MethodHead {
		n := resp.ContentLength / 2
		if n > 0 {
			io.CopyN(w, resp.Body, n)
		}
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
		panic(http.ErrAbortHandler) // closes the connection mid-body
	}
	io.Copy(w, resp.Body)
}

func (p *FaultProxy) forward(r *http.Request) (*http.Response, error) {
	var body io.Reader = r.Body
	if r.ContentLength == 0 {
		body = http.NoBody
	}
	out, err := http.NewRequestWithContext(r.Context(), r.Method, "http://"+p.target+r.RequestURI, body)
	if err != nil {
		return nil, err
	}
	out.Header = r.Header.Clone()
	for _, k := range hopHeaders {
		out.Header.Del(k)
	}
	out.Host = r.Host
	out.ContentLength = r.ContentLength
	return p.transport.RoundTrip(out)
}

// reset closes the client's connection with a TCP RST.
func reset(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic(http.ErrAbortHandler)
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	conn.Close()
}

// WriteError writes an S3 XML error response.
func WriteError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?>`+"\n"+`<Error><Code>%s</Code><Message>%s</Message></Error>`, code, msg)
}
