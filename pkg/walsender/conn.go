package walsender

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgproto3"
	"go.uber.org/zap"

	"github.com/pgsafekeeper/safekeeper/pkg/auth"
	"github.com/pgsafekeeper/safekeeper/pkg/consumers"
	"github.com/pgsafekeeper/safekeeper/pkg/metrics"
	"github.com/pgsafekeeper/safekeeper/pkg/pgerr"
	"github.com/pgsafekeeper/safekeeper/pkg/pgwire"
	"github.com/pgsafekeeper/safekeeper/pkg/replcmd"
	"github.com/pgsafekeeper/safekeeper/pkg/slots"
	"github.com/pgsafekeeper/safekeeper/pkg/timeline"
)

// maxMessageBody bounds the body of a message in command mode. Replication
// commands are tiny; PostgreSQL itself rejects anything over 1 GB.
const maxMessageBody = 1 << 20

type conn struct {
	s   *Server
	nc  net.Conn
	be  *pgproto3.Backend
	log *zap.Logger

	user    string
	appName string
	// clientEncoding is client_encoding's value: SQL_ASCII unless the
	// client chose one.
	clientEncoding string
	tls            bool         // the connection is encrypted
	claims         *auth.Claims // the token's claims under a jwt rule, else nil
	// walSenderTimeout is the session's wal_sender_timeout: the server's
	// unless the client chose its own at startup.
	walSenderTimeout time.Duration

	tempSlots bool // this connection created temporary slots
	pid       uint32
	key       []byte // the secret a CancelRequest for pid must quote
	// cancelCmd ends the running command's context with errQueryCanceled;
	// nil between commands, where PostgreSQL ignores a cancel too.
	cancelMu  sync.Mutex
	cancelCmd context.CancelCauseFunc
	// ctx is the connection's context, ended by a shutdown and not by a
	// cancel request: for work a cancel must not interrupt.
	ctx       context.Context
	tl        Timeline
	tm        *metrics.Timeline // the chosen timeline's series
	slots     *slots.Set
	consumers *consumers.Registry

	// streaming is set while a START_REPLICATION stream runs. Shutdown
	// unblocks an idle connection's read with a deadline, but a stream
	// must keep reading to finish PostgreSQL's shutdown sequence (the
	// consumer's reply, then COPY 0). streamMu orders the shutdown
	// watcher's check against setStreaming, so a shutdown that lands as a
	// stream starts cannot leave the deadline on the stream's reader.
	streamMu  sync.Mutex
	streaming bool
	// pending, when set, delivers the next frontend message instead of the
	// backend: the feedback reader of an ended stream hands over what it read.
	pending <-chan readerExit
}

func newConn(s *Server, nc net.Conn) *conn {
	return &conn{s: s, nc: nc, log: s.log.With(zap.String("remote", nc.RemoteAddr().String()))}
}

func (c *conn) serve(ctx context.Context) {
	defer func() { c.nc.Close() }() // c.nc becomes the TLS connection after an SSLRequest
	defer c.s.unregister(c)
	if tc, ok := c.nc.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
		tc.SetKeepAlive(true)
		tc.SetKeepAlivePeriod(30 * time.Second)
	}
	// Startup must finish promptly (PostgreSQL's authentication_timeout).
	c.nc.SetDeadline(time.Now().Add(60 * time.Second))
	if err := c.startup(); err != nil {
		if errors.Is(err, pgwire.ErrCloseSilently) {
			if !errors.Is(err, io.EOF) {
				c.log.Info("closing connection", zap.Error(err))
			}
			return
		}
		c.fatal(err)
		return
	}
	c.nc.SetDeadline(time.Time{})

	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-ctx.Done():
			c.streamMu.Lock()
			if !c.streaming {
				c.nc.SetReadDeadline(time.Now())
			}
			c.streamMu.Unlock()
		case <-done:
		}
	}()
	c.ctx = ctx
	err := c.commandLoop(ctx)
	if c.tempSlots {
		c.slots.DropOwned(c.pid)
	}
	if ctx.Err() != nil && !errors.Is(err, errStreamShutdown) && !errors.Is(err, errClosed) {
		c.fatal(pgerr.Fatal(pgerr.AdminShutdown, "terminating connection due to administrator command"))
		return
	}
	if err != nil && !errors.Is(err, errClosed) && !errors.Is(err, errStreamShutdown) {
		if pe := pgerr.As(err); pe != nil && pe.Severity == pgerr.SeverityFatal {
			c.fatal(pe)
			return
		}
		if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
			c.log.Info("connection ended", zap.Error(err))
		}
	}
}

