package walsender

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"go.uber.org/zap"

	"github.com/pgsafekeeper/safekeeper/pkg/consumers"
	"github.com/pgsafekeeper/safekeeper/pkg/feedback"
	"github.com/pgsafekeeper/safekeeper/pkg/pgerr"
	"github.com/pgsafekeeper/safekeeper/pkg/pgwire"
	"github.com/pgsafekeeper/safekeeper/pkg/replcmd"
	"github.com/pgsafekeeper/safekeeper/pkg/wal"
	"github.com/pgsafekeeper/safekeeper/pkg/walreader"
)

// MaxSendSize is the most WAL one XLogData message carries by default, as
// in PostgreSQL (XLOG_BLCKSZ * 16); Config.MaxSendSize changes it.
const MaxSendSize = 16 * wal.BlockSize

// sendfileMax is the largest message whose WAL goes out with sendfile
// when it is in a segment file; a larger one is read into the frame and
// written once. BenchmarkSendXLogDataTCP on the 2-core VM: at 128 KiB both
// cost the sending thread about 80 µs; at 1 MiB sendfile cost 490-650 µs
// and the copy 305-335 µs (the kernel splices through a 64 KiB pipe,
// pushing each piece to TCP on its own).
const sendfileMax = MaxSendSize

// MaxSendSizeLimit bounds Config.MaxSendSize: a consumer holds a whole
// message in memory (pg_receivewal and the walreceiver allocate one per
// message), so messages stay well below a segment.
const MaxSendSizeLimit = 1 << 20

// frameHeader is 'd', Int32 length, then the 25-byte XLogData header.
const frameHeader = 5 + 25

// shutdownReplyWait bounds how long a stopping server waits for a consumer
// to confirm what it was sent.
const shutdownReplyWait = 2 * time.Second

var pgEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

func pgTime(t time.Time) int64 { return t.Sub(pgEpoch).Microseconds() }

// readerExit is how the feedback reader ends: with a frontend message it
// did not consume (CopyDone, Terminate, or anything read after the server
// ended the stream), a receive error, or a feedback error.
type readerExit struct {
	msg pgproto3.FrontendMessage
	err error // receive error
	fb  error // malformed or unknown feedback
}

type stream struct {
	c         *conn
	consumer  *consumers.Consumer
	lastReply atomic.Int64 // unix nanos of the last message from the consumer
	lastWrite atomic.Uint64
	ended     atomic.Bool // the server ended COPY; hand further messages to the command loop
	replyReq  chan struct{}
	replied   chan struct{}
	exit      chan readerExit
}

func (st *stream) signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// readFeedback runs on its own goroutine while WAL is sent, parsing the
// consumer's standby status, hot standby and pageserver feedback.
func (st *stream) readFeedback() {
	be := st.c.be
	for {
		msg, err := be.Receive()
		if st.ended.Load() {
			st.exit <- readerExit{msg: msg, err: err}
			return
		}
		if err != nil {
			st.exit <- readerExit{err: err}
			return
		}
		switch m := msg.(type) {
		case *pgproto3.CopyData:
			st.lastReply.Store(time.Now().UnixNano())
			if err := st.handleFeedback(m.Data); err != nil {
				st.exit <- readerExit{msg: msg, fb: err}
				return
			}
		default:
			if _, ok := msg.(*pgproto3.CopyDone); ok {
				st.lastReply.Store(time.Now().UnixNano())
			}
			st.exit <- readerExit{msg: msg}
			return
		}
	}
}

func (st *stream) handleFeedback(b []byte) error {
	kind, err := feedback.Classify(b)
	if err != nil {
		return err
	}
	switch kind {
	case 'r':
		s, err := feedback.ParseStandbyStatus(b)
		if err != nil {
			return err
		}
		st.consumer.RecordStandby(s)
		if st.consumer.Slot != "" && s.Flush != 0 {
			st.c.slots.Advance(st.consumer.Slot, wal.LSN(s.Flush))
		}
		st.lastWrite.Store(s.Write)
		st.signal(st.replied)
		if s.ReplyRequested {
			st.signal(st.replyReq)
		}
	case 'h':
		h, err := feedback.ParseHotStandby(b)
		if err != nil {
			return err
		}
		st.consumer.RecordHotStandby(h)
	case 'z':
		p, err := feedback.ParsePageserver(b)
		if err != nil {
			return err
		}
		st.consumer.RecordPageserver(p)
	}
	return nil
}

