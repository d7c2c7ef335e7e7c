package wal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
)

// ScanOptions describes the segment ScanSegment reads.
type ScanOptions struct {
	SegSize uint64 // wal_segment_size; must satisfy ValidSegmentSize
	SysID   uint64 // expected xlp_sysid of the first page; 0 = don't check
	Magic   uint16 // expected xlp_magic; 0 = take it from the first page, which must then be KnownMagic
}

// ScanResult is what ScanSegment found.
type ScanResult struct {
	// End is the end of valid WAL in this segment: the MAXALIGNed end of the
	// last valid complete record; the segment end after an XLOG_SWITCH
	// record; or segStart when nothing in the segment is valid. A record
	// that began in the previous segment and whose tail (the first page's
	// continuation data) is completely present counts as valid here, so End
	// may be the end of that tail even when no record starts in the segment.
	// Except after XLOG_SWITCH, End never exceeds segStart+size: a record
	// whose alignment padding is not present is not counted.
	End LSN
	// LastRecord is the start LSN of the last valid record that starts in
	// this segment, or InvalidLSN if there is none.
	LastRecord LSN
	// Switch is true when an XLOG_SWITCH record ended the segment; End is
	// then the segment end even if size is smaller (the rest of the segment
	// is unused and may be zeros without page headers).
	Switch bool
	// Continues is true when everything from End to the end of the segment
	// is consistent (all of it present, page headers valid, record header
	// checks passed as far as the header is present) and the segment ends
	// inside a record that continues in the next segment, so its CRC could
	// not be checked here. That next segment's first page must then carry
	// XLPFirstIsContRecord. This is an addition to help callers that scan
	// consecutive segments; it is false when size < SegSize.
	Continues bool
	// Magic is the xlp_magic in use (0 if the first page header is invalid).
	Magic uint16
	// TLI is xlp_tli of the first page (0 if its header is invalid).
	TLI uint32
}

// scanChunk is how much ScanSegment reads from r at a time. It is a multiple
// of BlockSize and divides every valid segment size.
const scanChunk = 64 << 10

// ScanSegment finds the end of valid WAL in one segment, the way
// PostgreSQL's xlogreader decides where replay stops (protocol.md §5.5).
//
// r holds the segment's bytes from offset 0; size is how many of them are
// present (it may be less than opts.SegSize for a partial file; more is
// ignored). segStart is the LSN of the segment's first byte and must be a
// multiple of opts.SegSize.
//
// Page headers are validated (magic, flags, long header with system ID,
// segment size and block size on the first page, xlp_pageaddr, timeline
// not going backwards). A continuation of a record that began in the
// previous segment is skipped, checking XLPFirstIsContRecord and
// xlp_rem_len on every page it covers; if it is not completely present, End
// is segStart. Then records are walked: xl_tot_len 0 (zeroed tail) ends the
// WAL; xl_tot_len < 24, an invalid rmid, a wrong xl_prev (for the first
// record that starts in the segment only xl_prev < its start is required), a
// record not completely present, a bad or missing page header or a missing
// continuation flag or wrong xlp_rem_len where the record crosses a page,
// and a CRC mismatch each make the start of that record the end of valid
// WAL. A page flagged XLPFirstIsOverwriteContRecord where an aborted
// record's continuation was expected makes the scan drop the aborted record
// and go on at that page, as PostgreSQL does. An XLOG_SWITCH record ends the
// segment.
//
// r is read in chunks of 64 KiB, so memory use does not depend on the
// segment size. Invalid data is never an error; an error is returned only
// for a failing read from r (including r holding fewer than size bytes) or
// for invalid arguments (bad segment size, unaligned or last possible
// segStart).
func ScanSegment(r io.ReaderAt, size int64, segStart LSN, opts ScanOptions) (ScanResult, error) {
	if !ValidSegmentSize(opts.SegSize) {
		return ScanResult{End: segStart}, fmt.Errorf("wal: ScanSegment: invalid segment size %d", opts.SegSize)
	}
	if SegmentOffset(segStart, opts.SegSize) != 0 || uint64(segStart) > math.MaxUint64-opts.SegSize {
		return ScanResult{End: segStart}, fmt.Errorf("wal: ScanSegment: invalid segment start %s for segment size %d", segStart, opts.SegSize)
	}
	s := scanner{
		r:        r,
		segStart: segStart,
		segSize:  opts.SegSize,
		sysID:    opts.SysID,
		magic:    opts.Magic,
	}
	if size > 0 {
		s.size = min(uint64(size), opts.SegSize)
	}
	return s.run()
}