// fatal sends a FATAL ErrorResponse (best effort) before the connection closes.
func (c *conn) fatal(err error) {
	pe := pgerr.As(err)
	if pe == nil {
		pe = pgerr.Fatal(pgerr.InternalError, "%s", err.Error())
	}
	pe.Severity = pgerr.SeverityFatal
	c.s.m.ProtocolErrors.WithLabelValues(pe.Code).Inc()
	c.log.Info("closing connection with FATAL", zap.String("sqlstate", pe.Code), zap.String("message", pe.Message))
	if c.be == nil {
		c.be = pgproto3.NewBackend(c.nc, c.nc)
	}
	c.nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	c.be.Send(pgwire.ErrorResponse(pe))
	_ = c.be.Flush()
}

func (c *conn) startup() error {
	var pkt pgwire.Packet
	// As PostgreSQL: an SSLRequest once answered, or a GSSENCRequest, is
	// not answered again until the other kind was refused (or another
	// one accepted); until then it is read as a startup packet of an
	// unsupported protocol.
	sslDone, gssDone := false, false
	for {
		var err error
		pkt, err = pgwire.ReadPacket(c.nc)
		if err != nil {
			return err
		}
		if pkt.Code == pgwire.SSLRequestCode && !sslDone {
			early := c.s.cfg.TLS == nil && dataWaiting(c.nc)
			if err := c.negotiateTLS(); err != nil {
				return err
			}
			if early {
				return errUnencryptedAfter("SSL request")
			}
			sslDone, gssDone = true, c.tls
			continue
		}
		if pkt.Code == pgwire.GSSENCRequest && !gssDone {
			// No GSS encryption: refuse, continue in plaintext.
			sslDone, gssDone = false, true
			early := dataWaiting(c.nc)
			if _, err := c.nc.Write([]byte{'N'}); err != nil {
				return fmt.Errorf("%w: %w", pgwire.ErrCloseSilently, err)
			}
			if early {
				return errUnencryptedAfter("GSSAPI encryption request")
			}
			continue
		}
		switch pkt.Code {
		case pgwire.CancelRequest:
			// PostgreSQL closes without a reply, whether the key matched
			// or not.
			if !c.s.cancel(pkt.CancelPID, pkt.CancelKey) {
				c.log.Info("cancel request for an unknown process ID or with a wrong key", zap.Uint32("pid", pkt.CancelPID))
			}
			return fmt.Errorf("%w: cancel request", pgwire.ErrCloseSilently)
		case pgwire.SSLRequestCode, pgwire.GSSENCRequest:
			return pgerr.Fatal(pgerr.FeatureNotSupported,
				"unsupported frontend protocol %d.%d: server supports 3.0 to 3.0", pkt.Major(), pkt.Minor())
		}
		break
	}
	c.be = pgproto3.NewBackend(c.nc, c.nc)
	c.be.SetMaxBodyLen(maxMessageBody)

	// PostgreSQL checks the replication parameter as it reads the
	// startup packet, before anything is sent.
	mode := pgwire.NotReplication
	if v, ok := pkt.Params["replication"]; ok {
		var err error
		if mode, err = pgwire.ParseReplication(v); err != nil {
			return err
		}
	}

	// As PostgreSQL: a client asking for a newer minor version or for
	// protocol options (_pq_.*) learns the version spoken (3.0, as the
	// whole version number) and the options not recognised (all), before
	// the rest is checked.
	var unrecognized []string
	for _, k := range pkt.Keys {
		if strings.HasPrefix(k, "_pq_.") {
			unrecognized = append(unrecognized, k)
		}
	}
	if pkt.Minor() > 0 || len(unrecognized) > 0 {
		c.be.Send(&pgproto3.NegotiateProtocolVersion{NewestMinorProtocol: pgwire.ProtocolV3, UnrecognizedOptions: unrecognized})
	}

	user := pkt.Params["user"]
	if user == "" {
		return pgerr.Fatal(pgerr.InvalidAuthorizationSpec, "no PostgreSQL user name specified in startup packet")
	}
	c.user = user
	opts := pgwire.ParseOptions(pkt.Params["options"])
	database := pkt.Params["database"]
	if database == "" {
		database = user
	}
	host, _, _ := net.SplitHostPort(c.nc.RemoteAddr().String())
	encryption := "no encryption"
	if c.tls {
		encryption = "SSL encryption"
	}
	switch mode {
	case pgwire.NotReplication:
		return pgerr.Fatal(pgerr.InvalidAuthorizationSpec,
			"no pg_hba.conf entry for host \"%s\", user \"%s\", database \"%s\", %s", host, user, database, encryption).
			WithHint("safekeeper accepts physical replication connections only (replication=true).")
	case pgwire.LogicalReplication:
		return pgerr.Fatal(pgerr.InvalidAuthorizationSpec,
			"no pg_hba.conf entry for host \"%s\", user \"%s\", database \"%s\", %s", host, user, database, encryption).
			WithHint("safekeeper serves physical replication only; logical replication (replication=database) is not supported.")
	}

	if err := c.authenticate(database); err != nil {
		return err
	}
	// The timeline is chosen only after authentication, so that an
	// unauthenticated client learns nothing about what is hosted.
	tenant, tlid := opts["tenant_id"], opts["timeline_id"]
	if tenant == "" {
		tenant = opts["ztenantid"]
	}
	if tlid == "" {
		tlid = opts["ztimelineid"]
	}
	if tenant != "" || tlid != "" {
		t, err1 := timeline.ParseHexID(tenant)
		l, err2 := timeline.ParseHexID(tlid)
		if err1 != nil || err2 != nil {
			return pgerr.Fatal(pgerr.InvalidParameterValue, "invalid tenant_id or timeline_id in options: \"%s\"", pkt.Params["options"]).
				WithHint("Pass both as 32 hexadecimal characters: options='-c tenant_id=... timeline_id=...'.")
		}
		// Before the lookup: a token for another tenant learns nothing
		// about what this tenant has here, not even "does not exist".
		if err := c.authorize(t, ""); err != nil {
			return err
		}
		tg, ok := c.s.tls.Lookup(timeline.ID{TenantID: t, TimelineID: l})
		if !ok {
			return pgerr.Fatal("3D000", "timeline %s/%s does not exist", t, l)
		}
		c.setTarget(tg)
	} else {
		tg, ok := c.s.tls.Only()
		if !ok && c.s.tls.Count() == 0 {
			// As PostgreSQL answers before it accepts connections.
			return pgerr.Fatal(pgerr.CannotConnectNow, "the database system is starting up").
				WithDetail("The safekeeper has not yet learned its timeline from its upstream server.")
		}
		if !ok {
			return pgerr.Fatal(pgerr.InvalidParameterValue, "this safekeeper hosts several timelines; choose one").
				WithHint("Pass options='-c tenant_id=... timeline_id=...'.")
		}
		if err := c.authorize("", tg.WAL.Control().TenantID); err != nil {
			return err
		}
		c.setTarget(tg)
	}

	c.pid = c.s.nextPID()
	c.be.Send(&pgproto3.AuthenticationOk{})
	// As PostgreSQL, the session's settings are applied once the client
	// is authenticated: their notices and errors follow AuthenticationOk.
	if err := c.applySettings(&pkt); err != nil {
		return err
	}
	c.log = c.log.With(zap.String("application_name", c.appName), zap.Uint32("pid", c.pid))
	for _, kv := range c.parameterStatus() {
		c.be.Send(&pgproto3.ParameterStatus{Name: kv[0], Value: kv[1]})
	}
	c.key = make([]byte, 4)
	_, _ = rand.Read(c.key)
	c.s.register(c)
	c.be.Send(&pgproto3.BackendKeyData{ProcessID: c.pid, SecretKey: c.key})
	c.be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
	if err := c.be.Flush(); err != nil {
		return fmt.Errorf("%w: %w", pgwire.ErrCloseSilently, err)
	}
	c.log.Debug("replication connection ready", zap.String("user", user))
	return nil
}