func (c *conn) startReplication(ctx context.Context, cmd replcmd.Command) error {
	ctl, err := c.requireWAL()
	if err != nil {
		return err
	}
	if cmd.Logical {
		return c.noLogicalDecoding()
	}
	if cmd.Slot != "" {
		release, err := c.slots.Acquire(cmd.Slot, c.pid)
		if err != nil {
			return err
		}
		defer release()
	}
	tli := ctl.TLI
	startLSN := wal.LSN(cmd.LSN)
	var (
		historic    bool
		switchpoint wal.LSN
		nextTLI     uint32
	)
	if cmd.HasTimeline && cmd.Timeline != ctl.TLI {
		sp, next, ok := c.historyContains(ctl, cmd.Timeline)
		if !ok {
			return pgerr.New(pgerr.InternalError, "requested timeline %d is not in this server's history", cmd.Timeline)
		}
		if sp < startLSN {
			return pgerr.New(pgerr.InternalError, "requested starting point %s on timeline %d is not in this server's history", startLSN, cmd.Timeline).
				WithDetail("This server's history forked from timeline %d at %s.", cmd.Timeline, sp)
		}
		historic, switchpoint, nextTLI, tli = true, sp, next, cmd.Timeline
		if startLSN >= switchpoint {
			// Nothing to stream on that timeline: no COPY at all.
			c.sendNextTimeline(nextTLI, switchpoint)
			c.be.Send(&pgproto3.CommandComplete{CommandTag: []byte("START_STREAMING")})
			c.be.Send(&pgproto3.CommandComplete{CommandTag: []byte("START_REPLICATION")})
			return nil
		}
	}

	// From here on the connection is in COPY mode: a shutdown must leave
	// its socket readable for the sequence below (the consumer's reply).
	c.setStreaming(true)
	defer c.setStreaming(false)
	c.be.Send(&pgproto3.CopyBothResponse{OverallFormat: 0})
	if err := c.be.Flush(); err != nil {
		return err
	}
	if flush := c.tl.FlushLSN(); !historic && startLSN > flush {
		return pgerr.New(pgerr.InternalError, "requested starting point %s is ahead of the WAL flush position of this server %s", startLSN, flush)
	}

	// The stream also ends, as at a shutdown, when the timeline stops
	// being hosted.
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		select {
		case <-c.consumers.Closed():
			stop()
		case <-ctx.Done():
		}
	}()
	consumer := c.consumers.Add(consumers.Info{ApplicationName: c.appName, Addr: c.nc.RemoteAddr().String(), PID: c.pid, Slot: cmd.Slot})
	consumer.SetStart(startLSN)
	c.tm.Consumers.Inc()
	defer func() {
		c.consumers.Remove(consumer)
		c.tm.Consumers.Dec()
	}()
	// A shutdown that came before the first message still goes through
	// the sequence (keepalive, COPY 0), as PostgreSQL's walsender does:
	// the sender's loop sees ctx done at once.

	st := &stream{
		c: c, consumer: consumer,
		replyReq: make(chan struct{}, 1), replied: make(chan struct{}, 1),
		exit: make(chan readerExit, 1),
	}
	st.lastReply.Store(time.Now().UnixNano())
	go st.readFeedback()

	log := c.log.With(zap.Stringer("start_lsn", startLSN), zap.Uint32("tli", tli))
	log.Info("streaming WAL to consumer", zap.Bool("historic", historic))
	rd := c.tl.OpenReader()
	defer rd.Close()
	rd.Observe(consumer) // the status shows the tier of its last read

	s := sender{c: c, st: st, rd: rd, tli: tli, segSize: ctl.WalSegSize, sent: startLSN,
		historic: historic, switchpoint: switchpoint, nextTLI: nextTLI, timeout: c.walSenderTimeout,
		hist: c.tl.HistoryEntries()}
	err = s.run(ctx)
	if errors.Is(err, walreader.ErrUnavailable) {
		// No tier holds the WAL: the consumer needs a new base backup.
		c.consumers.NoteRebootstrap(consumer.Info, s.sent, c.tl.OldestLSN())
		c.tm.NeedsRebootstrap.Inc()
		log.Warn("consumer asked for WAL no tier holds; it needs a new base backup",
			zap.Stringer("requested_lsn", s.sent), zap.Stringer("oldest_available_lsn", c.tl.OldestLSN()))
	}
	if err != nil && !errors.Is(err, errClientCopyDone) && !s.readerDone {
		// The server ends COPY: whatever the client sends next belongs to
		// the command loop.
		st.ended.Store(true)
		c.pending = st.exit
	}
	log.Info("streaming ended", zap.Stringer("sent_lsn", s.sent), zap.NamedError("reason", err))
	if errors.Is(err, errClientCopyDone) {
		return nil
	}
	return err
}

