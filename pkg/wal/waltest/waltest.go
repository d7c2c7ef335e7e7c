// Package waltest generates synthetic but fully valid PostgreSQL WAL for
// tests: segments with long and short page headers, records with correct
// CRCs and xl_prev chains, records that span pages and segments, XLOG_SWITCH
// records and overwritten (aborted) continuation records.
//
// A Builder writes a continuous WAL stream that starts at a segment
// boundary and may run over any number of segments:
//
//	b := waltest.NewSegmentBuilder(0x3000000, 16<<20, sysID, 1)
//	r1 := b.AddRecord(waltest.RmHeap, 0, 100)  // returns the record's start LSN
//	b.AddRecord(waltest.RmHeap, 0, 20000)      // spans three pages
//	b.AddSwitch()                              // rest of the segment unused
//	seg := b.Segment(0)                        // full, zero-padded segment bytes
//
// Page headers are written when the first byte of a page is written, so the
// bytes after the last record are zeros without page headers (call
// FillPageHeaders to imitate PostgreSQL's pre-initialised pages). Record
// payloads are deterministic pseudo-random bytes.
package waltest

import (
	"encoding/binary"
	"hash/crc32"

	"github.com/pgsafekeeper/safekeeper/pkg/wal"
)

// Resource manager IDs handy for records.
const (
	RmXLog uint8 = 0
	RmHeap uint8 = 10
)

// DefaultMagic is the page magic a Builder writes unless SetMagic is called
// (PostgreSQL 15).
const DefaultMagic = wal.MagicPG15

