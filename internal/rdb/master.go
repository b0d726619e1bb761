package rdb

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Master is a minimal replication master that serves one RDB: it answers
// PING, AUTH, REPLCONF, and the first PSYNC or SYNC of a connection that
// authenticated with the one-time password with a full resynchronization
// ($<length> form), then keeps the link alive with PINGs. It stops
// listening once that peer asked: nobody else can connect, and a
// connection without the password gets nothing. Later sync requests are
// refused: a replica asking again failed to load the first one.
type Master struct {
	ln       net.Listener
	password string // the one-time password a peer must AUTH with
	size     int64
	write    func(ctx context.Context, w io.Writer) error
	replID   string
	timeout  time.Duration
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup

	sent  atomic.Int64
	mu    sync.Mutex
	st    MasterStatus
	conns map[net.Conn]bool
}

// MasterStatus is what a Master has done so far.
type MasterStatus struct {
	Syncs  int    // sync requests received from authenticated peers
	Denied int    // connections that asked without the password
	Peer   string // the replica that got the RDB
	Sent   int64  // RDB bytes sent
	Done   bool   // the RDB was sent completely and verified
	Info   *Info  // the RDB as sent, once Done
	Err    error  // serving failed
}

// newMaster listens on addr and serves the RDB of size bytes that write
// produces (it may be called once). Stop it with Close.
func newMaster(ctx context.Context, addr, password string, size int64, timeout time.Duration, write func(ctx context.Context, w io.Writer) error) (*Master, error) {
	if password == "" {
		return nil, errors.New("the temporary master needs a password")
	}
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen for the target on %s: %w", addr, err)
	}
	var id [20]byte
	_, _ = rand.Read(id[:])
	m := &Master{ln: ln, password: password, size: size, write: write, replID: hex.EncodeToString(id[:]), timeout: timeout, conns: map[net.Conn]bool{}}
	m.ctx, m.cancel = context.WithCancel(ctx)
	m.wg.Go(m.accept)
	return m, nil
}

// Addr is the listening address.
func (m *Master) Addr() *net.TCPAddr { return m.ln.Addr().(*net.TCPAddr) }

// Status returns a snapshot of the progress.
func (m *Master) Status() MasterStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := m.st
	st.Sent = m.sent.Load()
	return st
}

// Close stops listening, drops the connections and waits for them.
func (m *Master) Close() error {
	m.cancel()
	err := m.ln.Close()
	m.mu.Lock()
	for c := range m.conns {
		c.Close()
	}
	m.mu.Unlock()
	m.wg.Wait()
	return err
}

func (m *Master) accept() {
	for {
		conn, err := m.ln.Accept()
		if err != nil {
			return
		}
		m.mu.Lock()
		if m.ctx.Err() != nil {
			m.mu.Unlock()
			conn.Close()
			return
		}
		m.conns[conn] = true
		m.mu.Unlock()
		m.wg.Go(func() {
			defer func() {
				m.mu.Lock()
				delete(m.conns, conn)
				m.mu.Unlock()
				conn.Close()
			}()
			m.serve(conn)
		})
	}
}

func (m *Master) fail(err error) {
	m.mu.Lock()
	if m.st.Err == nil {
		m.st.Err = err
	}
	m.mu.Unlock()
}

// serve answers one connection's commands.
func (m *Master) serve(conn net.Conn) {
	br := bufio.NewReader(conn)
	var wmu sync.Mutex
	reply := func(s string) error {
		wmu.Lock()
		defer wmu.Unlock()
		_ = conn.SetWriteDeadline(time.Now().Add(m.timeout))
		_, err := io.WriteString(conn, s)
		return err
	}
	authed, served := false, false
	for {
		args, err := readCommand(br)
		if err != nil {
			if served && m.ctx.Err() == nil {
				// Nobody else can connect any more: a replica that drops
				// the link after the RDB failed to load it.
				m.fail(fmt.Errorf("the target closed the replication link after it received the RDB: it could not load it (see its log)"))
			}
			return
		}
		var out string
		switch strings.ToUpper(args[0]) {
		case "PING":
			out = "+PONG\r\n"
		case "AUTH":
			// AUTH password, or AUTH user password (masteruser).
			authed = len(args) >= 2 && subtle.ConstantTimeCompare([]byte(args[len(args)-1]), []byte(m.password)) == 1
			out = "+OK\r\n"
			if !authed {
				out = "-WRONGPASS invalid username-password pair\r\n"
			}
		case "REPLCONF":
			if len(args) > 1 && strings.EqualFold(args[1], "ACK") {
				continue // acknowledgements get no reply
			}
			out = "+OK\r\n"
		case "PSYNC", "SYNC":
			if !authed {
				m.mu.Lock()
				m.st.Denied++
				m.mu.Unlock()
				_ = reply("-NOAUTH Authentication required.\r\n")
				return
			}
			m.mu.Lock()
			m.st.Syncs++
			first := m.st.Syncs == 1
			m.mu.Unlock()
			// The target is here: nobody else may connect.
			_ = m.ln.Close()
			if !first {
				_ = reply("-ERR cairn serves its RDB once; the first transfer failed\r\n")
				return
			}
			header := fmt.Sprintf("$%d\r\n", m.size)
			if strings.EqualFold(args[0], "PSYNC") {
				header = fmt.Sprintf("+FULLRESYNC %s 0\r\n", m.replID) + header
			}
			wmu.Lock()
			err := m.transfer(conn, header)
			wmu.Unlock()
			if err != nil {
				m.fail(err)
				return
			}
			served = true
			m.wg.Go(func() { m.keepAlive(reply) })
			continue
		default:
			out = fmt.Sprintf("-ERR unknown command '%s'\r\n", truncate(args[0], 40))
		}
		if reply(out) != nil {
			return
		}
	}
}

