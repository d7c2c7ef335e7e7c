package wal

import (
	"fmt"
	"strconv"
)

// LSN is a PostgreSQL XLogRecPtr: a byte position in the WAL stream.
type LSN uint64

// InvalidLSN is PostgreSQL's InvalidXLogRecPtr.
const InvalidLSN LSN = 0

const hexDigits = "0123456789ABCDEF"

// String returns the PostgreSQL text form "%X/%X" (upper-case hex, high and
// low 32 bits, no zero padding), e.g. "0/9000F8" or "16/B374D848".
func (l LSN) String() string {
	var buf [17]byte
	return string(l.AppendText(buf[:0]))
}

// AppendText appends the String form of l to b and returns the extended
// slice. It does not allocate when b has room for 17 more bytes.
func (l LSN) AppendText(b []byte) []byte {
	b = appendHex32(b, uint32(l>>32))
	b = append(b, '/')
	return appendHex32(b, uint32(l))
}

func appendHex32(b []byte, v uint32) []byte {
	shift := 28
	for shift > 0 && v>>uint(shift)&0xF == 0 {
		shift -= 4
	}
	for ; shift >= 0; shift -= 4 {
		b = append(b, hexDigits[v>>uint(shift)&0xF])
	}
	return b
}

// ParseLSN parses the "%X/%X" form. Hex digits of either case are accepted.
// Both halves are required and each must have 1 to 8 hex digits; nothing
// else (no sign, prefix or white space) is allowed.
func ParseLSN(s string) (LSN, error) {
	for i := 0; i < len(s); i++ {
		if s[i] != '/' {
			continue
		}
		hi, ok1 := parseHex32(s[:i])
		lo, ok2 := parseHex32(s[i+1:])
		if !ok1 || !ok2 {
			break
		}
		return LSN(uint64(hi)<<32 | uint64(lo)), nil
	}
	return InvalidLSN, fmt.Errorf("wal: invalid LSN %s: want %%X/%%X", strconv.Quote(s))
}

func parseHex32(s string) (uint32, bool) {
	if len(s) == 0 || len(s) > 8 {
		return 0, false
	}
	var v uint32
	for i := 0; i < len(s); i++ {
		d, ok := hexValue(s[i])
		if !ok {
			return 0, false
		}
		v = v<<4 | uint32(d)
	}
	return v, true
}

func hexValue(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}

// Sizes of the fixed parts of the WAL format.
const (
	BlockSize           = 8192 // XLOG_BLCKSZ (wal_block_size)
	ShortPageHeaderSize = 24   // SizeOfXLogShortPHD
	LongPageHeaderSize  = 40   // SizeOfXLogLongPHD
	RecordHeaderSize    = 24   // SizeOfXLogRecord
)

// Bounds of wal_segment_size.
const (
	MinSegmentSize = 1 << 20
	MaxSegmentSize = 1 << 30
)

// ValidSegmentSize reports whether n is a power of two between 1 MiB and
// 1 GiB inclusive, the sizes PostgreSQL accepts for wal_segment_size.
func ValidSegmentSize(n uint64) bool {
	return n >= MinSegmentSize && n <= MaxSegmentSize && n&(n-1) == 0
}

// The segment helpers below require ValidSegmentSize(segSize); with
// segSize == 0 they panic like an integer division by zero.

// SegmentNo returns the number of the segment that holds lsn (XLByteToSeg).
func SegmentNo(lsn LSN, segSize uint64) uint64 {
	return uint64(lsn) / segSize
}

// SegmentStart returns the LSN of the first byte of the segment holding lsn.
func SegmentStart(lsn LSN, segSize uint64) LSN {
	return lsn - LSN(uint64(lsn)%segSize)
}

// SegmentOffset returns the offset of lsn inside its segment
// (XLogSegmentOffset).
func SegmentOffset(lsn LSN, segSize uint64) uint64 {
	return uint64(lsn) % segSize
}