var errClientCopyDone = errors.New("client ended COPY")

type sender struct {
	c  *conn
	st *stream
	rd *walreader.Reader
	fs *fileSender // nil: copy WAL into the frame buffer (TLS)
	// frame is the XLogData buffer, held from the server's pool while
	// there is WAL to send (see putFrame).
	frame    *[]byte
	tli      uint32
	segSize  uint64
	sent     wal.LSN
	timeout  time.Duration
	pingSent bool
	// readerDone: the feedback reader's exit was consumed; it is gone.
	readerDone bool

	historic    bool
	switchpoint wal.LSN
	nextTLI     uint32
	hist        []wal.HistoryEntry
}

func (s *sender) run(ctx context.Context) error {
	c := s.c
	defer s.putFrame()
	s.fs = newFileSender(c.nc)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		select {
		case ex := <-s.st.exit:
			return s.readerEnded(ex)
		case <-s.st.replyReq:
			if err := s.keepalive(false); err != nil {
				return err
			}
		case <-ctx.Done():
			return s.interrupted(ctx)
		default:
		}
		now := time.Now()
		if err := s.checkTimeout(now); err != nil {
			return err
		}
		changed := c.tl.Changed()
		end := c.tl.FlushLSN()
		if !s.historic && c.tl.CurrentTLI() != s.tli {
			// The upstream moved to a new timeline: ours became historic.
			s.hist = c.tl.HistoryEntries()
			sp, next, ok := wal.SwitchPoint(s.hist, s.tli)
			if !ok {
				return pgerr.New(pgerr.InternalError, "timeline %d is no longer in this server's history", s.tli)
			}
			s.historic, s.switchpoint, s.nextTLI = true, sp, next
		}
		if s.historic {
			end = s.switchpoint
		}
		if s.sent < end {
			if err := s.send(ctx, now, end); err != nil {
				return err
			}
			continue
		}
		if s.historic {
			return s.endHistoric(ctx)
		}
		s.putFrame() // caught up: no buffer held while waiting
		timer.Reset(s.nextWake(now))
		select {
		case <-changed:
		case ex := <-s.st.exit:
			return s.readerEnded(ex)
		case <-s.st.replyReq:
			if err := s.keepalive(false); err != nil {
				return err
			}
		case <-timer.C:
		case <-ctx.Done():
			return s.interrupted(ctx)
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}
}

// nextWake returns how long to sleep before the next timeout check.
func (s *sender) nextWake(now time.Time) time.Duration {
	if s.timeout <= 0 {
		return time.Hour
	}
	last := time.Unix(0, s.st.lastReply.Load())
	at := last.Add(s.timeout)
	if !s.pingSent {
		at = last.Add(s.timeout / 2)
	}
	d := at.Sub(now)
	if d < time.Millisecond {
		d = time.Millisecond
	}
	return d
}

