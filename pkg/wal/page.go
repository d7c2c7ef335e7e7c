package wal

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
)

// xlp_info flags of an XLOG page header.
const (
	XLPFirstIsContRecord          = 0x0001 // first data on the page continues a record
	XLPLongHeader                 = 0x0002 // long header (first page of a segment)
	XLPBkpRemovable               = 0x0004 // backup blocks may be removed (archive compression hint)
	XLPFirstIsOverwriteContRecord = 0x0008 // replaces the missing continuation of an aborted record
	XLPAllFlags                   = 0x000F
)

// XLOG_PAGE_MAGIC of the supported major versions.
const (
	MagicPG15 = 0xD110
	MagicPG16 = 0xD113
	MagicPG17 = 0xD116
	MagicPG18 = 0xD118
)

// KnownMagic reports whether m is the XLOG_PAGE_MAGIC of PostgreSQL 15, 16,
// 17 or 18.
func KnownMagic(m uint16) bool { return MagicVersion(m) != 0 }

// MagicVersion returns the major version (15 to 18) whose XLOG_PAGE_MAGIC is
// m, or 0 if m is not known.
func MagicVersion(m uint16) int {
	switch m {
	case MagicPG15:
		return 15
	case MagicPG16:
		return 16
	case MagicPG17:
		return 17
	case MagicPG18:
		return 18
	}
	return 0
}

// PageHeader is XLogPageHeaderData, plus the XLogLongPageHeaderData fields
// when Info has XLPLongHeader. On disk it is little-endian.
type PageHeader struct {
	Magic    uint16 // xlp_magic
	Info     uint16 // xlp_info flags
	TLI      uint32 // xlp_tli: timeline of the first record on the page
	PageAddr LSN    // xlp_pageaddr: LSN of the page's first byte
	RemLen   uint32 // xlp_rem_len: bytes of a continued record remaining

	// Long header fields, valid when Info&XLPLongHeader != 0.
	SysID      uint64 // xlp_sysid
	SegSize    uint32 // xlp_seg_size
	XLogBlcksz uint32 // xlp_xlog_blcksz
}

var (
	errShortPageHeader = errors.New("wal: page header needs 24 bytes")
	errShortLongHeader = errors.New("wal: long page header needs 40 bytes")
	errShortRecord     = errors.New("wal: record header needs 24 bytes")
)

// ParsePageHeader decodes the page header at the start of b. b needs at least
// 24 bytes, or 40 when the XLPLongHeader flag is set. It only decodes; it does
// not check magic, flags or addresses. It does not allocate.
func ParsePageHeader(b []byte) (PageHeader, error) {
	if len(b) < ShortPageHeaderSize {
		return PageHeader{}, errShortPageHeader
	}
	h := PageHeader{
		Magic:    binary.LittleEndian.Uint16(b[0:]),
		Info:     binary.LittleEndian.Uint16(b[2:]),
		TLI:      binary.LittleEndian.Uint32(b[4:]),
		PageAddr: LSN(binary.LittleEndian.Uint64(b[8:])),
		RemLen:   binary.LittleEndian.Uint32(b[16:]),
	}
	if h.Info&XLPLongHeader != 0 {
		if len(b) < LongPageHeaderSize {
			return PageHeader{}, errShortLongHeader
		}
		h.SysID = binary.LittleEndian.Uint64(b[24:])
		h.SegSize = binary.LittleEndian.Uint32(b[32:])
		h.XLogBlcksz = binary.LittleEndian.Uint32(b[36:])
	}
	return h, nil
}

// Size returns the on-disk size of the header: LongPageHeaderSize when the
// XLPLongHeader flag is set, else ShortPageHeaderSize.
func (h PageHeader) Size() int {
	if h.Info&XLPLongHeader != 0 {
		return LongPageHeaderSize
	}
	return ShortPageHeaderSize
}

