package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgsafekeeper/safekeeper/pkg/feedback"
	"github.com/pgsafekeeper/safekeeper/pkg/replconn"
	"github.com/pgsafekeeper/safekeeper/pkg/wal"
)

const (
	reconnectMin   = 100 * time.Millisecond
	connectTimeout = 10 * time.Second
	closeTimeout   = 2 * time.Second
)

// pgEpoch is the origin of PostgreSQL timestamps (microseconds).
var pgEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// fatalError ends the program instead of a reconnection: retrying cannot
// help (local storage failed, the state does not match the server, the
// server refuses for good).
type fatalError struct{ err error }

func (e fatalError) Error() string { return e.err.Error() }
func (e fatalError) Unwrap() error { return e.err }

// Server errors no reconnection can heal: authentication, invalid startup
// options, WAL no longer available anywhere (the consumer needs a new
// start; its saved position is kept for inspection).
var fatalSQLStates = map[string]bool{
	"28000": true, // invalid_authorization_specification
	"28P01": true, // invalid_password
	"22023": true, // invalid_parameter_value (bad tenant/timeline ids)
	"58P01": true, // undefined_file: requested WAL segment has already been removed
}

func isFatal(err error) bool {
	var fe fatalError
	if errors.As(err, &fe) {
		return true
	}
	var pe *pgconn.PgError
	return errors.As(err, &pe) && fatalSQLStates[pe.Code]
}

// consumer is the state of one run of the program.
type consumer struct {
	cfg   config
	pgcfg *pgconn.Config
	log   *slog.Logger

	state    State
	hasState bool
	store    *segStore // nil until the first connection told the segment size
	buf      []byte    // feedback encoding buffer
}

// run streams until ctx ends (a clean stop: nil) or a fatal error.
func run(ctx context.Context, cfg config, log *slog.Logger) error {
	pgcfg, err := pgconn.ParseConfig(cfg.conn)
	if err != nil {
		return fmt.Errorf("--conn: %w", err)
	}
	pgcfg.RuntimeParams["replication"] = "true"
	pgcfg.RuntimeParams["application_name"] = cfg.appName
	// Neon's form: one -c for both ids (pageserver, walproposer).
	pgcfg.RuntimeParams["options"] = fmt.Sprintf("-c tenant_id=%s timeline_id=%s",
		strings.ToLower(cfg.tenantID), strings.ToLower(cfg.timelineID))

	if err := os.MkdirAll(cfg.dir, 0o755); err != nil {
		return err
	}
	c := &consumer{cfg: cfg, pgcfg: pgcfg, log: log}
	if c.state, c.hasState, err = loadState(cfg.dir); err != nil {
		return err
	}
	if c.hasState {
		if !strings.EqualFold(c.state.TenantID, cfg.tenantID) || !strings.EqualFold(c.state.TimelineID, cfg.timelineID) {
			return fmt.Errorf("%s follows %s/%s, not %s/%s", cfg.dir, c.state.TenantID, c.state.TimelineID, cfg.tenantID, cfg.timelineID)
		}
		if c.store, err = openStore(cfg.dir, c.state.TLI, c.state.WalSegSize, c.state.ConsistentLSN); err != nil {
			return err
		}
		log.Info("resuming from saved position", "lsn", c.state.ConsistentLSN, "tli", c.state.TLI)
	}

	backoff := reconnectMin
	for {
		progressed, err := c.session(ctx)
		if ctx.Err() != nil {
			return c.stop()
		}
		if isFatal(err) {
			if serr := c.stop(); serr != nil {
				log.Error("saving the position failed", "err", serr)
			}
			return err
		}
		if progressed {
			backoff = reconnectMin
		}
		log.Warn("replication connection ended; reconnecting", "err", err, "in", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return c.stop()
		case <-t.C:
		}
		backoff = min(backoff*2, c.cfg.reconnectMax)
	}
}

// stop makes the received WAL durable and saves the position.
func (c *consumer) stop() error {
	if c.store == nil {
		return nil
	}
	err := c.makeDurable()
	if cerr := c.store.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		c.log.Info("stopped; position saved", "lsn", c.state.ConsistentLSN, "tli", c.state.TLI)
	}
	return err
}

