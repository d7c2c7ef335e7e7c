package walfetch

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgsafekeeper/safekeeper/pkg/feedback"
	"github.com/pgsafekeeper/safekeeper/pkg/replconn"
	"github.com/pgsafekeeper/safekeeper/pkg/wal"
)

// DefaultSafekeeperPort is used for an address without a port.
const DefaultSafekeeperPort = "5454"

// SafekeeperSource fetches files from safekeepers over the physical
// replication protocol (any PostgreSQL walsender would do too).
type SafekeeperSource struct {
	// Addrs are the safekeepers, host:port (the port defaults to 5454).
	Addrs []string
	// ConnInfo holds extra libpq key=value settings for every connection
	// (sslmode=..., password=..., application_name=...); host and port
	// come from Addrs. Passwords also come from PGPASSWORD and .pgpass
	// (database "replication"), as with libpq.
	ConnInfo string
	// User is the user to connect as; when empty, ConnInfo's user=, else
	// PGUSER, else "postgres".
	User string
	// TenantID and TimelineID select the timeline on safekeepers hosting
	// several (options '-c tenant_id=... -c timeline_id=...'); when empty
	// a safekeeper serves its only timeline.
	TenantID, TimelineID string
	// ConnectTimeout bounds each connection attempt (10 s when 0, unless
	// ConnInfo sets connect_timeout).
	ConnectTimeout time.Duration
}

// String implements Source.
func (s *SafekeeperSource) String() string {
	return "safekeepers " + strings.Join(s.Addrs, ",")
}

// quoteConnValue quotes a libpq key=value value.
func quoteConnValue(v string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'"
}

// connString builds the connection string for the safekeeper at addr.
func (s *SafekeeperSource) connString(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		// No port: the whole address is the host.
		host, port = strings.TrimSuffix(strings.TrimPrefix(addr, "["), "]"), DefaultSafekeeperPort
	}
	if host == "" {
		return "", fmt.Errorf("safekeeper address %q has no host", addr)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return "", fmt.Errorf("safekeeper address %q: bad port", addr)
	}
	if strings.HasPrefix(s.ConnInfo, "postgres://") || strings.HasPrefix(s.ConnInfo, "postgresql://") {
		return "", errors.New("the safekeeper connection settings must be libpq key=value pairs, not a URL")
	}
	// Later settings win: dbname=replication (for .pgpass, as a
	// walreceiver), the default user, then the caller's settings, then the
	// address and the explicit user.
	cs := "dbname=replication"
	if os.Getenv("PGUSER") == "" {
		cs += " user=postgres"
	}
	if s.ConnInfo != "" {
		cs += " " + s.ConnInfo
	}
	cs += " host=" + quoteConnValue(host) + " port=" + port
	if s.User != "" {
		cs += " user=" + quoteConnValue(s.User)
	}
	return cs, nil
}

func (s *SafekeeperSource) connect(ctx context.Context, addr string) (*pgconn.PgConn, error) {
	cs, err := s.connString(addr)
	if err != nil {
		return nil, err
	}
	cfg, err := pgconn.ParseConfig(cs)
	if err != nil {
		return nil, fmt.Errorf("connection settings: %w", err)
	}
	cfg.RuntimeParams["replication"] = "true"
	if _, ok := cfg.RuntimeParams["application_name"]; !ok {
		cfg.RuntimeParams["application_name"] = "safekeeper wal-fetch"
	}
	if s.TenantID != "" || s.TimelineID != "" {
		opts := fmt.Sprintf("-c tenant_id=%s -c timeline_id=%s", s.TenantID, s.TimelineID)
		if o := cfg.RuntimeParams["options"]; o != "" {
			opts = o + " " + opts
		}
		cfg.RuntimeParams["options"] = opts
	}
	// target_session_attrs checks run SQL, which a walsender refuses.
	cfg.ValidateConnect = nil
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = s.ConnectTimeout
		if cfg.ConnectTimeout <= 0 {
			cfg.ConnectTimeout = 10 * time.Second
		}
	}
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	return conn, nil
}

// server is one safekeeper as IDENTIFY_SYSTEM and SHOW describe it.
type server struct {
	addr    string
	conn    *pgconn.PgConn
	sysID   uint64
	tli     uint32
	flush   wal.LSN
	segSize uint64
	err     error // it could not answer
	noWAL   bool  // it answered that it holds no WAL
}

func (sv *server) close() {
	if sv.conn == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	sv.conn.Close(ctx)
}

// probe connects to addr and identifies it.
func (s *SafekeeperSource) probe(ctx context.Context, addr string) *server {
	sv := &server{addr: addr}
	conn, err := s.connect(ctx, addr)
	if err != nil {
		sv.err = err
		return sv
	}
	sv.conn = conn
	id, err := replconn.IdentifySystem(ctx, conn)
	if replconn.IsSQLState(err, "55000") {
		sv.noWAL = true // "safekeeper holds no WAL yet"
		return sv
	}
	if err != nil {
		sv.err = err
		return sv
	}
	sv.sysID, sv.tli, sv.flush = id.SystemID, id.TLI, id.XLogPos
	sv.segSize, sv.err = replconn.SegmentSize(ctx, conn)
	return sv
}

