package upstream

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"

	"github.com/pgsafekeeper/safekeeper/pkg/archive"
	"github.com/pgsafekeeper/safekeeper/pkg/replconn"
	"github.com/pgsafekeeper/safekeeper/pkg/timeline"
	"github.com/pgsafekeeper/safekeeper/pkg/wal"
	"github.com/pgsafekeeper/safekeeper/pkg/walstore"
)

// Peer is another safekeeper of the same timeline, as the cluster sees it.
type Peer struct {
	Name          string
	Addr          string // host:port of its replication listener
	TLI           uint32
	FlushLSN      wal.LSN
	LocalStartLSN wal.LSN // the oldest WAL it holds locally
}

// Sources are where WAL can be had when the upstream no longer has it.
type Sources struct {
	// Peers lists the other safekeepers of the timeline (nil: none).
	Peers func() []Peer
	// PeerConnString is the libpq key=value base for connecting to a peer
	// (user, sslmode, password...); host and port come from Peer.Addr.
	PeerConnString string
	// Archive returns a whole archived segment, or an error wrapping
	// archive.ErrNotFound when the archive does not hold it (nil: no
	// archive).
	Archive timeline.SegmentSource
}

// peerIdleTimeout ends a recovery session from a peer that sends nothing.
const peerIdleTimeout = 15 * time.Second

// Why a session's failure calls for recovery.
const (
	reasonRemoved     = "the upstream has removed WAL this safekeeper lacks"
	reasonUnreachable = "the upstream is unreachable"
)

// recoveryReason says why err calls for recovery from the archive or a
// peer, or "" when it does not: the upstream removed the WAL we need, or
// it cannot be reached at all. A walsender reports removed WAL as
// "requested WAL segment ... has already been removed" with 58P01 (or,
// when checked while reading, with whatever code the errno left; the
// English text covers that case when lc_messages is English).
func recoveryReason(err error) string {
	var se *errStream
	var pgErr *pgconn.PgError
	if errors.As(err, &se) && errors.As(err, &pgErr) &&
		(pgErr.Code == "58P01" || strings.Contains(pgErr.Message, "has already been removed")) {
		return reasonRemoved
	}
	var ce *errConnect
	if errors.As(err, &ce) {
		return reasonUnreachable
	}
	return ""
}