// AppendPageHeader appends the little-endian encoding of h (24 or 40 bytes,
// by h.Size()) to b. Padding bytes are zero.
func AppendPageHeader(b []byte, h PageHeader) []byte {
	b = binary.LittleEndian.AppendUint16(b, h.Magic)
	b = binary.LittleEndian.AppendUint16(b, h.Info)
	b = binary.LittleEndian.AppendUint32(b, h.TLI)
	b = binary.LittleEndian.AppendUint64(b, uint64(h.PageAddr))
	b = binary.LittleEndian.AppendUint32(b, h.RemLen)
	b = append(b, 0, 0, 0, 0)
	if h.Info&XLPLongHeader != 0 {
		b = binary.LittleEndian.AppendUint64(b, h.SysID)
		b = binary.LittleEndian.AppendUint32(b, h.SegSize)
		b = binary.LittleEndian.AppendUint32(b, h.XLogBlcksz)
	}
	return b
}

// Resource manager facts needed to walk records.
const (
	RMXLogID      = 0    // RM_XLOG_ID
	MaxBuiltinRM  = 21   // RM_MAX_BUILTIN_ID in PostgreSQL 15, 16 and 17
	MinCustomRM   = 128  // RM_MIN_CUSTOM_ID
	XLRInfoMask   = 0x0F // low bits of xl_info reserved for the WAL machinery
	XLogSwitch    = 0x40 // XLOG_SWITCH (rmgr RM_XLOG_ID, xl_info&0xF0)
	XLogNoop      = 0x20 // XLOG_NOOP
	XLogOverwrite = 0xD0 // XLOG_OVERWRITE_CONTRECORD
)

// ValidRmid reports whether id is a built-in (0..21) or custom (128..255)
// resource manager ID.
func ValidRmid(id uint8) bool {
	return id <= MaxBuiltinRM || id >= MinCustomRM
}

// RecordHeader is XLogRecord, the 24-byte header of every WAL record.
type RecordHeader struct {
	TotLen uint32 // xl_tot_len: whole record including this header
	Xid    uint32 // xl_xid
	Prev   LSN    // xl_prev: start of the previous record
	Info   uint8  // xl_info
	Rmid   uint8  // xl_rmid
	CRC    uint32 // xl_crc
}

// ParseRecordHeader decodes the record header at the start of b, which needs
// at least 24 bytes. It only decodes. It does not allocate.
func ParseRecordHeader(b []byte) (RecordHeader, error) {
	if len(b) < RecordHeaderSize {
		return RecordHeader{}, errShortRecord
	}
	return RecordHeader{
		TotLen: binary.LittleEndian.Uint32(b[0:]),
		Xid:    binary.LittleEndian.Uint32(b[4:]),
		Prev:   LSN(binary.LittleEndian.Uint64(b[8:])),
		Info:   b[16],
		Rmid:   b[17],
		CRC:    binary.LittleEndian.Uint32(b[20:]),
	}, nil
}

// IsSwitch reports whether h is an XLOG_SWITCH record.
func (h RecordHeader) IsSwitch() bool {
	return h.Rmid == RMXLogID && h.Info&^XLRInfoMask == XLogSwitch
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// CRC32C returns the CRC-32C (Castagnoli, reflected, init and final xor
// 0xFFFFFFFF) of b, as PostgreSQL's pg_crc32c computes it.
func CRC32C(b []byte) uint32 {
	return crc32.Checksum(b, castagnoli)
}

// RecordCRC returns xl_crc as PostgreSQL computes it for the reassembled
// record rec (page headers removed): CRC-32C over rec[24:xl_tot_len], then
// over the header bytes rec[0:20]. If rec is shorter than xl_tot_len, the
// bytes present are used (the result will then not match); if rec is
// shorter than 24 bytes, the header part is whatever is present.
func RecordCRC(rec []byte) uint32 {
	if len(rec) < RecordHeaderSize {
		return crc32.Update(0, castagnoli, rec[:min(len(rec), 20)])
	}
	end := uint64(binary.LittleEndian.Uint32(rec))
	end = max(min(end, uint64(len(rec))), RecordHeaderSize)
	c := crc32.Update(0, castagnoli, rec[RecordHeaderSize:end])
	return crc32.Update(c, castagnoli, rec[:20])
}
