package rdb

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// RDB opcodes (src/rdb.h).
const (
	opSlotInfo    = 0xf4
	opFunction2   = 0xf5
	opModuleAux   = 0xf7
	opIdle        = 0xf8
	opFreq        = 0xf9
	opAux         = 0xfa
	opResizeDB    = 0xfb
	opExpireMS    = 0xfc
	opExpireSec   = 0xfd
	opSelectDB    = 0xfe
	opEOF         = 0xff
	moduleOpEOF   = 0
	moduleOpSInt  = 1
	moduleOpUInt  = 2
	moduleOpFloat = 3
	moduleOpDbl   = 4
	moduleOpStr   = 5
)

// Value types (src/rdb.h) the walk knows how to skip.
const (
	typeString          = 0
	typeList            = 1
	typeSet             = 2
	typeZset            = 3
	typeHash            = 4
	typeZset2           = 5
	typeModule2         = 7
	typeHashZipmap      = 9
	typeListZiplist     = 10
	typeSetIntset       = 11
	typeZsetZiplist     = 12
	typeHashZiplist     = 13
	typeListQuicklist   = 14
	typeStreamListpacks = 15
	typeHashListpack    = 16
	typeZsetListpack    = 17
	typeListQuicklist2  = 18
	typeStreamListpack2 = 19
	typeSetListpack     = 20
	typeStreamListpack3 = 21
	typeHashMetaPreGA   = 22
	typeHashLpExPreGA   = 23
	typeHashMeta        = 24
	typeHashLpEx        = 25
)

const (
	maxAuxFields = 64
	maxAuxLen    = 256
)

type walkResult struct {
	keys  map[int]DBKeys
	aux   map[string]string
	eofAt int64 // offset of the EOF opcode
	err   error
	// unsupported: the walk stopped at a type or opcode it does not know,
	// not at a contradiction in the data.
	unsupported bool
}

