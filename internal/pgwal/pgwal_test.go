package pgwal

import (
	"encoding/binary"
	"testing"
)

func TestParseName(t *testing.T) {
	for _, c := range []struct {
		name string
		want Name
	}{
		{"000000010000000000000003", Name{Kind: Segment, Timeline: 1, Log: 0, Seg: 3}},
		{"0000000200000001000000FF", Name{Kind: Segment, Timeline: 2, Log: 1, Seg: 0xFF}},
		{"000000010000000000000003.partial", Name{Kind: Partial, Timeline: 1, Seg: 3}},
		{"00000002.history", Name{Kind: History, Timeline: 2}},
		{"000000010000000000000002.00000028.backup", Name{Kind: BackupHistory, Timeline: 1, Seg: 2}},
	} {
		got, err := ParseName(c.name)
		if err != nil || got != c.want {
			t.Errorf("ParseName(%q) = %+v, %v; want %+v", c.name, got, err, c.want)
		}
	}
	for _, bad := range []string{"", "RECOVERYXLOG", "00000000.history", "000000000000000000000003", "00000001000000000000000g",
		"000000010000000000000003.bak", "0000000100000000000000003", "../00000001000000000000000", "000000010000000000000003.0000002.backup",
		"00000001000000000000000a"} {
		if _, err := ParseName(bad); err == nil {
			t.Errorf("ParseName(%q) accepted", bad)
		}
	}
}

func TestSegmentNumbers(t *testing.T) {
	for _, size := range []int64{1 << 20, 16 << 20, 1 << 30} {
		for _, no := range []uint64{0, 1, 255, 256, 4095, 4096, 1 << 20} {
			name := SegmentName(3, no, size)
			n, err := ParseName(name)
			if err != nil || n.Timeline != 3 || n.SegmentNo(size) != no {
				t.Errorf("segment %d of %d bytes: %s parses as %+v (%v)", no, size, name, n, err)
			}
		}
	}
	if got := SegmentName(1, 256, 16<<20); got != "000000010000000100000000" {
		t.Errorf("the segment after ...00FF is %s", got)
	}
	l, err := ParseLSN("1/2000028")
	if err != nil || l.String() != "1/2000028" || l.SegmentNo(16<<20) != 256+2 {
		t.Errorf("LSN 1/2000028: %v %v %d", l, err, l.SegmentNo(16<<20))
	}
	for _, bad := range []string{"", "12", "x/1", "1/", "100000000/0"} {
		if _, err := ParseLSN(bad); err == nil {
			t.Errorf("ParseLSN(%q) accepted", bad)
		}
	}
}

func header(sys uint64, tl uint32, segSize uint32) []byte {
	b := make([]byte, 8192)
	le := binary.LittleEndian
	le.PutUint16(b[0:], 0xD110)
	le.PutUint16(b[2:], xlpLongHeader)
	le.PutUint32(b[4:], tl)
	le.PutUint64(b[8:], 0x3000000)
	le.PutUint64(b[24:], sys)
	le.PutUint32(b[32:], segSize)
	le.PutUint32(b[36:], 8192)
	return b
}

func TestParseSegmentHeader(t *testing.T) {
	h, err := ParseSegmentHeader(header(7312345678901234567, 2, 16<<20))
	if err != nil || h.SystemID != 7312345678901234567 || h.Timeline != 2 || h.SegmentSize != 16<<20 || h.PageAddr != 0x3000000 {
		t.Fatalf("%+v %v", h, err)
	}
	noLong := header(1, 1, 16<<20)
	noLong[2] = 0
	for _, bad := range [][]byte{nil, make([]byte, 8192), header(1, 1, 3<<20), header(1, 1, 0), noLong, header(1, 1, 16<<20)[:30]} {
		if _, err := ParseSegmentHeader(bad); err == nil {
			t.Errorf("accepted a bad header (%d bytes)", len(bad))
		}
	}
}

const label = `START WAL LOCATION: 0/2000028 (file 000000010000000000000002)
CHECKPOINT LOCATION: 0/2000060
BACKUP METHOD: streamed
BACKUP FROM: primary
START TIME: 2026-12-02 01:10:11 UTC
LABEL: cairn 2026-12-02T01:10:11Z
START TIMELINE: 1
`

func TestParseBackupLabel(t *testing.T) {
	l, err := ParseBackupLabel([]byte(label))
	if err != nil || l.StartLSN != 0x2000028 || l.StartSegment != "000000010000000000000002" || l.Timeline != 1 || l.StartTime.IsZero() || l.Label != "cairn 2026-12-02T01:10:11Z" {
		t.Fatalf("%+v %v", l, err)
	}
	for _, bad := range []string{"", "START TIMELINE: 1\n", "START WAL LOCATION: 0/2000028 (file x)\nSTART TIMELINE: 1\n", "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nSTART TIMELINE: 0\n"} {
		if _, err := ParseBackupLabel([]byte(bad)); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

// FuzzParse feeds the same bytes to every parser: none may panic, and what
// they accept must be consistent.
func FuzzParse(f *testing.F) {
	f.Add([]byte("000000010000000000000003"))
	f.Add([]byte("00000002.history"))
	f.Add([]byte("0/2000028"))
	f.Add([]byte(label))
	f.Add(header(42, 1, 16<<20)[:64])
	f.Fuzz(func(t *testing.T, b []byte) {
		if n, err := ParseName(string(b)); err == nil && n.Kind == Segment {
			if again := SegmentName(n.Timeline, n.SegmentNo(16<<20), 16<<20); n.Seg < 256 && again != string(b) {
				t.Fatalf("%q parses as segment %d, which is named %q", b, n.SegmentNo(16<<20), again)
			}
		}
		if l, err := ParseLSN(string(b)); err == nil {
			if l2, err := ParseLSN(l.String()); err != nil || l2 != l {
				t.Fatalf("LSN %q does not round-trip: %v", b, l)
			}
		}
		if h, err := ParseSegmentHeader(b); err == nil && (h.SegmentSize < 1<<20 || h.SegmentSize&(h.SegmentSize-1) != 0) {
			t.Fatalf("accepted segment size %d", h.SegmentSize)
		}
		_, _ = ParseBackupLabel(b)
	})
}