// recoverWAL fetches WAL past the durable end from the archive (whole
// segments) and then from the most advanced peer ahead of us. It reports
// whether the end of WAL moved. Only a storage failure is returned as an
// error that must stop ingest; other failures are recorded and returned
// for the log.
func (r *Receiver) recoverWAL(ctx context.Context, reason string, cause error) (bool, error) {
	from := r.tl.FlushLSN()
	rs := RecoveryStatus{Reason: reason, StartedAt: time.Now(), FromLSN: from.String()}
	var errs []error
	var sources []string
	attempted := false
	begin := func(source string) {
		if !attempted {
			r.log.Info("recovering WAL the upstream cannot give", zap.String("reason", reason), zap.Error(cause),
				zap.Stringer("from", from))
		}
		attempted = true
		r.setState(StateRecovering, cause)
		rs.Source = strings.Join(append(sources, source), ", ")
		r.noteRecovery(rs)
	}
	// The archive holds only whole segments, all of them older than what
	// a peer holds: worth asking only when the upstream removed WAL.
	if r.src.Archive != nil && r.tl.Initialized() && reason == reasonRemoved {
		begin("archive")
		n, err := r.recoverFromArchive(ctx)
		if n > 0 {
			sources = append(sources, "archive")
			r.log.Info("recovered WAL from the archive", zap.Stringer("from", from), zap.Stringer("to", r.tl.FlushLSN()), zap.Int("segments", n))
		}
		if errors.Is(err, walstore.ErrBroken) || errors.Is(err, walstore.ErrNoSpace) {
			return n > 0, err
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("archive: %w", err))
		}
	}
	if r.src.Peers != nil {
		peers := r.src.Peers()
		// The most advanced first; ties by name, for a stable choice.
		slices.SortFunc(peers, func(a, b Peer) int {
			if c := cmp.Compare(b.FlushLSN, a.FlushLSN); c != 0 {
				return c
			}
			return strings.Compare(a.Name, b.Name)
		})
		for _, p := range peers {
			before := r.tl.FlushLSN()
			if p.FlushLSN <= before {
				break
			}
			if p.Addr == "" || (r.tl.Initialized() && p.LocalStartLSN > before) {
				continue // it no longer holds what we lack
			}
			begin("peer " + p.Name)
			err := r.recoverFromPeer(ctx, p)
			if r.tl.FlushLSN() > before {
				sources = append(sources, "peer "+p.Name)
				r.log.Info("recovered WAL from a peer safekeeper", zap.String("peer", p.Name),
					zap.Stringer("from", before), zap.Stringer("to", r.tl.FlushLSN()))
				break
			}
			if errors.Is(err, walstore.ErrBroken) || errors.Is(err, walstore.ErrNoSpace) {
				return false, err
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("peer %s: %w", p.Name, err))
				r.log.Warn("recovery from a peer safekeeper failed", zap.String("peer", p.Name), zap.String("error", OneLine(err)))
			}
			if ctx.Err() != nil {
				break
			}
		}
	}
	err := errors.Join(errs...)
	advanced := r.tl.FlushLSN() > from
	if !advanced && err == nil && reason == reasonRemoved {
		err = errors.New("no peer or archive holds it")
	}
	if attempted || reason == reasonRemoved {
		now := time.Now()
		rs.EndedAt, rs.Source, rs.ToLSN = &now, strings.Join(sources, ", "), r.tl.FlushLSN().String()
		if err != nil {
			rs.Error = err.Error()
		}
		r.noteRecovery(rs)
	}
	return advanced, err
}

// recoverFromArchive appends whole archived segments from the one holding
// the durable end of WAL onwards, as long as the archive has them on the
// current PostgreSQL timeline. The part of the first segment we already
// hold must equal the archived bytes. It returns how many segments it
// completed.
func (r *Receiver) recoverFromArchive(ctx context.Context) (int, error) {
	ctl := r.tl.Control()
	segSize := ctl.WalSegSize
	n := 0
	for ctx.Err() == nil {
		flush := r.tl.FlushLSN()
		segno := wal.SegmentNo(flush, segSize)
		tli := wal.FileTLI(r.tl.HistoryEntries(), segno, segSize)
		if tli != r.tl.CurrentTLI() {
			return n, nil // the segment belongs to an older timeline's history
		}
		data, err := r.src.Archive(ctx, tli, segno, segSize, ctl.SystemID)
		if errors.Is(err, archive.ErrNotFound) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		off := wal.SegmentOffset(flush, segSize)
		if off > 0 {
			if err := r.checkPrefix(tli, segno, segSize, data[:off]); err != nil {
				return n, err
			}
		}
		const chunk = 1 << 20
		for pos := off; pos < segSize; pos += chunk {
			end := min(pos+chunk, segSize)
			if err := r.tl.Append(wal.LSN(segno*segSize+pos), data[pos:end]); err != nil {
				return n, err
			}
		}
		if _, err := r.tl.Flush(); err != nil {
			return n, err
		}
		n++
	}
	return n, ctx.Err()
}

// checkPrefix verifies that the start of a local segment equals want.
func (r *Receiver) checkPrefix(tli uint32, segno, segSize uint64, want []byte) error {
	f, err := r.tl.Dir().OpenSegment(tli, segno, segSize)
	if err != nil {
		return fmt.Errorf("open local segment: %w", err)
	}
	defer f.Close()
	got := make([]byte, len(want))
	if _, err := io.ReadFull(io.NewSectionReader(f, 0, int64(len(want))), got); err != nil {
		return fmt.Errorf("read local segment: %w", err)
	}
	if !bytes.Equal(got, want) {
		return fmt.Errorf("local segment %s differs from the archived one before the end of local WAL; not using the archive",
			wal.SegmentFileName(tli, segno, segSize))
	}
	return nil
}

