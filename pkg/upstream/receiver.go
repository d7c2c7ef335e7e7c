package upstream

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"go.uber.org/zap"

	"github.com/pgsafekeeper/safekeeper/pkg/feedback"
	"github.com/pgsafekeeper/safekeeper/pkg/metrics"
	"github.com/pgsafekeeper/safekeeper/pkg/replconn"
	"github.com/pgsafekeeper/safekeeper/pkg/timeline"
	"github.com/pgsafekeeper/safekeeper/pkg/wal"
	"github.com/pgsafekeeper/safekeeper/pkg/walstore"
)

// Config configures a Receiver.
type Config struct {
	ConnString      string // libpq connection string or URL
	PasswordFile    string // holds the password when ConnString has none
	Slot            string // physical slot on the primary ("" = none)
	ApplicationName string // name the primary sees (synchronous_standby_names)
	StartLSN        wal.LSN
	// InitialStart, when set, proposes where a timeline holding no WAL yet
	// starts (the cluster's archived position, so that a new or wiped
	// safekeeper holds what its peers hold); ok=false: the primary's
	// current position. StartLSN wins over it.
	InitialStart   func(ctx context.Context, upstreamTLI uint32) (lsn wal.LSN, ok bool)
	StatusInterval time.Duration // periodic status updates (default 10s)
	MinBackoff     time.Duration
	MaxBackoff     time.Duration
	// Space, when set, is the storage's emergency reserve: released when
	// WAL can no longer be written, put back before ingest resumes.
	Space Space
	// SpaceRetry is how often a receiver paused by a full disk checks
	// for free space (default 1s).
	SpaceRetry time.Duration
}

// Space is what the receiver needs from the storage when it fills up
// (walstore.Reserve).
type Space interface {
	// Release frees the emergency reserve, so that control-file writes,
	// and with them retention, still work while WAL cannot be written.
	Release() bool
	// Resume reports whether need bytes are free besides the reserve,
	// putting the reserve back first.
	Resume(need uint64) (free uint64, ok bool, err error)
}

// HotStandby is the source of the hot standby feedback the receiver
// forwards to the primary: the consumers' aggregate.
type HotStandby interface {
	HotStandbyXmin() (xmin, catalogXmin uint64)
	HotStandbyChanged() <-chan struct{}
}

// Receiver streams WAL from an upstream into a timeline. When the upstream
// cannot provide the WAL the timeline lacks, it recovers that range from
// the archive or a peer safekeeper (Sources) and then returns to the
// upstream.
type Receiver struct {
	cfg   Config
	src   Sources
	tl    *timeline.Timeline
	hs    HotStandby
	log   *zap.Logger
	m     *metrics.Timeline
	state state
	// lostAt is when streaming from the upstream last stopped (zero
	// while streaming); only Run's goroutine uses it.
	lostAt time.Time
}

// New returns a receiver; call Run.
func New(cfg Config, src Sources, tl *timeline.Timeline, hs HotStandby, log *zap.Logger, m *metrics.Timeline) *Receiver {
	if cfg.StatusInterval <= 0 {
		cfg.StatusInterval = 10 * time.Second
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 200 * time.Millisecond
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 10 * time.Second
	}
	if cfg.ApplicationName == "" {
		cfg.ApplicationName = "safekeeper"
	}
	if cfg.SpaceRetry <= 0 {
		cfg.SpaceRetry = time.Second
	}
	return &Receiver{cfg: cfg, src: src, tl: tl, hs: hs, log: log, m: m}
}

// Run connects, streams, and reconnects with backoff until ctx ends. It
// returns an error only when the WAL writer has failed (a write or fsync
// error): then nothing more can be made durable, and the process must
// restart so that recovery rescans what is really on disk.
func (r *Receiver) Run(ctx context.Context) error {
	backoff := r.cfg.MinBackoff
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			r.m.UpstreamReconnects.Inc()
		}
		r.setState(StateConnecting, nil)
		streamed, err := r.session(ctx, r.primary())
		r.m.UpstreamConnected.Set(0)
		if ctx.Err() != nil {
			r.setState(StateNone, nil)
			return nil
		}
		if errors.Is(err, walstore.ErrBroken) {
			r.setState(StateRefused, err)
			r.log.Error("WAL storage failed; stopping ingest", zap.Error(err))
			return err
		}
		if errors.Is(err, walstore.ErrNoSpace) {
			if r.waitForSpace(ctx, err) != nil {
				r.setState(StateNone, nil)
				return nil
			}
			backoff = r.cfg.MinBackoff
			continue
		}
		if streamed {
			backoff = r.cfg.MinBackoff
		}
		if why := recoveryReason(err); why != "" {
			// The upstream cannot give us what we lack: take it from the
			// archive or a peer, then go back to the upstream at once.
			advanced, rerr := r.recoverWAL(ctx, why, err)
			if errors.Is(rerr, walstore.ErrBroken) {
				r.setState(StateRefused, rerr)
				r.log.Error("WAL storage failed; stopping ingest", zap.Error(rerr))
				return rerr
			}
			if ctx.Err() != nil {
				r.setState(StateNone, nil)
				return nil
			}
			if errors.Is(rerr, walstore.ErrNoSpace) {
				if r.waitForSpace(ctx, rerr) != nil {
					r.setState(StateNone, nil)
					return nil
				}
				continue
			}
			if advanced {
				backoff = r.cfg.MinBackoff
				continue
			}
			if rerr != nil {
				err = fmt.Errorf("%w; recovery: %w", err, rerr)
			}
		}
		state := StateWaiting
		switch {
		case errors.Is(err, timeline.ErrSystemIDMismatch):
			state = StateRefused
		case recoveryReason(err) == reasonRemoved:
			state = StateBehind
		}
		r.rest()
		r.setState(state, err)
		if streamed {
			r.lostAt = time.Now()
		}
		r.log.Warn("upstream replication connection ended; will reconnect",
			zap.String("error", OneLine(err)), zap.Duration("backoff", backoff))
		select {
		case <-ctx.Done():
			r.setState(StateNone, nil)
			return nil
		case <-time.After(backoff):
		}
		backoff *= 2
		if backoff > r.cfg.MaxBackoff {
			backoff = r.cfg.MaxBackoff
		}
	}
}

