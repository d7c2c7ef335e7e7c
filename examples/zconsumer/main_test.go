package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgsafekeeper/safekeeper/pkg/wal"
)

const segSize = 1 << 20

func pattern(start wal.LSN, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte((uint64(start) + uint64(i)) * 7)
	}
	return b
}

func TestStoreSegmentsAndResume(t *testing.T) {
	dir := t.TempDir()
	start := wal.LSN(3 * segSize)
	s, err := openStore(dir, 1, segSize, start)
	if err != nil {
		t.Fatal(err)
	}
	// One and a half segments, in chunks that straddle the boundary.
	data := pattern(start, segSize+segSize/2)
	for off := 0; off < len(data); off += 100_000 {
		if err := s.Write(data[off:min(off+100_000, len(data))]); err != nil {
			t.Fatal(err)
		}
	}
	end := start + wal.LSN(len(data))
	if s.Pos() != end || s.Synced() != start+segSize {
		t.Fatalf("pos %s synced %s; want %s and the completed segment's end", s.Pos(), s.Synced(), end)
	}
	if err := s.Sync(); err != nil || s.Synced() != end {
		t.Fatalf("after Sync: synced %s, %v", s.Synced(), err)
	}
	full := filepath.Join(dir, wal.SegmentFileName(1, 3, segSize))
	partial := filepath.Join(dir, wal.SegmentFileName(1, 4, segSize)) + ".partial"
	if got, err := os.ReadFile(full); err != nil || !bytes.Equal(got, data[:segSize]) {
		t.Fatalf("complete segment: %v", err)
	}
	// Bytes written past the recorded position are cut off on reopen.
	if err := s.Write([]byte("unconfirmed")); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = openStore(dir, 1, segSize, end)
	if err != nil {
		t.Fatal(err)
	}
	more := pattern(end, segSize/2)
	if err := s.Write(more); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(partial); !os.IsNotExist(err) {
		t.Fatalf("filled segment still .partial: %v", err)
	}
	got, err := os.ReadFile(strings.TrimSuffix(partial, ".partial"))
	if err != nil || !bytes.Equal(got, append(data[segSize:], more...)) {
		t.Fatalf("second segment differs after resume: %v", err)
	}
}

func TestStoreReopensCompleteSegment(t *testing.T) {
	// A crash after the rename but before the state file recorded the
	// segment's end: resuming inside it reopens it as .partial.
	dir := t.TempDir()
	name := filepath.Join(dir, wal.SegmentFileName(1, 0, segSize))
	if err := os.WriteFile(name, pattern(0, segSize), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := openStore(dir, 1, segSize, 1000)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	fi, err := os.Stat(name + ".partial")
	if err != nil || fi.Size() != 1000 {
		t.Fatalf("reopened segment: %v %v", fi, err)
	}
}

func TestStoreRefusesMissingDurableBytes(t *testing.T) {
	dir := t.TempDir()
	if _, err := openStore(dir, 1, segSize, 4096); err == nil || !strings.Contains(err.Error(), "records 0/1000 as durable") {
		t.Fatalf("want an error for bytes the state promises but the file lacks, got %v", err)
	}
}

func TestStoreSwitchTimeline(t *testing.T) {
	dir := t.TempDir()
	s, err := openStore(dir, 1, segSize, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Write(pattern(0, 5000)); err != nil {
		t.Fatal(err)
	}
	if err := s.SwitchTimeline(2, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.Write(pattern(0, 6000)); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for tli, size := range map[uint32]int64{1: 5000, 2: 6000} {
		fi, err := os.Stat(filepath.Join(dir, wal.SegmentFileName(tli, 0, segSize)+".partial"))
		if err != nil || fi.Size() != size {
			t.Fatalf("tli %d: %v %v", tli, fi, err)
		}
	}
}

func TestStateRoundTrip(t *testing.T) {
	dir := t.TempDir()
	if _, ok, err := loadState(dir); ok || err != nil {
		t.Fatalf("empty dir: %v %v", ok, err)
	}
	want := State{SystemID: 7400000000000000001, TenantID: strings.Repeat("ab", 16), TimelineID: strings.Repeat("cd", 16),
		TLI: 3, WalSegSize: segSize, ConsistentLSN: 0x1_0000_00F8}
	if err := saveState(dir, want); err != nil {
		t.Fatal(err)
	}
	got, ok, err := loadState(dir)
	if err != nil || !ok || got != want {
		t.Fatalf("got %+v %v %v, want %+v", got, ok, err, want)
	}
	b, _ := os.ReadFile(filepath.Join(dir, stateFile))
	if !strings.Contains(string(b), `"consistent_lsn": "1/F8"`) || !strings.Contains(string(b), `"system_id": "7400000000000000001"`) {
		t.Fatalf("state file:\n%s", b)
	}
	if _, err := os.Stat(filepath.Join(dir, stateFile+".tmp")); !os.IsNotExist(err) {
		t.Fatalf("temporary file left: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, stateFile), []byte(`{"system_id":"1","tli":1,"wal_seg_size":1048576,"consistent_lsn":"x"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := loadState(dir); err == nil {
		t.Fatal("a bad LSN loaded")
	}
}

func TestRemoteConsistent(t *testing.T) {
	c := &consumer{cfg: config{uploadLag: 0x1000}}
	for disk, want := range map[wal.LSN]wal.LSN{0: 0, 0x1000: 0, 0x1001: 1, 0x5000: 0x4000} {
		if got := c.remoteConsistent(disk); got != want {
			t.Errorf("lag: disk %s: got %s, want %s", disk, got, want)
		}
	}
	c.cfg.holdAt, c.cfg.hasHoldAt = 0x3000, true
	for disk, want := range map[wal.LSN]wal.LSN{0x2000: 0x2000, 0x3000: 0x3000, 0x9000: 0x3000} {
		if got := c.remoteConsistent(disk); got != want {
			t.Errorf("hold-at: disk %s: got %s, want %s", disk, got, want)
		}
	}
}

func TestParseFlags(t *testing.T) {
	ids := []string{"--tenant-id", strings.Repeat("ab", 16), "--timeline-id", strings.Repeat("CD", 16), "--dir", "d"}
	c, err := parseFlags(append(ids, "--hold-at", "0/3000000", "--feedback-interval", "250ms"), io.Discard)
	if err != nil || !c.hasHoldAt || c.holdAt != 0x3000000 || c.feedbackInterval.Milliseconds() != 250 || c.appName != "zconsumer" {
		t.Fatalf("got %+v, %v", c, err)
	}
	for _, bad := range [][]string{
		{"--dir", "d"},
		append(ids[:4:4], "--dir", ""),
		{"--tenant-id", "abc", "--timeline-id", strings.Repeat("cd", 16), "--dir", "d"},
		append(ids, "--hold-at", "3000000"),
		append(ids, "--feedback-interval", "0s"),
		append(ids, "extra"),
	} {
		if _, err := parseFlags(bad, io.Discard); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}