// makeDurable fsyncs the received WAL and then records its end in the state
// file. A failure is fatal: local storage is broken.
func (c *consumer) makeDurable() error {
	if err := c.store.Sync(); err != nil {
		return fatalError{fmt.Errorf("fsync WAL: %w", err)}
	}
	if c.store.Synced() == c.state.ConsistentLSN && c.store.TLI() == c.state.TLI {
		return nil
	}
	next := c.state
	next.ConsistentLSN, next.TLI = c.store.Synced(), c.store.TLI()
	if err := saveState(c.cfg.dir, next); err != nil {
		return fatalError{fmt.Errorf("save state: %w", err)}
	}
	c.state = next
	return nil
}

// remoteConsistent is the remote_consistent_lsn to report for the durable
// end disk: what the example pretends it has uploaded. 0 means "nothing":
// the safekeeper then holds from where the stream started.
func (c *consumer) remoteConsistent(disk wal.LSN) wal.LSN {
	if c.cfg.hasHoldAt {
		return min(c.cfg.holdAt, disk)
	}
	if uint64(disk) <= c.cfg.uploadLag {
		return 0
	}
	return disk - wal.LSN(c.cfg.uploadLag)
}

// sendFeedback makes the received WAL durable, then reports it in a 'z'
// message.
func (c *consumer) sendFeedback(conn *pgconn.PgConn) error {
	if err := c.makeDurable(); err != nil {
		return err
	}
	disk := c.state.ConsistentLSN
	p := feedback.Pageserver{
		LastReceivedLSN:     uint64(c.store.Pos()),
		DiskConsistentLSN:   uint64(disk),
		RemoteConsistentLSN: uint64(c.remoteConsistent(disk)),
		ReplyTime:           time.Since(pgEpoch).Microseconds(),
	}
	c.buf = feedback.AppendPageserver(c.buf[:0], p)
	conn.Frontend().Send(&pgproto3.CopyData{Data: c.buf})
	if err := conn.Frontend().Flush(); err != nil {
		return fmt.Errorf("send feedback: %w", err)
	}
	c.log.Debug("sent feedback", "last_received", wal.LSN(p.LastReceivedLSN), "disk_consistent", disk,
		"remote_consistent", wal.LSN(p.RemoteConsistentLSN))
	return nil
}

// session is one connection: identify the server, then stream until an
// error or until ctx ends. progressed reports whether WAL arrived.
func (c *consumer) session(ctx context.Context) (progressed bool, err error) {
	cctx, cancel := context.WithTimeout(ctx, connectTimeout)
	conn, err := pgconn.ConnectConfig(cctx, c.pgcfg)
	cancel()
	if err != nil {
		return false, err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
		defer cancel()
		_ = conn.Close(cctx)
	}()
	sys, err := replconn.IdentifySystem(ctx, conn)
	if err != nil {
		return false, err
	}
	segSize, err := replconn.SegmentSize(ctx, conn)
	if err != nil {
		return false, err
	}
	if !c.hasState {
		// First run: start at the beginning of the segment holding the
		// server's end of WAL, so that every file is complete from its
		// first byte (pg_receivewal starts the same way).
		c.state = State{SystemID: sys.SystemID, TenantID: c.cfg.tenantID, TimelineID: c.cfg.timelineID,
			TLI: sys.TLI, WalSegSize: segSize, ConsistentLSN: wal.SegmentStart(sys.XLogPos, segSize)}
		if c.store, err = openStore(c.cfg.dir, c.state.TLI, segSize, c.state.ConsistentLSN); err != nil {
			return false, fatalError{err}
		}
		if err := saveState(c.cfg.dir, c.state); err != nil {
			return false, fatalError{fmt.Errorf("save state: %w", err)}
		}
		c.hasState = true
		c.log.Info("no saved position; starting at the server's current segment", "lsn", c.state.ConsistentLSN, "tli", c.state.TLI)
	}
	if sys.SystemID != c.state.SystemID || segSize != c.state.WalSegSize {
		return false, fatalError{fmt.Errorf("server has system id %d and %d-byte segments; %s holds WAL of system %d with %d-byte segments",
			sys.SystemID, segSize, c.cfg.dir, c.state.SystemID, c.state.WalSegSize)}
	}
	for {
		p, next, err := c.stream(ctx, conn)
		progressed = progressed || p
		if err != nil {
			return progressed, err
		}
		// End of the timeline: go on with the next one.
		start := wal.SegmentStart(next.start, segSize)
		c.log.Info("timeline switch", "from_tli", c.store.TLI(), "to_tli", next.tli,
			"switch_point", next.start, "restart_at", start)
		if err := c.makeDurable(); err != nil {
			return progressed, err
		}
		if err := c.store.SwitchTimeline(next.tli, start); err != nil {
			return progressed, fatalError{err}
		}
		if err := c.makeDurable(); err != nil {
			return progressed, err
		}
	}
}