func (c *conn) setTarget(tg Target) {
	c.tl, c.slots, c.consumers = tg.WAL, tg.Slots, tg.Consumers
	c.tm = tg.Metrics
	if c.tm == nil {
		c.tm = metrics.Unexported()
	}
}

func (c *conn) serverVersion() string {
	if v := c.tl.Control().ServerVersion; v != "" {
		return v
	}
	return c.s.cfg.DefaultServerVersion
}

func (c *conn) parameterStatus() [][2]string {
	return [][2]string{
		{"application_name", c.appName},
		{"client_encoding", c.clientEncoding},
		{"DateStyle", "ISO, MDY"},
		{"default_transaction_read_only", "off"},
		{"in_hot_standby", "off"},
		{"integer_datetimes", "on"},
		{"IntervalStyle", "postgres"},
		{"is_superuser", "on"},
		{"server_encoding", "SQL_ASCII"},
		{"server_version", c.serverVersion()},
		{"session_authorization", c.user},
		{"standard_conforming_strings", "on"},
		{"TimeZone", "Etc/UTC"},
	}
}

var (
	errClosed         = errors.New("client closed the connection")
	errStreamShutdown = errors.New("stream ended by server shutdown")
	errQueryCanceled  = errors.New("command canceled by a cancel request")
)

