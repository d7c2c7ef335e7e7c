package wal_test

import (
	"encoding/binary"
	"testing"

	"github.com/pgsafekeeper/safekeeper/pkg/wal"
	"github.com/pgsafekeeper/safekeeper/pkg/wal/waltest"
)

func TestParsePageHeaderObservedBytes(t *testing.T) {
	// protocol.md §5.3: PG15 segment start, magic D110, info 7, tli 1.
	b := make([]byte, 40)
	copy(b, []byte{0x10, 0xd1, 0x07, 0x00, 0x01, 0x00, 0x00, 0x00})
	binary.LittleEndian.PutUint64(b[8:], 0x9000000)
	binary.LittleEndian.PutUint32(b[16:], 0x1234)
	binary.LittleEndian.PutUint64(b[24:], 7000000000000000001)
	binary.LittleEndian.PutUint32(b[32:], 16<<20)
	binary.LittleEndian.PutUint32(b[36:], 8192)
	h, err := wal.ParsePageHeader(b)
	if err != nil {
		t.Fatal(err)
	}
	want := wal.PageHeader{
		Magic: 0xD110, Info: 7, TLI: 1, PageAddr: 0x9000000, RemLen: 0x1234,
		SysID: 7000000000000000001, SegSize: 16 << 20, XLogBlcksz: 8192,
	}
	if h != want {
		t.Fatalf("got %+v\nwant %+v", h, want)
	}
	if h.Size() != 40 || h.Info&wal.XLPFirstIsContRecord == 0 || h.Info&wal.XLPBkpRemovable == 0 {
		t.Errorf("size %d info %#x", h.Size(), h.Info)
	}
	if wal.MagicVersion(h.Magic) != 15 {
		t.Errorf("MagicVersion = %d", wal.MagicVersion(h.Magic))
	}
	if got := wal.AppendPageHeader(nil, h); string(got) != string(b) {
		t.Errorf("AppendPageHeader = % x", got)
	}
	// The long flag needs 40 bytes.
	if _, err := wal.ParsePageHeader(b[:39]); err == nil {
		t.Error("39 bytes with long flag: no error")
	}
	// A short header.
	b[2] = 0x01
	h, err = wal.ParsePageHeader(b[:24])
	if err != nil || h.Size() != 24 || h.SysID != 0 || h.RemLen != 0x1234 {
		t.Errorf("short: %+v %v", h, err)
	}
	if _, err := wal.ParsePageHeader(b[:23]); err == nil {
		t.Error("23 bytes: no error")
	}
}

func TestMagic(t *testing.T) {
	for m, v := range map[uint16]int{0xD110: 15, 0xD113: 16, 0xD116: 17, 0xD118: 18, 0xD10D: 0, 0: 0, 0xD111: 0} {
		if got := wal.MagicVersion(m); got != v {
			t.Errorf("MagicVersion(%#x) = %d", m, got)
		}
		if wal.KnownMagic(m) != (v != 0) {
			t.Errorf("KnownMagic(%#x) wrong", m)
		}
	}
}

func TestParseRecordHeader(t *testing.T) {
	b := []byte{
		0x39, 0x00, 0x00, 0x00, // tot_len 57
		0xe9, 0x02, 0x00, 0x00, // xid 745
		0x28, 0x00, 0x00, 0x09, 0x00, 0x00, 0x00, 0x00, // prev 0/9000028
		0x40, 0x00, 0x00, 0x00, // info 0x40, rmid 0, pad
		0x78, 0x56, 0x34, 0x12, // crc
	}
	h, err := wal.ParseRecordHeader(b)
	want := wal.RecordHeader{TotLen: 57, Xid: 745, Prev: 0x9000028, Info: 0x40, Rmid: 0, CRC: 0x12345678}
	if err != nil || h != want {
		t.Fatalf("got %+v %v", h, err)
	}
	if !h.IsSwitch() {
		t.Error("not a switch")
	}
	h.Rmid = 1
	if h.IsSwitch() {
		t.Error("rmid 1 is a switch")
	}
	if _, err := wal.ParseRecordHeader(b[:23]); err == nil {
		t.Error("short: no error")
	}
}

func TestValidRmid(t *testing.T) {
	for i := 0; i < 256; i++ {
		want := i <= 21 || i >= 128
		if wal.ValidRmid(uint8(i)) != want {
			t.Errorf("ValidRmid(%d) wrong", i)
		}
	}
}

