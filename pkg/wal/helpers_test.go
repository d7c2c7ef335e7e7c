package wal_test

import (
	"encoding/binary"
	"testing"

	"github.com/pgsafekeeper/safekeeper/pkg/wal"
	"github.com/pgsafekeeper/safekeeper/pkg/wal/waltest"
)

func pageEnd(p uint64) uint64 { return p - p%wal.BlockSize + wal.BlockSize }

func hdrSize(p, segSize uint64) uint64 {
	if p%segSize == 0 {
		return wal.LongPageHeaderSize
	}
	return wal.ShortPageHeaderSize
}

// fillTo adds small records until b.Pos() == target. target must be
// 8-aligned and reachable: at least 24 bytes past the (header-adjusted)
// insert position on its page, or exactly a page end.
func fillTo(t testing.TB, b *waltest.Builder, target wal.LSN) {
	t.Helper()
	for b.Pos() < target {
		p := uint64(b.Pos())
		if p%wal.BlockSize == 0 {
			p += hdrSize(p, b.SegSize())
		}
		end := pageEnd(p)
		if uint64(target) <= end {
			n := uint64(target) - p
			if n < wal.RecordHeaderSize {
				t.Fatalf("fillTo %v: only %d bytes from %#x", target, n, p)
			}
			b.AddRecord(waltest.RmHeap, 0, int(n-wal.RecordHeaderSize))
			continue
		}
		room := end - p
		if room >= 2*wal.RecordHeaderSize {
			b.AddRecord(waltest.RmHeap, 0, int(room-wal.RecordHeaderSize))
			continue
		}
		// Too little room for a whole record: span into the next page.
		b.AddRecord(waltest.RmHeap, 0, int(room))
	}
	if b.Pos() != target {
		t.Fatalf("fillTo: at %v, want %v", b.Pos(), target)
	}
}

// reassemble returns the bytes of the record starting at lsn in b's
// stream, with page headers removed, without using package wal's scanner.
func reassemble(t testing.TB, b *waltest.Builder, lsn wal.LSN) []byte {
	if t != nil {
		t.Helper()
	}
	data := b.Bytes()
	off := uint64(b.Offset(lsn))
	tot := uint64(binary.LittleEndian.Uint32(data[off:]))
	var rec []byte
	base := uint64(b.Start())
	for uint64(len(rec)) < tot {
		if (base+off)%wal.BlockSize == 0 {
			off += hdrSize(base+off, b.SegSize())
		}
		n := min(tot-uint64(len(rec)), pageEnd(base+off)-(base+off))
		rec = append(rec, data[off:off+n]...)
		off += n
	}
	return rec
}

// streamLSN returns the LSN of byte k of the record starting at lsn,
// skipping page headers.
func streamLSN(b *waltest.Builder, lsn wal.LSN, k uint64) wal.LSN {
	p := uint64(lsn)
	for {
		room := pageEnd(p) - p
		if k < room {
			return wal.LSN(p + k)
		}
		k -= room
		p = pageEnd(p)
		p += hdrSize(p, b.SegSize())
	}
}