// checkTimeout implements wal_sender_timeout: a keepalive asking for a reply
// at half the timeout, and a silent disconnect at the full timeout.
func (s *sender) checkTimeout(now time.Time) error {
	if s.timeout <= 0 {
		return nil
	}
	last := time.Unix(0, s.st.lastReply.Load())
	silent := now.Sub(last)
	if silent >= s.timeout {
		s.c.log.Warn("terminating walsender process due to replication timeout", zap.Duration("silent_for", silent))
		return errClosed
	}
	if silent < s.timeout/2 {
		s.pingSent = false
		return nil
	}
	if !s.pingSent {
		s.pingSent = true
		return s.keepalive(true)
	}
	return nil
}

func (s *sender) writeDeadline(now time.Time) {
	if s.timeout > 0 {
		s.c.nc.SetWriteDeadline(now.Add(s.timeout))
	} else {
		s.c.nc.SetWriteDeadline(now.Add(time.Hour))
	}
}

// send writes one XLogData message with WAL from s.sent towards end. To a
// plain socket (s.fs), WAL in the memory window goes out straight from the
// window, the header with it in one sendmsg; WAL in a local segment file
// goes the same way from the file's mapping when its pages are in the
// page cache in 2 MiB regions mapped with huge entries (see
// walreader.LocalTier.Locate), otherwise, up to sendfileMax, with
// sendfile. Anything else
// (TLS, the archive tier, a larger message from a file not in the page
// cache) is read into the frame buffer and written with the header in one
// Write.
func (s *sender) send(ctx context.Context, now time.Time, end wal.LSN) error {
	n := uint64(end - s.sent)
	if max := s.c.s.sendSize(); n > max {
		// Cut at a page boundary, as PostgreSQL does.
		stop := s.sent + wal.LSN(max)
		stop -= stop % wal.BlockSize
		n = uint64(stop - s.sent)
	}
	// The segment holding a switch point is read from the newer timeline's
	// file, as PostgreSQL does.
	tli := wal.FileTLI(s.hist, wal.SegmentNo(s.sent, s.segSize), s.segSize)
	if s.frame == nil {
		s.frame = s.c.s.getFrame()
	}
	buf := (*s.frame)[:frameHeader+n]
	var ext walreader.Extent
	var err error
	if s.fs != nil {
		ext, err = s.rd.ReadOrLocate(ctx, buf[frameHeader:], tli, s.sent)
		if err == nil && ext.File != nil && ext.Mapped == nil && ext.N > sendfileMax {
			// Copied rather than sent with sendfile (see sendfileMax),
			// from the file already located: the reader counted these
			// bytes once.
			ext, err = walreader.Extent{N: ext.N}, s.readFile(ext.File, buf[frameHeader:frameHeader+ext.N], ext.Off)
		}
	} else {
		ext.N, err = s.rd.ReadAt(ctx, buf[frameHeader:], tli, s.sent)
	}
	if err != nil {
		return s.readError(ctx, err)
	}
	got := ext.N
	buf = buf[:frameHeader+got]
	buf[0] = 'd'
	binary.BigEndian.PutUint32(buf[1:], uint32(len(buf)-1))
	buf[5] = 'w'
	binary.BigEndian.PutUint64(buf[6:], uint64(s.sent))
	binary.BigEndian.PutUint64(buf[14:], uint64(end))
	binary.BigEndian.PutUint64(buf[22:], uint64(pgTime(now)))
	s.writeDeadline(now)
	switch {
	case ext.Mem != nil:
		if err := s.sendMem(ctx, buf, ext, tli); err != nil {
			return err
		}
	case ext.Mapped != nil:
		if err := s.sendMapped(ctx, buf, ext); err != nil {
			return err
		}
	case ext.File != nil:
		if err := s.sendFile(buf, ext); err != nil {
			return err
		}
	case s.fs != nil:
		if err := s.fs.writeAll(buf); err != nil {
			return errClosed
		}
	default:
		if _, err := s.c.nc.Write(buf); err != nil {
			return errClosed
		}
	}
	s.sent += wal.LSN(got)
	s.st.consumer.SetSent(s.sent)
	s.c.tm.BytesSent.Add(float64(got))
	return nil
}

