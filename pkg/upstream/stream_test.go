//go:build linux

package upstream

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/pgsafekeeper/safekeeper/pkg/consumers"
	"github.com/pgsafekeeper/safekeeper/pkg/feedback"
	"github.com/pgsafekeeper/safekeeper/pkg/metrics"
	"github.com/pgsafekeeper/safekeeper/pkg/wal"
)

// A session against a scripted primary on loopback, through Dial's
// pollConn:
//   - with one XLogData message in and half of the next, the receive loop
//     syncs and acknowledges the first as soon as it would wait for the
//     rest, as a walreceiver does;
//   - when the primary ends the timeline (CopyDone), the final status
//     goes before our CopyDone and nothing of ours follows it.
func TestStreamSyncsWhenReadWouldWait(t *testing.T) {
	const seg = 1 << 20
	tl := newTestTimeline(t, seg)
	defer tl.Close()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	host, port, _ := net.SplitHostPort(ln.Addr().String())
	// No status tick during the test: what is synced is synced by the
	// receive loop (or by the flusher it kicks), not by the interval's
	// bound.
	cfg := Config{ConnString: fmt.Sprintf("host=%s port=%s user=x sslmode=disable", host, port), StatusInterval: time.Hour}
	r := New(cfg, Sources{}, tl, consumers.NewRegistry(), zap.NewNop(), metrics.New(prometheus.NewRegistry()).ForTimeline("t", "l"))

	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	type result struct {
		err  error
		conn interface{ Close(context.Context) error }
	}
	done := make(chan result, 1)
	go func() {
		conn, err := Dial(ctx, cfg.ConnString, "sk", "")
		if err != nil {
			done <- result{err: err}
			return
		}
		_, err = r.stream(ctx, conn, r.primary(), seg, 1)
		done <- result{err: err, conn: conn}
	}()

	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second)) // each wait below is bounded by it
	be := pgproto3.NewBackend(c, c)
	if _, err := be.ReceiveStartupMessage(); err != nil {
		t.Fatal(err)
	}
	be.Send(&pgproto3.AuthenticationOk{})
	be.Send(&pgproto3.BackendKeyData{ProcessID: 1, SecretKey: []byte{0, 0, 0, 2}})
	be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
	if err := be.Flush(); err != nil {
		t.Fatal(err)
	}
	msg, err := be.Receive()
	if q, ok := msg.(*pgproto3.Query); err != nil || !ok || !strings.HasPrefix(q.String, "START_REPLICATION") {
		t.Fatalf("want START_REPLICATION, got %#v, %v", msg, err)
	}
	be.Send(&pgproto3.CopyBothResponse{})
	if err := be.Flush(); err != nil {
		t.Fatal(err)
	}

	// flushUntil reads the safekeeper's messages until a status update
	// reports want as flushed; none may report more.
	flushUntil := func(want wal.LSN, what string) {
		t.Helper()
		for {
			m, err := be.Receive()
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			cd, ok := m.(*pgproto3.CopyData)
			if !ok {
				t.Fatalf("%s: unexpected %T", what, m)
			}
			if len(cd.Data) == 0 || cd.Data[0] != 'r' {
				continue
			}
			st, err := feedback.ParseStandbyStatus(cd.Data)
			if err != nil {
				t.Fatal(err)
			}
			switch f := wal.LSN(st.Flush); {
			case f > want:
				t.Fatalf("%s: flush %s reported; only %s was sent whole", what, f, want)
			case f == want:
				return
			}
		}
	}
	xlog := func(start wal.LSN, n int) []byte {
		b := make([]byte, 5+25+n)
		b[0] = 'd'
		binary.BigEndian.PutUint32(b[1:], uint32(4+25+n))
		b[5] = 'w'
		binary.BigEndian.PutUint64(b[6:], uint64(start))
		binary.BigEndian.PutUint64(b[14:], uint64(start)+uint64(n))
		for i := range n {
			b[30+i] = byte(i)
		}
		return b
	}
	m1, m2 := xlog(seg, 1000), xlog(seg+1000, 1000)
	// One write: the first message and the head of the second.
	if _, err := c.Write(append(append([]byte(nil), m1...), m2[:40]...)); err != nil {
		t.Fatal(err)
	}
	flushUntil(seg+1000, "with half of the second message in")
	if _, err := c.Write(m2[40:]); err != nil {
		t.Fatal(err)
	}
	flushUntil(seg+2000, "with the second message whole")

	// The primary ends the timeline.
	be.Send(&pgproto3.CopyDone{})
	if err := be.Flush(); err != nil {
		t.Fatal(err)
	}
	for {
		m, err := be.Receive()
		if err != nil {
			t.Fatalf("waiting for our CopyDone: %v", err)
		}
		if _, ok := m.(*pgproto3.CopyDone); ok {
			break
		}
		if _, ok := m.(*pgproto3.CopyData); !ok {
			t.Fatalf("before our CopyDone: unexpected %T", m)
		}
	}
	be.Send(&pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{{Name: []byte("next_tli")}, {Name: []byte("next_tli_startpos")}}})
	be.Send(&pgproto3.DataRow{Values: [][]byte{[]byte("2"), []byte("0/107D0")}})
	be.Send(&pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")})
	be.Send(&pgproto3.CommandComplete{CommandTag: []byte("START_STREAMING")})
	be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
	if err := be.Flush(); err != nil {
		t.Fatal(err)
	}
	res := <-done
	var end *timelineEnd
	if !errors.As(res.err, &end) || end.next != 2 {
		t.Fatalf("stream ended with %v; want the end of the timeline, next 2", res.err)
	}
	if d := tl.FlushLSN(); d != seg+2000 {
		t.Fatalf("durable to %s; want %s", d, wal.LSN(seg+2000))
	}
	// Nothing of ours after our CopyDone but the Terminate of Close.
	res.conn.Close(ctx)
	for {
		m, err := be.Receive()
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := m.(*pgproto3.Terminate); !ok {
			t.Fatalf("after our CopyDone the safekeeper sent %T", m)
		}
	}
}
