package walfetch

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgsafekeeper/safekeeper/pkg/replconn"
	"github.com/pgsafekeeper/safekeeper/pkg/wal"
)

// scripted replays backend messages.
type scripted struct{ msgs []pgproto3.BackendMessage }

func (s *scripted) ReceiveMessage(ctx context.Context) (pgproto3.BackendMessage, error) {
	if len(s.msgs) == 0 {
		return nil, io.ErrUnexpectedEOF
	}
	m := s.msgs[0]
	s.msgs = s.msgs[1:]
	return m, nil
}

// walByte is the synthetic WAL at lsn.
func walByte(lsn wal.LSN) byte { return byte(lsn*7 + lsn>>13 + 1) }

func walBytes(from, to wal.LSN) []byte {
	b := make([]byte, 0, to-from)
	for l := from; l < to; l++ {
		b = append(b, walByte(l))
	}
	return b
}

func xlogData(start, walEnd wal.LSN, payload []byte) *pgproto3.CopyData {
	b := []byte{'w'}
	b = binary.BigEndian.AppendUint64(b, uint64(start))
	b = binary.BigEndian.AppendUint64(b, uint64(walEnd))
	b = binary.BigEndian.AppendUint64(b, 0)
	return &pgproto3.CopyData{Data: append(b, payload...)}
}

func keepalive(walEnd wal.LSN, reply bool) *pgproto3.CopyData {
	b := []byte{'k'}
	b = binary.BigEndian.AppendUint64(b, uint64(walEnd))
	b = binary.BigEndian.AppendUint64(b, 0)
	if reply {
		return &pgproto3.CopyData{Data: append(b, 1)}
	}
	return &pgproto3.CopyData{Data: append(b, 0)}
}

// chunks sends [from, to) in XLogData messages of at most n bytes, each
// naming walEnd.
func chunks(from, to, walEnd wal.LSN, n int) []pgproto3.BackendMessage {
	var out []pgproto3.BackendMessage
	for l := from; l < to; {
		e := min(to, l+wal.LSN(n))
		out = append(out, xlogData(l, walEnd, walBytes(l, e)))
		l = e
	}
	return out
}

func checkSegment(t *testing.T, data []byte, durable int, segStart wal.LSN, wantDurable int) {
	t.Helper()
	if len(data) != testSegSize {
		t.Fatalf("segment of %d bytes, want %d", len(data), testSegSize)
	}
	if durable != wantDurable {
		t.Fatalf("durable %d, want %d", durable, wantDurable)
	}
	if !bytes.Equal(data[:durable], walBytes(segStart, segStart+wal.LSN(durable))) {
		t.Fatal("WAL bytes differ")
	}
	if !bytes.Equal(data[durable:], make([]byte, len(data)-durable)) {
		t.Fatal("padding is not zeros")
	}
}

func TestCollectCompleteSegment(t *testing.T) {
	start := wal.LSN(3 * testSegSize)
	end := start + testSegSize
	// The server holds more than the segment; the last message crosses
	// the segment end, a keepalive asks for a reply on the way.
	msgs := chunks(start, start+100000, end+5000, 65536)
	msgs = append(msgs, keepalive(start+100000, true), &pgproto3.ParameterStatus{Name: "x", Value: "y"})
	msgs = append(msgs, chunks(start+100000, end+5000, end+5000, 131072)...)
	var replies []wal.LSN
	reply := func(pos wal.LSN) error { replies = append(replies, pos); return nil }
	data, durable, err := collectSegment(context.Background(), &scripted{msgs}, reply, start, testSegSize, end+5000)
	if err != nil {
		t.Fatal(err)
	}
	checkSegment(t, data, durable, start, testSegSize)
	if len(replies) != 1 || replies[0] != start+100000 {
		t.Fatalf("replies %v", replies)
	}
}

func TestCollectPartialSegment(t *testing.T) {
	start := wal.LSN(5 * testSegSize)
	flush := start + 300001
	// IDENTIFY_SYSTEM said flush-1000; by the time streaming starts the
	// server holds up to flush, which its XLogData say.
	msgs := append([]pgproto3.BackendMessage{keepalive(start, false)}, chunks(start, flush, flush, 131072)...)
	msgs = append(msgs, xlogData(flush, flush+10, walBytes(flush, flush+10))) // not read
	data, durable, err := collectSegment(context.Background(), &scripted{msgs}, nil, start, testSegSize, flush-1000)
	if err != nil {
		t.Fatal(err)
	}
	checkSegment(t, data, durable, start, int(flush-start))

	// The WAL grows while it streams: it follows the latest walEnd.
	msgs = append(chunks(start, start+1000, start+1000, 500), chunks(start+1000, start+3000, start+3000, 500)...)
	data, durable, err = collectSegment(context.Background(), &scripted{msgs}, nil, start, testSegSize, start+999)
	if err != nil {
		t.Fatal(err)
	}
	_ = data
	if durable != 1000 {
		// 1000 reached the walEnd of the time: done there.
		t.Fatalf("durable %d", durable)
	}
	data, durable, err = collectSegment(context.Background(), &scripted{msgs}, nil, start, testSegSize, start+1500)
	if err != nil {
		t.Fatal(err)
	}
	checkSegment(t, data, durable, start, 3000)
}

func TestCollectHistoricEnd(t *testing.T) {
	start := wal.LSN(40 * testSegSize)
	sp := start + 0x80000
	msgs := append(chunks(start, sp, sp, 131072), &pgproto3.CopyDone{})
	// Known position past the switch point (a caller's mistake): CopyDone
	// still ends it.
	data, durable, err := collectSegment(context.Background(), &scripted{msgs}, nil, start, testSegSize, sp+100)
	if err != nil {
		t.Fatal(err)
	}
	checkSegment(t, data, durable, start, 0x80000)

	// Nothing before the end: not found.
	_, _, err = collectSegment(context.Background(), &scripted{[]pgproto3.BackendMessage{&pgproto3.CopyDone{}}}, nil, start, testSegSize, sp)
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("empty historic: %v", err)
	}
}

func TestCollectErrors(t *testing.T) {
	start := wal.LSN(2 * testSegSize)
	ctx := context.Background()
	cases := map[string][]pgproto3.BackendMessage{
		"gap":         {xlogData(start, start+20, walBytes(start, start+10)), xlogData(start+11, start+20, walBytes(start+11, start+20))},
		"wrong start": {xlogData(start+1, start+20, walBytes(start+1, start+20))},
		"short":       {&pgproto3.CopyData{Data: []byte{'w', 1, 2}}},
		"unknown":     {&pgproto3.CopyData{Data: []byte{'x'}}},
		"empty":       {&pgproto3.CopyData{}},
		"eof":         {xlogData(start, start+20, walBytes(start, start+10))},
		"complete":    {&pgproto3.CommandComplete{CommandTag: []byte("START_REPLICATION")}},
		"error":       {&pgproto3.ErrorResponse{Severity: "ERROR", Code: "58P01", Message: "requested WAL segment has already been removed"}},
	}
	for name, msgs := range cases {
		_, _, err := collectSegment(ctx, &scripted{msgs}, nil, start, testSegSize, start+20)
		if err == nil || errors.Is(err, ErrNotFound) {
			t.Errorf("%s: %v", name, err)
		}
		if name == "error" && !replconn.IsSQLState(err, "58P01") {
			var pe *pgconn.PgError
			t.Errorf("error response not kept: %v (%v)", err, errors.As(err, &pe))
		}
	}
}