// waitForSpace pauses ingest after a write found the disk full: the node
// keeps serving its durable WAL and stops acknowledging new WAL (the
// session has ended, so the primary's quorum goes on without it). The
// emergency reserve is released so that retention can still record a new
// local start and free space; ingest resumes by itself once there is room
// for a couple of segments again. It returns only when ctx ends (an error)
// or space is back.
func (r *Receiver) waitForSpace(ctx context.Context, cause error) error {
	r.setState(StateDiskFull, cause)
	r.m.StorageFull.Set(1)
	defer r.m.StorageFull.Set(0)
	r.lostAt = time.Now()
	released := r.cfg.Space != nil && r.cfg.Space.Release()
	r.log.Warn("disk full: WAL ingest paused until space frees; durable WAL is still served",
		zap.String("error", OneLine(cause)), zap.Stringer("durable_lsn", r.tl.FlushLSN()),
		zap.Bool("reserve_released", released), zap.Duration("retry", r.cfg.SpaceRetry))
	need := 2 * r.tl.Control().WalSegSize
	r.rest()
	tick := time.NewTicker(r.cfg.SpaceRetry)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
		if r.cfg.Space == nil {
			return nil // try the write again
		}
		free, ok, err := r.cfg.Space.Resume(need)
		if err != nil {
			r.log.Debug("checking free space", zap.Error(err))
			continue
		}
		if ok {
			r.log.Info("space available again: resuming WAL ingest", zap.Uint64("free_bytes", free))
			return nil
		}
	}
}

// rest is called when no session runs (waiting to reconnect, or for
// space): what was written is made durable, and the timeline's current
// segment file is closed, so that a timeline whose upstream is away holds
// no descriptor. A failed flush is left for the next session's, which
// reports it (and stops ingest).
func (r *Receiver) rest() {
	if !r.tl.Initialized() {
		return
	}
	if _, err := r.tl.Flush(); err != nil {
		return
	}
	if err := r.tl.CloseIdle(); err != nil {
		r.log.Warn("closing the idle WAL segment file", zap.Error(err))
	}
}

// source is where a session streams from: the primary, or a peer
// safekeeper during recovery.
type source struct {
	connString   string
	appName      string
	slot         string      // "" = none
	peer         string      // the peer's name; "" for the primary
	stopAt       wal.LSN     // end the session once this is durable (0 = never)
	hs           HotStandby  // feedback forwarded to the source
	idle         *time.Timer // peer sessions: cancels the session when reset no more
	passwordFile string
	// The session's view of the primary's backlog (see catchUp).
	segSize    uint64
	catchingUp bool
}

func (r *Receiver) primary() *source {
	return &source{connString: r.cfg.ConnString, appName: r.cfg.ApplicationName, slot: r.cfg.Slot, hs: r.hs,
		passwordFile: r.cfg.PasswordFile}
}

// errStream marks an error the source sent in answer to START_REPLICATION
// or while streaming.
type errStream struct{ err error }

func (e *errStream) Error() string { return e.err.Error() }
func (e *errStream) Unwrap() error { return e.err }

// errConnect marks a failure to reach the source at all.
type errConnect struct{ err error }

func (e *errConnect) Error() string { return e.err.Error() }
func (e *errConnect) Unwrap() error { return e.err }