// setCancel sets (or, with nil, clears) what a cancel request calls.
func (c *conn) setCancel(f context.CancelCauseFunc) {
	c.cancelMu.Lock()
	c.cancelCmd = f
	c.cancelMu.Unlock()
}

// cancelCommand ends the running command's context, if one runs.
func (c *conn) cancelCommand() {
	c.cancelMu.Lock()
	defer c.cancelMu.Unlock()
	if c.cancelCmd != nil {
		c.cancelCmd(errQueryCanceled)
	}
}

// canceled returns PostgreSQL's error for a command a cancel request
// ended, or nil when ctx did not end that way.
func canceled(ctx context.Context) error {
	if errors.Is(context.Cause(ctx), errQueryCanceled) {
		return pgerr.New(pgerr.QueryCanceled, "canceling statement due to user request")
	}
	return nil
}

// receive returns the next frontend message, taking it from the previous
// stream's feedback reader if that one read ahead.
func (c *conn) receive() (pgproto3.FrontendMessage, error) {
	if c.pending != nil {
		ex := <-c.pending
		c.pending = nil
		switch {
		case ex.msg != nil:
			return ex.msg, nil
		case ex.err != nil:
			return nil, ex.err
		}
	}
	return c.be.Receive()
}

func (c *conn) commandLoop(ctx context.Context) error {
	skipToSync := false
	for {
		// A shutdown that came while a stream was ending (the watcher in
		// serve sets no read deadline on a streaming connection) is
		// noticed before waiting for the next command.
		if err := ctx.Err(); err != nil {
			return err
		}
		msg, err := c.receive()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return err
			}
			// A whole message whose body does not parse is answered as
			// PostgreSQL answers it: as the well-formed message (it
			// rejects the extended protocol before reading the body), or
			// for a Query with an ERROR; the session goes on.
			stand := undecodable(err)
			if stand == nil {
				if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
					return io.EOF
				}
				if typ, ok := unknownMessageType(err); ok {
					return pgerr.Fatal(pgerr.ProtocolViolation, "invalid frontend message type %d", typ)
				}
				return pgerr.Fatal(pgerr.ProtocolViolation, "%s", frontendErrorText(err))
			}
			msg = stand
		}
		if skipToSync {
			if _, ok := msg.(*pgproto3.Sync); ok {
				skipToSync = false
				if err := c.ready(); err != nil {
					return err
				}
			} else if _, ok := msg.(*pgproto3.Terminate); ok {
				return errClosed
			}
			continue
		}
		switch m := msg.(type) {
		case *pgproto3.Query:
			if err := c.query(ctx, m.String); err != nil {
				return err
			}
		case *badQuery:
			c.sendError(pgerr.New(pgerr.ProtocolViolation, "invalid string in message"), "")
			if err := c.ready(); err != nil {
				return err
			}
		case *pgproto3.Terminate:
			return errClosed
		case *pgproto3.Parse, *pgproto3.Bind, *pgproto3.Execute, *pgproto3.Describe, *pgproto3.Close:
			c.sendError(pgerr.New(pgerr.ProtocolViolation, "extended query protocol not supported in a replication connection"), "")
			if err := c.be.Flush(); err != nil {
				return err
			}
			skipToSync = true
		case *pgproto3.FunctionCall:
			c.sendError(pgerr.New(pgerr.ProtocolViolation, "fastpath function calls not supported in a replication connection"), "")
			if err := c.ready(); err != nil {
				return err
			}
		case *pgproto3.Sync, *pgproto3.Flush:
			if _, ok := m.(*pgproto3.Sync); ok {
				if err := c.ready(); err != nil {
					return err
				}
			}
		case *pgproto3.CopyData, *pgproto3.CopyDone, *pgproto3.CopyFail:
			// Stray COPY messages outside COPY are ignored, as PostgreSQL does.
		default:
			return pgerr.Fatal(pgerr.ProtocolViolation, "invalid frontend message type %d", frontendType(msg))
		}
	}
}

