package rdb

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Transfer forms of a full synchronization.
const (
	FormLength = "length"   // $<length>\r\n<rdb>
	FormEOF    = "eof-mark" // $EOF:<40 bytes>\r\n<rdb><the same 40 bytes> (diskless)
)

const markLen = 40

// RefusedError says the server would not start a replication sync, with
// its replies to PSYNC and SYNC (such as NOPERM for a user without the
// permission, or ERR unknown command where a managed service disabled it).
type RefusedError struct {
	Addr        string
	PSYNC, SYNC string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("redis %s refused to send its RDB over replication (PSYNC: %s; SYNC: %s)", e.Addr, e.PSYNC, e.SYNC)
}

// Sync is a full synchronization in progress: reading it yields the RDB,
// validated as it streams (see Reader). The server's keep-alive newlines
// are skipped and every read restarts the connection's timeout.
type Sync struct {
	c      *Client
	Method string // "psync" or "sync"
	// Form and Size are known once the first byte of the RDB was read;
	// Size is -1 with FormEOF.
	Form   string
	Size   int64
	ReplID string // from +FULLRESYNC

	started bool
	err     error // why the transfer did not start
	rd      *Reader
	payload io.Reader
	n       int64 // RDB bytes received
}

// StartSync asks the server for its RDB as a replica does: REPLCONF capa
// eof (so a diskless master may stream it), REPLCONF rdb-only 1 (Redis 7+
// then sends only the RDB; older servers answer an error, which is
// ignored), then PSYNC ? -1, or SYNC if PSYNC is refused. It returns once
// the server accepted; the RDB follows when read. The client belongs to
// the Sync from then on: close the Sync, not the client.
func (c *Client) StartSync() (*Sync, error) {
	for _, args := range [][]string{{"REPLCONF", "capa", "eof"}, {"REPLCONF", "rdb-only", "1"}} {
		if _, err := c.Do(args...); err != nil {
			var se *ServerError
			if !errors.As(err, &se) {
				return nil, err
			}
		}
	}
	s := &Sync{c: c, Method: "psync", Size: -1}
	psyncErr, err := s.request("PSYNC", "?", "-1")
	if err != nil {
		return nil, err
	}
	if psyncErr == "" {
		return s, nil
	}
	s.Method = "sync"
	syncErr, err := s.request("SYNC")
	if err != nil {
		return nil, err
	}
	if syncErr != "" {
		return nil, &RefusedError{Addr: c.opts.Addr, PSYNC: psyncErr, SYNC: syncErr}
	}
	return s, nil
}

// request sends PSYNC or SYNC and waits for the first sign of acceptance:
// a keep-alive newline, +FULLRESYNC, or the start of the RDB. An error
// reply is returned as refusal.
func (s *Sync) request(args ...string) (refusal string, err error) {
	c := s.c
	if err := c.send(args...); err != nil {
		return "", err
	}
	b, err := c.br.Peek(1)
	if err != nil {
		return "", c.wrap(err)
	}
	switch b[0] {
	case '\n', '$':
		return "", nil
	case '-':
		line, err := readLine(c.br)
		if err != nil {
			return "", c.wrap(err)
		}
		return line[1:], nil
	case '+':
		line, err := readLine(c.br)
		if err != nil {
			return "", c.wrap(err)
		}
		return "", s.fullResync(line)
	}
	line, _ := readLine(c.br)
	return "", fmt.Errorf("redis %s: unexpected reply to %s: %q", c.opts.Addr, args[0], truncate(line, 40))
}

func (s *Sync) fullResync(line string) error {
	f := strings.Fields(line)
	if len(f) != 3 || f[0] != "+FULLRESYNC" {
		return fmt.Errorf("redis %s: unexpected reply to PSYNC: %q", s.c.opts.Addr, truncate(line, 60))
	}
	s.ReplID = f[1]
	return nil
}

