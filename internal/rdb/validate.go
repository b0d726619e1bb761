package rdb

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// maxVersion is the newest RDB format version accepted (Redis 7.4 and 8
// write 12). Older versions down to 1 are accepted; versions before 5
// carry no checksum.
const maxVersion = 12

// DBKeys counts the keys of one database and how many of them have a TTL.
type DBKeys struct {
	Keys    int64 `json:"keys"`
	Expires int64 `json:"expires"`
}

// Info describes a validated RDB.
type Info struct {
	Version  int   // RDB format version from the header
	Size     int64 // bytes, header to checksum
	Checksum uint64
	// Aux holds the short AUX fields (redis-ver, redis-bits, ctime, ...).
	Aux map[string]string
	// Keys maps database numbers to key counts, found by walking the
	// structure. It is nil when the walk met something it does not know
	// (CountErr says what); the data is still valid if the checksum is.
	Keys     map[int]DBKeys
	CountErr error
}

// FormatError reports an RDB that is truncated, corrupt or not an RDB.
type FormatError struct {
	Offset int64 // byte offset where the problem shows, -1 if none
	Msg    string
}

func (e *FormatError) Error() string {
	if e.Offset < 0 {
		return "invalid RDB: " + e.Msg
	}
	return fmt.Sprintf("invalid RDB at byte %d: %s", e.Offset, e.Msg)
}

// ErrIncomplete is returned by Result before the input was read to its end.
var ErrIncomplete = errors.New("the RDB was not read to its end")

// Validator checks an RDB written to it in pieces of any size, without
// holding it in memory: the header when the first 9 bytes arrive (Write
// then fails), the rest in Close. The last 9 bytes must be the EOF opcode
// 0xFF and the little-endian CRC64 of everything before the checksum
// (a zero checksum means the writer disabled checksums, as Redis does with
// rdbchecksum no). A walk of the structure in a second goroutine counts
// keys per database and, when there is no checksum, must end exactly at the
// EOF opcode.
type Validator struct {
	n       int64
	head    [9]byte
	version int
	crc     uint64
	last    byte    // the newest byte included in crc
	tail    [8]byte // the newest bytes, not yet in crc (they may be the checksum)
	tailN   int
	err     error // sticky header error
	pw      *io.PipeWriter
	walked  chan walkResult
	closed  bool
	info    *Info
	infoErr error
}

// NewValidator starts a validator. Call Close when the input ends (or is
// abandoned): it releases the validator's goroutine.
func NewValidator() *Validator {
	pr, pw := io.Pipe()
	v := &Validator{pw: pw, walked: make(chan walkResult, 1)}
	go func() {
		res := walk(pr)
		_, _ = io.Copy(io.Discard, pr) // keep accepting writes after the walk ended
		v.walked <- res
	}()
	return v
}

// Write feeds the next bytes. It fails once the header shows the input is
// not an RDB of a supported version.
func (v *Validator) Write(p []byte) (int, error) {
	if v.err != nil {
		return 0, v.err
	}
	if v.closed {
		return 0, errors.New("rdb: write after Close")
	}
	if v.n < 9 {
		k := copy(v.head[v.n:], p)
		if v.n+int64(k) == 9 {
			if v.version, v.err = parseHeader(v.head[:]); v.err != nil {
				return 0, v.err
			}
		}
	}
	v.n += int64(len(p))
	if len(p) >= len(v.tail) {
		v.sum(v.tail[:v.tailN])
		v.sum(p[:len(p)-len(v.tail)])
		v.tailN = copy(v.tail[:], p[len(p)-len(v.tail):])
	} else {
		if excess := v.tailN + len(p) - len(v.tail); excess > 0 {
			v.sum(v.tail[:excess])
			v.tailN = copy(v.tail[:], v.tail[excess:v.tailN])
		}
		v.tailN += copy(v.tail[v.tailN:], p)
	}
	// The walker never fails a write: it drains what it does not need.
	_, _ = v.pw.Write(p)
	return len(p), nil
}

func (v *Validator) sum(b []byte) {
	if len(b) > 0 {
		v.crc = crc64Jones(v.crc, b)
		v.last = b[len(b)-1]
	}
}

// Close ends the input and returns what the RDB holds, or why it is invalid.
func (v *Validator) Close() (*Info, error) {
	if v.closed {
		return v.info, v.infoErr
	}
	v.closed = true
	v.pw.Close()
	res := <-v.walked
	v.info, v.infoErr = v.verdict(res)
	return v.info, v.infoErr
}

