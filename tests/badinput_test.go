package tests

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgsafekeeper/safekeeper/internal/pgtest"
	"github.com/pgsafekeeper/safekeeper/pkg/wal"
)

// rawConn dials the safekeeper, sends b, half-closes when asked, and
// returns everything the server sent before closing.
func rawExchange(t *testing.T, port int, b []byte, closeWrite bool) []byte {
	t.Helper()
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
	if closeWrite {
		c.(*net.TCPConn).CloseWrite()
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	out, err := io.ReadAll(c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("server neither answered nor closed within 10s (got %q)", out)
	}
	return out
}

// parseError decodes a single ErrorResponse from raw bytes.
func parseError(t *testing.T, b []byte) *pgproto3.ErrorResponse {
	t.Helper()
	if len(b) < 5 || b[0] != 'E' {
		t.Fatalf("expected an ErrorResponse, got %q", b)
	}
	n := int(binary.BigEndian.Uint32(b[1:]))
	var e pgproto3.ErrorResponse
	if err := e.Decode(b[5 : 1+n]); err != nil {
		t.Fatal(err)
	}
	return &e
}

func startupPacket(params ...string) []byte {
	body := binary.BigEndian.AppendUint32(nil, 3<<16)
	for _, p := range params {
		body = append(body, p...)
		body = append(body, 0)
	}
	body = append(body, 0)
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(body)+4)), body...)
}

func wantPgError(t *testing.T, err error, code, msg string) {
	t.Helper()
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		t.Fatalf("want ERROR %s %q, got %v", code, msg, err)
	}
	if pe.Code != code || pe.Message != msg {
		t.Fatalf("got %s %q, want %s %q", pe.Code, pe.Message, code, msg)
	}
}

