package rdb

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// DefaultTimeout is how long a connection may stay silent before it is
// given up (it restarts with every byte received).
const DefaultTimeout = 60 * time.Second

// Options say how to reach a Redis server.
type Options struct {
	Addr     string // host:port
	User     string // ACL user; empty: the default user
	Password string // empty: no AUTH
	// TLS, when set, wraps the connection (rediss://).
	TLS *tls.Config
	// Timeout bounds every wait for the server: dialing and each read or
	// write. Zero means DefaultTimeout.
	Timeout time.Duration
}

// ParseURL reads redis://[user:password@]host[:port][/db] or rediss://...
// (TLS). The database number is accepted and ignored: an RDB holds all of
// them. Without a password in the URL, passwordEnv (when not empty) names
// an environment variable that supplies it.
func ParseURL(raw, passwordEnv string) (Options, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || (u.Scheme != "redis" && u.Scheme != "rediss") {
		return Options{}, fmt.Errorf("invalid Redis URL %q: want redis://[user:password@]host[:port] or rediss://... for TLS", redact(raw))
	}
	if u.RawQuery != "" {
		return Options{}, fmt.Errorf("invalid Redis URL %q: query parameters are not supported", redact(raw))
	}
	if p := strings.Trim(u.Path, "/"); p != "" {
		if _, err := strconv.Atoi(p); err != nil {
			return Options{}, fmt.Errorf("invalid Redis URL %q: the path must be a database number", redact(raw))
		}
	}
	host, port := u.Hostname(), u.Port()
	if port == "" {
		port = "6379"
	}
	o := Options{Addr: net.JoinHostPort(host, port)}
	if u.User != nil {
		if pw, ok := u.User.Password(); ok {
			o.User, o.Password = u.User.Username(), pw
		} else {
			// redis://PASSWORD@host: a password alone, as redis-cli -u reads it.
			o.Password = u.User.Username()
		}
	}
	if o.Password == "" && passwordEnv != "" {
		o.Password = os.Getenv(passwordEnv)
	}
	if u.Scheme == "rediss" {
		o.TLS = &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
	}
	return o, nil
}

// redact removes the password from a Redis URL for messages.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		// Not a URL, so the user information cannot be found exactly:
		// everything between the scheme and the last @ goes.
		scheme, at := strings.Index(raw, "://"), strings.LastIndex(raw, "@")
		if scheme >= 0 && at > scheme {
			return raw[:scheme+3] + "xxxxx" + raw[at:]
		}
		return raw
	}
	if u.User == nil {
		return raw
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	} else if u.User.Username() != "" {
		u.User = url.User("xxxxx")
	}
	return u.String()
}

// ServerError is an error reply of the server, such as "NOPERM ...".
type ServerError struct{ Msg string }

func (e *ServerError) Error() string { return e.Msg }

// Code is the first word of the error, such as ERR, NOPERM or WRONGPASS.
func (e *ServerError) Code() string {
	code, _, _ := strings.Cut(e.Msg, " ")
	return code
}

// Client is one connection to a Redis server speaking RESP2.
type Client struct {
	opts Options
	ctx  context.Context
	conn net.Conn
	br   *bufio.Reader
	bw   *bufio.Writer
	stop func() bool
}

// timeoutConn sets a fresh deadline before every read and write, so the
// timeout restarts whenever the peer makes progress.
type timeoutConn struct {
	net.Conn
	timeout time.Duration
}

func (c *timeoutConn) Read(p []byte) (int, error) {
	_ = c.Conn.SetReadDeadline(time.Now().Add(c.timeout))
	return c.Conn.Read(p)
}

func (c *timeoutConn) Write(p []byte) (int, error) {
	_ = c.Conn.SetWriteDeadline(time.Now().Add(c.timeout))
	return c.Conn.Write(p)
}

// Dial connects and authenticates. The connection is closed when ctx ends.
func Dial(ctx context.Context, o Options) (*Client, error) {
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	d := net.Dialer{Timeout: o.Timeout}
	raw, err := d.DialContext(ctx, "tcp", o.Addr)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("redis %s: %w", o.Addr, err)
	}
	conn := raw
	if o.TLS != nil {
		tc := tls.Client(raw, o.TLS)
		hctx, cancel := context.WithTimeout(ctx, o.Timeout)
		err := tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			raw.Close()
			return nil, fmt.Errorf("redis %s: TLS: %w", o.Addr, err)
		}
		conn = tc
	}
	tconn := &timeoutConn{Conn: conn, timeout: o.Timeout}
	c := &Client{opts: o, ctx: ctx, conn: conn, br: bufio.NewReaderSize(tconn, 64<<10), bw: bufio.NewWriter(tconn)}
	c.stop = context.AfterFunc(ctx, func() { conn.Close() })
	if o.Password != "" {
		args := []string{"AUTH", o.Password}
		if o.User != "" {
			args = []string{"AUTH", o.User, o.Password}
		}
		_, err := c.Do(args...)
		var se *ServerError
		switch {
		case errors.As(err, &se) && strings.Contains(se.Msg, "without any password configured"):
			// The server needs no password; go on without.
		case errors.As(err, &se):
			c.Close()
			return nil, fmt.Errorf("redis %s: authentication failed: %s", o.Addr, se.Msg)
		case err != nil:
			c.Close()
			return nil, err
		}
	}
	return c, nil
}

