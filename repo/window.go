package repo

import (
	"sync"

	"github.com/cairn-backup/cairn/crypto"
	"github.com/cairn-backup/cairn/index"
)

// Delta bases (read by loadStored with viaWindow) are read one small blob at a time, but in the order they
// were written: the deltas of one pack mostly have their bases next to
// each other in an older pack. So a base read fetches a window of the pack
// after the blob and keeps the last few windows: one request then serves
// many bases (on S3 that is the difference between one GET per chunk and
// one per window). Options.BaseWindow sets the window size: 1 MiB by
// default, more where a request costs a round trip.
const (
	defaultBaseWindow = 1 << 20
	baseWindows       = 8
)

type packWindow struct {
	pack crypto.ID
	off  int64
	data []byte
}

// windowCache holds the most recently read pack windows, newest last.
type windowCache struct {
	mu   sync.Mutex
	wins []packWindow
}

func (c *windowCache) get(loc index.Location) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	start, end := int64(loc.Offset), int64(loc.Offset)+int64(loc.Length)
	for i := len(c.wins) - 1; i >= 0; i-- {
		w := c.wins[i]
		if w.pack == loc.Pack && w.off <= start && end <= w.off+int64(len(w.data)) {
			return w.data[start-w.off : end-w.off : end-w.off]
		}
	}
	return nil
}

func (c *windowCache) put(w packWindow) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.wins) == baseWindows {
		copy(c.wins, c.wins[1:])
		c.wins = c.wins[:baseWindows-1]
	}
	c.wins = append(c.wins, w)
}