// Acceptance 7: bad input gets PostgreSQL's errors, and a consumer
// streaming at the same time is not disturbed.
func TestBadInput(t *testing.T) {
	primary, sk := startPair(t, 1, nil)
	dir := t.TempDir()
	rw := startReceivewal(t, primary.Bins, sk.PGPort, dir)

	t.Run("random bytes", func(t *testing.T) {
		rng := rand.New(rand.NewSource(1))
		for i := 0; i < 20; i++ {
			b := make([]byte, 1+rng.Intn(200))
			rng.Read(b)
			out := rawExchange(t, sk.PGPort, b, true)
			// Either closed silently (bad length / incomplete) or a FATAL.
			if len(out) > 0 && out[0] != 'E' {
				t.Fatalf("random input %x: unexpected reply %q", b, out)
			}
		}
	})
	t.Run("truncated startup packet", func(t *testing.T) {
		p := startupPacket("user", "postgres", "replication", "true")
		if out := rawExchange(t, sk.PGPort, p[:len(p)-5], true); len(out) != 0 {
			t.Fatalf("want a silent close, got %q", out)
		}
	})
	t.Run("oversized startup packet", func(t *testing.T) {
		b := binary.BigEndian.AppendUint32(nil, 20000)
		b = binary.BigEndian.AppendUint32(b, 3<<16)
		if out := rawExchange(t, sk.PGPort, b, true); len(out) != 0 {
			t.Fatalf("want a silent close, got %q", out)
		}
	})
	t.Run("bad layout", func(t *testing.T) {
		p := startupPacket("user", "postgres")
		p = p[:len(p)-1] // drop the terminator
		binary.BigEndian.PutUint32(p, uint32(len(p)))
		e := parseError(t, rawExchange(t, sk.PGPort, p, false))
		if e.Severity != "FATAL" || e.Code != "08P01" || e.Message != "invalid startup packet layout: expected terminator as last byte" {
			t.Fatalf("got %s %s %q", e.Severity, e.Code, e.Message)
		}
	})
	t.Run("protocol 2", func(t *testing.T) {
		p := startupPacket("user", "postgres")
		binary.BigEndian.PutUint32(p[4:], 2<<16)
		e := parseError(t, rawExchange(t, sk.PGPort, p, false))
		if e.Code != "0A000" || e.Message != "unsupported frontend protocol 2.0: server supports 3.0 to 3.0" {
			t.Fatalf("got %s %q", e.Code, e.Message)
		}
	})
	t.Run("no user", func(t *testing.T) {
		e := parseError(t, rawExchange(t, sk.PGPort, startupPacket("replication", "true"), false))
		if e.Code != "28000" || e.Message != "no PostgreSQL user name specified in startup packet" {
			t.Fatalf("got %s %q", e.Code, e.Message)
		}
	})
	t.Run("bad replication value", func(t *testing.T) {
		e := parseError(t, rawExchange(t, sk.PGPort, startupPacket("user", "postgres", "replication", "o"), false))
		if e.Code != "22023" || e.Message != `invalid value for parameter "replication": "o"` {
			t.Fatalf("got %s %q", e.Code, e.Message)
		}
	})
	t.Run("plain and logical connections", func(t *testing.T) {
		for _, cs := range []string{
			fmt.Sprintf("host=127.0.0.1 port=%d user=postgres sslmode=disable", sk.PGPort),
			fmt.Sprintf("host=127.0.0.1 port=%d user=postgres sslmode=disable replication=database dbname=postgres", sk.PGPort),
		} {
			_, err := pgconn.Connect(context.Background(), cs)
			var pe *pgconn.PgError
			if !errors.As(err, &pe) || pe.Severity != "FATAL" || pe.Code != "28000" {
				t.Fatalf("%s: want FATAL 28000, got %v", cs, err)
			}
		}
	})

	t.Run("commands", func(t *testing.T) {
		ctx := ctxTimeout(t, 60*time.Second)
		conn, err := pgconn.Connect(ctx, sk.ConnString())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		exec := func(q string) error {
			_, err := conn.Exec(ctx, q).ReadAll()
			return err
		}
		const sqlErr = "cannot execute SQL commands in WAL sender for physical replication"
		cases := []struct{ q, code, msg string }{
			{"SELECT 1", "0A000", sqlErr},
			{"BEGIN", "0A000", sqlErr},
			{"identify_system", "0A000", sqlErr},
			{"FROBNICATE", "0A000", sqlErr},
			{"", "0A000", sqlErr},
			{"IDENTIFY_SYSTEM; SHOW wal_segment_size", "42601", "syntax error"},
			{"START_REPLICATION", "42601", "syntax error"},
			{"SHOW no_such_setting", "42704", `unrecognized configuration parameter "no_such_setting"`},
			{"TIMELINE_HISTORY 0", "42601", "invalid timeline 0"},
			{"TIMELINE_HISTORY 7", "58P01", `could not open file "pg_wal/00000007.history": No such file or directory`},
			{"START_REPLICATION 0/0 TIMELINE 9", "XX000", "requested timeline 9 is not in this server's history"},
			// As PostgreSQL 15-17 on a physical connection to a primary
			// with wal_level = replica: wal_level is checked first.
			{"CREATE_REPLICATION_SLOT s LOGICAL pgoutput", "55000", "logical decoding requires wal_level >= logical"},
		}
		for _, c := range cases {
			wantPgError(t, exec(c.q), c.code, c.msg)
			// The connection stays usable.
			if err := exec("IDENTIFY_SYSTEM"); err != nil {
				t.Fatalf("after %q: IDENTIFY_SYSTEM failed: %v", c.q, err)
			}
		}

		// The primary itself answers the logical slot request the same way.
		pctx := ctxTimeout(t, 30*time.Second)
		pconn, err := pgconn.Connect(pctx, primary.ReplConnString())
		if err != nil {
			t.Fatal(err)
		}
		_, err = pconn.Exec(pctx, "CREATE_REPLICATION_SLOT s LOGICAL pgoutput").ReadAll()
		pconn.Close(pctx)
		wantPgError(t, err, "55000", "logical decoding requires wal_level >= logical")

		// Each rejected command is logged with its statement, as
		// PostgreSQL logs every ERROR it sends, and counted by SQLSTATE.
		pgtest.WaitFor(t, 10*time.Second, "the rejected command in the log", func() bool {
			log, _ := os.ReadFile(sk.logPath)
			return bytes.Contains(log, []byte(`"sqlstate": "42704", "message": "unrecognized configuration parameter \"no_such_setting\"", "statement": "SHOW no_such_setting"`))
		})
		if v, ok := sk.metric(t, `safekeeper_client_errors_total{sqlstate="0A000"}`); !ok || v < 5 {
			t.Fatalf("safekeeper_client_errors_total{sqlstate=\"0A000\"} = %v (%v), want at least 5", v, ok)
		}

		// Extended protocol: ERROR 08P01, then usable after Sync.
		_, err = conn.ExecParams(ctx, "IDENTIFY_SYSTEM", nil, nil, nil, nil).Close()
		wantPgError(t, err, "08P01", "extended query protocol not supported in a replication connection")
		if err := exec("IDENTIFY_SYSTEM"); err != nil {
			t.Fatalf("after extended protocol: %v", err)
		}

		// A start point ahead of the flush position: CopyBothResponse, then
		// the error, then ReadyForQuery.
		conn.Frontend().Send(&pgproto3.Query{String: "START_REPLICATION 7F/0 TIMELINE 1"})
		if err := conn.Frontend().Flush(); err != nil {
			t.Fatal(err)
		}
		var seq []string
		for {
			msg, err := conn.ReceiveMessage(ctx)
			if err != nil {
				t.Fatal(err)
			}
			switch m := msg.(type) {
			case *pgproto3.CopyBothResponse:
				seq = append(seq, "W")
			case *pgproto3.ErrorResponse:
				seq = append(seq, "E")
				const prefix = "requested starting point 7F/0 is ahead of the WAL flush position of this server "
				rest, ok := strings.CutPrefix(m.Message, prefix)
				if _, err := wal.ParseLSN(rest); m.Code != "XX000" || !ok || err != nil {
					t.Fatalf("got %s %q, want XX000 %q<LSN>", m.Code, m.Message, prefix)
				}
			case *pgproto3.ReadyForQuery:
				seq = append(seq, "Z")
			}
			if len(seq) > 0 && seq[len(seq)-1] == "Z" {
				break
			}
		}
		if fmt.Sprint(seq) != "[W E Z]" {
			t.Fatalf("message sequence %v, want [W E Z]", seq)
		}
		if err := exec("IDENTIFY_SYSTEM"); err != nil {
			t.Fatalf("after ahead-of-flush: %v", err)
		}
	})

	t.Run("malformed feedback", func(t *testing.T) {
		ctx := ctxTimeout(t, 30*time.Second)
		conn, err := pgconn.Connect(ctx, sk.ConnString())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		flush := sk.FlushLSN(t)
		conn.Frontend().Send(&pgproto3.Query{String: fmt.Sprintf("START_REPLICATION %s TIMELINE 1", flush)})
		conn.Frontend().Flush()
		for {
			msg, err := conn.ReceiveMessage(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := msg.(*pgproto3.CopyBothResponse); ok {
				break
			}
		}
		// A standby status update one byte short.
		conn.Frontend().Send(&pgproto3.CopyData{Data: append([]byte{'r'}, make([]byte, 32)...)})
		conn.Frontend().Flush()
		var gotErr *pgproto3.ErrorResponse
		for gotErr == nil {
			msg, err := conn.ReceiveMessage(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if e, ok := msg.(*pgproto3.ErrorResponse); ok {
				gotErr = e
			}
		}
		if gotErr.Code != "08P01" {
			t.Fatalf("got %s %q, want 08P01", gotErr.Code, gotErr.Message)
		}
		// ReadyForQuery follows, and the connection takes commands again.
		for {
			msg, err := conn.ReceiveMessage(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := msg.(*pgproto3.ReadyForQuery); ok {
				break
			}
		}
		qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		res, err := conn.Exec(qctx, "IDENTIFY_SYSTEM").ReadAll()
		if err != nil || len(res) != 1 || len(res[0].Rows) != 1 {
			t.Fatalf("after malformed feedback IDENTIFY_SYSTEM: %v %+v", err, res)
		}
	})

	// The concurrent consumer was not disturbed: it keeps streaming and its
	// files match the primary's.
	generateSegments(t, primary, 3)
	sk.WaitFlush(t, flushLSNOfPrimary(t, primary), 60*time.Second)
	pgtest.WaitFor(t, 60*time.Second, "pg_receivewal to complete 3 segments", func() bool {
		return len(completeSegments(t, dir)) >= 3
	})
	select {
	case err := <-rw.done:
		t.Fatalf("pg_receivewal exited during the bad-input tests: %v\n%s", err, rw.out.String())
	default:
	}
	rw.stop(t)
	compareWithPrimary(t, primary, dir, completeSegments(t, dir))
}