// transfer sends the header and the RDB, validating it on the way.
func (m *Master) transfer(conn net.Conn, header string) error {
	m.mu.Lock()
	m.st.Peer = conn.RemoteAddr().String()
	m.mu.Unlock()
	tc := &timeoutConn{Conn: conn, timeout: m.timeout}
	bw := bufio.NewWriterSize(tc, 256<<10)
	if _, err := bw.WriteString(header); err != nil {
		return fmt.Errorf("send the RDB to %s: %w", conn.RemoteAddr(), err)
	}
	v := NewValidator()
	hb := &holdBack{w: &countWriter{w: bw, n: &m.sent}}
	err := m.write(m.ctx, io.MultiWriter(hb, v))
	info, verr := v.Close()
	var fe *FormatError
	switch {
	case err != nil && m.ctx.Err() != nil:
		return err
	case err != nil && !errors.As(err, &fe):
		return fmt.Errorf("send the RDB to %s: %w", conn.RemoteAddr(), err)
	case verr != nil:
		return fmt.Errorf("the stored RDB does not validate (the target did not get all of it): %w", verr)
	case m.sent.Load()+int64(hb.n) != m.size:
		return fmt.Errorf("the stored RDB has %d bytes, not the %d its file node records", m.sent.Load()+int64(hb.n), m.size)
	}
	// Only a verified RDB gets its last bytes: a replica never loads a
	// broken one (a Redis replica exits on an RDB it cannot load).
	if err := hb.flush(); err != nil {
		return fmt.Errorf("send the RDB to %s: %w", conn.RemoteAddr(), err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("send the RDB to %s: %w", conn.RemoteAddr(), err)
	}
	m.mu.Lock()
	m.st.Done, m.st.Info = true, info
	m.mu.Unlock()
	return nil
}

// keepAlive pings the replica, as a master does, so that it does not time
// out the link while the restore is being verified.
func (m *Master) keepAlive(reply func(string) error) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-t.C:
			if reply("*1\r\n$4\r\nPING\r\n") != nil {
				return
			}
		}
	}
}

// holdBack passes on all but the last 8 bytes written until flush.
type holdBack struct {
	w    io.Writer
	tail [8]byte
	n    int
}

func (h *holdBack) Write(p []byte) (int, error) {
	out := h.n + len(p) - len(h.tail) // bytes that can go now
	if out <= 0 {
		h.n += copy(h.tail[h.n:], p)
		return len(p), nil
	}
	if out <= h.n {
		if _, err := h.w.Write(h.tail[:out]); err != nil {
			return 0, err
		}
		h.n = copy(h.tail[:], h.tail[out:h.n])
		h.n += copy(h.tail[h.n:], p)
		return len(p), nil
	}
	if _, err := h.w.Write(h.tail[:h.n]); err != nil {
		return 0, err
	}
	if _, err := h.w.Write(p[:out-h.n]); err != nil {
		return 0, err
	}
	h.n = copy(h.tail[:], p[out-h.n:])
	return len(p), nil
}

func (h *holdBack) flush() error {
	_, err := h.w.Write(h.tail[:h.n])
	h.n = 0
	return err
}

type countWriter struct {
	w io.Writer
	n *atomic.Int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n.Add(int64(n))
	return n, err
}

// readCommand reads a RESP array of bulk strings or an inline command.
func readCommand(br *bufio.Reader) ([]string, error) {
	for {
		line, err := readLine(br)
		if err != nil {
			return nil, err
		}
		if line == "" {
			continue
		}
		if line[0] != '*' {
			if f := strings.Fields(line); len(f) > 0 {
				return f, nil
			}
			continue
		}
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < 1 || n > 64 {
			return nil, fmt.Errorf("protocol error: bad command array %q", truncate(line, 40))
		}
		args := make([]string, 0, n)
		for range n {
			v, err := readReply(br, 1)
			if err != nil {
				return nil, err
			}
			s, ok := v.(string)
			if !ok {
				return nil, errors.New("protocol error: command argument is not a string")
			}
			args = append(args, s)
		}
		return args, nil
	}
}