// Dial opens a physical replication connection (replication=true) to a
// PostgreSQL server or a safekeeper, as a walreceiver does: dbname
// defaults to "replication" so that .pgpass (PGPASSFILE) lines for it
// apply, and target_session_attrs is checked without SQL. passwordFile,
// when set and the connection string has no password, holds the password
// (read at every connection, so that it can be rotated; a trailing newline
// is ignored).
func Dial(ctx context.Context, connString, appName, passwordFile string) (*pgconn.PgConn, error) {
	cfg, err := pgconn.ParseConfig(connString)
	if err != nil {
		return nil, fmt.Errorf("parse connection string: %w", err)
	}
	if cfg.Database == "" {
		if cfg, err = pgconn.ParseConfig(withReplicationDB(connString)); err != nil {
			return nil, fmt.Errorf("parse connection string: %w", err)
		}
	}
	if passwordFile != "" && cfg.Password == "" {
		b, err := os.ReadFile(passwordFile)
		if err != nil {
			return nil, fmt.Errorf("password file: %w", err)
		}
		pw := strings.TrimRight(string(b), "\r\n")
		cfg.Password = pw // fallback hosts share Config.Password
	}
	cfg.ValidateConnect = replicationSafeValidator(cfg.ValidateConnect)
	cfg.RuntimeParams["replication"] = "true"
	cfg.RuntimeParams["application_name"] = appName
	delete(cfg.RuntimeParams, "database")
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = 10 * time.Second
	}
	dial := cfg.DialFunc
	cfg.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return wrapPollConn(c), nil
	}
	return pgconn.ConnectConfig(ctx, cfg)
}

// replicationSafeValidator replaces pgconn's target_session_attrs checks,
// which run SQL (SHOW transaction_read_only, pg_is_in_recovery()) that a
// walsender refuses, with libpq's PostgreSQL 14+ way: the in_hot_standby
// and default_transaction_read_only ParameterStatus values the server
// reports at startup. Other validators are kept.
func replicationSafeValidator(v pgconn.ValidateConnectFunc) pgconn.ValidateConnectFunc {
	if v == nil {
		return nil
	}
	is := func(f pgconn.ValidateConnectFunc) bool {
		return reflect.ValueOf(v).Pointer() == reflect.ValueOf(f).Pointer()
	}
	standby := func(c *pgconn.PgConn) bool { return c.ParameterStatus("in_hot_standby") == "on" }
	readOnly := func(c *pgconn.PgConn) bool {
		return standby(c) || c.ParameterStatus("default_transaction_read_only") == "on"
	}
	check := func(ok func(*pgconn.PgConn) bool, what string) pgconn.ValidateConnectFunc {
		return func(_ context.Context, c *pgconn.PgConn) error {
			if !ok(c) {
				return fmt.Errorf("server is not %s", what)
			}
			return nil
		}
	}
	switch {
	case is(pgconn.ValidateConnectTargetSessionAttrsReadWrite):
		return check(func(c *pgconn.PgConn) bool { return !readOnly(c) }, "read-write")
	case is(pgconn.ValidateConnectTargetSessionAttrsReadOnly):
		return check(readOnly, "read-only")
	case is(pgconn.ValidateConnectTargetSessionAttrsPrimary):
		return check(func(c *pgconn.PgConn) bool { return !standby(c) }, "a primary")
	case is(pgconn.ValidateConnectTargetSessionAttrsStandby), is(pgconn.ValidateConnectTargetSessionAttrsPreferStandby):
		return check(standby, "a standby")
	}
	return v
}

// withReplicationDB adds dbname=replication to a connection string that
// names no database.
func withReplicationDB(cs string) string {
	if strings.HasPrefix(cs, "postgres://") || strings.HasPrefix(cs, "postgresql://") {
		u, err := url.Parse(cs)
		if err != nil || strings.Trim(u.Path, "/") != "" {
			return cs
		}
		u.Path = "/replication"
		return u.String()
	}
	return "dbname=replication " + cs
}

