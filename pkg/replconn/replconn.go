package replconn

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgsafekeeper/safekeeper/pkg/wal"
)

// SimpleQuery runs one replication command and returns its rows.
func SimpleQuery(ctx context.Context, conn *pgconn.PgConn, sql string) ([][][]byte, error) {
	res, err := conn.Exec(ctx, sql).ReadAll()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", sql, err)
	}
	if len(res) != 1 {
		return nil, fmt.Errorf("%s: got %d results", sql, len(res))
	}
	if res[0].Err != nil {
		return nil, fmt.Errorf("%s: %w", sql, res[0].Err)
	}
	return res[0].Rows, nil
}

// IsSQLState reports whether err carries a server error with code.
func IsSQLState(err error, code string) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == code
}

// System is the result of IDENTIFY_SYSTEM.
type System struct {
	SystemID uint64
	TLI      uint32
	XLogPos  wal.LSN // the server's flush position
}

// IdentifySystem runs IDENTIFY_SYSTEM.
func IdentifySystem(ctx context.Context, conn *pgconn.PgConn) (System, error) {
	rows, err := SimpleQuery(ctx, conn, "IDENTIFY_SYSTEM")
	if err != nil {
		return System{}, err
	}
	if len(rows) != 1 || len(rows[0]) < 3 {
		return System{}, errors.New("IDENTIFY_SYSTEM: unexpected result shape")
	}
	var s System
	if s.SystemID, err = strconv.ParseUint(string(rows[0][0]), 10, 64); err != nil {
		return s, fmt.Errorf("IDENTIFY_SYSTEM systemid: %w", err)
	}
	tli, err := strconv.ParseUint(string(rows[0][1]), 10, 32)
	if err != nil {
		return s, fmt.Errorf("IDENTIFY_SYSTEM timeline: %w", err)
	}
	s.TLI = uint32(tli)
	if s.XLogPos, err = wal.ParseLSN(string(rows[0][2])); err != nil {
		return s, fmt.Errorf("IDENTIFY_SYSTEM xlogpos: %w", err)
	}
	return s, nil
}

// SegmentSize runs SHOW wal_segment_size.
func SegmentSize(ctx context.Context, conn *pgconn.PgConn) (uint64, error) {
	rows, err := SimpleQuery(ctx, conn, "SHOW wal_segment_size")
	if err != nil {
		return 0, err
	}
	if len(rows) != 1 || len(rows[0]) != 1 {
		return 0, errors.New("SHOW wal_segment_size: unexpected result shape")
	}
	return ParseSegmentSize(string(rows[0][0]))
}

// ParseSegmentSize parses SHOW wal_segment_size output such as "16MB" and
// requires a size PostgreSQL allows.
func ParseSegmentSize(s string) (uint64, error) {
	mult := map[string]uint64{"B": 1, "kB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30}
	i := strings.IndexFunc(s, func(r rune) bool { return r < '0' || r > '9' })
	if i <= 0 {
		return 0, fmt.Errorf("cannot parse wal_segment_size %q", s)
	}
	n, err := strconv.ParseUint(s[:i], 10, 64)
	m, ok := mult[s[i:]]
	if err != nil || !ok || !wal.ValidSegmentSize(n*m) {
		return 0, fmt.Errorf("cannot parse wal_segment_size %q", s)
	}
	return n * m, nil
}

// TimelineHistory runs TIMELINE_HISTORY tli and returns the file's
// content after checking its name and that it parses.
func TimelineHistory(ctx context.Context, conn *pgconn.PgConn, tli uint32) ([]byte, error) {
	rows, err := SimpleQuery(ctx, conn, fmt.Sprintf("TIMELINE_HISTORY %d", tli))
	if err != nil {
		return nil, err
	}
	if len(rows) != 1 || len(rows[0]) != 2 {
		return nil, errors.New("TIMELINE_HISTORY: unexpected result shape")
	}
	if want := wal.HistoryFileName(tli); string(rows[0][0]) != want {
		return nil, fmt.Errorf("TIMELINE_HISTORY %d: got file %q, want %s", tli, rows[0][0], want)
	}
	if _, err := wal.ParseHistory(rows[0][1], tli); err != nil {
		return nil, fmt.Errorf("TIMELINE_HISTORY %d: %w", tli, err)
	}
	return rows[0][1], nil
}