// Builder writes a WAL stream. It is not safe for concurrent use. Methods
// panic on misuse (such as an unaligned start LSN); they are meant for tests.
type Builder struct {
	start   wal.LSN
	segSize uint64
	sysID   uint64
	tli     uint32
	magic   uint16

	buf       []byte  // bytes from start; grows by whole segments
	written   uint64  // high-water mark of bytes written, relative to start
	pos       wal.LSN // next write position (MAXALIGNed after each record)
	prev      wal.LSN // start of the last record
	xid       uint32
	pageFlags uint16 // extra xlp_info flags for the next page header written
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// NewSegmentBuilder returns a Builder whose stream starts at segStart, which
// must be a multiple of segSize (a valid WAL segment size). Records get
// system ID sysID in the long page headers and timeline tli. The first
// record's xl_prev is segStart-8 unless SetPrev is called (any earlier LSN
// is fine for ScanSegment).
func NewSegmentBuilder(segStart wal.LSN, segSize uint64, sysID uint64, tli uint32) *Builder {
	if !wal.ValidSegmentSize(segSize) || wal.SegmentOffset(segStart, segSize) != 0 {
		panic("waltest: bad segment size or unaligned segment start")
	}
	prev := wal.InvalidLSN
	if segStart > 0 {
		prev = segStart - 8
	}
	return &Builder{
		start:   segStart,
		segSize: segSize,
		sysID:   sysID,
		tli:     tli,
		magic:   DefaultMagic,
		pos:     segStart,
		prev:    prev,
		xid:     1000,
	}
}

// SetMagic sets the xlp_magic of the page headers written from now on.
func (b *Builder) SetMagic(m uint16) { b.magic = m }

// SetTLI sets the xlp_tli of the page headers written from now on.
func (b *Builder) SetTLI(tli uint32) { b.tli = tli }

// SetPrev sets the xl_prev of the next record.
func (b *Builder) SetPrev(lsn wal.LSN) { b.prev = lsn }

// Start returns the LSN of the first byte of the stream.
func (b *Builder) Start() wal.LSN { return b.start }

// SegSize returns the segment size.
func (b *Builder) SegSize() uint64 { return b.segSize }

// Pos returns the current insert position: the MAXALIGNed end of the last
// record (a page start when it ended exactly there, not the position after
// that page's header), or the next segment start after AddSwitch. It is
// what ScanSegment reports as End for the segment holding the last record.
func (b *Builder) Pos() wal.LSN { return b.pos }

// Prev returns the start of the last record written.
func (b *Builder) Prev() wal.LSN { return b.prev }

// AddRecord appends a record of resource manager rmid with xl_info info and
// payloadLen bytes of payload after the 24-byte header, and returns its
// start LSN.
func (b *Builder) AddRecord(rmid, info uint8, payloadLen int) wal.LSN {
	return b.AddRecordFunc(rmid, info, payloadLen, nil)
}

// AddRecordFunc is AddRecord, but edit (if not nil) may change the
// assembled record (header included) before xl_crc is computed, to build
// records that are invalid in a specific way (bad xl_prev, rmid, tot_len).
// The record is written with len(rec) bytes whatever xl_tot_len says.
func (b *Builder) AddRecordFunc(rmid, info uint8, payloadLen int, edit func(rec []byte)) wal.LSN {
	rec := b.makeRecord(rmid, info, payloadLen)
	if edit != nil {
		edit(rec)
	}
	binary.LittleEndian.PutUint32(rec[20:], recordCRC(rec))
	start := b.writeRecord(rec)
	b.prev = start
	return start
}

// AddSwitch appends an XLOG_SWITCH record and moves the insert position to
// the next segment start. The rest of the segment stays zero, without page
// headers, as PostgreSQL 15 was observed to leave it.
func (b *Builder) AddSwitch() wal.LSN {
	start := b.AddRecord(RmXLog, wal.XLogSwitch, 0)
	if off := wal.SegmentOffset(b.pos, b.segSize); off != 0 {
		b.pos += wal.LSN(b.segSize - off)
	}
	return start
}

// AddAbortedRecord writes the beginning of a record of payloadLen payload
// bytes up to the end of the current page, as if the server crashed before
// writing its continuation, and returns its start. The record must not fit
// on the current page. The next page header gets
// XLPFirstIsOverwriteContRecord (and no continuation flag); the next record
// should be an XLOG_OVERWRITE_CONTRECORD, e.g.
// AddRecord(RmXLog, wal.XLogOverwrite, 16). xl_prev of that next record is
// the record before the aborted one, as in PostgreSQL.
func (b *Builder) AddAbortedRecord(rmid, info uint8, payloadLen int) wal.LSN {
	rec := b.makeRecord(rmid, info, payloadLen)
	binary.LittleEndian.PutUint32(rec[20:], recordCRC(rec))
	b.alignAndHeader(0)
	start := b.pos
	room := pageEnd(uint64(b.pos)) - uint64(b.pos)
	if uint64(len(rec)) <= room {
		panic("waltest: aborted record fits on its page")
	}
	b.put(rec[:room])
	b.pageFlags |= wal.XLPFirstIsOverwriteContRecord
	return start
}

// FillPageHeaders writes a page header (no continuation) on every page from
// the insert position to the end of its segment that has none yet, as
// PostgreSQL does for pages it initialises ahead of use. The insert position
// does not change.
func (b *Builder) FillPageHeaders() {
	p := uint64(b.pos)
	if p%wal.BlockSize != 0 {
		p = pageEnd(p)
	}
	segEnd := uint64(wal.SegmentStart(b.pos, b.segSize)) + b.segSize
	if uint64(b.pos) == segEnd {
		return
	}
	for ; p < segEnd; p += wal.BlockSize {
		b.writePageHeader(wal.LSN(p), 0)
	}
}

// Bytes returns the stream written so far, from Start up to the last byte
// written: normally Pos (the last record and its alignment padding; after
// AddSwitch, the switch record without the unused rest of the segment),
// further if FillPageHeaders wrote headers. It aliases the Builder's buffer.
func (b *Builder) Bytes() []byte { return b.buf[:b.written] }

// Segment returns a copy of the i-th segment of the stream (0 = the one at
// Start): segSize bytes, zeros where nothing was written.
func (b *Builder) Segment(i int) []byte {
	out := make([]byte, b.segSize)
	lo := uint64(i) * b.segSize
	if lo < uint64(len(b.buf)) {
		copy(out, b.buf[lo:])
	}
	return out
}

// SegmentStart returns the LSN of the i-th segment of the stream.
func (b *Builder) SegmentStart(i int) wal.LSN { return b.start + wal.LSN(uint64(i)*b.segSize) }

// Offset returns the offset of lsn in Bytes().
func (b *Builder) Offset(lsn wal.LSN) int { return int(lsn - b.start) }

func (b *Builder) makeRecord(rmid, info uint8, payloadLen int) []byte {
	rec := make([]byte, wal.RecordHeaderSize+payloadLen)
	binary.LittleEndian.PutUint32(rec[0:], uint32(len(rec)))
	binary.LittleEndian.PutUint32(rec[4:], b.xid)
	b.xid++
	binary.LittleEndian.PutUint64(rec[8:], uint64(b.prev))
	rec[16] = info
	rec[17] = rmid
	// xorshift64 seeded by the position: deterministic payload
	x := uint64(b.pos)*0x9E3779B97F4A7C15 | 1
	for i := wal.RecordHeaderSize; i < len(rec); i++ {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		rec[i] = byte(x)
	}
	return rec
}

// recordCRC computes xl_crc independently of package wal.
func recordCRC(rec []byte) uint32 {
	c := crc32.Update(0, castagnoli, rec[wal.RecordHeaderSize:])
	return crc32.Update(c, castagnoli, rec[:20])
}

func pageEnd(p uint64) uint64 { return p - p%wal.BlockSize + wal.BlockSize }

// alignAndHeader writes the page header if the insert position is at a page
// start; remLen > 0 marks a continuation.
func (b *Builder) alignAndHeader(remLen uint32) {
	if uint64(b.pos)%wal.BlockSize == 0 {
		b.writePageHeader(b.pos, remLen)
		b.pos += wal.LSN(b.headerSize(b.pos))
	}
}

func (b *Builder) headerSize(p wal.LSN) int {
	if wal.SegmentOffset(p, b.segSize) == 0 {
		return wal.LongPageHeaderSize
	}
	return wal.ShortPageHeaderSize
}

func (b *Builder) writeRecord(rec []byte) wal.LSN {
	b.alignAndHeader(0)
	start := b.pos
	for len(rec) > 0 {
		b.alignAndHeader(uint32(len(rec)))
		n := min(uint64(len(rec)), pageEnd(uint64(b.pos))-uint64(b.pos))
		b.put(rec[:n])
		rec = rec[n:]
	}
	b.pos = (b.pos + 7) &^ 7
	// The alignment padding is part of the stream (zeros).
	end := uint64(b.pos - b.start)
	b.grow(end)
	b.written = max(b.written, end)
	return start
}

// put writes data at the insert position (within one page) and advances it.
func (b *Builder) put(data []byte) {
	off := uint64(b.pos - b.start)
	b.grow(off + uint64(len(data)))
	copy(b.buf[off:], data)
	b.pos += wal.LSN(len(data))
	b.written = max(b.written, off+uint64(len(data)))
}

func (b *Builder) grow(n uint64) {
	for uint64(len(b.buf)) < n {
		b.buf = append(b.buf, make([]byte, b.segSize)...)
	}
}

func (b *Builder) writePageHeader(p wal.LSN, remLen uint32) {
	h := wal.PageHeader{
		Magic:    b.magic,
		Info:     b.pageFlags,
		TLI:      b.tli,
		PageAddr: p,
		RemLen:   remLen,
	}
	b.pageFlags = 0
	if remLen > 0 {
		h.Info |= wal.XLPFirstIsContRecord
	}
	if wal.SegmentOffset(p, b.segSize) == 0 {
		h.Info |= wal.XLPLongHeader
		h.SysID = b.sysID
		h.SegSize = uint32(b.segSize)
		h.XLogBlcksz = wal.BlockSize
	}
	hdr := wal.AppendPageHeader(make([]byte, 0, wal.LongPageHeaderSize), h)
	off := uint64(p - b.start)
	b.grow(off + uint64(len(hdr)))
	copy(b.buf[off:], hdr)
	b.written = max(b.written, off+uint64(len(hdr)))
}

// patternBytes is a 4099-byte pattern (a prime length, so no page or
// segment offset lines up with it).
var patternBytes = func() []byte {
	p := make([]byte, 4099)
	for i := range p {
		p[i] = byte(i*131 + i>>8)
	}
	return p
}()

// Pattern returns n arbitrary (not valid WAL) but position-determined
// bytes for the WAL stream at from: the pattern at a phase that differs
// from one 1 MB segment to the next, so that bytes read from the wrong
// place or segment do not match. For storage tests that need no records.
func Pattern(from wal.LSN, n int) []byte {
	b := make([]byte, n)
	for i := 0; i < n; {
		lsn := uint64(from) + uint64(i)
		segEnd := (lsn>>20 + 1) << 20
		phase := (lsn + (lsn>>20)*977) % uint64(len(patternBytes))
		i += copy(b[i:min(n, i+int(segEnd-lsn))], patternBytes[phase:])
	}
	return b
}
