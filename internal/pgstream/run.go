package pgstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"

	"github.com/cairn-backup/cairn/internal/tailbuf"
)

// run is a client program whose standard output is streamed.
type run struct {
	name   string
	cmd    *exec.Cmd
	out    *watchReader
	stderr *tailbuf.Buffer
	conn   *ConnInfo // for redacting messages
	waited bool
	err    error
}

// startRun starts a program with the connection in its environment.
func startRun(ctx context.Context, conn *ConnInfo, path string, args []string, extraEnv ...string) (*run, error) {
	name := path[strings.LastIndexByte(path, '/')+1:]
	c := exec.CommandContext(ctx, path, args...)
	c.Env = append(conn.Env(), extraEnv...)
	r := &run{name: name, cmd: c, stderr: tailbuf.New(64 << 10), conn: conn}
	c.Stderr = r.stderr
	out, err := c.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := c.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	r.out = &watchReader{r: out}
	return r, nil
}

// wait ends the program. If its output was not read to the end (the backup
// failed elsewhere), it is killed first so it cannot block on the pipe.
func (r *run) wait() error {
	if r.waited {
		return r.err
	}
	r.waited = true
	abandoned := !r.out.done()
	if abandoned {
		_ = r.cmd.Process.Kill()
	}
	err := r.cmd.Wait()
	_, _, _, _, readErr := r.out.state()
	switch {
	case abandoned:
		r.err = fmt.Errorf("%s stopped: the backup ended before reading all of its output%s", r.name, r.stderrSuffix())
	case err != nil:
		r.err = fmt.Errorf("%s failed (%v)%s", r.name, err, r.stderrSuffix())
	case readErr != nil:
		r.err = fmt.Errorf("%s: reading its output: %v", r.name, readErr)
	}
	if r.err != nil {
		r.err = errors.New(r.conn.Redact(r.err.Error()))
	}
	return r.err
}

// stderrSuffix is ": " and what the program said on stderr: from its first
// "error:" line on (with its detail and hint lines, not the text of the
// failed query), or else its last lines.
func (r *run) stderrSuffix() string {
	msg := r.stderr.String()
	if msg == "" {
		return ""
	}
	lines := strings.Split(msg, "\n")
	prefix := r.name + ":"
	var picked []string
	for i, l := range lines {
		if strings.HasPrefix(l, prefix) && (strings.Contains(l, "error:") || strings.Contains(l, "ERROR:") || strings.Contains(l, "FATAL:")) {
			for _, m := range lines[i:] {
				if len(picked) == 6 {
					break
				}
				if strings.HasPrefix(m, prefix) {
					if len(m) > 300 {
						m = m[:300] + "..."
					}
					picked = append(picked, m)
				}
			}
			break
		}
	}
	if len(picked) == 0 {
		picked = lines[max(0, len(lines)-6):]
	}
	return ": " + r.conn.Redact(strings.Join(picked, " | "))
}

// watchReader passes a program's output through, remembering its first and
// last bytes and whether it was read to the end.
type watchReader struct {
	r    io.Reader
	mu   sync.Mutex // Read may still run in the archiver when wait looks
	n    int64
	head []byte // first bytes (format magic)
	tail []byte // last bytes (plain dumps end with a completion comment)
	eof  bool
	err  error
}

const watchTail = 4 << 10

func (w *watchReader) Read(p []byte) (int, error) {
	n, err := w.r.Read(p)
	w.mu.Lock()
	defer w.mu.Unlock()
	if n > 0 {
		w.n += int64(n)
		if len(w.head) < 16 {
			w.head = append(w.head, p[:min(n, 16-len(w.head))]...)
		}
		if n >= watchTail {
			w.tail = append(w.tail[:0], p[n-watchTail:n]...)
		} else {
			w.tail = append(w.tail, p[:n]...)
			if len(w.tail) > watchTail {
				w.tail = append(w.tail[:0], w.tail[len(w.tail)-watchTail:]...)
			}
		}
	}
	switch {
	case err == io.EOF:
		w.eof = true
	case err != nil && w.err == nil:
		w.err = err
	}
	return n, err
}

func (w *watchReader) done() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.eof || w.err != nil
}

// state returns what was seen so far.
func (w *watchReader) state() (n int64, head, tail []byte, eof bool, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.n, append([]byte(nil), w.head...), append([]byte(nil), w.tail...), w.eof, w.err
}