// walker skips through an RDB value by value. Every loop step consumes at
// least one byte, so any input ends the walk in time linear in its length.
type walker struct {
	br  *bufio.Reader
	cr  countingReader
	err error
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

type unsupportedError struct{ what string }

func (e *unsupportedError) Error() string {
	return "cannot count keys: " + e.what + " (unknown to this cairn); the RDB itself was checked by its checksum"
}

// walk reads an RDB from r and counts its keys.
func walk(r io.Reader) (res walkResult) {
	w := &walker{cr: countingReader{r: r}}
	w.br = bufio.NewReaderSize(&w.cr, 64<<10)
	res.keys = map[int]DBKeys{}
	res.aux = map[string]string{}
	defer func() {
		if w.err != nil {
			var ue *unsupportedError
			res.unsupported = errors.As(w.err, &ue)
			res.err = w.err
			res.keys = nil
		}
	}()
	var head [9]byte
	w.full(head[:])
	if w.err != nil {
		return
	}
	version, err := parseHeader(head[:])
	if err != nil {
		w.err = err
		return
	}
	db := 0
	expire := false
	for w.err == nil {
		at := w.pos()
		t := w.byte()
		if w.err != nil {
			return
		}
		switch t {
		case opEOF:
			res.eofAt = at
			return
		case opSelectDB:
			n := w.length()
			if n > 1<<20 {
				w.fail(at, fmt.Sprintf("database number %d", n))
			}
			db = int(n)
		case opExpireSec:
			w.skip(4)
			expire = true
		case opExpireMS:
			w.skip(8)
			expire = true
		case opResizeDB:
			w.length()
			w.length()
		case opAux:
			k, v := w.shortString(), w.shortString()
			if len(res.aux) < maxAuxFields && k != "" {
				res.aux[k] = v
			}
		case opFreq:
			w.skip(1)
		case opIdle:
			w.length()
		case opModuleAux:
			w.length() // module id
			if op := w.length(); op != moduleOpUInt && w.err == nil {
				w.fail(at, "module aux data without its 'when' field")
			}
			w.length()
			w.moduleValue()
		case opFunction2:
			w.str()
		case opSlotInfo:
			w.length()
			w.length()
			w.length()
		default:
			if t >= 0xf0 {
				w.err = &unsupportedError{fmt.Sprintf("RDB opcode %#02x at byte %d", t, at)}
				return
			}
			w.str() // the key
			w.value(t, version)
			if w.err == nil {
				k := res.keys[db]
				k.Keys++
				if expire {
					k.Expires++
				}
				res.keys[db] = k
			}
			expire = false
		}
	}
	return
}

func (w *walker) pos() int64 { return w.cr.n - int64(w.br.Buffered()) }

func (w *walker) fail(at int64, msg string) {
	if w.err == nil {
		w.err = &FormatError{Offset: at, Msg: msg}
	}
}

func (w *walker) truncated(err error) {
	if w.err != nil {
		return
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		w.err = &FormatError{Offset: w.pos(), Msg: "truncated: the data ends inside a value"}
		return
	}
	w.err = err
}

func (w *walker) byte() byte {
	if w.err != nil {
		return 0
	}
	b, err := w.br.ReadByte()
	if err != nil {
		w.truncated(err)
	}
	return b
}

func (w *walker) full(p []byte) {
	if w.err != nil {
		return
	}
	if _, err := io.ReadFull(w.br, p); err != nil {
		w.truncated(err)
	}
}

func (w *walker) skip(n uint64) {
	for n > 0 && w.err == nil {
		k := min(n, 1<<30)
		d, err := w.br.Discard(int(k))
		n -= uint64(d)
		if err != nil {
			w.truncated(err)
		}
	}
}

// lengthOrEnc reads an RDB length; enc reports the special string
// encodings (11xxxxxx), whose kind is then returned as the value.
func (w *walker) lengthOrEnc() (n uint64, enc bool) {
	at := w.pos()
	b := w.byte()
	switch b >> 6 {
	case 0:
		return uint64(b & 0x3f), false
	case 1:
		return uint64(b&0x3f)<<8 | uint64(w.byte()), false
	case 3:
		return uint64(b & 0x3f), true
	}
	var buf [8]byte
	switch b {
	case 0x80:
		w.full(buf[:4])
		return uint64(binary.BigEndian.Uint32(buf[:4])), false
	case 0x81:
		w.full(buf[:])
		return binary.BigEndian.Uint64(buf[:]), false
	}
	w.fail(at, fmt.Sprintf("invalid length encoding %#02x", b))
	return 0, false
}

func (w *walker) length() uint64 {
	at := w.pos()
	n, enc := w.lengthOrEnc()
	if enc {
		w.fail(at, "a string encoding where a length belongs")
	}
	return n
}

// str skips a string: raw, integer-encoded or LZF-compressed.
func (w *walker) str() {
	at := w.pos()
	n, enc := w.lengthOrEnc()
	switch {
	case !enc:
		w.skip(n)
	case n <= 2: // 8, 16 or 32 bit integer
		w.skip(1 << n)
	default:
		w.skipEncoded(at, n)
	}
}

// shortString reads a string of up to maxAuxLen bytes (longer ones and LZF
// ones are skipped and returned empty).
func (w *walker) shortString() string {
	at := w.pos()
	n, enc := w.lengthOrEnc()
	if !enc {
		if n > maxAuxLen {
			w.skip(n)
			return ""
		}
		b := make([]byte, n)
		w.full(b)
		return string(b)
	}
	var buf [4]byte
	switch n {
	case 0:
		w.full(buf[:1])
		return strconv.Itoa(int(int8(buf[0])))
	case 1:
		w.full(buf[:2])
		return strconv.Itoa(int(int16(binary.LittleEndian.Uint16(buf[:2]))))
	case 2:
		w.full(buf[:4])
		return strconv.Itoa(int(int32(binary.LittleEndian.Uint32(buf[:4]))))
	}
	w.skipEncoded(at, n)
	return ""
}

// skipEncoded skips an LZF string (kind 3): compressed length, uncompressed
// length, data.
func (w *walker) skipEncoded(at int64, kind uint64) {
	if kind != 3 {
		w.fail(at, fmt.Sprintf("unknown string encoding %d", kind))
		return
	}
	clen := w.length()
	w.length()
	w.skip(clen)
}

// strings skips a count followed by per times that many strings.
func (w *walker) strings(per int) {
	for n := w.length(); n > 0 && w.err == nil; n-- {
		for range per {
			w.str()
		}
	}
}

func (w *walker) moduleValue() {
	for w.err == nil {
		at := w.pos()
		switch op := w.length(); op {
		case moduleOpEOF:
			return
		case moduleOpSInt, moduleOpUInt:
			w.length()
		case moduleOpFloat:
			w.skip(4)
		case moduleOpDbl:
			w.skip(8)
		case moduleOpStr:
			w.str()
		default:
			w.fail(at, fmt.Sprintf("unknown module value opcode %d", op))
		}
	}
}

func (w *walker) value(t byte, version int) {
	at := w.pos()
	switch t {
	case typeString:
		w.str()
	case typeList, typeSet, typeListQuicklist:
		w.strings(1)
	case typeHash:
		w.strings(2)
	case typeZset:
		for n := w.length(); n > 0 && w.err == nil; n-- {
			w.str()
			// Score as text: a length byte; 253-255 stand for nan, +inf, -inf.
			if l := w.byte(); l < 253 {
				w.skip(uint64(l))
			}
		}
	case typeZset2:
		for n := w.length(); n > 0 && w.err == nil; n-- {
			w.str()
			w.skip(8)
		}
	case typeModule2:
		w.length() // module type id
		w.moduleValue()
	case typeHashZipmap, typeListZiplist, typeSetIntset, typeZsetZiplist, typeHashZiplist,
		typeHashListpack, typeZsetListpack, typeSetListpack, typeHashLpExPreGA:
		w.str()
	case typeHashLpEx:
		w.skip(8) // minimal field expiry
		w.str()
	case typeListQuicklist2:
		for n := w.length(); n > 0 && w.err == nil; n-- {
			w.length() // container: plain or packed
			w.str()
		}
	case typeHashMeta, typeHashMetaPreGA:
		if t == typeHashMeta {
			w.skip(8) // minimal field expiry
		}
		for n := w.length(); n > 0 && w.err == nil; n-- {
			w.length() // field TTL
			w.str()
			w.str()
		}
	case typeStreamListpacks, typeStreamListpack2, typeStreamListpack3:
		w.stream(t)
	default:
		w.err = &unsupportedError{fmt.Sprintf("value type %d at byte %d (RDB version %d)", t, at, version)}
	}
}

func (w *walker) stream(t byte) {
	w.strings(2) // listpacks: master ID, listpack
	w.length()   // number of entries
	w.length()   // last ID
	w.length()
	if t >= typeStreamListpack2 {
		for range 5 { // first ID, max deleted ID, entries added
			w.length()
		}
	}
	for groups := w.length(); groups > 0 && w.err == nil; groups-- {
		w.str()    // name
		w.length() // last delivered ID
		w.length()
		if t >= typeStreamListpack2 {
			w.length() // entries read
		}
		for pel := w.length(); pel > 0 && w.err == nil; pel-- {
			w.skip(16 + 8) // ID, delivery time
			w.length()     // delivery count
		}
		for consumers := w.length(); consumers > 0 && w.err == nil; consumers-- {
			w.str()
			w.skip(8) // seen time
			if t >= typeStreamListpack3 {
				w.skip(8) // active time
			}
			for pel := w.length(); pel > 0 && w.err == nil; pel-- {
				w.skip(16)
			}
		}
	}
}