// Addr is the server's address as given.
func (c *Client) Addr() string { return c.opts.Addr }

// LocalAddr is this end of the connection: the local address facing the server.
func (c *Client) LocalAddr() net.Addr { return c.conn.LocalAddr() }

// Close closes the connection.
func (c *Client) Close() error {
	c.stop()
	return c.conn.Close()
}

// wrap turns connection errors into messages naming the server.
func (c *Client) wrap(err error) error {
	if err == nil {
		return nil
	}
	if c.ctx.Err() != nil {
		return c.ctx.Err()
	}
	var se *ServerError
	if errors.As(err, &se) {
		return err
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("redis %s: no answer for %s (timeout)", c.opts.Addr, c.opts.Timeout)
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("redis %s: the server closed the connection", c.opts.Addr)
	}
	return fmt.Errorf("redis %s: %w", c.opts.Addr, err)
}

// send writes one command as a RESP array of bulk strings.
func (c *Client) send(args ...string) error {
	fmt.Fprintf(c.bw, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(c.bw, "$%d\r\n%s\r\n", len(a), a)
	}
	return c.wrap(c.bw.Flush())
}

// Do sends a command and reads its reply: a string (simple or bulk), an
// int64, nil, or a []any; an error reply is a *ServerError.
func (c *Client) Do(args ...string) (any, error) {
	if err := c.send(args...); err != nil {
		return nil, err
	}
	v, err := readReply(c.br, 0)
	return v, c.wrap(err)
}

// Info runs INFO [section] and returns its fields; database lines of the
// keyspace section appear as "db0" -> "keys=1,expires=0,avg_ttl=0".
func (c *Client) Info(section string) (map[string]string, error) {
	args := []string{"INFO"}
	if section != "" {
		args = append(args, section)
	}
	v, err := c.Do(args...)
	if err != nil {
		return nil, err
	}
	s, ok := v.(string)
	if !ok {
		return nil, fmt.Errorf("redis %s: INFO returned %T, not text", c.opts.Addr, v)
	}
	return parseInfo(s), nil
}

// parseInfo splits INFO output into its key:value fields.
func parseInfo(s string) map[string]string {
	m := map[string]string{}
	for _, line := range strings.Split(s, "\n") {
		line = strings.TrimRight(line, "\r")
		if line == "" || line[0] == '#' {
			continue
		}
		if k, v, ok := strings.Cut(line, ":"); ok {
			m[k] = v
		}
	}
	return m
}

// Keyspace extracts the key counts from INFO fields (db0:keys=3,expires=1,...).
func Keyspace(info map[string]string) map[int]DBKeys {
	out := map[int]DBKeys{}
	for k, v := range info {
		n, ok := strings.CutPrefix(k, "db")
		db, err := strconv.Atoi(n)
		if !ok || err != nil {
			continue
		}
		var dk DBKeys
		for _, f := range strings.Split(v, ",") {
			name, val, _ := strings.Cut(f, "=")
			x, _ := strconv.ParseInt(val, 10, 64)
			switch name {
			case "keys":
				dk.Keys = x
			case "expires":
				dk.Expires = x
			}
		}
		out[db] = dk
	}
	return out
}

const maxBulk = 512 << 20

// readLine reads a line ending in \r\n (or \n) without the terminator.
func readLine(br *bufio.Reader) (string, error) {
	line, err := br.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		return "", errors.New("protocol error: line too long")
	}
	if err != nil {
		return "", err
	}
	return strings.TrimSuffix(strings.TrimSuffix(string(line), "\n"), "\r"), nil
}

func readReply(br *bufio.Reader, depth int) (any, error) {
	line, err := readLine(br)
	if err != nil {
		return nil, err
	}
	if line == "" {
		return nil, errors.New("protocol error: empty reply line")
	}
	switch line[0] {
	case '+':
		return line[1:], nil
	case '-':
		return nil, &ServerError{Msg: line[1:]}
	case ':':
		n, err := strconv.ParseInt(line[1:], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("protocol error: bad integer %q", line)
		}
		return n, nil
	case '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil || n > maxBulk {
			return nil, fmt.Errorf("protocol error: bad bulk length %q", line)
		}
		if n < 0 {
			return nil, nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(br, buf); err != nil {
			return nil, err
		}
		return string(buf[:n]), nil
	case '*':
		n, err := strconv.Atoi(line[1:])
		if err != nil || depth > 8 || n > 1<<24 {
			return nil, fmt.Errorf("protocol error: bad array %q", line)
		}
		if n < 0 {
			return nil, nil
		}
		out := make([]any, 0, min(n, 1024))
		for range n {
			v, err := readReply(br, depth+1)
			var se *ServerError
			if err != nil && !errors.As(err, &se) {
				return nil, err
			}
			if err != nil {
				v = err
			}
			out = append(out, v)
		}
		return out, nil
	}
	return nil, fmt.Errorf("protocol error: unexpected reply %q", truncate(line, 40))
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
