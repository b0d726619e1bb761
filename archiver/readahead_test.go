package archiver

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
	"testing/iotest"
)

func TestReadAhead(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	data := make([]byte, 3*readAheadBlock+12345)
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	// Every byte in order, through short reads on both sides.
	ra := newReadAhead(iotest.HalfReader(bytes.NewReader(data)))
	got, err := io.ReadAll(iotest.OneByteReader(io.LimitReader(ra, 1000)))
	if err != nil || !bytes.Equal(got, data[:1000]) {
		t.Fatalf("first 1000 bytes: %v", err)
	}
	rest, err := io.ReadAll(ra)
	if err != nil || !bytes.Equal(rest, data[1000:]) {
		t.Fatalf("rest: %d bytes, %v", len(rest), err)
	}
	ra.close()

	// A failing stream: the bytes before the failure, then its error.
	boom := errors.New("pg_dump died")
	ra = newReadAhead(io.MultiReader(bytes.NewReader(data[:5000]), iotest.ErrReader(boom)))
	got, err = io.ReadAll(ra)
	if !errors.Is(err, boom) || !bytes.Equal(got, data[:5000]) {
		t.Fatalf("failing stream: %d bytes, %v", len(got), err)
	}
	ra.close()

	// Stopping early ends the goroutine even with blocks left to hand out.
	ra = newReadAhead(bytes.NewReader(bytes.Repeat(data, 4)))
	if _, err := io.ReadFull(ra, make([]byte, 100)); err != nil {
		t.Fatal(err)
	}
	ra.close()
	for range ra.full { // closed once the goroutine returned
	}
}
