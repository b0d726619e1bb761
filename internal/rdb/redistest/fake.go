package redistest

import (
	"bufio"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
)

// After says what a Fake does once its Sync handler returned.
type After int

const (
	Continue After = iota // read the next command (after an error reply)
	Hold                  // keep the connection open and silent, as a master after a transfer
	Close                 // close the connection (a server going away)
)

// Fake is a scripted RESP server standing in for a replication master.
type Fake struct {
	Addr string
	// Reply answers every command but PSYNC and SYNC (default: +OK).
	Reply func(args []string) string
	// Sync answers PSYNC and SYNC with raw bytes.
	Sync func(args []string, w *bufio.Writer) After
	// Commands receives every command received (the first 100).
	Commands chan []string
}

// StartFake listens on 127.0.0.1 until the test ends.
func StartFake(t testing.TB, sync func(args []string, w *bufio.Writer) After) *Fake {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &Fake{Addr: ln.Addr().String(), Sync: sync, Commands: make(chan []string, 100),
		Reply: func([]string) string { return "+OK\r\n" }}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go f.serve(conn)
		}
	}()
	return f
}

// URL is redis://ADDR.
func (f *Fake) URL() string { return "redis://" + f.Addr }

func (f *Fake) serve(conn net.Conn) {
	defer conn.Close()
	br, bw := bufio.NewReader(conn), bufio.NewWriter(conn)
	for {
		args, err := readCommand(br)
		if err != nil {
			return
		}
		if len(args) == 0 {
			continue
		}
		select {
		case f.Commands <- args:
		default:
		}
		cmd := strings.ToUpper(args[0])
		if cmd != "PSYNC" && cmd != "SYNC" {
			bw.WriteString(f.Reply(args))
			bw.Flush()
			continue
		}
		after := f.Sync(args, bw)
		bw.Flush()
		switch after {
		case Hold:
			_, _ = io.Copy(io.Discard, br)
			return
		case Close:
			return
		}
	}
}

// readCommand reads one RESP array of bulk strings.
func readCommand(br *bufio.Reader) ([]string, error) {
	line, err := br.ReadString('\n')
	if err != nil {
		return nil, err
	}
	line = strings.TrimRight(line, "\r\n")
	if !strings.HasPrefix(line, "*") {
		return strings.Fields(line), nil
	}
	n, err := strconv.Atoi(line[1:])
	if err != nil {
		return nil, err
	}
	args := make([]string, n)
	for i := range args {
		h, err := br.ReadString('\n')
		if err != nil {
			return nil, err
		}
		l, err := strconv.Atoi(strings.TrimRight(h, "\r\n")[1:])
		if err != nil {
			return nil, err
		}
		buf := make([]byte, l+2)
		if _, err := io.ReadFull(br, buf); err != nil {
			return nil, err
		}
		args[i] = string(buf[:l])
	}
	return args, nil
}