// sendFile writes the header in buf and the WAL of ext with sendfile.
// Once the header is out the message has to be completed or the
// connection dropped: a consumer cannot be told about an error in the
// middle of a message.
func (s *sender) sendFile(buf []byte, ext walreader.Extent) error {
	sent, err := s.fs.send(buf[:frameHeader], ext.File, ext.Off, ext.N)
	if errors.Is(err, errNoSendfile) {
		// Not for this file or socket: copy the rest, now and from here
		// on.
		s.fs = nil
		rest := buf[frameHeader+sent:]
		if _, err := io.ReadFull(io.NewSectionReader(ext.File, ext.Off+int64(sent), int64(len(rest))), rest); err != nil {
			s.c.log.Error("could not read WAL in the middle of a message; closing", zap.Stringer("lsn", s.sent), zap.Error(err))
			return errClosed
		}
		if _, err := s.c.nc.Write(rest); err != nil {
			return errClosed
		}
		return nil
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		s.c.log.Error("segment file ends before the durable end of WAL in the middle of a message; closing",
			zap.Stringer("lsn", s.sent), zap.Int("sent", sent), zap.Int("want", ext.N))
		return errClosed
	}
	if err != nil {
		return errClosed
	}
	return nil
}

// sendMapped writes the header in buf and the WAL of ext from the file's
// mapping. Should the kernel fail to read the mapping (the file was cut
// under it), the rest is read from the file: it has what the mapping
// had, or the message cannot be completed and the connection is dropped.
func (s *sender) sendMapped(ctx context.Context, buf []byte, ext walreader.Extent) error {
	hdrLeft, sent, err := s.fs.sendMapped(buf[:frameHeader], ext.Mapped)
	if err == nil {
		return nil
	}
	if !errors.Is(err, errMapFault) {
		return errClosed
	}
	return s.finishMessage(ctx, buf, ext.N, hdrLeft, sent, func(rest []byte) error {
		return s.readFile(ext.File, rest, ext.Off+int64(sent))
	})
}

// sendMem writes the header in buf and the WAL of ext from the memory
// window. When the window moves past the WAL before it is all out (a
// consumer reading at the window's trailing edge), the rest is read from
// the next tiers into buf and written after it, so the message goes on
// without a gap.
func (s *sender) sendMem(ctx context.Context, buf []byte, ext walreader.Extent, tli uint32) error {
	hdrLeft, sent, err := s.fs.sendMem(buf[:frameHeader], ext.Mem, tli, s.sent, ext.N)
	s.rd.Lent(sent)
	if err != nil {
		return errClosed
	}
	if hdrLeft == 0 && sent == ext.N {
		return nil
	}
	// The rest is read after the header may have gone out, under the
	// write deadline: from the local files as a rule; if they are gone
	// too, from the archive, and a slow archive then ends the
	// connection rather than the message.
	rctx := ctx
	if hdrLeft < frameHeader {
		// The message has begun and must be finished: a cancel request
		// does not end this read (its ERROR follows the message), only
		// the connection's end does.
		rctx = s.c.ctx
	}
	return s.finishMessage(ctx, buf, ext.N, hdrLeft, sent, func(rest []byte) error {
		k, err := s.rd.ReadAt(rctx, rest, tli, s.sent+wal.LSN(sent))
		if err == nil && k < len(rest) {
			err = io.ErrUnexpectedEOF
		}
		return err
	})
}