type scanner struct {
	r        io.ReaderAt
	size     uint64 // bytes present, <= segSize
	segStart LSN
	segSize  uint64
	sysID    uint64
	magic    uint16 // expected magic; 0 until the first page sets it
	tli      uint32 // TLI of the last validated page

	buf    []byte // chunk buffer
	bufOff uint64 // segment offset of buf[0]
	bufLen uint64 // bytes of buf that are loaded
}

func maxAlign(off uint64) uint64 { return (off + 7) &^ 7 }

func pageEnd(off uint64) uint64 { return off - off%BlockSize + BlockSize }

// span returns the bytes present in [off, off+n), a range that must lie
// within one page. It is shorter than n when the data ends before off+n.
func (s *scanner) span(off, n uint64) ([]byte, error) {
	if off >= s.size {
		return nil, nil
	}
	end := min(off+n, s.size)
	if off < s.bufOff || end > s.bufOff+s.bufLen {
		if s.buf == nil {
			s.buf = make([]byte, min(scanChunk, s.size))
		}
		start := off - off%scanChunk
		want := min(uint64(len(s.buf)), s.size-start)
		got, err := s.r.ReadAt(s.buf[:want], int64(start))
		if uint64(got) < want {
			s.bufLen = 0
			if err == nil || errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, fmt.Errorf("wal: reading segment at offset %d: %w", start, err)
		}
		s.bufOff, s.bufLen = start, want
	}
	return s.buf[off-s.bufOff : end-s.bufOff], nil
}

// page validates the header of the page starting at segment offset off.
// ok is false if the header is missing or invalid.
func (s *scanner) page(off uint64) (h PageHeader, ok bool, err error) {
	b, err := s.span(off, BlockSize)
	if err != nil {
		return h, false, err
	}
	h, perr := ParsePageHeader(b)
	if perr != nil {
		return h, false, nil
	}
	switch {
	case s.magic == 0 && !KnownMagic(h.Magic),
		s.magic != 0 && h.Magic != s.magic,
		h.Info&^XLPAllFlags != 0,
		h.PageAddr != s.segStart+LSN(off),
		h.TLI < s.tli:
		return h, false, nil
	}
	if h.Info&XLPLongHeader != 0 {
		if s.sysID != 0 && h.SysID != s.sysID ||
			uint64(h.SegSize) != s.segSize ||
			h.XLogBlcksz != BlockSize {
			return h, false, nil
		}
	} else if off == 0 {
		return h, false, nil
	}
	s.magic, s.tli = h.Magic, h.TLI
	return h, true, nil
}