// recoverFromPeer streams from a peer safekeeper until the end of WAL it
// advertised is durable here (or it goes quiet).
func (r *Receiver) recoverFromPeer(ctx context.Context, p Peer) error {
	host, port, err := net.SplitHostPort(p.Addr)
	if err != nil {
		return fmt.Errorf("peer address %q: %w", p.Addr, err)
	}
	cs := strings.TrimSpace(r.src.PeerConnString + " host=" + quoteConnValue(host) + " port=" + quoteConnValue(port))
	src := &source{connString: cs, appName: r.cfg.ApplicationName + "_recovery", peer: p.Name, stopAt: p.FlushLSN, hs: noHotStandby{}}
	_, err = r.session(ctx, src)
	if errors.Is(err, errStopReached) {
		return nil
	}
	return err
}

// quoteConnValue quotes a libpq key=value value.
func quoteConnValue(v string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'"
}

// noHotStandby forwards no hot standby feedback (to a peer).
type noHotStandby struct{}

func (noHotStandby) HotStandbyXmin() (uint64, uint64)   { return 0, 0 }
func (noHotStandby) HotStandbyChanged() <-chan struct{} { return nil }

// ensureSlot makes sure the physical slot exists on the upstream and holds
// WAL: read it first (READ_REPLICATION_SLOT, PostgreSQL 15+), create it
// only when it is missing, so that the primary logs no error at every
// reconnect. A slot without a restart_lsn (invalidated by
// max_slot_wal_keep_size) holds no WAL any more: it is dropped and
// created again. Before PostgreSQL 15 the slot is created and "already
// exists" ignored.
func (r *Receiver) ensureSlot(ctx context.Context, conn *pgconn.PgConn, slot string) error {
	rows, err := replconn.SimpleQuery(ctx, conn, "READ_REPLICATION_SLOT "+quoteIdent(slot))
	switch {
	case replconn.IsSQLState(err, "42601"): // syntax error: PostgreSQL 14 or older
		return r.createSlot(ctx, conn, slot, true)
	case err != nil:
		return fmt.Errorf("read replication slot %q on upstream: %w", slot, err)
	}
	if len(rows) != 1 || len(rows[0]) < 2 || rows[0][0] == nil {
		return r.createSlot(ctx, conn, slot, false)
	}
	if typ := string(rows[0][0]); typ != "physical" {
		return fmt.Errorf("replication slot %q on upstream is %s, not physical", slot, typ)
	}
	if rows[0][1] == nil {
		r.log.Warn("the upstream slot holds no WAL (invalidated); creating it again", zap.String("slot", slot))
		if _, err := replconn.SimpleQuery(ctx, conn, "DROP_REPLICATION_SLOT "+quoteIdent(slot)); err != nil {
			return fmt.Errorf("drop invalidated replication slot %q on upstream: %w", slot, err)
		}
		return r.createSlot(ctx, conn, slot, false)
	}
	return nil
}

func (r *Receiver) createSlot(ctx context.Context, conn *pgconn.PgConn, slot string, mayExist bool) error {
	_, err := replconn.SimpleQuery(ctx, conn, fmt.Sprintf("CREATE_REPLICATION_SLOT %s PHYSICAL RESERVE_WAL", quoteIdent(slot)))
	if err != nil {
		if mayExist && replconn.IsSQLState(err, "42710") {
			return nil
		}
		return fmt.Errorf("create replication slot %q on upstream: %w", slot, err)
	}
	r.log.Info("created physical replication slot on upstream", zap.String("slot", slot))
	return nil
}

// SlotName turns a safekeeper's name into a valid replication slot name,
// as Patroni does for its members: lower case, every character other than
// a-z, 0-9 and _ replaced by _, at most 63 bytes.
func SlotName(name string) string {
	b := []byte(strings.ToLower(name))
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			b[i] = '_'
		}
	}
	if len(b) > 63 {
		b = b[:63]
	}
	return string(b)
}
