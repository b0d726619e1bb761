package rdb

import (
	"bufio"
	"bytes"
	"math/rand/v2"
	"strings"
	"testing"
)

func TestHoldBack(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for range 200 {
		data := make([]byte, rng.IntN(100))
		for i := range data {
			data[i] = byte(i)
		}
		var out bytes.Buffer
		h := &holdBack{w: &out}
		for rest := data; len(rest) > 0; {
			n := min(len(rest), 1+rng.IntN(12))
			if _, err := h.Write(rest[:n]); err != nil {
				t.Fatal(err)
			}
			rest = rest[n:]
		}
		if want := data[:max(0, len(data)-8)]; !bytes.Equal(out.Bytes(), want) {
			t.Fatalf("before flush: %v, want %v", out.Bytes(), want)
		}
		if err := h.flush(); err != nil || !bytes.Equal(out.Bytes(), data) {
			t.Fatalf("after flush: %v, want %v", out.Bytes(), data)
		}
	}
}

func TestReadCommand(t *testing.T) {
	br := bufio.NewReader(strings.NewReader("*3\r\n$8\r\nREPLCONF\r\n$3\r\nACK\r\n$1\r\n0\r\n\r\nPING\r\nPSYNC ? -1\r\n"))
	for _, want := range []string{"REPLCONF ACK 0", "PING", "PSYNC ? -1"} {
		args, err := readCommand(br)
		if err != nil || strings.Join(args, " ") != want {
			t.Fatalf("%q %v, want %q", args, err, want)
		}
	}
	if _, err := readCommand(bufio.NewReader(strings.NewReader("*1\r\n:5\r\n"))); err == nil {
		t.Error("integer argument accepted")
	}
}