// finishMessage completes a message of n WAL bytes that went out only in
// part from memory or a mapping: the last hdrLeft bytes of the header in
// buf and the WAL after the first sent bytes are still to go. read fills
// the rest of buf. Nothing sent yet, a failed read is reported to the
// consumer as any read error is; in the middle of a message the
// connection is dropped (a consumer cannot be told about an error there).
func (s *sender) finishMessage(ctx context.Context, buf []byte, n, hdrLeft, sent int, read func(rest []byte) error) error {
	if err := read(buf[frameHeader+sent : frameHeader+n]); err != nil {
		if hdrLeft == frameHeader {
			return s.readError(ctx, err)
		}
		s.c.log.Error("could not read WAL in the middle of a message; closing", zap.Stringer("lsn", s.sent+wal.LSN(sent)), zap.Error(err))
		return errClosed
	}
	if err := s.fs.writeAll(buf[frameHeader-hdrLeft+sent : frameHeader+n]); err != nil {
		return errClosed
	}
	return nil
}

// readFile reads len(b) bytes of f at off into b (readCached); an error
// unless all of them came (io.EOF at the very end of the file is none).
func (s *sender) readFile(f *os.File, b []byte, off int64) error {
	k, err := s.fs.readCached(f, b, off)
	switch {
	case k == len(b):
		return nil
	case err == nil || err == io.EOF:
		return io.ErrUnexpectedEOF
	}
	return err
}

// readError turns a failed WAL read into what ends the stream.
func (s *sender) readError(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return s.interrupted(ctx) // a read from the archive interrupted
	}
	if errors.Is(err, walreader.ErrUnavailable) {
		return err
	}
	if pe := pgerr.As(err); pe != nil {
		return pe
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return pgerr.New(pgerr.InternalError, "could not read WAL at %s: unexpected end of segment file", s.sent)
	}
	return pgerr.New(pgerr.InternalError, "could not read WAL at %s: %v", s.sent, err)
}

// putFrame gives the XLogData buffer back to the server's pool.
func (s *sender) putFrame() {
	if s.frame != nil {
		s.c.s.frames.Put(s.frame)
		s.frame = nil
	}
}

// keepalive sends a primary keepalive message; walEnd is the send pointer.
func (s *sender) keepalive(replyRequested bool) error {
	var b [5 + 18]byte
	b[0] = 'd'
	binary.BigEndian.PutUint32(b[1:], 4+18)
	b[5] = 'k'
	binary.BigEndian.PutUint64(b[6:], uint64(s.sent))
	now := time.Now()
	binary.BigEndian.PutUint64(b[14:], uint64(pgTime(now)))
	if replyRequested {
		b[22] = 1
	}
	s.writeDeadline(now)
	if _, err := s.c.nc.Write(b[:]); err != nil {
		return errClosed
	}
	return nil
}

func (s *sender) readerEnded(ex readerExit) error {
	c := s.c
	s.readerDone = true
	switch {
	case ex.err != nil:
		if typ, ok := unknownMessageType(ex.err); ok {
			// As PostgreSQL, which prints the byte as it came: a NUL
			// ends its C string there.
			if typ == 0 {
				return pgerr.Fatal(pgerr.ProtocolViolation, "invalid standby message type \"")
			}
			return pgerr.Fatal(pgerr.ProtocolViolation, "invalid standby message type \"%s\"", []byte{typ})
		}
		return errClosed
	case ex.fb != nil:
		if errors.Is(ex.fb, feedback.ErrUnknownType) {
			// PostgreSQL logs this and closes the socket without a reply.
			c.log.Warn("unexpected message type from consumer; closing", zap.Error(ex.fb))
			return errClosed
		}
		c.log.Warn("malformed feedback from consumer", zap.Error(ex.fb))
		return ex.fb
	}
	switch ex.msg.(type) {
	case *pgproto3.CopyDone:
		c.be.Send(&pgproto3.CopyDone{})
		if s.historic {
			// PostgreSQL reports the next timeline whenever the streamed
			// one is historic, even when the client ended COPY first.
			c.sendNextTimeline(s.nextTLI, s.switchpoint)
		}
		c.be.Send(&pgproto3.CommandComplete{CommandTag: []byte("START_STREAMING")})
		c.be.Send(&pgproto3.CommandComplete{CommandTag: []byte("START_REPLICATION")})
		if err := c.be.Flush(); err != nil {
			return errClosed
		}
		return errClientCopyDone
	case *pgproto3.Terminate:
		return errClosed
	default:
		return pgerr.Fatal(pgerr.ProtocolViolation, "invalid standby message type \"%c\"", frontendType(ex.msg))
	}
}