func (r *Receiver) session(ctx context.Context, src *source) (streamed bool, err error) {
	if src.peer != "" {
		// A recovery session ends when its peer goes quiet, from the
		// connection on: a paused peer still accepts TCP.
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		defer cancel()
		src.idle = time.AfterFunc(peerIdleTimeout, cancel)
		defer src.idle.Stop()
	}
	conn, err := Dial(ctx, src.connString, src.appName, src.passwordFile)
	if err != nil {
		what := "upstream"
		if src.peer != "" {
			what = "peer " + src.peer
		}
		return false, &errConnect{fmt.Errorf("connect to %s: %w", what, err)}
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), time.Second)
		conn.Close(cctx)
		cancel()
	}()

	id, err := replconn.IdentifySystem(ctx, conn)
	if err != nil {
		return false, err
	}
	if src.peer == "" {
		r.resetEnd(id.XLogPos) // the upstream's end of WAL now, not an older one
	}
	segSize, err := replconn.SegmentSize(ctx, conn)
	if err != nil {
		return false, err
	}
	versionNum := 0
	if rows, err := replconn.SimpleQuery(ctx, conn, "SHOW server_version_num"); err == nil && len(rows) == 1 && len(rows[0]) == 1 {
		versionNum, _ = strconv.Atoi(string(rows[0][0]))
	}
	info := timeline.UpstreamInfo{
		SystemID: id.SystemID, WalSegSize: segSize, TLI: id.TLI,
		ServerVersion: conn.ParameterStatus("server_version"), ServerVersionNum: versionNum,
	}
	if err := r.tl.CheckUpstream(info); err != nil {
		r.log.Error("refusing WAL from upstream", zap.String("error", OneLine(err)))
		return false, err
	}
	if !r.tl.Initialized() {
		start := id.XLogPos
		if r.cfg.StartLSN != 0 {
			start = r.cfg.StartLSN
		} else if r.cfg.InitialStart != nil {
			if lsn, ok := r.cfg.InitialStart(ctx, id.TLI); ok && lsn < start {
				begin, err := r.timelineBegin(ctx, conn, id.TLI, segSize)
				if err != nil {
					return false, err
				}
				// Segments before the upstream's timeline began are
				// named after older timelines; this node starts on it.
				start = max(lsn, begin)
			}
		}
		if err := r.tl.Initialize(info, start); err != nil {
			return false, err
		}
		r.log.Info("first contact with upstream: timeline initialized",
			zap.Uint64("system_id", info.SystemID), zap.Uint64("wal_seg_size", segSize),
			zap.String("server_version", info.ServerVersion), zap.Uint32("tli", id.TLI),
			zap.Stringer("start_lsn", wal.SegmentStart(start, segSize)))
	} else if src.peer == "" {
		r.tl.UpdateServerVersion(info.ServerVersion, info.ServerVersionNum)
	}
	if src.peer == "" {
		if rows, err := replconn.SimpleQuery(ctx, conn, "SHOW wal_level"); err == nil && len(rows) == 1 && len(rows[0]) == 1 {
			r.tl.SetWalLevel(string(rows[0][0]))
		}
	}
	if err := r.followTimelines(ctx, conn, id.TLI); err != nil {
		return false, err
	}
	if src.slot != "" {
		if err := r.ensureSlot(ctx, conn, src.slot); err != nil {
			return false, err
		}
	}
	// Everything written is made durable before we ask for more.
	start, err := r.tl.Flush()
	if err != nil {
		return false, err
	}
	tli := r.tl.CurrentTLI()
	streamed = false
	for {
		s, err := r.stream(ctx, conn, src, start, tli)
		streamed = streamed || s
		var end *timelineEnd
		if !errors.As(err, &end) {
			return streamed, err
		}
		// The upstream ended our timeline: follow it to the next one on
		// the same connection, as a walreceiver does.
		if err := r.fetchHistories(ctx, conn, end.next); err != nil {
			return streamed, err
		}
		if _, err := r.tl.Flush(); err != nil {
			return streamed, err
		}
		if err := r.tl.SwitchTimeline(ctx, end.next, end.startpos); err != nil {
			return streamed, err
		}
		start, tli = end.startpos, end.next
	}
}

// timelineBegin returns the start of the segment holding the switch point
// at which PostgreSQL timeline tli began (0 for timeline 1).
func (r *Receiver) timelineBegin(ctx context.Context, conn *pgconn.PgConn, tli uint32, segSize uint64) (wal.LSN, error) {
	if tli <= 1 {
		return 0, nil
	}
	content, err := replconn.TimelineHistory(ctx, conn, tli)
	if err != nil {
		return 0, err
	}
	hist, err := wal.ParseHistory(content, tli)
	if err != nil {
		return 0, fmt.Errorf("upstream history of timeline %d: %w", tli, err)
	}
	return wal.SegmentStart(hist[len(hist)-1].Begin, segSize), nil
}

// timelineEnd is how stream reports that the upstream ended the timeline
// being streamed (CopyDone, then next_tli and its start position).
type timelineEnd struct {
	next     uint32
	startpos wal.LSN
}

func (e *timelineEnd) Error() string {
	return fmt.Sprintf("upstream ended the timeline; next timeline %d starts at %s", e.next, e.startpos)
}

// fetchHistories stores the history files of every timeline up to tli that
// are missing.
func (r *Receiver) fetchHistories(ctx context.Context, conn *pgconn.PgConn, tli uint32) error {
	for t := uint32(2); t <= tli; t++ {
		if r.tl.HasHistory(t) {
			continue
		}
		content, err := replconn.TimelineHistory(ctx, conn, t)
		if err != nil {
			if t < tli && replconn.IsSQLState(err, "58P01") {
				continue // not on the upstream's path
			}
			return err
		}
		if err := r.tl.SaveHistory(t, content); err != nil {
			return err
		}
		r.log.Info("stored timeline history file", zap.Uint32("tli", t))
	}
	return nil
}

