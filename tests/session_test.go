package tests

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

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// TestSessionRulesLikePostgreSQL runs each scenario against the primary's
// own walsender and against the safekeeper, and wants the same answers:
// protocol negotiation, encryption requests, cancel requests and who may
// use a temporary slot.
func TestSessionRulesLikePostgreSQL(t *testing.T) {
	primary, sk := startPair(t, 1, nil)
	servers := []struct {
		name string
		port int
		conn string
	}{
		{"PostgreSQL", primary.Port, primary.ReplConnString()},
		{"safekeeper", sk.PGPort, sk.ConnString()},
	}
	// PostgreSQL's SHOW ALL, which the safekeeper's must not go beyond.
	var pgShowAll map[string]string
	for _, srv := range servers {
		t.Run(srv.name, func(t *testing.T) {
			t.Run("newer protocol and _pq_ options", func(t *testing.T) {
				for _, minor := range []uint32{0, 2} {
					p := startupPacket("user", "postgres", "replication", "true", "_pq_.fancy", "1")
					binary.BigEndian.PutUint32(p[4:], 3<<16|minor)
					version, options := negotiatedVersion(t, srv.port, p)
					// The whole version number, as PostgreSQL 15-17 send
					// it; libpq 18 refuses anything below 3.0.
					if version != 3<<16 || fmt.Sprint(options) != "[_pq_.fancy]" {
						t.Fatalf("3.%d: NegotiateProtocolVersion %d %v, want %d [_pq_.fancy]", minor, version, options, 3<<16)
					}
				}
				// A bad replication parameter is refused while the packet
				// is read, before any negotiation.
				p := startupPacket("user", "postgres", "replication", "o", "_pq_.fancy", "1")
				binary.BigEndian.PutUint32(p[4:], 3<<16|2)
				e := parseError(t, rawExchange(t, srv.port, p, false))
				if e.Severity != "FATAL" || e.Code != "22023" || e.Message != `invalid value for parameter "replication": "o"` {
					t.Fatalf("bad replication value at 3.2: %s %s %q", e.Severity, e.Code, e.Message)
				}
			})

			t.Run("text checked in the client encoding", func(t *testing.T) {
				ctx := ctxTimeout(t, 60*time.Second)
				for _, tc := range []struct {
					enc  string // client_encoding; "" leaves SQL_ASCII
					raw  []byte // complete frontend messages
					want string // the errors before ReadyForQuery, "SQLSTATE message"
				}{
					{"UTF8", queryMsg("IDENTIFY_SYSTEM \xc3\x28"), `22021 invalid byte sequence for encoding "UTF8": 0xc3 0x28`},
					{"UTF8", queryMsg("IDENTIFY_SYSTEM \xe2\x82"), `22021 invalid byte sequence for encoding "UTF8": 0xe2 0x82`},
					{"unicode", queryMsg("SHOW \"\xed\xa0\x80\""), `22021 invalid byte sequence for encoding "UTF8": 0xed 0xa0 0x80`},
					{"UTF8", queryMsg("SHOW \"\xf0\x9f\x98\x80\xff\""), `22021 invalid byte sequence for encoding "UTF8": 0xff`},
					{"UTF8", queryMsg("SHOW \"\xc3\xa9\""), "42704 unrecognized configuration parameter \"\xc3\xa9\""},
					{"SJIS", queryMsg("SHOW \"\x82\xa0\""), `22021 invalid byte value for encoding "SQL_ASCII": 0x82`},
					{"EUC_JP", queryMsg("SHOW \"\xa1\""), `22021 invalid byte sequence for encoding "EUC_JP": 0xa1 0x22`},
					{"EUC_CN", queryMsg("SHOW \"\xb0\""), `22021 invalid byte sequence for encoding "EUC_CN": 0xb0 0x22`},
					{"BIG5", queryMsg("SHOW \"\xa4\x40\""), `22021 invalid byte value for encoding "SQL_ASCII": 0xa4`},
					{"EUC_KR", queryMsg("SHOW \"\x8e\xa1\""), `22021 invalid byte sequence for encoding "EUC_KR": 0x8e 0xa1`},
					{"EUC_TW", queryMsg("SHOW \"\x8e\xa8\xa1\xa1\""), `22021 invalid byte sequence for encoding "EUC_TW": 0x8e 0xa8 0xa1 0xa1`},
					{"MULE_INTERNAL", queryMsg("SHOW \"\x9c\xf0AB\""), `22021 invalid byte sequence for encoding "MULE_INTERNAL": 0x9c 0xf0 0x41 0x42`},
					{"MULE_INTERNAL", queryMsg("SHOW \"\x81\xe9\x92\xb0\xa1\""), "42704 unrecognized configuration parameter \"\x81\xe9\x92\xb0\xa1\""},
					{"LATIN1", queryMsg("SHOW \"\xe9\""), "42704 unrecognized configuration parameter \"\xe9\""},
					{"", queryMsg("SHOW \"\xc3\x28\""), "42704 unrecognized configuration parameter \"\xc3\x28\""},
					// Malformed bodies: the session survives them. (A Query
					// with a NUL inside gets "invalid string in message"
					// too, where PostgreSQL says "invalid message format":
					// pgproto3's error does not tell the two apart.)
					{"UTF8", frontendMsg('Q', []byte("IDENTIFY_SYSTEM")), "08P01 invalid string in message"},
					{"", append(append(frontendMsg('P', []byte("x")), frontendMsg('B', []byte("x"))...), frontendMsg('S', nil)...), "08P01 extended query protocol not supported in a replication connection"},
					{"", append(frontendMsg('D', nil), frontendMsg('S', nil)...), "08P01 extended query protocol not supported in a replication connection"},
					{"", append(frontendMsg('C', []byte("S")), frontendMsg('S', nil)...), "08P01 extended query protocol not supported in a replication connection"},
					{"", append(frontendMsg('E', []byte("x")), frontendMsg('S', nil)...), "08P01 extended query protocol not supported in a replication connection"},
					{"", frontendMsg('F', nil), "08P01 fastpath function calls not supported in a replication connection"},
					{"", append(frontendMsg('f', []byte("x")), frontendMsg('S', nil)...), ""},
					{"", append(frontendMsg('P', []byte("x")), frontendMsg('S', nil)...), "08P01 extended query protocol not supported in a replication connection"},
				} {
					cfg, err := pgconn.ParseConfig(srv.conn)
					if err != nil {
						t.Fatal(err)
					}
					if tc.enc != "" {
						cfg.RuntimeParams["client_encoding"] = tc.enc
					}
					c, err := pgconn.ConnectConfig(ctx, cfg)
					if err != nil {
						t.Fatalf("client_encoding %q: %v", tc.enc, err)
					}
					c.Conn().SetDeadline(time.Now().Add(10 * time.Second))
					if _, err := c.Conn().Write(tc.raw); err != nil {
						t.Fatal(err)
					}
					var got []string
					for {
						msg, err := c.Frontend().Receive()
						if err != nil {
							t.Fatalf("client_encoding %q, %q: %v after %q", tc.enc, tc.raw, err, got)
						}
						if e, ok := msg.(*pgproto3.ErrorResponse); ok {
							got = append(got, e.Code+" "+e.Message)
						}
						if _, ok := msg.(*pgproto3.ReadyForQuery); ok {
							break
						}
					}
					if strings.Join(got, "; ") != tc.want {
						t.Errorf("client_encoding %q, %q: got %q, want %q", tc.enc, tc.raw, got, tc.want)
					}
					c.Conn().SetDeadline(time.Time{})
					// The session takes commands again.
					mustExec(t, ctx, c, "IDENTIFY_SYSTEM")
					c.Close(ctx)
				}
			})

			t.Run("protocol violations", func(t *testing.T) {
				ctx := ctxTimeout(t, 60*time.Second)
				// The rest of the session, from a raw write on.
				rest := func(c *pgconn.PgConn, raw []byte) (errs []string, closed bool) {
					t.Helper()
					c.Conn().SetDeadline(time.Now().Add(10 * time.Second))
					if _, err := c.Conn().Write(raw); err != nil {
						t.Fatal(err)
					}
					for {
						msg, err := c.Frontend().Receive()
						if err != nil {
							return errs, true
						}
						switch m := msg.(type) {
						case *pgproto3.ErrorResponse:
							errs = append(errs, m.Severity+" "+m.Code+" "+m.Message)
						case *pgproto3.ReadyForQuery:
							return errs, false
						}
					}
				}
				// Unknown message types while idle end the session.
				for _, tc := range []struct {
					raw  []byte
					want string
				}{
					{frontendMsg('Z', nil), "FATAL 08P01 invalid frontend message type 90"},
					{frontendMsg('x', []byte("abc")), "FATAL 08P01 invalid frontend message type 120"},
					{frontendMsg('p', []byte("secret\x00")), "FATAL 08P01 invalid frontend message type 112"},
				} {
					errs, closed := rest(replConnect(t, ctx, srv.conn), tc.raw)
					if strings.Join(errs, "; ") != tc.want || !closed {
						t.Errorf("%q: %q, closed %v; want %q and the end of the session", tc.raw, errs, closed, tc.want)
					}
				}
				// While streaming: bytes after the fields of a standby
				// status update are ignored; an unknown message type ends
				// the session.
				c := replConnect(t, ctx, srv.conn)
				startStreaming(t, ctx, c, "START_REPLICATION "+identifyXLogPos(t, ctx, srv.conn))
				long := append([]byte{'r'}, make([]byte, 39)...)
				errs, closed := rest(c, append(frontendMsg('d', long), frontendMsg('c', nil)...))
				if len(errs) != 0 || closed {
					t.Errorf("status update of 40 bytes, then CopyDone: %q, closed %v; want the stream to end normally", errs, closed)
				}
				c = replConnect(t, ctx, srv.conn)
				startStreaming(t, ctx, c, "START_REPLICATION "+identifyXLogPos(t, ctx, srv.conn))
				errs, closed = rest(c, frontendMsg('x', nil))
				if want := `FATAL 08P01 invalid standby message type "x"`; strings.Join(errs, "; ") != want || !closed {
					t.Errorf("'x' while streaming: %q, closed %v; want %q and the end of the session", errs, closed, want)
				}
				// A startup packet sent with an encryption request, before
				// its answer, was not protected by the encryption asked
				// for: 'N', then FATAL.
				early := func(code uint32, what string) {
					t.Helper()
					raw := dialRaw(t, srv.port)
					req := binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, 8), code)
					if _, err := raw.Write(append(req, startupPacket("user", "postgres", "replication", "true")...)); err != nil {
						t.Fatal(err)
					}
					out, _ := io.ReadAll(raw)
					if len(out) < 1 || out[0] != 'N' {
						t.Fatalf("answer to %s with a startup packet behind it: %q", what, out)
					}
					e := parseError(t, out[1:])
					if e.Severity != "FATAL" || e.Code != "08P01" || e.Message != "received unencrypted data after "+what ||
						e.Detail != "This could be either a client-software bug or evidence of an attempted man-in-the-middle attack." {
						t.Fatalf("%s with a startup packet behind it: %s %s %q %q", what, e.Severity, e.Code, e.Message, e.Detail)
					}
				}
				early(1234<<16|5679, "SSL request")
				// The PostgreSQL here is built with GSSAPI and accepts a
				// GSSENCRequest ('G'), so only the safekeeper, which
				// refuses it, is asked.
				if srv.name == "safekeeper" {
					early(1234<<16|5680, "GSSAPI encryption request")
				}
			})

			t.Run("second SSLRequest", func(t *testing.T) {
				c := dialRaw(t, srv.port)
				ssl := binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, 8), 1234<<16|5679)
				if _, err := c.Write(ssl); err != nil {
					t.Fatal(err)
				}
				var b [1]byte
				if _, err := io.ReadFull(c, b[:]); err != nil || b[0] != 'N' {
					t.Fatalf("answer to SSLRequest: %q %v, want N", b[:], err)
				}
				if _, err := c.Write(ssl); err != nil {
					t.Fatal(err)
				}
				out, _ := io.ReadAll(c)
				e := parseError(t, out)
				if e.Severity != "FATAL" || e.Code != "0A000" || e.Message != "unsupported frontend protocol 1234.5679: server supports 3.0 to 3.0" {
					t.Fatalf("got %s %s %q", e.Severity, e.Code, e.Message)
				}
			})

			t.Run("cancel DROP_REPLICATION_SLOT WAIT", func(t *testing.T) {
				ctx := ctxTimeout(t, 60*time.Second)
				streamer := replConnect(t, ctx, srv.conn)
				mustExec(t, ctx, streamer, "CREATE_REPLICATION_SLOT busy PHYSICAL RESERVE_WAL")
				startStreaming(t, ctx, streamer, "START_REPLICATION SLOT busy "+identifyXLogPos(t, ctx, srv.conn))

				dropper := replConnect(t, ctx, srv.conn)
				err := untilCanceled(t, ctx, dropper, "DROP_REPLICATION_SLOT busy WAIT")
				wantPgError(t, err, "57014", "canceling statement due to user request")
				// The slot is still there, and the connection usable.
				mustExec(t, ctx, dropper, "IDENTIFY_SYSTEM")
				rows := execRows(t, ctx, dropper, "READ_REPLICATION_SLOT busy")
				if len(rows) != 1 || string(rows[0][0]) != "physical" {
					t.Fatalf("READ_REPLICATION_SLOT busy after the cancel: %q", rows)
				}
			})

			t.Run("cancel START_REPLICATION", func(t *testing.T) {
				ctx := ctxTimeout(t, 60*time.Second)
				conn := replConnect(t, ctx, srv.conn)
				startStreaming(t, ctx, conn, "START_REPLICATION "+identifyXLogPos(t, ctx, srv.conn))
				// The stream ends with the error in place of CopyDone, and
				// the connection takes commands again.
				var seq []string
				stop := cancelling(ctx, conn)
				for len(seq) == 0 || seq[len(seq)-1] != "Z" {
					msg, err := conn.ReceiveMessage(ctx)
					if err != nil {
						t.Fatalf("after %v: %v", seq, err)
					}
					switch m := msg.(type) {
					case *pgproto3.CopyData:
						if len(seq) == 0 || seq[len(seq)-1] != "d" {
							seq = append(seq, "d")
						}
					case *pgproto3.ErrorResponse:
						seq = append(seq, "E")
						if m.Severity != "ERROR" || m.Code != "57014" || m.Message != "canceling statement due to user request" {
							t.Fatalf("got %s %s %q", m.Severity, m.Code, m.Message)
						}
					case *pgproto3.ReadyForQuery:
						seq = append(seq, "Z")
					default:
						seq = append(seq, fmt.Sprintf("%T", m))
					}
				}
				stop()
				if s := fmt.Sprint(seq); s != "[E Z]" && s != "[d E Z]" {
					t.Fatalf("messages %s, want keepalives or none, then [E Z]", s)
				}
				mustExec(t, ctx, conn, "IDENTIFY_SYSTEM")
			})

			t.Run("settings in options", func(t *testing.T) {
				ctx := ctxTimeout(t, 30*time.Second)
				c := replConnect(t, ctx, srv.conn+" options='-c wal_sender_timeout=4s -c application_name=viaopt'")
				if got := c.ParameterStatus("application_name"); got != "viaopt" {
					t.Fatalf("ParameterStatus application_name = %q, want viaopt", got)
				}
				for _, q := range [][2]string{{"SHOW wal_sender_timeout", "4s"}, {"SHOW application_name", "viaopt"}} {
					if rows := execRows(t, ctx, c, q[0]); len(rows) != 1 || string(rows[0][0]) != q[1] {
						t.Fatalf("%s: %q, want %q", q[0], rows, q[1])
					}
				}
				_, err := pgconn.Connect(ctx, srv.conn+" options='-c wal_sender_timeout=4x'")
				var pe *pgconn.PgError
				if !errors.As(err, &pe) || pe.Severity != "FATAL" || pe.Code != "22023" ||
					pe.Message != `invalid value for parameter "wal_sender_timeout": "4x"` ||
					pe.Hint != `Valid units for this parameter are "us", "ms", "s", "min", "h", and "d".` {
					t.Fatalf("wal_sender_timeout=4x: %v", err)
				}
			})

			t.Run("wal_sender_timeout of the session", func(t *testing.T) {
				// A consumer that never replies is asked for a reply, then
				// dropped: after a second here, not the server's minute.
				ctx := ctxTimeout(t, 30*time.Second)
				c := replConnect(t, ctx, srv.conn+" options='-c wal_sender_timeout=1s'")
				startStreaming(t, ctx, c, "START_REPLICATION "+identifyXLogPos(t, ctx, srv.conn))
				asked := false
				for {
					msg, err := c.ReceiveMessage(ctx)
					if err != nil {
						if ctx.Err() != nil {
							t.Fatal("the silent consumer is still connected after 30 s")
						}
						break
					}
					if cd, ok := msg.(*pgproto3.CopyData); ok && len(cd.Data) >= 18 && cd.Data[0] == 'k' && cd.Data[17] == 1 {
						asked = true
					}
				}
				if !asked {
					t.Fatal("closed without a keepalive asking for a reply first")
				}
			})

			t.Run("command errors", func(t *testing.T) {
				ctx := ctxTimeout(t, 30*time.Second)
				c := replConnect(t, ctx, srv.conn)
				for _, q := range [][3]string{
					{"'abc", "42601", "unterminated quoted string"},
					{`"abc`, "42601", "unterminated quoted string"},
					{`SHOW "abc`, "42601", "unterminated quoted string"},
					// No doubled-quote escape in the replication scanner's
					// quoted identifiers: two identifiers.
					{`SHOW "a""b"`, "42601", "syntax error"},
					{`DROP_REPLICATION_SLOT "a""b"`, "42601", "syntax error"},
					// Words of PostgreSQL 17 are SQL to the primary here (15).
					{"ALTER_REPLICATION_SLOT s (FAILOVER)", "0A000", "cannot execute SQL commands in WAL sender for physical replication"},
					{"UPLOAD_MANIFEST", "0A000", "cannot execute SQL commands in WAL sender for physical replication"},
					// The primary runs with wal_level = replica.
					{"START_REPLICATION SLOT missing LOGICAL 0/0", "55000", "logical decoding requires wal_level >= logical"},
					// Logical commands are parsed, and a logical slot's
					// options checked, before wal_level.
					{"START_REPLICATION SLOT missing LOGICAL 0/0 garbage", "42601", "syntax error"},
					{"CREATE_REPLICATION_SLOT s LOGICAL", "42601", "syntax error"},
					{"CREATE_REPLICATION_SLOT s LOGICAL p (snapshot 'bogus')", "22023", `unrecognized value for CREATE_REPLICATION_SLOT option "snapshot": "bogus"`},
					{"CREATE_REPLICATION_SLOT s LOGICAL p (reserve_wal)", "42601", "conflicting or redundant options"},
				} {
					_, err := c.Exec(ctx, q[0]).ReadAll()
					wantPgError(t, err, q[1], q[2])
				}
			})

			t.Run("SHOW what startup announced", func(t *testing.T) {
				ctx := ctxTimeout(t, 30*time.Second)
				c := replConnect(t, ctx, srv.conn)
				for _, name := range []string{"server_encoding", "TimeZone", "DateStyle", "IntervalStyle", "integer_datetimes", "standard_conforming_strings"} {
					res, err := c.Exec(ctx, "SHOW "+strings.ToLower(name)).ReadAll()
					if err != nil || len(res) != 1 || len(res[0].Rows) != 1 {
						t.Fatalf("SHOW %s: %v", name, err)
					}
					col, val := string(res[0].FieldDescriptions[0].Name), string(res[0].Rows[0][0])
					if col != name || val != c.ParameterStatus(name) {
						t.Fatalf("SHOW %s: column %q value %q, want %q %q (as announced)", strings.ToLower(name), col, val, name, c.ParameterStatus(name))
					}
				}
			})

			t.Run("SHOW ALL and names in any case", func(t *testing.T) {
				ctx := ctxTimeout(t, 30*time.Second)
				c := replConnect(t, ctx, srv.conn)
				res, err := c.Exec(ctx, "SHOW ALL;").ReadAll()
				if err != nil || len(res) != 1 {
					t.Fatalf("SHOW ALL: %v", err)
				}
				var cols []string
				for _, f := range res[0].FieldDescriptions {
					cols = append(cols, fmt.Sprintf("%s/%d", f.Name, f.DataTypeOID))
				}
				if strings.Join(cols, " ") != "name/25 setting/25 description/25" || res[0].CommandTag.String() != "SHOW" {
					t.Fatalf("SHOW ALL: columns %v, tag %q", cols, res[0].CommandTag)
				}
				names := map[string]string{}
				for _, r := range res[0].Rows {
					names[string(r[0])] = string(r[1])
				}
				for _, n := range []string{"wal_segment_size", "server_version", "TimeZone", "application_name"} {
					if _, ok := names[n]; !ok {
						t.Errorf("SHOW ALL lists no %s", n)
					}
				}
				for _, n := range []string{"is_superuser", "session_authorization"} {
					if _, ok := names[n]; ok {
						t.Errorf("SHOW ALL lists %s, which PostgreSQL leaves out", n)
					}
				}
				if srv.name == "PostgreSQL" {
					pgShowAll = names
				} else if pgShowAll != nil { // nil when only this subtest runs
					for n := range names {
						if _, ok := pgShowAll[n]; !ok {
							t.Errorf("SHOW ALL lists %s, which PostgreSQL does not", n)
						}
					}
				}
				// Names are found without regard to case, quoted or not.
				for _, q := range []string{`SHOW "WAL_SEGMENT_SIZE"`, `SHOW "Wal_Segment_Size"`, `SHOW "TIMEZONE"`, `SHOW Server_Version_Num`} {
					res, err := c.Exec(ctx, q).ReadAll()
					if err != nil || len(res) != 1 || len(res[0].Rows) != 1 {
						t.Fatalf("%s: %v", q, err)
					}
					col := string(res[0].FieldDescriptions[0].Name)
					if v := string(res[0].Rows[0][0]); v != names[col] && col != "server_version_num" {
						t.Errorf("%s: %s = %q, SHOW ALL says %q", q, col, v, names[col])
					}
				}
			})

			t.Run("client_encoding", func(t *testing.T) {
				ctx := ctxTimeout(t, 30*time.Second)
				for _, tc := range [][2]string{
					{"client_encoding=utf-8", "UTF8"},
					{"client_encoding=UNICODE", "UNICODE"},
					{"client_encoding=unicode", "UTF8"},
					{"client_encoding=ISO_8859-5", "ISO_8859_5"},
					{"options='-c client_encoding=win1252'", "WIN1252"},
				} {
					c := replConnect(t, ctx, srv.conn+" "+tc[0])
					if got := c.ParameterStatus("client_encoding"); got != tc[1] {
						t.Fatalf("%s: ParameterStatus client_encoding = %q, want %q", tc[0], got, tc[1])
					}
					if rows := execRows(t, ctx, c, "SHOW client_encoding"); len(rows) != 1 || string(rows[0][0]) != tc[1] {
						t.Fatalf("%s: SHOW client_encoding = %q, want %q", tc[0], rows, tc[1])
					}
				}
				for _, v := range []string{"bogus", "auto"} {
					_, err := pgconn.Connect(ctx, srv.conn+" client_encoding="+v)
					var pe *pgconn.PgError
					if !errors.As(err, &pe) || pe.Severity != "FATAL" || pe.Code != "22023" ||
						pe.Message != `invalid value for parameter "client_encoding": "`+v+`"` {
						t.Fatalf("client_encoding=%s: %v", v, err)
					}
				}
			})

			t.Run("startup settings in PostgreSQL's order", func(t *testing.T) {
				ctx := ctxTimeout(t, 30*time.Second)
				// options are applied first, then the startup parameters:
				// the later value wins, but each is checked.
				c := replConnect(t, ctx, srv.conn+" options='-c application_name=fromopt' application_name=fromparam")
				if got := c.ParameterStatus("application_name"); got != "fromparam" {
					t.Fatalf("application_name %q, want fromparam", got)
				}
				_, err := pgconn.Connect(ctx, srv.conn+" options='-c client_encoding=bogus' client_encoding=UTF8")
				var pe *pgconn.PgError
				if !errors.As(err, &pe) || pe.Code != "22023" || pe.Message != `invalid value for parameter "client_encoding": "bogus"` {
					t.Fatalf("bad client_encoding in options, good one as a parameter: %v", err)
				}
				// The error names the setting as the client spelled it.
				_, err = pgconn.Connect(ctx, srv.conn+" WAL_SENDER_TIMEOUT=bogus")
				if !errors.As(err, &pe) || pe.Code != "22023" || pe.Message != `invalid value for parameter "WAL_SENDER_TIMEOUT": "bogus"` {
					t.Fatalf("WAL_SENDER_TIMEOUT=bogus: %v", err)
				}
				// Names are cut to 63 bytes with a notice; application_name
				// keeps printable ASCII only (PostgreSQL 15: '?' for the rest).
				long := strings.Repeat("b", 70)
				cfg, err := pgconn.ParseConfig(srv.conn + " application_name=" + long)
				if err != nil {
					t.Fatal(err)
				}
				var notices []string
				cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) {
					notices = append(notices, n.Severity+" "+n.Code+" "+n.Message)
				}
				c2, err := pgconn.ConnectConfig(ctx, cfg)
				if err != nil {
					t.Fatal(err)
				}
				defer c2.Close(context.Background())
				want := `NOTICE 42622 identifier "` + long + `" will be truncated to "` + long[:63] + `"`
				if len(notices) != 1 || notices[0] != want || c2.ParameterStatus("application_name") != long[:63] {
					t.Fatalf("long application_name: notices %q, value %q", notices, c2.ParameterStatus("application_name"))
				}
				c3 := replConnect(t, ctx, srv.conn+" application_name=h\xc3\xa9llo")
				if rows := execRows(t, ctx, c3, "SHOW application_name"); len(rows) != 1 || string(rows[0][0]) != "h??llo" {
					t.Fatalf("SHOW application_name %q, want h??llo", rows)
				}
			})

			t.Run("identifiers truncated with a notice", func(t *testing.T) {
				ctx := ctxTimeout(t, 30*time.Second)
				cfg, err := pgconn.ParseConfig(srv.conn)
				if err != nil {
					t.Fatal(err)
				}
				var notices []*pgconn.Notice
				cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) { notices = append(notices, n) }
				c, err := pgconn.ConnectConfig(ctx, cfg)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close(context.Background())
				long := "Slot_" + strings.Repeat("x", 65)
				cut := strings.ToLower(long[:63])
				rows := execRows(t, ctx, c, "CREATE_REPLICATION_SLOT "+long+" TEMPORARY PHYSICAL")
				if len(rows) != 1 || string(rows[0][0]) != cut {
					t.Fatalf("slot created: %q, want %q", rows, cut)
				}
				_, err = c.Exec(ctx, `DROP_REPLICATION_SLOT "`+long+`" garbage`).ReadAll()
				wantPgError(t, err, "42601", "syntax error")
				want := []string{
					`identifier "` + strings.ToLower(long) + `" will be truncated to "` + cut + `"`,
					`identifier "` + long + `" will be truncated to "` + long[:63] + `"`,
				}
				if len(notices) != len(want) {
					t.Fatalf("%d notices, want %d: %v", len(notices), len(want), notices)
				}
				for i, n := range notices {
					if n.Severity != "NOTICE" || n.Code != "42622" || n.Message != want[i] {
						t.Fatalf("notice %d: %s %s %q, want NOTICE 42622 %q", i, n.Severity, n.Code, n.Message, want[i])
					}
				}
			})

			t.Run("temporary slot belongs to its creator", func(t *testing.T) {
				ctx := ctxTimeout(t, 60*time.Second)
				owner := replConnect(t, ctx, srv.conn)
				mustExec(t, ctx, owner, "CREATE_REPLICATION_SLOT tmp TEMPORARY PHYSICAL RESERVE_WAL")
				other := replConnect(t, ctx, srv.conn)
				inUse := fmt.Sprintf(`replication slot "tmp" is active for PID %d`, owner.PID())
				_, err := other.Exec(ctx, "START_REPLICATION SLOT tmp "+identifyXLogPos(t, ctx, srv.conn)).ReadAll()
				wantPgError(t, err, "55006", inUse)
				_, err = other.Exec(ctx, "DROP_REPLICATION_SLOT tmp").ReadAll()
				wantPgError(t, err, "55006", inUse)
				// Its creator drops it.
				mustExec(t, ctx, owner, "DROP_REPLICATION_SLOT tmp")

				// Any ERROR in the creator's session drops its temporary
				// slots.
				mustExec(t, ctx, owner, "CREATE_REPLICATION_SLOT tmp2 TEMPORARY PHYSICAL RESERVE_WAL")
				_, err = owner.Exec(ctx, "SHOW no_such_setting").ReadAll()
				wantPgError(t, err, "42704", `unrecognized configuration parameter "no_such_setting"`)
				if rows := execRows(t, ctx, other, "READ_REPLICATION_SLOT tmp2"); len(rows) != 1 || rows[0][0] != nil {
					t.Fatalf("READ_REPLICATION_SLOT tmp2 after an error in its session: %q, want a row of NULLs", rows)
				}
			})
		})
	}
}

