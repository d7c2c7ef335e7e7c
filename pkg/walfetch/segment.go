package walfetch

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgsafekeeper/safekeeper/pkg/wal"
)

// segmentBuffer assembles one segment from XLogData messages that start at
// the segment's first byte and follow each other.
type segmentBuffer struct {
	start wal.LSN
	size  uint64
	buf   []byte // the bytes received so far, from start
}

func newSegmentBuffer(start wal.LSN, size uint64) *segmentBuffer {
	return &segmentBuffer{start: start, size: size, buf: make([]byte, 0, size)}
}

// pos is the position after the last byte received.
func (b *segmentBuffer) pos() wal.LSN { return b.start + wal.LSN(len(b.buf)) }

// end is the position after the segment's last byte.
func (b *segmentBuffer) end() wal.LSN { return b.start + wal.LSN(b.size) }

// complete reports whether the whole segment has arrived.
func (b *segmentBuffer) complete() bool { return uint64(len(b.buf)) == b.size }

// add appends the payload of an XLogData message that starts at
// dataStart; whatever lies past the segment end is dropped.
func (b *segmentBuffer) add(dataStart wal.LSN, payload []byte) error {
	if dataStart != b.pos() {
		return fmt.Errorf("XLogData at %s, expected %s", dataStart, b.pos())
	}
	if room := b.size - uint64(len(b.buf)); uint64(len(payload)) > room {
		payload = payload[:room]
	}
	b.buf = append(b.buf, payload...)
	return nil
}

// padded returns the segment: the received bytes followed by zeros up to
// the segment size.
func (b *segmentBuffer) padded() []byte {
	out := b.buf[:b.size]
	clear(out[len(b.buf):])
	return out
}

// messageReceiver is what collectSegment reads from (a *pgconn.PgConn).
type messageReceiver interface {
	ReceiveMessage(ctx context.Context) (pgproto3.BackendMessage, error)
}

// collectSegment reads the CopyBoth stream of a START_REPLICATION that
// began at the first byte of a segment of size segSize, and returns the
// segment and how many of its bytes are WAL the server holds.
//
// It reads until the segment end, or until everything the server holds
// has arrived: known is a position the server is known to hold (its
// IDENTIFY_SYSTEM xlogpos, or the end of a historic timeline), and every
// XLogData or keepalive names the server's end of WAL in its walEnd field;
// once the received position reaches the highest of these, the segment is
// complete as far as the server goes, and the rest of it is zeros. A
// CopyDone from the server (the end of a historic timeline) also ends it.
// reply is called with the received position when the server asks for a
// status update.
func collectSegment(ctx context.Context, r messageReceiver, reply func(received wal.LSN) error,
	segStart wal.LSN, segSize uint64, known wal.LSN) ([]byte, int, error) {
	b := newSegmentBuffer(segStart, segSize)
	serverEnd := known
	done := func() bool {
		return b.complete() || (b.pos() > segStart && b.pos() >= serverEnd)
	}
	for !done() {
		msg, err := r.ReceiveMessage(ctx)
		if err != nil {
			return nil, 0, fmt.Errorf("receive WAL at %s: %w", b.pos(), err)
		}
		switch m := msg.(type) {
		case *pgproto3.CopyData:
			if len(m.Data) == 0 {
				return nil, 0, errors.New("empty CopyData message")
			}
			switch m.Data[0] {
			case 'w':
				if len(m.Data) < 25 {
					return nil, 0, fmt.Errorf("XLogData message too short: %d bytes", len(m.Data))
				}
				dataStart := wal.LSN(binary.BigEndian.Uint64(m.Data[1:]))
				walEnd := wal.LSN(binary.BigEndian.Uint64(m.Data[9:]))
				if err := b.add(dataStart, m.Data[25:]); err != nil {
					return nil, 0, err
				}
				serverEnd = max(serverEnd, walEnd)
			case 'k':
				if len(m.Data) < 18 {
					return nil, 0, fmt.Errorf("keepalive message too short: %d bytes", len(m.Data))
				}
				serverEnd = max(serverEnd, wal.LSN(binary.BigEndian.Uint64(m.Data[1:])))
				if m.Data[17] != 0 && reply != nil {
					if err := reply(b.pos()); err != nil {
						return nil, 0, err
					}
				}
			default:
				return nil, 0, fmt.Errorf("unexpected streaming message type %q", m.Data[0])
			}
		case *pgproto3.CopyDone:
			// The server ended the (historic) timeline here.
			if b.pos() == segStart {
				return nil, 0, fmt.Errorf("%w: the timeline ends at the segment start", ErrNotFound)
			}
			return b.padded(), len(b.buf), nil
		case *pgproto3.ErrorResponse:
			return nil, 0, pgconn.ErrorResponseToPgError(m)
		case *pgproto3.CommandComplete:
			return nil, 0, fmt.Errorf("server ended streaming at %s (%s)", b.pos(), m.CommandTag)
		case *pgproto3.NoticeResponse, *pgproto3.ParameterStatus:
		default:
			return nil, 0, fmt.Errorf("unexpected message %T while streaming", msg)
		}
	}
	return b.padded(), len(b.buf), nil
}