// followTimelines brings the timeline up to the upstream's TLI where the
// switch points are already behind us: WAL past a switch point that the
// upstream's history does not contain is set aside. When our end of WAL
// is before the next switch point, streaming the old timeline (which the
// upstream ends at the switch point) takes us there instead.
func (r *Receiver) followTimelines(ctx context.Context, conn *pgconn.PgConn, upstreamTLI uint32) error {
	for {
		cur := r.tl.CurrentTLI()
		if upstreamTLI == cur {
			if cur > 1 {
				return r.fetchHistories(ctx, conn, cur)
			}
			return nil
		}
		if upstreamTLI < cur {
			return fmt.Errorf("upstream is on timeline %d, behind this safekeeper's timeline %d", upstreamTLI, cur)
		}
		if err := r.fetchHistories(ctx, conn, upstreamTLI); err != nil {
			return err
		}
		content, err := r.tl.History(upstreamTLI)
		if err != nil {
			return err
		}
		hist, err := wal.ParseHistory(content, upstreamTLI)
		if err != nil {
			return fmt.Errorf("upstream history of timeline %d: %w", upstreamTLI, err)
		}
		sp, next, ok := wal.SwitchPoint(hist, cur)
		if !ok {
			return fmt.Errorf("%w: timeline %d is not in the upstream's history of timeline %d", timeline.ErrSystemIDMismatch, cur, upstreamTLI)
		}
		flush, err := r.tl.Flush()
		if err != nil {
			return err
		}
		if flush < sp {
			return nil // stream the rest of timeline cur first
		}
		if flush > sp {
			r.log.Warn("WAL past the upstream's switch point is set aside",
				zap.Uint32("tli", cur), zap.Stringer("switch_point", sp), zap.Stringer("end_of_wal", flush))
		}
		if err := r.tl.SwitchTimeline(ctx, next, sp); err != nil {
			return err
		}
	}
}

func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

// errStopReached ends a recovery session that reached its target.
var errStopReached = errors.New("recovery target reached")

// flushGroupBytes is how much received WAL, not yet durable, makes the
// receive loop hand the fsync to the flusher while it reads on, when the
// stream does not pause (catching up). Below it the receive loop syncs
// itself when the stream pauses; that is a commit's path, and a group
// this small still gets walstore's raw fdatasync.
const flushGroupBytes = 256 << 10

