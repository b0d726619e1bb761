package rdb

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"
)

func TestCRC64Jones(t *testing.T) {
	// The check value Redis's crc64.c tests with.
	if got := crc64Jones(0, []byte("123456789")); got != 0xe9c6d914c4b8d9ca {
		t.Fatalf("crc64(123456789) = %016x, want e9c6d914c4b8d9ca", got)
	}
	// Piecewise updates agree with one update.
	data := bytes.Repeat([]byte("cairn rdb "), 1000)
	crc := uint64(0)
	for i := 0; i < len(data); i += 7 {
		crc = crc64Jones(crc, data[i:min(i+7, len(data))])
	}
	if crc != crc64Jones(0, data) {
		t.Fatal("piecewise CRC differs")
	}
}

// builder writes synthetic RDBs.
type builder struct{ bytes.Buffer }

func (b *builder) length(n uint64) {
	switch {
	case n < 1<<6:
		b.WriteByte(byte(n))
	case n < 1<<14:
		b.WriteByte(0x40 | byte(n>>8))
		b.WriteByte(byte(n))
	case n < 1<<32:
		b.WriteByte(0x80)
		_ = binary.Write(b, binary.BigEndian, uint32(n))
	default:
		b.WriteByte(0x81)
		_ = binary.Write(b, binary.BigEndian, n)
	}
}

func (b *builder) str(s string) {
	b.length(uint64(len(s)))
	b.WriteString(s)
}

func (b *builder) aux(k, v string) {
	b.WriteByte(opAux)
	b.str(k)
	b.str(v)
}

// rdbFile returns header + body + EOF + checksum (zero if !checksum).
func rdbFile(version int, checksum bool, body func(b *builder)) []byte {
	var b builder
	fmt.Fprintf(&b, "REDIS%04d", version)
	body(&b)
	b.WriteByte(opEOF)
	if version >= 5 {
		var sum uint64
		if checksum {
			sum = crc64Jones(0, b.Bytes())
		}
		_ = binary.Write(&b, binary.LittleEndian, sum)
	}
	return b.Bytes()
}

// sample has every encoding the walk distinguishes, in two databases.
func sample(b *builder) {
	b.aux("redis-ver", "7.0.15")
	b.WriteByte(opAux)
	b.str("redis-bits")
	b.Write([]byte{0xc0, 64}) // 8-bit integer string
	b.WriteByte(opSelectDB)
	b.length(0)
	b.WriteByte(opResizeDB)
	b.length(9)
	b.length(1)
	b.WriteByte(typeString)
	b.str("plain")
	b.str("value")
	b.WriteByte(opExpireMS)
	b.Write(make([]byte, 8))
	b.WriteByte(typeString)
	b.str("int")
	b.Write([]byte{0xc2, 1, 2, 3, 4}) // 32-bit integer string
	b.WriteByte(typeString)
	b.str("lzf")
	b.Write([]byte{0xc3, 3, 10, 'a', 'b', 'c'}) // LZF: clen 3, len 10
	b.WriteByte(typeList)
	b.str("list")
	b.length(2)
	b.str("a")
	b.str("b")
	b.WriteByte(typeZset)
	b.str("zset")
	b.length(2)
	b.str("m1")
	b.WriteByte(3)
	b.WriteString("1.5")
	b.str("m2")
	b.WriteByte(254) // +inf
	b.WriteByte(typeZset2)
	b.str("zset2")
	b.length(1)
	b.str("m")
	b.Write(make([]byte, 8))
	b.WriteByte(typeHash)
	b.str("hash")
	b.length(1)
	b.str("f")
	b.str("v")
	b.WriteByte(typeListQuicklist2)
	b.str("ql")
	b.length(1)
	b.length(2)
	b.str("listpack bytes")
	b.WriteByte(typeStreamListpack3)
	b.str("stream")
	b.length(1)
	b.str("0123456789abcdef")
	b.str("listpack")
	for range 8 { // length, last id, first id, max deleted id, entries added
		b.length(1)
	}
	b.length(1) // groups
	b.str("group")
	b.length(1)
	b.length(1)
	b.length(1)               // entries read
	b.length(1)               // PEL
	b.Write(make([]byte, 24)) // id + delivery time
	b.length(1)               // delivery count
	b.length(1)               // consumers
	b.str("alice")
	b.Write(make([]byte, 16)) // seen, active
	b.length(1)
	b.Write(make([]byte, 16))
	b.WriteByte(typeModule2)
	b.str("module")
	b.length(12345)
	b.length(moduleOpUInt)
	b.length(7)
	b.length(moduleOpStr)
	b.str("x")
	b.length(moduleOpDbl)
	b.Write(make([]byte, 8))
	b.length(moduleOpEOF)
	b.WriteByte(opSelectDB)
	b.length(3)
	b.WriteByte(opFreq)
	b.WriteByte(5)
	b.WriteByte(typeHashMeta)
	b.str("hfe")
	b.Write(make([]byte, 8))
	b.length(1)
	b.length(0)
	b.str("f")
	b.str("v")
	b.WriteByte(opExpireSec)
	b.Write(make([]byte, 4))
	b.WriteByte(typeSetIntset)
	b.str("intset")
	b.str("\x02\x00\x00\x00\x01\x00\x00\x00\x05\x00")
}

