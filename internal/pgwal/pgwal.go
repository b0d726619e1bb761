// Package pgwal knows the few things about PostgreSQL's write-ahead log
// that archiving and point-in-time recovery need: the names of WAL files
// (segments, timeline history files, backup history files), log sequence
// numbers, the system identifier in a segment's first page and in
// pg_control, and the start of a base backup in its backup_label. It reads
// bytes and names only; it runs nothing.
package pgwal

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// DefaultSegmentSize is initdb's default WAL segment size.
const DefaultSegmentSize = 16 << 20

// Kind is the kind of file in pg_wal that the archive stores.
type Kind int

// The kinds of archived files.
const (
	Segment       Kind = iota + 1 // 000000010000000000000003
	Partial                       // 000000010000000000000003.partial
	History                       // 00000002.history
	BackupHistory                 // 000000010000000000000003.00000028.backup
)

// Name is a parsed WAL file name. For History only Timeline is set.
type Name struct {
	Kind     Kind
	Timeline uint32
	Log, Seg uint32 // the segment's two halves, as in its name
}

func parseHex8(s string) (uint32, bool) {
	if len(s) != 8 {
		return 0, false
	}
	v, err := strconv.ParseUint(s, 16, 32)
	return uint32(v), err == nil && strings.ToUpper(s) == s
}

// ParseName parses the name of a file PostgreSQL archives or asks for.
func ParseName(name string) (Name, error) {
	bad := fmt.Errorf("%q is not a WAL file name", name)
	if tl, ok := strings.CutSuffix(name, ".history"); ok {
		t, ok := parseHex8(tl)
		if !ok || t == 0 {
			return Name{}, bad
		}
		return Name{Kind: History, Timeline: t}, nil
	}
	if len(name) < 24 {
		return Name{}, bad
	}
	t, ok1 := parseHex8(name[0:8])
	log, ok2 := parseHex8(name[8:16])
	seg, ok3 := parseHex8(name[16:24])
	if !ok1 || !ok2 || !ok3 || t == 0 {
		return Name{}, bad
	}
	n := Name{Kind: Segment, Timeline: t, Log: log, Seg: seg}
	switch rest := name[24:]; {
	case rest == "":
	case rest == ".partial":
		n.Kind = Partial
	case len(rest) == len(".00000028.backup") && strings.HasSuffix(rest, ".backup") && rest[0] == '.':
		if _, ok := parseHex8(rest[1:9]); !ok {
			return Name{}, bad
		}
		n.Kind = BackupHistory
	default:
		return Name{}, bad
	}
	return n, nil
}

// SegmentName returns the file name of segment number no on timeline tl,
// for segments of segSize bytes.
func SegmentName(tl uint32, no uint64, segSize int64) string {
	perLog := uint64(0x100000000 / segSize)
	return fmt.Sprintf("%08X%08X%08X", tl, no/perLog, no%perLog)
}

// SegmentNo is the position of a segment in the WAL (timelines aside), for
// segments of segSize bytes.
func (n Name) SegmentNo(segSize int64) uint64 {
	return uint64(n.Log)*uint64(0x100000000/segSize) + uint64(n.Seg)
}

// LSN is a position in the WAL.
type LSN uint64

// ParseLSN parses the X/Y form PostgreSQL prints.
func ParseLSN(s string) (LSN, error) {
	hi, lo, ok := strings.Cut(strings.TrimSpace(s), "/")
	if ok {
		h, err1 := strconv.ParseUint(hi, 16, 32)
		l, err2 := strconv.ParseUint(lo, 16, 32)
		if err1 == nil && err2 == nil {
			return LSN(h<<32 | l), nil
		}
	}
	return 0, fmt.Errorf("%q is not an LSN (like 0/3000060)", s)
}

func (l LSN) String() string { return fmt.Sprintf("%X/%X", uint64(l)>>32, uint32(l)) }

// SegmentNo is the segment holding l.
func (l LSN) SegmentNo(segSize int64) uint64 { return uint64(l) / uint64(segSize) }

// The first page of a segment starts with a long page header
// (XLogLongPageHeaderData, access/xlog_internal.h): magic (2 bytes), info
// (2), timeline (4), page address (8), remaining length (4, then 4 of
// padding), system identifier (8), segment size (4), block size (4).
const (
	longHeaderLen = 40
	xlpLongHeader = 0x0002
)