func (r *Receiver) stream(ctx context.Context, conn *pgconn.PgConn, src *source, start wal.LSN, tli uint32) (bool, error) {
	cmd := fmt.Sprintf("START_REPLICATION PHYSICAL %s TIMELINE %d", start, tli)
	if src.slot != "" {
		cmd = fmt.Sprintf("START_REPLICATION SLOT %s PHYSICAL %s TIMELINE %d", quoteIdent(src.slot), start, tli)
	}
	conn.Frontend().Send(&pgproto3.Query{String: cmd})
	if err := conn.Frontend().Flush(); err != nil {
		return false, fmt.Errorf("send START_REPLICATION: %w", err)
	}
	for {
		msg, err := conn.ReceiveMessage(ctx)
		if err != nil {
			return false, fmt.Errorf("START_REPLICATION: %w", err)
		}
		switch m := msg.(type) {
		case *pgproto3.CopyBothResponse:
			goto streaming
		case *pgproto3.ErrorResponse:
			return false, &errStream{fmt.Errorf("START_REPLICATION: %w", pgconn.ErrorResponseToPgError(m))}
		case *pgproto3.NoticeResponse, *pgproto3.ParameterStatus:
		default:
			return false, fmt.Errorf("START_REPLICATION: unexpected message %T", msg)
		}
	}
streaming:
	// Every session starts as if caught up; with the primary, its first
	// message says otherwise if it is so.
	src.segSize, src.catchingUp = r.tl.Control().WalSegSize, false
	r.tl.SetCatchingUp(false)
	if src.peer == "" {
		// Logged once the primary accepted START_REPLICATION.
		r.log.Info("streaming WAL from upstream", zap.Stringer("start_lsn", start), zap.Uint32("tli", tli))
		if !r.lostAt.IsZero() {
			r.log.Info("reconnected to upstream", zap.Duration("after", time.Since(r.lostAt).Round(time.Millisecond)))
			r.lostAt = time.Time{}
		}
		r.setState(StateStreaming, nil)
		r.m.UpstreamConnected.Set(1)
	} else {
		r.log.Info("recovering WAL from peer", zap.String("peer", src.peer), zap.Stringer("start_lsn", start),
			zap.Stringer("target_lsn", src.stopAt), zap.Uint32("tli", tli))
	}

	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	fctx, stopFlusher := context.WithCancel(sctx)
	defer stopFlusher()
	st := &statusSender{conn: conn.Conn(), tl: r.tl, hs: src.hs}
	kick := make(chan struct{}, 1)
	var flushedInline atomic.Bool
	flushErr := make(chan error, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		err := r.flusher(fctx, st, src.hs, kick, &flushedInline)
		flushErr <- err
		if err != nil {
			// Nothing more becomes durable: end the session rather than
			// keep answering the primary with a stale flush position.
			cancel()
		}
	}()
	defer wg.Wait()
	defer cancel()

	// The stream is read with the frontend directly: pgconn's
	// ReceiveMessage registers a context.AfterFunc and makes a channel for
	// every message, allocations on the path of every XLogData. The
	// session's context ends a read through the socket's deadline instead.
	nc := conn.Conn()
	stopWatch := context.AfterFunc(sctx, func() { nc.SetReadDeadline(time.Now()) })
	defer stopWatch()

	// Received WAL is made durable and acknowledged on this goroutine when
	// the stream pauses, as a walreceiver does: each time a read would
	// wait for the socket, with part of a message already in or not. A
	// commit waiting for it then pays no hand-off to another thread, and
	// WAL arriving back to back is written and synced as one group. Where
	// the connection offers no such hook (not Linux), every message kicks
	// the flusher instead.
	var idleErr error // the hook's failure, which ends the session
	hooked := setReadIdle(nc, func() error {
		if r.tl.WrittenLSN() <= r.tl.FlushLSN() {
			return nil
		}
		if err := r.flushAck(st); err != nil {
			idleErr = err
			return err
		}
		flushedInline.Store(true)
		return nil
	})
	if hooked {
		// Before pgconn reads again (the end of a timeline), and when the
		// session ends: no acknowledgement may follow our CopyDone.
		defer setReadIdle(nc, nil)
	}
	fe := conn.Frontend()
	streamed := false
	for {
		msg, err := fe.Receive()
		if err != nil {
			if idleErr != nil {
				return streamed, idleErr
			}
			select {
			case ferr := <-flushErr:
				if ferr != nil {
					return streamed, ferr
				}
			default:
			}
			if cerr := sctx.Err(); cerr != nil {
				err = cerr
			}
			return streamed, fmt.Errorf("receive from upstream: %w", err)
		}
		switch m := msg.(type) {
		case *pgproto3.CopyData:
			if len(m.Data) == 0 {
				return streamed, errors.New("empty CopyData from upstream")
			}
			switch m.Data[0] {
			case 'w':
				// Synced when the stream pauses (above). A stream that
				// does not pause, catching up, hands each flushGroupBytes
				// to the flusher, which syncs while this goroutine reads
				// on.
				var k chan<- struct{}
				if !hooked || r.tl.WrittenLSN()-r.tl.FlushLSN()+wal.LSN(len(m.Data)) >= flushGroupBytes {
					k = kick
				}
				appended, err := r.xlogData(m.Data, src, k)
				streamed = streamed || appended
				if err != nil {
					return streamed, err
				}
			case 'k':
				if len(m.Data) < 18 {
					return streamed, fmt.Errorf("keepalive too short: %d bytes", len(m.Data))
				}
				end := wal.LSN(binary.BigEndian.Uint64(m.Data[1:]))
				if src.peer == "" {
					r.noteEnd(end)
				} else if end <= r.tl.WrittenLSN() {
					// The peer has nothing more than we hold.
					if _, err := r.tl.Flush(); err != nil {
						return streamed, err
					}
					return streamed, errStopReached
				}
				if m.Data[17] != 0 {
					if err := st.send(false); err != nil {
						return streamed, err
					}
				}
			default:
				return streamed, fmt.Errorf("unexpected streaming message type %q from upstream", m.Data[0])
			}
		case *pgproto3.CopyDone:
			// The upstream ended our timeline. Stop the flusher and the
			// idle hook first: a status update arriving after our
			// CopyDone is a protocol violation for PostgreSQL. Report the
			// final position, then end.
			if hooked {
				setReadIdle(nc, nil)
			}
			stopFlusher()
			wg.Wait()
			if _, err := r.tl.Flush(); err != nil {
				return streamed, err
			}
			if err := st.send(false); err != nil {
				return streamed, err
			}
			if err := st.sendRaw([]byte{'c', 0, 0, 0, 4}); err != nil {
				return streamed, err
			}
			if !stopWatch() {
				// The session ended meanwhile: by the flusher's failure,
				// if that is what cancelled it.
				select {
				case ferr := <-flushErr:
					if ferr != nil {
						return streamed, ferr
					}
				default:
				}
				return streamed, fmt.Errorf("receive from upstream: %w", sctx.Err())
			}
			end, err := readTimelineEnd(sctx, conn)
			if err != nil {
				return streamed, err
			}
			return streamed, end
		case *pgproto3.ErrorResponse:
			return streamed, &errStream{fmt.Errorf("upstream: %w", pgconn.ErrorResponseToPgError(m))}
		case *pgproto3.CommandComplete:
			return streamed, fmt.Errorf("upstream ended streaming (%s)", m.CommandTag)
		case *pgproto3.NoticeResponse, *pgproto3.ParameterStatus:
		default:
			return streamed, fmt.Errorf("unexpected message %T from upstream", msg)
		}
	}
}

