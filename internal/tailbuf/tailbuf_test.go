package tailbuf

import (
	"strings"
	"testing"
)

func TestKeepsTheEnd(t *testing.T) {
	b := New(10)
	b.Write([]byte("  hello "))
	if b.String() != "hello" {
		t.Fatalf("%q", b.String())
	}
	b.Write([]byte(strings.Repeat("x", 20) + "0123456789"))
	if b.String() != "0123456789" {
		t.Fatalf("%q", b.String())
	}
}