// endHistoric ends COPY at the switch point of a historic timeline and
// reports the next timeline.
func (s *sender) endHistoric(ctx context.Context) error {
	c := s.c
	c.be.Send(&pgproto3.CopyDone{})
	if err := c.be.Flush(); err != nil {
		return errClosed
	}
	// No keepalives after our CopyDone; a client silent for the whole
	// timeout is dropped.
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		if s.timeout > 0 {
			silent := time.Since(time.Unix(0, s.st.lastReply.Load()))
			if silent >= s.timeout {
				c.log.Warn("terminating walsender process due to replication timeout", zap.Duration("silent_for", silent))
				return errClosed
			}
			timer.Reset(s.timeout - silent)
		}
		select {
		case <-timer.C:
			continue
		case ex := <-s.st.exit:
			s.readerDone = true
			if ex.err != nil {
				return errClosed
			}
			if ex.fb != nil {
				return s.readerEnded(ex)
			}
			switch ex.msg.(type) {
			case *pgproto3.CopyDone:
				c.sendNextTimeline(s.nextTLI, s.switchpoint)
				c.be.Send(&pgproto3.CommandComplete{CommandTag: []byte("START_STREAMING")})
				c.be.Send(&pgproto3.CommandComplete{CommandTag: []byte("START_REPLICATION")})
				return errClientCopyDone
			default:
				return s.readerEnded(ex)
			}
		case <-s.st.replyReq:
		case <-ctx.Done():
			return s.interrupted(ctx)
		}
	}
}

func (c *conn) sendNextTimeline(next uint32, at wal.LSN) {
	c.be.Send(pgwire.RowDescription(pgwire.Int8Col("next_tli"), pgwire.TextCol("next_tli_startpos")))
	c.be.Send(pgwire.DataRow(pgwire.Uint(uint64(next)), pgwire.Text(at.String())))
}

// interrupted ends the stream when ctx is done. A cancel request ends it
// as PostgreSQL's walsender does, with ERROR 57014 in place of the next
// message, after which the connection takes commands again; anything else
// is a shutdown.
func (s *sender) interrupted(ctx context.Context) error {
	if err := canceled(ctx); err != nil {
		return err
	}
	return s.shutdown()
}

// shutdown is PostgreSQL's walsender shutdown: ask the consumer to confirm
// what it has, wait briefly for it, then "COPY 0" and close.
func (s *sender) shutdown() error {
	c := s.c
	if err := s.keepalive(true); err != nil {
		return errStreamShutdown
	}
	deadline := time.NewTimer(shutdownReplyWait)
	defer deadline.Stop()
wait:
	for wal.LSN(s.st.lastWrite.Load()) < s.sent {
		select {
		case <-s.st.replied:
		case <-s.st.exit:
			return errStreamShutdown
		case <-deadline.C:
			break wait
		}
	}
	c.be.Send(&pgproto3.CommandComplete{CommandTag: []byte("COPY 0")})
	_ = c.be.Flush()
	return errStreamShutdown
}

// frontendType returns the type byte of a frontend message for error texts.
func frontendType(m pgproto3.FrontendMessage) byte {
	switch m.(type) {
	case *pgproto3.Query, *badQuery:
		return 'Q'
	case *pgproto3.CopyFail:
		return 'f'
	case *pgproto3.Sync:
		return 'S'
	case *pgproto3.Flush:
		return 'H'
	case *pgproto3.Parse:
		return 'P'
	case *pgproto3.Bind:
		return 'B'
	case *pgproto3.Execute:
		return 'E'
	case *pgproto3.Describe:
		return 'D'
	case *pgproto3.Close:
		return 'C'
	case *pgproto3.FunctionCall:
		return 'F'
	case *pgproto3.PasswordMessage, *pgproto3.SASLInitialResponse, *pgproto3.SASLResponse, *pgproto3.GSSResponse:
		return 'p'
	}
	return '?'
}