// readTimelineEnd reads the result set that follows the end of a historic
// timeline: next_tli and next_tli_startpos, two CommandCompletes and
// ReadyForQuery.
func readTimelineEnd(ctx context.Context, conn *pgconn.PgConn) (*timelineEnd, error) {
	var end *timelineEnd
	for {
		msg, err := conn.ReceiveMessage(ctx)
		if err != nil {
			return nil, fmt.Errorf("reading end of timeline: %w", err)
		}
		switch m := msg.(type) {
		case *pgproto3.DataRow:
			if len(m.Values) != 2 {
				return nil, fmt.Errorf("unexpected end-of-timeline row with %d fields", len(m.Values))
			}
			next, err := strconv.ParseUint(string(m.Values[0]), 10, 32)
			if err != nil {
				return nil, fmt.Errorf("next_tli %q: %w", m.Values[0], err)
			}
			pos, err := wal.ParseLSN(string(m.Values[1]))
			if err != nil {
				return nil, fmt.Errorf("next_tli_startpos %q: %w", m.Values[1], err)
			}
			end = &timelineEnd{next: uint32(next), startpos: pos}
		case *pgproto3.ErrorResponse:
			return nil, fmt.Errorf("upstream: %w", pgconn.ErrorResponseToPgError(m))
		case *pgproto3.ReadyForQuery:
			if end == nil {
				return nil, errors.New("upstream ended streaming without naming the next timeline")
			}
			return end, nil
		}
	}
}

// xlogData takes one XLogData message (the body of its CopyData) from src:
// the WAL is appended and, with kick not nil, the flusher kicked to make it
// durable and acknowledge it (with kick nil the caller flushes itself).
// appended says the timeline took the WAL. It allocates nothing
// (BenchmarkIngestXLogData). From a peer it returns errStopReached, once
// the WAL is durable, at the position the peer was asked for.
func (r *Receiver) xlogData(data []byte, src *source, kick chan<- struct{}) (appended bool, err error) {
	if len(data) < 25 {
		return false, fmt.Errorf("XLogData too short: %d bytes", len(data))
	}
	dataStart := wal.LSN(binary.BigEndian.Uint64(data[1:]))
	walEnd := wal.LSN(binary.BigEndian.Uint64(data[9:]))
	payload := data[25:]
	if err := r.tl.Append(dataStart, payload); err != nil {
		return false, err
	}
	r.m.BytesReceived.Add(float64(len(payload)))
	if src.peer == "" {
		r.noteEnd(walEnd)
		r.catchUp(src, walEnd, dataStart+wal.LSN(len(payload)))
	} else if src.idle.Reset(peerIdleTimeout); src.stopAt != 0 && dataStart+wal.LSN(len(payload)) >= src.stopAt {
		if _, err := r.tl.Flush(); err != nil {
			return true, err
		}
		return true, errStopReached
	}
	if kick != nil {
		select {
		case kick <- struct{}{}:
		default:
		}
	}
	return true, nil
}

// catchUp tells the timeline's writer whether this safekeeper is catching
// up on a backlog (see walstore.Writer.SetCatchingUp): from more than two
// segments behind the primary's end of WAL (the end each XLogData
// carries) until it is within one. In between it keeps what it was, so
// that a lag near the threshold does not flip the writer back and forth.
func (r *Receiver) catchUp(src *source, upstreamEnd, written wal.LSN) {
	var lag uint64
	if upstreamEnd > written {
		lag = uint64(upstreamEnd - written)
	}
	switch {
	case !src.catchingUp && src.segSize > 0 && lag > 2*src.segSize:
		src.catchingUp = true
		r.log.Debug("catching up: new segments are written once, not zero-filled first",
			zap.Stringer("upstream_end", upstreamEnd), zap.Stringer("written", written))
	case src.catchingUp && lag <= src.segSize:
		src.catchingUp = false
		r.log.Debug("caught up: new segments are zero-filled ahead again",
			zap.Stringer("upstream_end", upstreamEnd), zap.Stringer("written", written))
	}
	r.tl.SetCatchingUp(src.catchingUp)
}

// flusher makes received WAL durable in groups and reports each new durable
// position upstream.
//
// It also closes the timeline's current segment file when a whole status
// interval (10s by default) went by without WAL: the upstream is
// connected but idle, and an idle timeline should hold no descriptor. The
// status tick is there anyway, so this costs no timer of its own; the
// file is closed 1 to 2 intervals after the last WAL, long enough that a
// steady trickle of WAL (a commit every few seconds) does not reopen it
// each time, and reopening is one open(2) with no fsync.
func (r *Receiver) flusher(ctx context.Context, st *statusSender, hs HotStandby, kick <-chan struct{}, flushedInline *atomic.Bool) error {
	tick := time.NewTicker(r.cfg.StatusInterval)
	defer tick.Stop()
	flushed := false // WAL arrived since the last tick
	// First status right away, as a walreceiver does.
	if err := st.send(false); err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-kick:
			if err := r.flushAck(st); err != nil {
				return err
			}
			flushed = true
		case <-tick.C:
			if flushedInline.Swap(false) {
				flushed = true
			}
			if r.tl.WrittenLSN() > r.tl.FlushLSN() {
				// A bound in time on what waits for a pause or for
				// flushGroupBytes: a stream that neither pauses nor
				// grows (never seen) is still synced once an interval.
				if err := r.flushAck(st); err != nil {
					return err
				}
				flushed = true
			}
			if err := st.send(false); err != nil {
				return err
			}
			if err := st.sendHotStandby(true); err != nil {
				return err
			}
			if !flushed {
				// Everything received was flushed at its kick.
				if err := r.tl.CloseIdle(); err != nil {
					r.log.Warn("closing the idle WAL segment file", zap.Error(err))
				}
			}
			flushed = false
		case <-hs.HotStandbyChanged():
			if err := st.sendHotStandby(false); err != nil {
				return err
			}
		}
	}
}

