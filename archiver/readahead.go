package archiver

import (
	"io"
)

// readAhead reads a stream in a goroutine of its own into a few blocks
// ahead of its consumer. A stream is usually another program's output (pg_dump
// through a 64 KiB pipe): read only when the chunker asks for more, that
// program would stop whenever the chunker computes, and the two would take
// turns instead of running at the same time on different cores.
type readAhead struct {
	full  chan []byte // blocks read, in order
	empty chan []byte // blocks to read into
	stop  chan struct{}
	block []byte // the current block
	cur   []byte // the part of it not yet returned
	err   error  // set by the goroutine before it closes full
}

// readAheadBlock and readAheadBlocks bound what is read ahead (8 MiB).
const (
	readAheadBlock  = 1 << 20
	readAheadBlocks = 8
)

func newReadAhead(r io.Reader) *readAhead {
	ra := &readAhead{
		full:  make(chan []byte, readAheadBlocks),
		empty: make(chan []byte, readAheadBlocks),
		stop:  make(chan struct{}),
	}
	for range readAheadBlocks {
		ra.empty <- make([]byte, readAheadBlock)
	}
	go ra.fill(r)
	return ra
}

// fill reads whole blocks (the last may be short) until the stream ends,
// fails, or the consumer stops.
func (ra *readAhead) fill(r io.Reader) {
	defer close(ra.full)
	for {
		var b []byte
		select {
		case b = <-ra.empty:
		case <-ra.stop:
			return
		}
		n, err := io.ReadFull(r, b[:cap(b)])
		if n > 0 {
			select {
			case ra.full <- b[:n]:
			case <-ra.stop:
				return
			}
		}
		switch err {
		case nil:
		case io.ErrUnexpectedEOF:
			ra.err = io.EOF
			return
		default:
			ra.err = err
			return
		}
	}
}

func (ra *readAhead) Read(p []byte) (int, error) {
	if len(ra.cur) == 0 {
		b, ok := <-ra.full
		if !ok {
			return 0, ra.err
		}
		ra.block, ra.cur = b, b
	}
	n := copy(p, ra.cur)
	ra.cur = ra.cur[n:]
	if len(ra.cur) == 0 {
		ra.empty <- ra.block[:cap(ra.block)]
	}
	return n, nil
}

// close stops the goroutine once it is done with its current read (a
// stream that never delivers again keeps it; its owner ends the stream).
func (ra *readAhead) close() { close(ra.stop) }