// crc32cBitwise is an independent, bit-at-a-time CRC-32C.
func crc32cBitwise(crc uint32, b []byte) uint32 {
	crc = ^crc
	for _, c := range b {
		crc ^= uint32(c)
		for k := 0; k < 8; k++ {
			if crc&1 != 0 {
				crc = crc>>1 ^ 0x82F63B78
			} else {
				crc >>= 1
			}
		}
	}
	return ^crc
}

func TestCRC32C(t *testing.T) {
	if got := wal.CRC32C([]byte("123456789")); got != 0xE3069283 {
		t.Errorf("CRC32C check value = %#x", got)
	}
	if got := wal.CRC32C(nil); got != 0 {
		t.Errorf("CRC32C(nil) = %#x", got)
	}
	b := make([]byte, 1000)
	for i := range b {
		b[i] = byte(i * 31)
	}
	if wal.CRC32C(b) != crc32cBitwise(0, b) {
		t.Error("CRC32C differs from bitwise implementation")
	}
}

func TestRecordCRC(t *testing.T) {
	rec := make([]byte, 57)
	binary.LittleEndian.PutUint32(rec, 57)
	binary.LittleEndian.PutUint64(rec[8:], 0x9000028)
	rec[16], rec[17] = 0x10, 10
	for i := 24; i < len(rec); i++ {
		rec[i] = byte(i)
	}
	want := crc32cBitwise(crc32cBitwise(0, rec[24:]), rec[:20])
	if got := wal.RecordCRC(rec); got != want {
		t.Fatalf("RecordCRC = %#x; want %#x", got, want)
	}
	// The stored CRC field and bytes beyond xl_tot_len do not matter.
	binary.LittleEndian.PutUint32(rec[20:], 0xDEADBEEF)
	if got := wal.RecordCRC(append(rec, 1, 2, 3)); got != want {
		t.Errorf("RecordCRC with trailing bytes = %#x", got)
	}
	// Any change in the covered bytes changes it.
	for _, i := range []int{0, 4, 8, 16, 17, 19, 24, 56} {
		c := append([]byte(nil), rec...)
		c[i] ^= 1
		if wal.RecordCRC(c) == want {
			t.Errorf("flip at %d: same CRC", i)
		}
	}
	// Short inputs do not panic.
	_ = wal.RecordCRC(nil)
	_ = wal.RecordCRC(rec[:10])
	_ = wal.RecordCRC(rec[:30])
}

// TestRecordCRCReassembled checks the CRC property on records taken out of
// generated WAL, including records split across pages and segments: after
// removing page headers, RecordCRC of the record equals its xl_crc.
func TestRecordCRCReassembled(t *testing.T) {
	const segSize = 1 << 20
	b := waltest.NewSegmentBuilder(5*segSize, segSize, 42, 1)
	var starts []wal.LSN
	for i, n := range []int{0, 1, 7, 100, 8000, 8200, 30000, 3} {
		starts = append(starts, b.AddRecord(waltest.RmHeap, uint8(i<<4), n))
	}
	fillTo(t, b, b.SegmentStart(1)-16)
	starts = append(starts, b.AddRecord(waltest.RmHeap, 0, 500)) // header split across segments
	starts = append(starts, b.AddRecord(waltest.RmHeap, 0, 50))
	for _, s := range starts {
		rec := reassemble(t, b, s)
		h, _ := wal.ParseRecordHeader(rec)
		if got := wal.RecordCRC(rec); got != h.CRC {
			t.Errorf("record at %v: RecordCRC %#x, xl_crc %#x", s, got, h.CRC)
		}
		if got := crc32cBitwise(crc32cBitwise(0, rec[24:]), rec[:20]); got != h.CRC {
			t.Errorf("record at %v: bitwise CRC %#x, xl_crc %#x", s, got, h.CRC)
		}
	}
}

func BenchmarkParsePageHeader(b *testing.B) {
	w := waltest.NewSegmentBuilder(0, 16<<20, 1, 1)
	w.AddRecord(waltest.RmHeap, 0, 100)
	page := w.Bytes()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := wal.ParsePageHeader(page); err != nil {
			b.Fatal(err)
		}
	}
}

func TestParsePageHeaderAllocs(t *testing.T) {
	w := waltest.NewSegmentBuilder(0, 16<<20, 1, 1)
	w.AddRecord(waltest.RmHeap, 0, 100)
	page := w.Bytes()
	if n := testing.AllocsPerRun(100, func() {
		if _, err := wal.ParsePageHeader(page); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("ParsePageHeader allocs = %v", n)
	}
}
