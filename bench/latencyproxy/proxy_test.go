package latencyproxy

import (
	"bytes"
	"crypto/rand"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestClassify(t *testing.T) {
	for _, c := range []struct {
		method, target string
		want           Class
	}{
		{"GET", "/bucket/data/ab/abcdef", Get},
		{"GET", "/bucket/config", Get},
		{"GET", "/bucket/?list-type=2&prefix=index%2F", List},
		{"GET", "/bucket?prefix=snapshots%2F&delimiter=%2F", List},
		{"GET", "/bucket/", List},
		{"GET", "/bucket/?location=", Other},
		{"GET", "/", Other},
		{"HEAD", "/bucket/keys/x", Head},
		{"HEAD", "/bucket/", Head},
		{"PUT", "/bucket/data/ab/abcdef", Put},
		{"PUT", "/bucket/", Put},
		{"DELETE", "/bucket/locks/x", Delete},
		{"POST", "/bucket/?delete=", Post},
		{"OPTIONS", "/bucket/", Other},
	} {
		r := httptest.NewRequest(c.method, "http://127.0.0.1:9000"+c.target, nil)
		if got := Classify(r); got != c.want {
			t.Errorf("%s %s: %s, want %s", c.method, c.target, got, c.want)
		}
	}
}

// TestProxy checks that the proxy keeps the Host header (S3 signatures
// cover it), passes bodies through unchanged, delays and counts.
func TestProxy(t *testing.T) {
	var objects = map[string][]byte{}
	var hosts []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hosts = append(hosts, r.Host)
		switch r.Method {
		case http.MethodPut:
			b, _ := io.ReadAll(r.Body)
			objects[r.URL.Path] = b
		case http.MethodGet:
			w.Write(objects[r.URL.Path])
		}
	}))
	defer srv.Close()
	const delay = 20 * time.Millisecond
	p, err := Start(strings.TrimPrefix(srv.URL, "http://"), delay)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()

	data := make([]byte, 3<<20)
	rand.Read(data)
	req, _ := http.NewRequest(http.MethodPut, "http://"+p.Endpoint+"/bucket/obj", bytes.NewReader(data))
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if d := time.Since(start); d < delay {
		t.Errorf("PUT took %s, want at least the delay %s", d, delay)
	}
	resp, err = http.Get("http://" + p.Endpoint + "/bucket/obj")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Equal(got, data) {
		t.Errorf("GET returned %d bytes, not what was put", len(got))
	}
	for _, h := range hosts {
		if h != p.Endpoint {
			t.Errorf("server saw Host %q, want the proxy's %q", h, p.Endpoint)
		}
	}
	c := p.Take()
	if c.Put != 1 || c.Get != 1 || c.Total() != 2 || c.BytesUp != int64(len(data)) || c.BytesDown != int64(len(data)) {
		t.Errorf("counts %+v", c)
	}
	if s := c.String(); s != "GET 1, PUT 1" {
		t.Errorf("String() = %q", s)
	}
	if c := p.Take(); c.Total() != 0 {
		t.Errorf("counts after Take: %+v", c)
	}
}