// segmentsPerXLogID is PostgreSQL's XLogSegmentsPerXLogId.
func segmentsPerXLogID(segSize uint64) uint64 {
	return 0x100000000 / segSize
}

// SegmentFileName returns the 24-character WAL file name of segment segno on
// timeline tli: "%08X%08X%08X" of (tli, segno/perId, segno%perId) with
// perId = 0x100000000/segSize.
func SegmentFileName(tli uint32, segno uint64, segSize uint64) string {
	per := segmentsPerXLogID(segSize)
	var buf [24]byte
	b := appendHex32Padded(buf[:0], tli)
	b = appendHex32Padded(b, uint32(segno/per))
	b = appendHex32Padded(b, uint32(segno%per))
	return string(b)
}

func appendHex32Padded(b []byte, v uint32) []byte {
	for shift := 28; shift >= 0; shift -= 4 {
		b = append(b, hexDigits[v>>uint(shift)&0xF])
	}
	return b
}

// ParseSegmentFileName parses a WAL segment file name as produced by
// SegmentFileName. The name must be exactly 24 upper-case hex digits (no
// suffix such as ".partial") and its low part must be below
// 0x100000000/segSize; otherwise, or if segSize is not valid, ok is false.
func ParseSegmentFileName(name string, segSize uint64) (tli uint32, segno uint64, ok bool) {
	if len(name) != 24 || !ValidSegmentSize(segSize) {
		return 0, 0, false
	}
	var parts [3]uint32
	for p := range parts {
		v, ok := parseHex8(name[p*8 : p*8+8])
		if !ok {
			return 0, 0, false
		}
		parts[p] = v
	}
	per := segmentsPerXLogID(segSize)
	if uint64(parts[2]) >= per {
		return 0, 0, false
	}
	return parts[0], uint64(parts[1])*per + uint64(parts[2]), true
}

// HistoryFileName returns the name of the history file of timeline tli,
// "%08X.history".
func HistoryFileName(tli uint32) string {
	var buf [16]byte
	return string(append(appendHex32Padded(buf[:0], tli), ".history"...))
}

// IsSegmentName reports whether name has the form of a segment file name,
// 24 upper-case hex digits, whatever the segment size (which
// ParseSegmentFileName needs to number it).
func IsSegmentName(name string) bool {
	if len(name) != 24 {
		return false
	}
	for _, c := range []byte(name) {
		if !('0' <= c && c <= '9' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

// ParseHistoryFileName parses "%08X.history" (upper-case hex, as
// HistoryFileName writes it) and returns the timeline; ok is false for any
// other name and for timeline 0.
func ParseHistoryFileName(name string) (tli uint32, ok bool) {
	if len(name) != 16 || name[8:] != ".history" {
		return 0, false
	}
	tli, ok = parseHex8(name[:8])
	return tli, ok && tli != 0
}

// parseHex8 parses 8 upper-case hex digits, as PostgreSQL writes them in
// file names.
func parseHex8(s string) (uint32, bool) {
	var v uint32
	for _, c := range []byte(s) {
		var d byte
		switch {
		case '0' <= c && c <= '9':
			d = c - '0'
		case 'A' <= c && c <= 'F':
			d = c - 'A' + 10
		default:
			return 0, false
		}
		v = v<<4 | uint32(d)
	}
	return v, true
}

// FormatSegmentSize formats a byte count the way PostgreSQL displays a
// byte-unit GUC such as wal_segment_size (SHOW wal_segment_size): with the
// largest of the units TB, GB, MB, kB that divides it exactly, else in bytes
// with "B". Zero is shown as "0", without a unit.
func FormatSegmentSize(n uint64) string {
	if n == 0 {
		return "0"
	}
	units := [...]struct {
		name string
		mult uint64
	}{{"TB", 1 << 40}, {"GB", 1 << 30}, {"MB", 1 << 20}, {"kB", 1 << 10}}
	for _, u := range units {
		if n%u.mult == 0 {
			return strconv.FormatUint(n/u.mult, 10) + u.name
		}
	}
	return strconv.FormatUint(n, 10) + "B"
}
