package rdb

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/internal/rdb/redistest"
)

func fakeOpts(f *redistest.Fake) Options {
	return Options{Addr: f.Addr, Password: "pw", Timeout: 2 * time.Second}
}

// fetch runs a whole sync against the fake and returns the bytes read.
func fetch(t *testing.T, o Options) (*Sync, []byte, error) {
	t.Helper()
	c, err := Dial(context.Background(), o)
	if err != nil {
		return nil, nil, err
	}
	s, err := c.StartSync()
	if err != nil {
		c.Close()
		return nil, nil, err
	}
	defer s.Close()
	data, err := io.ReadAll(s)
	return s, data, err
}

// slowly writes data in pieces with flushes in between, so that reads see
// every kind of boundary.
func slowly(w *bufio.Writer, data []byte, piece int) {
	for i := 0; i < len(data); i += piece {
		w.Write(data[i:min(i+piece, len(data))])
		w.Flush()
		time.Sleep(time.Millisecond)
	}
}

const testMark = "0123456789abcdef0123456789abcdef01234567"

func TestSyncForms(t *testing.T) {
	data := rdbFile(10, true, sample)
	for _, c := range []struct {
		name, form string
		send       func(w *bufio.Writer)
	}{
		{"length", FormLength, func(w *bufio.Writer) {
			fmt.Fprintf(w, "\n\n+FULLRESYNC %s 0\r\n\n\n$%d\r\n", testMark, len(data))
			slowly(w, data, 13)
			w.WriteString("*1\r\n$4\r\nPING\r\n") // the replication stream follows
		}},
		{"eof-mark", FormEOF, func(w *bufio.Writer) {
			fmt.Fprintf(w, "+FULLRESYNC %s 0\r\n\n$EOF:%s\r\n", testMark, testMark)
			slowly(w, append(bytes.Clone(data), testMark...), 17)
		}},
		{"eof-mark split at the end", FormEOF, func(w *bufio.Writer) {
			fmt.Fprintf(w, "\n+FULLRESYNC %s 0\r\n$EOF:%s\r\n", testMark, testMark)
			slowly(w, append(bytes.Clone(data), testMark...), len(data)+3)
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := redistest.StartFake(t, func(_ []string, w *bufio.Writer) redistest.After { c.send(w); return redistest.Hold })
			s, got, err := fetch(t, fakeOpts(f))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, data) {
				t.Fatalf("got %d bytes, want the %d of the RDB", len(got), len(data))
			}
			info, err := s.Result()
			if err != nil || info.Keys[0].Keys != 10 {
				t.Fatalf("result %v %v", info, err)
			}
			if s.Form != c.form || s.Method != "psync" || s.ReplID != testMark {
				t.Errorf("form %s method %s replid %s", s.Form, s.Method, s.ReplID)
			}
			// The handshake: AUTH, REPLCONF capa eof, REPLCONF rdb-only 1, PSYNC ? -1.
			var cmds []string
			for range 4 {
				cmds = append(cmds, strings.Join(<-f.Commands, " "))
			}
			want := []string{"AUTH pw", "REPLCONF capa eof", "REPLCONF rdb-only 1", "PSYNC ? -1"}
			if strings.Join(cmds, "|") != strings.Join(want, "|") {
				t.Errorf("commands %q, want %q", cmds, want)
			}
		})
	}
}

func TestSyncFallsBackToSYNC(t *testing.T) {
	data := rdbFile(9, true, sample)
	f := redistest.StartFake(t, func(args []string, w *bufio.Writer) redistest.After {
		if args[0] == "PSYNC" {
			w.WriteString("-ERR unknown command 'PSYNC'\r\n")
			return redistest.Continue
		}
		fmt.Fprintf(w, "$%d\r\n", len(data))
		w.Write(data)
		return redistest.Hold
	})
	f.Reply = func(args []string) string {
		if args[1] == "rdb-only" {
			return "-ERR unknown REPLCONF option\r\n"
		}
		return "+OK\r\n"
	}
	s, got, err := fetch(t, fakeOpts(f))
	if err != nil || !bytes.Equal(got, data) || s.Method != "sync" || s.Form != FormLength {
		t.Fatalf("SYNC fallback: %v, %d bytes, method %s", err, len(got), s.Method)
	}
}

func TestSyncRefused(t *testing.T) {
	f := redistest.StartFake(t, func(args []string, w *bufio.Writer) redistest.After {
		fmt.Fprintf(w, "-NOPERM User backup has no permissions to run the '%s' command\r\n", strings.ToLower(args[0]))
		return redistest.Continue
	})
	_, _, err := fetch(t, fakeOpts(f))
	var re *RefusedError
	if !errors.As(err, &re) || !strings.Contains(re.PSYNC, "NOPERM") || !strings.Contains(re.SYNC, "'sync'") {
		t.Fatalf("refusal: %v", err)
	}
}