func TestValidateSample(t *testing.T) {
	data := rdbFile(11, true, sample)
	info, err := Validate(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	want := map[int]DBKeys{0: {Keys: 10, Expires: 1}, 3: {Keys: 2, Expires: 1}}
	if !maps.Equal(info.Keys, want) || info.CountErr != nil {
		t.Errorf("keys %v (%v), want %v", info.Keys, info.CountErr, want)
	}
	if info.Version != 11 || info.Size != int64(len(data)) || info.Aux["redis-ver"] != "7.0.15" || info.Aux["redis-bits"] != "64" {
		t.Errorf("info %+v", info)
	}
	// Byte by byte gives the same verdict.
	info2, err := Validate(iotest.OneByteReader(bytes.NewReader(data)))
	if err != nil || !maps.Equal(info2.Keys, want) {
		t.Errorf("one byte at a time: %v %v", info2, err)
	}
	// A disabled checksum (zero) is accepted.
	if _, err := Validate(bytes.NewReader(rdbFile(11, false, sample))); err != nil {
		t.Errorf("zero checksum: %v", err)
	}
	// Versions before 5 have no checksum.
	if info, err := Validate(bytes.NewReader(rdbFile(4, false, sample))); err != nil || info.Keys[0].Keys != 10 {
		t.Errorf("version 4: %v %v", info, err)
	}
}

func TestValidateRejects(t *testing.T) {
	good := rdbFile(10, true, sample)
	// Every truncation fails, whatever the chunking.
	for n := 0; n < len(good); n++ {
		if _, err := Validate(bytes.NewReader(good[:n])); err == nil {
			t.Fatalf("truncated to %d of %d bytes: accepted", n, len(good))
		}
	}
	// Every flipped byte fails: the header, the content (CRC), the EOF
	// opcode or the checksum itself.
	for i := range good {
		bad := bytes.Clone(good)
		bad[i] ^= 0x10
		if _, err := Validate(bytes.NewReader(bad)); err == nil {
			t.Fatalf("byte %d flipped: accepted", i)
		}
	}
	for _, c := range []struct {
		data []byte
		want string
	}{
		{[]byte("RADIS0010" + strings.Repeat("\x00", 20)), "not an RDB"},
		{[]byte("REDIS00x0" + strings.Repeat("\x00", 20)), "not a number"},
		{rdbFile(13, true, sample), "version 13 is not supported"},
		{rdbFile(0, true, sample), "version 0 is not supported"},
		{append(bytes.Clone(good), 0), "end-of-file opcode"},
		{good[:len(good)-1], "end-of-file opcode"},
		{[]byte("REDIS0010"), "truncated"},
	} {
		_, err := Validate(bytes.NewReader(c.data))
		var fe *FormatError
		if !errors.As(err, &fe) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q...: error %v, want a FormatError containing %q", c.data[:min(12, len(c.data))], err, c.want)
		}
	}
}