// start reads up to the RDB: keep-alive newlines, +FULLRESYNC if it
// comes late, then the bulk header in either form.
func (s *Sync) start() error {
	c := s.c
	for {
		b, err := c.br.ReadByte()
		if err != nil {
			return s.lost(err)
		}
		switch b {
		case '\n':
			continue
		case '+':
			line, err := readLine(c.br)
			if err != nil {
				return s.lost(err)
			}
			if err := s.fullResync("+" + line); err != nil {
				return err
			}
			continue
		case '-':
			line, _ := readLine(c.br)
			return fmt.Errorf("redis %s: the sync failed: %s", c.opts.Addr, line)
		case '$':
		default:
			return fmt.Errorf("redis %s: protocol error: byte %#02x where the RDB transfer should start", c.opts.Addr, b)
		}
		line, err := readLine(c.br)
		if err != nil {
			return s.lost(err)
		}
		if mark, ok := strings.CutPrefix(line, "EOF:"); ok {
			if len(mark) != markLen {
				return fmt.Errorf("redis %s: protocol error: end mark of %d bytes, want %d", c.opts.Addr, len(mark), markLen)
			}
			s.Form = FormEOF
			s.payload = &markReader{r: c.br, mark: []byte(mark), scratch: make([]byte, 64<<10)}
		} else {
			n, err := strconv.ParseInt(line, 10, 64)
			if err != nil || n < 0 {
				return fmt.Errorf("redis %s: protocol error: bad RDB length %q", c.opts.Addr, truncate(line, 40))
			}
			s.Form, s.Size = FormLength, n
			s.payload = &io.LimitedReader{R: c.br, N: n}
		}
		s.rd = NewReader(&countReader{s: s})
		return nil
	}
}

// countReader counts the RDB bytes and turns a short transfer into an error.
type countReader struct{ s *Sync }

func (cr *countReader) Read(p []byte) (int, error) {
	s := cr.s
	n, err := s.payload.Read(p)
	s.n += int64(n)
	switch {
	case err == io.EOF && s.Form == FormLength && s.n < s.Size:
		err = io.ErrUnexpectedEOF
	case err == io.EOF:
		return n, io.EOF
	}
	if err != nil {
		err = s.lost(err)
	}
	return n, err
}

// lost explains a connection that failed during the transfer.
func (s *Sync) lost(err error) error {
	err = s.c.wrap(err)
	if s.c.ctx.Err() != nil {
		return err
	}
	switch {
	case s.Form == FormLength:
		return fmt.Errorf("%w after %d of %d bytes of the RDB", err, s.n, s.Size)
	case s.Form == FormEOF:
		return fmt.Errorf("%w after %d bytes of the RDB, before its end mark", err, s.n)
	}
	return fmt.Errorf("%w before the RDB transfer started", err)
}

// Read returns the next bytes of the RDB. At its end it returns io.EOF
// only if the RDB is complete and valid.
func (s *Sync) Read(p []byte) (int, error) {
	if !s.started {
		s.started = true
		s.err = s.start()
	}
	if s.err != nil {
		return 0, s.err
	}
	n, err := s.rd.Read(p)
	return n, s.name(err)
}

// name prefixes validation errors with the server's address.
func (s *Sync) name(err error) error {
	var fe *FormatError
	if errors.As(err, &fe) {
		return fmt.Errorf("redis %s: %w", s.c.opts.Addr, err)
	}
	return err
}

// Received is the number of RDB bytes read so far.
func (s *Sync) Received() int64 { return s.n }

// Result returns the RDB's description once it was read to its end and is
// valid, the error that ended the transfer, or ErrIncomplete.
func (s *Sync) Result() (*Info, error) {
	if s.err != nil {
		return nil, s.err
	}
	if s.rd == nil {
		return nil, ErrIncomplete
	}
	info, err := s.rd.Result()
	return info, s.name(err)
}

// Close ends the connection.
func (s *Sync) Close() error {
	if s.rd != nil {
		s.rd.Close()
	}
	return s.c.Close()
}

// markReader returns what precedes the end mark of a diskless transfer.
// The server sends nothing after the mark until the replica acknowledges,
// so the mark is the last thing received; the newest 40 bytes are held
// back until it is clear they are not it.
type markReader struct {
	r       *bufio.Reader
	mark    []byte
	buf     []byte // received, not yet returned from off on
	off     int
	scratch []byte
	done    bool
}

func (m *markReader) Read(p []byte) (int, error) {
	for {
		pending := m.buf[m.off:]
		avail := len(pending) - markLen
		if m.done {
			avail = len(pending)
		}
		if avail > 0 {
			n := copy(p, pending[:avail])
			m.off += n
			return n, nil
		}
		if m.done {
			return 0, io.EOF
		}
		m.buf, m.off = append(m.buf[:0], pending...), 0
		k, err := m.r.Read(m.scratch)
		m.buf = append(m.buf, m.scratch[:k]...)
		if len(m.buf) >= markLen && bytes.Equal(m.buf[len(m.buf)-markLen:], m.mark) {
			m.buf = m.buf[:len(m.buf)-markLen]
			m.done = true
			continue
		}
		if err == io.EOF {
			return 0, io.ErrUnexpectedEOF
		}
		if err != nil {
			return 0, err
		}
	}
}