// probeAll identifies every safekeeper at once and checks that those
// that answered agree on the system identifier and the segment size.
func (s *SafekeeperSource) probeAll(ctx context.Context) ([]*server, error) {
	servers := make([]*server, len(s.Addrs))
	var wg sync.WaitGroup
	for i, addr := range s.Addrs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			servers[i] = s.probe(ctx, addr)
		}()
	}
	wg.Wait()
	var ref *server
	for _, sv := range servers {
		if sv.err != nil || sv.noWAL {
			continue
		}
		if ref == nil {
			ref = sv
			continue
		}
		if sv.sysID != ref.sysID || sv.segSize != ref.segSize {
			return servers, fmt.Errorf("safekeepers disagree: %s has system %d with %s segments, %s has system %d with %s segments",
				ref.addr, ref.sysID, wal.FormatSegmentSize(ref.segSize), sv.addr, sv.sysID, wal.FormatSegmentSize(sv.segSize))
		}
	}
	return servers, nil
}

// outcome gathers the answers of the safekeepers.
type outcome struct {
	absent []string
	failed []error
}

func (o *outcome) note(addr string, err error) {
	if errors.Is(err, ErrNotFound) || replconn.IsSQLState(err, "58P01") {
		o.absent = append(o.absent, addr+": "+err.Error())
	} else {
		o.failed = append(o.failed, fmt.Errorf("%s: %w", addr, err))
	}
}

func (o *outcome) err() error {
	if len(o.failed) > 0 {
		return errors.Join(o.failed...)
	}
	return fmt.Errorf("%w on any safekeeper (%s)", ErrNotFound, strings.Join(o.absent, "; "))
}

// Fetch implements Source.
func (s *SafekeeperSource) Fetch(ctx context.Context, name string) (Result, error) {
	if len(s.Addrs) == 0 {
		return Result{}, errors.New("no safekeepers configured")
	}
	servers, err := s.probeAll(ctx)
	defer func() {
		for _, sv := range servers {
			sv.close()
		}
	}()
	if err != nil {
		return Result{}, err
	}
	var o outcome
	var usable []*server
	for _, sv := range servers {
		switch {
		case sv.err != nil:
			o.note(sv.addr, sv.err)
		case sv.noWAL:
			o.note(sv.addr, fmt.Errorf("%w: holds no WAL", ErrNotFound))
		default:
			usable = append(usable, sv)
		}
	}
	// The safekeeper holding the most WAL first.
	sort.SliceStable(usable, func(i, j int) bool { return usable[i].flush > usable[j].flush })
	switch Classify(name) {
	case History:
		tli, _ := wal.ParseHistoryFileName(name)
		for _, sv := range usable {
			content, err := replconn.TimelineHistory(ctx, sv.conn, tli)
			if err != nil {
				o.note(sv.addr, err)
				continue
			}
			return Result{Data: content, From: "safekeeper " + sv.addr, Durable: len(content)}, nil
		}
		return Result{}, o.err()
	case Segment:
		return s.fetchSegment(ctx, name, usable, &o)
	}
	return Result{}, fmt.Errorf("%w: %q is not a WAL file name", ErrNotFound, name)
}

// candidate is a safekeeper that holds some of the segment asked for.
type candidate struct {
	sv       *server
	tli      uint32
	segStart wal.LSN
	avail    wal.LSN // it holds the timeline's WAL up to here
}

func (s *SafekeeperSource) fetchSegment(ctx context.Context, name string, servers []*server, o *outcome) (Result, error) {
	var cands []candidate
	for _, sv := range servers {
		c, err := segmentOn(ctx, sv, name)
		if err != nil {
			o.note(sv.addr, err)
			continue
		}
		cands = append(cands, c)
	}
	sort.SliceStable(cands, func(i, j int) bool { return cands[i].avail > cands[j].avail })
	for _, c := range cands {
		data, durable, err := streamSegment(ctx, c.sv.conn, c.tli, c.segStart, c.sv.segSize, c.avail)
		if err != nil {
			o.note(c.sv.addr, err)
			continue
		}
		from := "safekeeper " + c.sv.addr
		if durable < len(data) {
			from += fmt.Sprintf(" (partial: the first %d bytes, up to %s, then zeros)", durable, c.segStart+wal.LSN(durable))
			if len(o.failed) > 0 {
				// A safekeeper that could not be asked may hold more of
				// this segment: acknowledged commits the zeros would drop.
				return Result{}, fmt.Errorf("segment %s is partial on every safekeeper that answered (best: %s) and some could not be asked: %w",
					name, from, errors.Join(o.failed...))
			}
		}
		return Result{Data: data, From: from, Durable: durable}, nil
	}
	return Result{}, o.err()
}