// The walk decides validity only without a checksum; with one, what it
// cannot read only makes the key counts unavailable.
func TestValidateWalk(t *testing.T) {
	unknownType := func(b *builder) {
		b.WriteByte(opSelectDB)
		b.length(0)
		b.WriteByte(200) // no such type
		b.str("k")
		b.str("v")
	}
	inconsistent := func(b *builder) {
		b.WriteByte(opSelectDB)
		b.length(0)
		b.WriteByte(typeString)
		b.str("k")
		b.length(40) // longer than what follows
		b.WriteString("short")
	}
	for _, c := range []struct {
		name     string
		data     []byte
		wantErr  bool
		countErr string
	}{
		{"unknown type, checksum", rdbFile(12, true, unknownType), false, "value type 200"},
		{"unknown type, no checksum", rdbFile(12, false, unknownType), false, "value type 200"},
		{"inconsistent, checksum", rdbFile(12, true, inconsistent), false, "truncated"},
		{"inconsistent, no checksum", rdbFile(12, false, inconsistent), true, ""},
	} {
		info, err := Validate(bytes.NewReader(c.data))
		if (err != nil) != c.wantErr {
			t.Errorf("%s: error %v, want error %v", c.name, err, c.wantErr)
			continue
		}
		if err == nil && (info.Keys != nil || info.CountErr == nil || !strings.Contains(info.CountErr.Error(), c.countErr)) {
			t.Errorf("%s: keys %v, count error %v, want none and %q", c.name, info.Keys, info.CountErr, c.countErr)
		}
	}
}

func TestReaderPassesThrough(t *testing.T) {
	data := rdbFile(10, true, sample)
	rd := NewReader(iotest.HalfReader(bytes.NewReader(data)))
	if _, err := rd.Result(); !errors.Is(err, ErrIncomplete) {
		t.Errorf("Result before the end: %v", err)
	}
	got, err := io.ReadAll(rd)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("ReadAll: %v, %d bytes of %d", err, len(got), len(data))
	}
	if info, err := rd.Result(); err != nil || info.Size != int64(len(data)) {
		t.Errorf("Result: %v %v", info, err)
	}
	// A read error is passed on and becomes the result.
	boom := errors.New("boom")
	rd = NewReader(io.MultiReader(bytes.NewReader(data[:20]), iotest.ErrReader(boom)))
	if _, err := io.ReadAll(rd); !errors.Is(err, boom) {
		t.Errorf("read error: %v", err)
	}
	if _, err := rd.Result(); !errors.Is(err, boom) {
		t.Errorf("Result after a read error: %v", err)
	}
}

// FuzzValidate: no input crashes or hangs the validator, the verdict does
// not depend on how the input is split, and an accepted input has the
// EOF opcode and checksum where they belong.
func FuzzValidate(f *testing.F) {
	f.Add(rdbFile(10, true, sample), uint8(7))
	f.Add(rdbFile(12, false, sample), uint8(1))
	f.Add(rdbFile(4, false, sample), uint8(3))
	if data, err := os.ReadFile(filepath.Join("testdata", "small.rdb")); err == nil {
		f.Add(data, uint8(5))
	}
	f.Fuzz(func(t *testing.T, data []byte, split uint8) {
		info, err := Validate(bytes.NewReader(data))
		v := NewValidator()
		step := int(split)%17 + 1
		var werr error
		for i := 0; i < len(data) && werr == nil; i += step {
			_, werr = v.Write(data[i:min(i+step, len(data))])
		}
		info2, err2 := v.Close()
		if werr != nil {
			err2 = werr
		}
		if (err == nil) != (err2 == nil) {
			t.Fatalf("whole: %v; in pieces of %d: %v", err, step, err2)
		}
		if err != nil {
			return
		}
		if info.Size != int64(len(data)) || !maps.Equal(info.Keys, info2.Keys) {
			t.Fatalf("whole and pieces disagree: %+v vs %+v", info, info2)
		}
		if info.Version >= 5 {
			sum := binary.LittleEndian.Uint64(data[len(data)-8:])
			if data[len(data)-9] != opEOF || (sum != 0 && sum != crc64Jones(0, data[:len(data)-8])) {
				t.Fatal("accepted without the EOF opcode and a matching checksum")
			}
		}
	})
}