func (s *scanner) run() (ScanResult, error) {
	res := ScanResult{End: s.segStart}
	h, ok, err := s.page(0)
	if err != nil || !ok {
		return res, err
	}
	res.Magic, res.TLI = h.Magic, h.TLI
	off := uint64(h.Size())

	// Skip the tail of a record that began in the previous segment.
	if h.Info&XLPFirstIsContRecord != 0 {
		rem := uint64(h.RemLen)
		if rem == 0 {
			return res, nil
		}
		for {
			n := min(rem, pageEnd(off)-off)
			if off+n > s.size {
				return res, nil
			}
			off += n
			rem -= n
			if rem == 0 {
				if a := maxAlign(off); a <= s.size {
					res.End = s.segStart + LSN(a)
				}
				break
			}
			if off == s.segSize {
				res.Continues = true
				return res, nil
			}
			ph, ok, err := s.page(off)
			if err != nil || !ok {
				return res, err
			}
			if ph.Info&XLPFirstIsOverwriteContRecord != 0 {
				break // the continued record was aborted; go on at this page
			}
			if ph.Info&XLPFirstIsContRecord == 0 || uint64(ph.RemLen) != rem {
				return res, nil
			}
			off += uint64(ph.Size())
		}
	}

	prev := InvalidLSN
	for {
		off = maxAlign(off)
		if off >= s.segSize {
			return res, nil
		}
		if off%BlockSize == 0 {
			ph, ok, err := s.page(off)
			if err != nil || !ok {
				return res, err
			}
			if ph.Info&XLPFirstIsContRecord != 0 {
				return res, nil // a new record was expected here
			}
			off += uint64(ph.Size())
		}
		out, err := s.record(off, prev)
		if err != nil {
			return res, err
		}
		switch out.kind {
		case recInvalid:
			return res, nil
		case recContinues:
			res.Continues = true
			return res, nil
		case recRestart:
			off = out.end
			continue
		}
		if out.switchRec {
			res.End = s.segStart + LSN(s.segSize)
			res.LastRecord = s.segStart + LSN(off)
			res.Switch = true
			return res, nil
		}
		end := maxAlign(out.end)
		if end > s.size {
			return res, nil // alignment padding missing
		}
		prev = s.segStart + LSN(off)
		res.LastRecord = prev
		res.End = s.segStart + LSN(end)
		off = end
	}
}

type recKind int

const (
	recValid     recKind = iota
	recInvalid           // end of valid WAL at the record's start
	recContinues         // consistent up to the segment end
	recRestart           // aborted record overwritten; resume at page end
)

type recOutcome struct {
	kind      recKind
	end       uint64 // recValid: offset just past the record; recRestart: page offset
	switchRec bool
}

// record gathers and checks the record starting at segment offset start
// (8-aligned, not inside a page header). prev is the start of the previous
// valid record in this segment, or InvalidLSN if there is none.
func (s *scanner) record(start uint64, prev LSN) (recOutcome, error) {
	invalid := recOutcome{kind: recInvalid}
	b, err := s.span(start, 4)
	if err != nil || len(b) < 4 {
		return invalid, err
	}
	total := uint64(binary.LittleEndian.Uint32(b))
	if total < RecordHeaderSize {
		return invalid, nil // 0: zeroed tail
	}
	startLSN := s.segStart + LSN(start)
	var hdr [RecordHeaderSize]byte
	var crc uint32
	var got uint64
	rem := total
	cur := start
	for {
		n := min(rem, pageEnd(cur)-cur)
		b, err := s.span(cur, n)
		if err != nil || uint64(len(b)) < n {
			return invalid, err
		}
		if got < RecordHeaderSize {
			k := min(RecordHeaderSize-got, n)
			copy(hdr[got:], b[:k])
			b = b[k:]
			if got+k == RecordHeaderSize {
				rh, _ := ParseRecordHeader(hdr[:])
				if !ValidRmid(rh.Rmid) {
					return invalid, nil
				}
				if prev == InvalidLSN && rh.Prev >= startLSN || prev != InvalidLSN && rh.Prev != prev {
					return invalid, nil
				}
			}
		}
		crc = crc32.Update(crc, castagnoli, b)
		got += n
		cur += n
		rem -= n
		if rem == 0 {
			break
		}
		if cur == s.segSize {
			return recOutcome{kind: recContinues}, nil
		}
		ph, ok, err := s.page(cur)
		if err != nil || !ok {
			return invalid, err
		}
		if ph.Info&XLPFirstIsOverwriteContRecord != 0 {
			return recOutcome{kind: recRestart, end: cur}, nil
		}
		if ph.Info&XLPFirstIsContRecord == 0 || uint64(ph.RemLen) != rem {
			return invalid, nil
		}
		cur += uint64(ph.Size())
	}
	crc = crc32.Update(crc, castagnoli, hdr[:20])
	rh, _ := ParseRecordHeader(hdr[:])
	if crc != rh.CRC {
		return invalid, nil
	}
	return recOutcome{kind: recValid, end: cur, switchRec: rh.IsSwitch()}, nil
}