func (v *Validator) verdict(res walkResult) (*Info, error) {
	if v.err != nil {
		return nil, v.err
	}
	if v.n < 9 {
		return nil, &FormatError{Offset: v.n, Msg: fmt.Sprintf("truncated: only %d bytes, not even the header", v.n)}
	}
	info := &Info{Version: v.version, Size: v.n, Aux: res.aux}
	var eofAt int64
	if v.version >= 5 {
		if v.n < 9+1+8 {
			return nil, &FormatError{Offset: v.n, Msg: "truncated: no end-of-file opcode and checksum"}
		}
		eofAt = v.n - 9
		if v.last != opEOF {
			return nil, &FormatError{Offset: eofAt, Msg: fmt.Sprintf("truncated or corrupt: byte %#02x where the end-of-file opcode 0xff belongs (9 bytes before the end)", v.last)}
		}
		info.Checksum = binary.LittleEndian.Uint64(v.tail[:])
		if info.Checksum != 0 && info.Checksum != v.crc {
			return nil, &FormatError{Offset: -1, Msg: fmt.Sprintf("CRC64 mismatch: the RDB says %016x, its content gives %016x (corrupt or truncated)", info.Checksum, v.crc)}
		}
	} else {
		eofAt = v.n - 1
		if v.n < 10 || v.tail[v.tailN-1] != opEOF {
			return nil, &FormatError{Offset: eofAt, Msg: "truncated or corrupt: the last byte is not the end-of-file opcode 0xff"}
		}
	}
	if res.err == nil && res.eofAt != eofAt {
		res.err = &FormatError{Offset: res.eofAt, Msg: fmt.Sprintf("the structure ends here, not at the end-of-file opcode at byte %d", eofAt)}
		res.unsupported = false
	}
	if res.err != nil {
		// Without a checksum the walk is the only check of the content.
		if info.Checksum == 0 && !res.unsupported {
			return nil, res.err
		}
		info.CountErr = res.err
		return info, nil
	}
	info.Keys = res.keys
	return info, nil
}

func parseHeader(h []byte) (int, error) {
	if string(h[:5]) != "REDIS" {
		return 0, &FormatError{Offset: 0, Msg: fmt.Sprintf("not an RDB: it starts with %q, not \"REDIS\"", h[:5])}
	}
	for _, c := range h[5:9] {
		if c < '0' || c > '9' {
			return 0, &FormatError{Offset: 5, Msg: fmt.Sprintf("not an RDB: version %q is not a number", h[5:9])}
		}
	}
	ver, _ := strconv.Atoi(string(h[5:9]))
	if ver < 1 || ver > maxVersion {
		return 0, &FormatError{Offset: 5, Msg: fmt.Sprintf("RDB format version %d is not supported (this cairn reads versions 1 to %d)", ver, maxVersion)}
	}
	return ver, nil
}

// Reader passes an RDB through unchanged while validating it. At the end
// of the input it returns io.EOF only if the RDB is complete and intact,
// and the validation error otherwise.
type Reader struct {
	r    io.Reader
	v    *Validator
	done bool
	info *Info
	err  error
}

// NewReader validates what is read from r. Read it to the end or Close it.
func NewReader(r io.Reader) *Reader {
	return &Reader{r: r, v: NewValidator()}
}

func (r *Reader) Read(p []byte) (int, error) {
	if r.done {
		if r.err != nil {
			return 0, r.err
		}
		return 0, io.EOF
	}
	n, err := r.r.Read(p)
	if n > 0 {
		if _, werr := r.v.Write(p[:n]); werr != nil {
			r.finish(werr)
			return 0, werr
		}
	}
	switch {
	case err == io.EOF:
		info, verr := r.v.Close()
		r.done, r.info, r.err = true, info, verr
		if verr != nil {
			return n, verr
		}
		return n, io.EOF
	case err != nil:
		r.finish(err)
		return n, err
	}
	return n, nil
}

func (r *Reader) finish(err error) {
	_, _ = r.v.Close()
	r.done, r.err = true, err
}

// Result returns the RDB's description once it was read to its end and is
// valid, the error that ended it, or ErrIncomplete.
func (r *Reader) Result() (*Info, error) {
	if !r.done {
		return nil, ErrIncomplete
	}
	return r.info, r.err
}

// Close releases the validator of an abandoned input.
func (r *Reader) Close() error {
	if !r.done {
		r.finish(ErrIncomplete)
	}
	return nil
}

// Validate reads an RDB to its end and checks it.
func Validate(r io.Reader) (*Info, error) {
	rd := NewReader(r)
	defer rd.Close()
	if _, err := io.Copy(io.Discard, rd); err != nil {
		return nil, err
	}
	return rd.Result()
}