// badQuery stands for a Query whose body did not parse.
type badQuery struct{ pgproto3.Query }

// undecodable returns a stand-in for the frontend message whose body err
// says pgproto3 could not decode (an empty message of its type, or a
// badQuery), or nil when err is not such an error (the stream is then out
// of step, or the message type unknown). pgproto3 reads the whole body
// before it decodes it, so after these errors the next message starts
// where it should. Its error types are unexported; the texts are pinned
// by TestUndecodableMessages.
func undecodable(err error) pgproto3.FrontendMessage {
	// pgproto3 turns the end of the connection into io.ErrUnexpectedEOF;
	// a bare io.EOF is the Parse or Execute decoder running out of body
	// before a string's NUL (both are refused alike).
	if err == io.EOF {
		return &pgproto3.Parse{}
	}
	s := err.Error()
	is := func(typ string) bool { return strings.HasPrefix(s, typ+" body is invalid") }
	switch {
	case is("Query"):
		return &badQuery{}
	case is("Parse"):
		return &pgproto3.Parse{}
	case is("Bind"):
		return &pgproto3.Bind{}
	case is("Execute"):
		return &pgproto3.Execute{}
	case is("Describe"):
		return &pgproto3.Describe{}
	case is("Close"):
		return &pgproto3.Close{}
	case is("FunctionCall"):
		return &pgproto3.FunctionCall{}
	case is("CopyFail"):
		return &pgproto3.CopyFail{}
	}
	return nil
}