// nextTimeline is where the server said the next timeline starts.
type nextTimeline struct {
	tli   uint32
	start wal.LSN
}

// stream runs one START_REPLICATION from the store's position. It returns
// when the server ends the timeline (with the next one), on an error, or
// when ctx ends (after a last feedback).
func (c *consumer) stream(ctx context.Context, conn *pgconn.PgConn) (progressed bool, next nextTimeline, err error) {
	start, tli := c.store.Pos(), c.store.TLI()
	conn.Frontend().Send(&pgproto3.Query{String: fmt.Sprintf("START_REPLICATION PHYSICAL %s TIMELINE %d", start, tli)})
	if err := conn.Frontend().Flush(); err != nil {
		return false, next, err
	}
	var (
		copying, sentCopyDone, haveNext bool
		nextFeedback                    time.Time
	)
	for {
		if copying && !sentCopyDone && !time.Now().Before(nextFeedback) {
			if err := c.sendFeedback(conn); err != nil {
				return progressed, next, err
			}
			nextFeedback = time.Now().Add(c.cfg.feedbackInterval)
		}
		// While streaming, wait for a message only until the next feedback
		// is due (pgconn survives the timeout, as pglogrepl relies on).
		rctx, cancel := ctx, context.CancelFunc(func() {})
		if copying && !sentCopyDone {
			rctx, cancel = context.WithDeadline(ctx, nextFeedback)
		}
		msg, err := conn.ReceiveMessage(rctx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				if copying && !sentCopyDone {
					// Best effort: tell the server where we stopped.
					_ = c.sendFeedback(conn)
				}
				return progressed, next, ctx.Err()
			}
			if pgconn.Timeout(err) {
				continue
			}
			return progressed, next, err
		}
		switch m := msg.(type) {
		case *pgproto3.CopyBothResponse:
			copying = true
			nextFeedback = time.Time{} // report at once: the hold starts with the first 'z'
			c.log.Info("streaming", "start", start, "tli", tli)
		case *pgproto3.CopyData:
			if len(m.Data) == 0 {
				return progressed, next, errors.New("empty CopyData")
			}
			switch m.Data[0] {
			case 'w':
				if len(m.Data) < 25 {
					return progressed, next, fmt.Errorf("XLogData of %d bytes", len(m.Data))
				}
				if at := wal.LSN(binary.BigEndian.Uint64(m.Data[1:])); at != c.store.Pos() {
					return progressed, next, fmt.Errorf("XLogData at %s, expected %s", at, c.store.Pos())
				}
				if err := c.store.Write(m.Data[25:]); err != nil {
					return progressed, next, fatalError{fmt.Errorf("write WAL: %w", err)}
				}
				progressed = progressed || len(m.Data) > 25
			case 'k':
				if len(m.Data) < 18 {
					return progressed, next, fmt.Errorf("keepalive of %d bytes", len(m.Data))
				}
				if m.Data[17] != 0 {
					nextFeedback = time.Time{} // reply requested
				}
			}
		case *pgproto3.CopyDone:
			// The server ended the timeline; answer, then read the
			// next timeline's id and start.
			conn.Frontend().Send(&pgproto3.CopyDone{})
			if err := conn.Frontend().Flush(); err != nil {
				return progressed, next, err
			}
			if err := c.makeDurable(); err != nil {
				return progressed, next, err
			}
			sentCopyDone = true
		case *pgproto3.DataRow:
			if len(m.Values) != 2 {
				return progressed, next, fmt.Errorf("end-of-timeline row with %d columns", len(m.Values))
			}
			t, err1 := strconv.ParseUint(string(m.Values[0]), 10, 32)
			lsn, err2 := wal.ParseLSN(string(m.Values[1]))
			if err := errors.Join(err1, err2); err != nil {
				return progressed, next, fmt.Errorf("end-of-timeline row: %w", err)
			}
			next, haveNext = nextTimeline{tli: uint32(t), start: lsn}, true
		case *pgproto3.RowDescription, *pgproto3.CommandComplete, *pgproto3.NoticeResponse, *pgproto3.ParameterStatus:
		case *pgproto3.ReadyForQuery:
			if !haveNext {
				return progressed, next, errors.New("the server ended streaming without naming a next timeline")
			}
			return progressed, next, nil
		case *pgproto3.ErrorResponse:
			return progressed, next, pgconn.ErrorResponseToPgError(m)
		default:
			return progressed, next, fmt.Errorf("unexpected %T while streaming", msg)
		}
	}
}