// flushAck makes everything received durable and acknowledges it
// upstream as soon as it is (see Timeline.FlushAnd). It is called by the
// flusher and, when nothing more is arriving, by the receive loop.
func (r *Receiver) flushAck(st *statusSender) error {
	before := r.tl.FlushLSN()
	t0 := time.Now()
	var fsync time.Duration
	var sendErr error
	d, err := r.tl.FlushAnd(func() error {
		// Acknowledged as soon as it is durable and published.
		fsync = time.Since(t0)
		sendErr = st.send(false)
		return sendErr
	})
	if sendErr != nil {
		return sendErr
	}
	if err != nil {
		r.log.Error("fsync of received WAL failed", zap.Error(err))
		return err
	}
	if d > before {
		// A flush that found everything durable already (a kick left
		// over from WAL the receive loop flushed itself) is no fsync.
		r.m.FsyncSeconds.Observe(fsync.Seconds())
		r.m.FlushLSN.Set(float64(d))
	}
	return nil
}

// statusSender writes standby status updates straight to the connection,
// serialized by a mutex, while the receive loop reads.
type statusSender struct {
	mu   sync.Mutex
	conn net.Conn
	tl   *timeline.Timeline
	hs   HotStandby
	buf  [64]byte

	hsSent                bool // a non-zero xmin went upstream
	lastXmin, lastCatXmin uint64
}

// sendHotStandby forwards the consumers' aggregated hot standby feedback,
// as Neon does: the oldest xmin and catalog_xmin among them. When the last
// consumer with feedback leaves, a message with invalid (0) xids tells the
// primary to drop the horizon. periodic resends an unchanged value.
func (s *statusSender) sendHotStandby(periodic bool) error {
	xmin, cat := s.hs.HotStandbyXmin()
	s.mu.Lock()
	defer s.mu.Unlock()
	if xmin == 0 && cat == 0 && !s.hsSent {
		return nil
	}
	if !periodic && xmin == s.lastXmin && cat == s.lastCatXmin {
		return nil
	}
	b := feedback.AppendHotStandby(s.copyDataHeader(), feedback.HotStandby{
		SendTime: time.Since(pgEpoch).Microseconds(),
		Xmin:     uint32(xmin), XminEpoch: uint32(xmin >> 32),
		CatalogXmin: uint32(cat), CatalogXminEpoch: uint32(cat >> 32),
	})
	if err := s.writeCopyData(b, "hot standby feedback"); err != nil {
		return err
	}
	s.lastXmin, s.lastCatXmin = xmin, cat
	s.hsSent = xmin != 0 || cat != 0
	return nil
}

// copyDataHeader starts a CopyData message in the reusable buffer; the
// length is filled in by writeCopyData. s.mu is held.
func (s *statusSender) copyDataHeader() []byte { return append(s.buf[:0], 'd', 0, 0, 0, 0) }

// writeCopyData sets the length of a message begun with copyDataHeader and
// writes it. s.mu is held.
func (s *statusSender) writeCopyData(b []byte, what string) error {
	binary.BigEndian.PutUint32(b[1:], uint32(len(b)-1))
	return s.writeLocked(b, what)
}

// writeLocked writes a whole message to the upstream. s.mu is held.
func (s *statusSender) writeLocked(b []byte, what string) error {
	s.conn.SetWriteDeadline(time.Now().Add(30 * time.Second))
	if _, err := s.conn.Write(b); err != nil {
		return fmt.Errorf("send %s upstream: %w", what, err)
	}
	return nil
}

func (s *statusSender) sendRaw(b []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.writeLocked(b, "message")
}

var pgEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

func (s *statusSender) send(replyRequested bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	flush := uint64(s.tl.FlushLSN())
	write := uint64(s.tl.WrittenLSN())
	if write < flush {
		write = flush
	}
	b := feedback.AppendStandbyStatus(s.copyDataHeader(), feedback.StandbyStatus{
		Write: write, Flush: flush, Apply: flush,
		SendTime: time.Since(pgEpoch).Microseconds(), ReplyRequested: replyRequested,
	})
	return s.writeCopyData(b, "status update")
}