// errUnencryptedAfter is PostgreSQL's answer to a client that sent more
// bytes together with an SSLRequest or GSSENCRequest, before reading the
// answer: they were not protected by the encryption it asked for, and may
// have been injected by a man in the middle (CVE-2021-23214).
func errUnencryptedAfter(what string) error {
	return pgerr.Fatal(pgerr.ProtocolViolation, "received unencrypted data after %s", what).
		WithDetail("This could be either a client-software bug or evidence of an attempted man-in-the-middle attack.")
}

// unknownMessageType returns the type byte of a frontend message pgproto3
// refused for its type: it reports it only in its error's text ("unknown
// message type: %c", the byte formatted as a rune), pinned by
// TestUnknownMessageType.
func unknownMessageType(err error) (byte, bool) {
	s, ok := strings.CutPrefix(err.Error(), "unknown message type: ")
	if !ok {
		return 0, false
	}
	r, n := utf8.DecodeRuneInString(s)
	if n == 0 || n != len(s) || r > 0xff {
		return 0, false
	}
	return byte(r), true
}

func frontendErrorText(err error) string {
	var tooBig *pgproto3.ExceededMaxBodyLenErr
	if errors.As(err, &tooBig) {
		return "invalid message length"
	}
	return "invalid frontend message: " + err.Error()
}

// setStreaming marks the start or end of a stream. At the start it also
// clears a read deadline the shutdown watcher may have set just before.
func (c *conn) setStreaming(on bool) {
	c.streamMu.Lock()
	defer c.streamMu.Unlock()
	c.streaming = on
	if on {
		c.nc.SetReadDeadline(time.Time{})
	}
}

func (c *conn) ready() error {
	c.be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
	return c.be.Flush()
}

// sendError sends an ERROR to the client, counts it by SQLSTATE and logs
// it with the statement, as PostgreSQL logs every ERROR it sends
// (log_min_error_statement = error), and drops the session's temporary
// slots.
func (c *conn) sendError(err error, statement string) {
	pe := pgerr.As(err)
	if pe == nil {
		pe = pgerr.Internal(err)
	}
	c.s.m.ProtocolErrors.WithLabelValues(pe.Code).Inc()
	fields := []zap.Field{zap.String("sqlstate", pe.Code), zap.String("message", pe.Message)}
	if statement != "" {
		fields = append(fields, zap.String("statement", statement))
	}
	c.log.Warn("command failed", fields...)
	c.be.Send(pgwire.ErrorResponse(pe))
	// PostgreSQL drops a session's temporary slots on any ERROR, not only
	// when it ends (ReplicationSlotCleanup in its error recovery).
	if c.tempSlots {
		c.slots.DropOwned(c.pid)
		c.tempSlots = false
	}
}

// query runs one simple Query and ends it with ReadyForQuery. Errors that
// end the connection are returned; command errors are sent to the client.
func (c *conn) query(ctx context.Context, q string) error {
	// PostgreSQL checks the text while it reads the message, before the
	// statement is known (so the log has no statement for it).
	if err := checkClientText(c.clientEncoding, q); err != nil {
		c.sendError(err, "")
		return c.ready()
	}
	cmd, err := replcmd.Parse(q)
	for _, n := range cmd.Notices {
		c.be.Send(pgwire.NoticeResponse(n))
	}
	if err == nil {
		cctx, cancel := context.WithCancelCause(ctx)
		c.setCancel(cancel)
		err = c.dispatch(cctx, cmd)
		c.setCancel(nil)
		cancel(nil)
	}
	if err != nil {
		// Command errors (ERROR severity) go to the client and the connection
		// stays usable; anything else (FATAL, a dead socket, shutdown) ends it.
		pe := pgerr.As(err)
		if pe == nil || pe.Severity == pgerr.SeverityFatal {
			return err
		}
		c.sendError(pe, q)
	}
	return c.ready()
}