func dialRaw(t *testing.T, port int) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c
}

// negotiatedVersion sends startup packet p and returns the first message's
// NegotiateProtocolVersion fields (failing if it is another message).
func negotiatedVersion(t *testing.T, port int, p []byte) (uint32, []string) {
	t.Helper()
	c := dialRaw(t, port)
	if _, err := c.Write(p); err != nil {
		t.Fatal(err)
	}
	fe := pgproto3.NewFrontend(c, c)
	msg, err := fe.Receive()
	if err != nil {
		t.Fatal(err)
	}
	m, ok := msg.(*pgproto3.NegotiateProtocolVersion)
	if !ok {
		t.Fatalf("first message %T, want NegotiateProtocolVersion", msg)
	}
	return m.NewestMinorProtocol, m.UnrecognizedOptions
}

func replConnect(t *testing.T, ctx context.Context, conn string) *pgconn.PgConn {
	t.Helper()
	c, err := pgconn.Connect(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

func mustExec(t *testing.T, ctx context.Context, c *pgconn.PgConn, q string) {
	t.Helper()
	if _, err := c.Exec(ctx, q).ReadAll(); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

func execRows(t *testing.T, ctx context.Context, c *pgconn.PgConn, q string) [][][]byte {
	t.Helper()
	res, err := c.Exec(ctx, q).ReadAll()
	if err != nil || len(res) != 1 {
		t.Fatalf("%s: %v (%d results)", q, err, len(res))
	}
	return res[0].Rows
}

func identifyXLogPos(t *testing.T, ctx context.Context, conn string) string {
	t.Helper()
	c := replConnect(t, ctx, conn)
	rows := execRows(t, ctx, c, "IDENTIFY_SYSTEM")
	return string(rows[0][2])
}

// startStreaming sends q and returns once the server answered
// CopyBothResponse.
func startStreaming(t *testing.T, ctx context.Context, c *pgconn.PgConn, q string) {
	t.Helper()
	c.Frontend().Send(&pgproto3.Query{String: q})
	if err := c.Frontend().Flush(); err != nil {
		t.Fatal(err)
	}
	for {
		msg, err := c.ReceiveMessage(ctx)
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		switch m := msg.(type) {
		case *pgproto3.CopyBothResponse:
			return
		case *pgproto3.ErrorResponse:
			t.Fatalf("%s: %s %s", q, m.Code, m.Message)
		}
	}
}

// untilCanceled runs q on c while sending cancel requests for it: a
// cancel that arrives before the command starts is ignored, as by
// PostgreSQL, so they repeat until the command ends.
func untilCanceled(t *testing.T, ctx context.Context, c *pgconn.PgConn, q string) error {
	t.Helper()
	stop := cancelling(ctx, c)
	_, err := c.Exec(ctx, q).ReadAll()
	stop()
	return err
}

// cancelling sends a cancel request for c every 100 ms until the stop it
// returns is called; stop returns once no request is in flight, so that
// none reaches a later command.
func cancelling(ctx context.Context, c *pgconn.PgConn) (stop func()) {
	done, exited := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(exited)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-tick.C:
				if err := c.CancelRequest(ctx); err != nil && !errors.Is(err, context.Canceled) {
					return
				}
			}
		}
	}()
	return func() {
		close(done)
		<-exited
	}
}

// frontendMsg frames body as one frontend message of type typ.
func frontendMsg(typ byte, body []byte) []byte {
	b := binary.BigEndian.AppendUint32([]byte{typ}, uint32(4+len(body)))
	return append(b, body...)
}

// queryMsg is a simple Query of q, whatever bytes q holds.
func queryMsg(q string) []byte {
	return frontendMsg('Q', append([]byte(q), 0))
}