// SegmentHeader is what the first page of a segment says about it.
type SegmentHeader struct {
	Timeline    uint32
	PageAddr    LSN
	SystemID    uint64
	SegmentSize uint32
}

// ErrNoHeader is returned for a segment whose first page has no long
// header (it is not a WAL segment, or is damaged).
var ErrNoHeader = errors.New("no long page header: not a WAL segment")

// ParseSegmentHeader reads the long page header at the start of a segment.
func ParseSegmentHeader(b []byte) (SegmentHeader, error) {
	if len(b) < longHeaderLen {
		return SegmentHeader{}, ErrNoHeader
	}
	le := binary.LittleEndian
	info := le.Uint16(b[2:])
	if info&xlpLongHeader == 0 || le.Uint16(b[0:]) < 0xD000 {
		return SegmentHeader{}, ErrNoHeader
	}
	h := SegmentHeader{
		Timeline:    le.Uint32(b[4:]),
		PageAddr:    LSN(le.Uint64(b[8:])),
		SystemID:    le.Uint64(b[24:]),
		SegmentSize: le.Uint32(b[32:]),
	}
	if h.SegmentSize == 0 || h.SegmentSize&(h.SegmentSize-1) != 0 || h.SegmentSize < 1<<20 || h.SegmentSize > 1<<30 {
		return SegmentHeader{}, fmt.Errorf("segment size %d in the page header: %w", h.SegmentSize, ErrNoHeader)
	}
	return h, nil
}

// SystemID reads the database system identifier of the cluster in dataDir
// from the first field of global/pg_control.
func SystemID(dataDir string) (uint64, error) {
	f, err := os.Open(filepath.Join(dataDir, "global", "pg_control"))
	if err != nil {
		return 0, fmt.Errorf("read the system identifier: %w", err)
	}
	defer f.Close()
	var b [8]byte
	if _, err := f.ReadAt(b[:], 0); err != nil {
		return 0, fmt.Errorf("read the system identifier from %s: %w", f.Name(), err)
	}
	id := binary.LittleEndian.Uint64(b[:])
	if id == 0 {
		return 0, fmt.Errorf("%s: no system identifier", f.Name())
	}
	return id, nil
}

// BackupLabel is what a base backup's backup_label records.
type BackupLabel struct {
	StartLSN     LSN
	StartSegment string // the WAL file of StartLSN
	Timeline     uint32
	StartTime    time.Time
	Label        string
}

// ParseBackupLabel reads a backup_label file.
func ParseBackupLabel(b []byte) (BackupLabel, error) {
	var l BackupLabel
	sc := bufio.NewScanner(bytes.NewReader(b))
	var haveStart, haveTL bool
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ": ")
		if !ok {
			continue
		}
		switch key {
		case "START WAL LOCATION":
			// 0/2000028 (file 000000010000000000000002)
			lsn, file, ok := strings.Cut(val, " (file ")
			file, ok2 := strings.CutSuffix(file, ")")
			if !ok || !ok2 {
				return l, fmt.Errorf("backup_label: bad START WAL LOCATION %q", val)
			}
			var err error
			if l.StartLSN, err = ParseLSN(lsn); err != nil {
				return l, fmt.Errorf("backup_label: %w", err)
			}
			if n, err := ParseName(file); err != nil || n.Kind != Segment {
				return l, fmt.Errorf("backup_label: bad start WAL file %q", file)
			}
			l.StartSegment, haveStart = file, true
		case "START TIMELINE":
			t, err := strconv.ParseUint(val, 10, 32)
			if err != nil || t == 0 {
				return l, fmt.Errorf("backup_label: bad START TIMELINE %q", val)
			}
			l.Timeline, haveTL = uint32(t), true
		case "START TIME":
			if t, err := time.Parse("2006-01-02 15:04:05 MST", val); err == nil {
				l.StartTime = t
			}
		case "LABEL":
			l.Label = val
		}
	}
	if !haveStart || !haveTL {
		return l, errors.New("backup_label: no START WAL LOCATION or START TIMELINE")
	}
	return l, nil
}