func TestSyncBroken(t *testing.T) {
	data := rdbFile(10, true, sample)
	corrupt := bytes.Clone(data)
	corrupt[40] ^= 1
	for _, c := range []struct {
		name  string
		send  func(w *bufio.Writer)
		want  string
		close bool
	}{
		{"length truncated", func(w *bufio.Writer) {
			fmt.Fprintf(w, "+FULLRESYNC %s 0\r\n$%d\r\n", testMark, len(data))
			w.Write(data[:len(data)/2])
		}, fmt.Sprintf("closed the connection after %d of %d bytes", len(data)/2, len(data)), true},
		{"eof-mark truncated", func(w *bufio.Writer) {
			fmt.Fprintf(w, "+FULLRESYNC %s 0\r\n$EOF:%s\r\n", testMark, testMark)
			w.Write(data[:len(data)-3])
		}, "before its end mark", true},
		{"eof-mark truncated, server stays", func(w *bufio.Writer) {
			fmt.Fprintf(w, "+FULLRESYNC %s 0\r\n$EOF:%s\r\n", testMark, testMark)
			w.Write(data[:len(data)-3])
		}, "no answer for 500ms", false},
		{"length corrupt", func(w *bufio.Writer) {
			fmt.Fprintf(w, "+FULLRESYNC %s 0\r\n$%d\r\n", testMark, len(data))
			w.Write(corrupt)
		}, "CRC64 mismatch", false},
		{"eof-mark corrupt", func(w *bufio.Writer) {
			fmt.Fprintf(w, "+FULLRESYNC %s 0\r\n$EOF:%s\r\n", testMark, testMark)
			w.Write(append(bytes.Clone(corrupt), testMark...))
		}, "CRC64 mismatch", false},
		{"not an RDB", func(w *bufio.Writer) {
			fmt.Fprintf(w, "+FULLRESYNC %s 0\r\n$%d\r\n", testMark, len(data))
			w.WriteString(strings.Repeat("x", len(data)))
		}, "not an RDB", false},
		{"error during the sync", func(w *bufio.Writer) {
			fmt.Fprintf(w, "+FULLRESYNC %s 0\r\n\n\n-ERR background save failed\r\n", testMark)
		}, "background save failed", true},
		{"silent", func(w *bufio.Writer) {
			fmt.Fprintf(w, "+FULLRESYNC %s 0\r\n$%d\r\n", testMark, len(data))
			w.Write(data[:10])
		}, "no answer for 500ms", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := redistest.StartFake(t, func(_ []string, w *bufio.Writer) redistest.After {
				c.send(w)
				if c.close {
					return redistest.Close
				}
				return redistest.Hold
			})
			o := fakeOpts(f)
			o.Timeout = 500 * time.Millisecond
			s, _, err := fetch(t, o)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one containing %q", err, c.want)
			}
			if _, rerr := s.Result(); rerr == nil {
				t.Error("Result reports success")
			}
		})
	}
}

// Keep-alive newlines count as progress: a slow BGSAVE is not a timeout.
func TestSyncKeepAlive(t *testing.T) {
	data := rdbFile(10, true, sample)
	f := redistest.StartFake(t, func(_ []string, w *bufio.Writer) redistest.After {
		for range 8 {
			w.WriteString("\n")
			w.Flush()
			time.Sleep(100 * time.Millisecond)
		}
		fmt.Fprintf(w, "+FULLRESYNC %s 0\r\n$%d\r\n", testMark, len(data))
		w.Write(data)
		return redistest.Hold
	})
	o := fakeOpts(f)
	o.Timeout = 300 * time.Millisecond
	if _, got, err := fetch(t, o); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("%v, %d bytes", err, len(got))
	}
}

func TestSyncCancel(t *testing.T) {
	f := redistest.StartFake(t, func(_ []string, w *bufio.Writer) redistest.After {
		fmt.Fprintf(w, "+FULLRESYNC %s 0\r\n$1000\r\nREDIS0010", testMark)
		return redistest.Hold
	})
	ctx, cancel := context.WithCancel(context.Background())
	c, err := Dial(ctx, fakeOpts(f))
	if err != nil {
		t.Fatal(err)
	}
	s, err := c.StartSync()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	if _, err := io.ReadAll(s); !errors.Is(err, context.Canceled) {
		t.Errorf("read after cancel: %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("cancel took %s", d)
	}
}

func TestParseURL(t *testing.T) {
	t.Setenv("TEST_REDIS_PW", "from-env")
	for _, c := range []struct {
		url            string
		addr, user, pw string
		tls            bool
		wantErr        bool
	}{
		{url: "redis://localhost", addr: "localhost:6379", pw: "from-env"},
		{url: "redis://:secret@10.0.0.1:6380/2", addr: "10.0.0.1:6380", pw: "secret"},
		{url: "redis://backup:s3cret@host:1", addr: "host:1", user: "backup", pw: "s3cret"},
		{url: "redis://justpassword@host", addr: "host:6379", pw: "justpassword"},
		{url: "rediss://[::1]:7000", addr: "[::1]:7000", pw: "from-env", tls: true},
		{url: "http://host", wantErr: true},
		{url: "redis://host/notadb", wantErr: true},
		{url: "host:6379", wantErr: true},
	} {
		o, err := ParseURL(c.url, "TEST_REDIS_PW")
		if (err != nil) != c.wantErr {
			t.Errorf("%s: error %v", c.url, err)
			continue
		}
		if err == nil && (o.Addr != c.addr || o.User != c.user || o.Password != c.pw || (o.TLS != nil) != c.tls) {
			t.Errorf("%s: %+v", c.url, o)
		}
	}
	// Also in URLs that do not parse (a bad escape, a port that is not a
	// number), where the error message repeats the URL.
	for _, raw := range []string{"redis://u:topsecret@h:1", "redis://u:top@secret@h:1/%zz", "redis://:topsecret@h:port"} {
		if r := redact(raw); strings.Contains(r, "topsecret") || strings.Contains(r, "secret@h") {
			t.Errorf("redact(%q) kept the password: %s", raw, r)
		}
		if _, err := ParseURL(raw, ""); err != nil && strings.Contains(err.Error(), "secret") {
			t.Errorf("ParseURL(%q) error shows the password: %v", raw, err)
		}
	}
}