// segmentOn finds out whether sv holds any of segment name: an error
// wrapping ErrNotFound if it does not.
func segmentOn(ctx context.Context, sv *server, name string) (candidate, error) {
	tli, segno, ok := wal.ParseSegmentFileName(name, sv.segSize)
	if !ok {
		return candidate{}, fmt.Errorf("%w: not a segment name for %s segments", ErrNotFound, wal.FormatSegmentSize(sv.segSize))
	}
	c := candidate{sv: sv, tli: tli, segStart: wal.LSN(segno * sv.segSize), avail: sv.flush}
	switch {
	case tli > sv.tli:
		return c, fmt.Errorf("%w: on timeline %d, before timeline %d", ErrNotFound, sv.tli, tli)
	case tli < sv.tli:
		// A historic timeline: it ends at its switch point.
		// Its own history must be there: a failure to read it is not
		// an answer about the segment (hence %v, not %w).
		content, err := replconn.TimelineHistory(ctx, sv.conn, sv.tli)
		if err != nil {
			return c, fmt.Errorf("history of its timeline %d: %v", sv.tli, err)
		}
		hist, err := wal.ParseHistory(content, sv.tli)
		if err != nil {
			return c, err
		}
		sp, _, ok := wal.SwitchPoint(hist, tli)
		if !ok {
			return c, fmt.Errorf("%w: timeline %d is not in the history of its timeline %d", ErrNotFound, tli, sv.tli)
		}
		c.avail = min(c.avail, sp)
	}
	if c.avail <= c.segStart {
		return c, fmt.Errorf("%w: holds timeline %d up to %s, not past the segment start %s", ErrNotFound, tli, c.avail, c.segStart)
	}
	return c, nil
}

// streamSegment streams one segment with START_REPLICATION and returns it
// (padded with zeros past what the server holds) and how many of its bytes
// are WAL. The connection is not usable afterwards.
func streamSegment(ctx context.Context, conn *pgconn.PgConn, tli uint32, segStart wal.LSN, segSize uint64, avail wal.LSN) ([]byte, int, error) {
	cmd := fmt.Sprintf("START_REPLICATION PHYSICAL %s TIMELINE %d", segStart, tli)
	conn.Frontend().Send(&pgproto3.Query{String: cmd})
	if err := conn.Frontend().Flush(); err != nil {
		return nil, 0, fmt.Errorf("send START_REPLICATION: %w", err)
	}
wait:
	for {
		msg, err := conn.ReceiveMessage(ctx)
		if err != nil {
			return nil, 0, fmt.Errorf("%s: %w", cmd, err)
		}
		switch m := msg.(type) {
		case *pgproto3.CopyBothResponse:
			break wait
		case *pgproto3.ErrorResponse:
			return nil, 0, fmt.Errorf("%s: %w", cmd, pgconn.ErrorResponseToPgError(m))
		case *pgproto3.ReadyForQuery:
			// The timeline ends at or before the start: no COPY at all.
			return nil, 0, fmt.Errorf("%w: timeline %d ends before %s", ErrNotFound, tli, segStart)
		}
	}
	reply := func(received wal.LSN) error {
		// As pg_receivewal: the write position, flush and apply invalid.
		b := feedback.AppendStandbyStatus(nil, feedback.StandbyStatus{
			Write: uint64(received), SendTime: time.Since(pgEpoch).Microseconds(),
		})
		conn.Frontend().Send(&pgproto3.CopyData{Data: b})
		return conn.Frontend().Flush()
	}
	data, durable, err := collectSegment(ctx, conn, reply, segStart, segSize, avail)
	if err != nil {
		return nil, 0, err
	}
	// Politely end the COPY; the connection is closed right after.
	conn.Frontend().Send(&pgproto3.CopyDone{})
	_ = conn.Frontend().Flush()
	return data, durable, nil
}

var pgEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// NodeState is what one safekeeper answered to IDENTIFY_SYSTEM.
type NodeState struct {
	Addr     string
	SystemID uint64
	TLI      uint32
	FlushLSN wal.LSN
	NoWAL    bool  // it answered that it holds no WAL yet
	Err      error // it could not answer
}

// Probe asks every safekeeper for its identity and durable end of WAL
// (IDENTIFY_SYSTEM), at once, and closes the connections. The error says
// that those which answered disagree on the cluster.
func (s *SafekeeperSource) Probe(ctx context.Context) ([]NodeState, error) {
	servers, err := s.probeAll(ctx)
	out := make([]NodeState, len(servers))
	for i, sv := range servers {
		sv.close()
		out[i] = NodeState{Addr: sv.addr, SystemID: sv.sysID, TLI: sv.tli, FlushLSN: sv.flush, NoWAL: sv.noWAL, Err: sv.err}
	}
	return out, err
}
