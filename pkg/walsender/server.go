package walsender

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"github.com/pgsafekeeper/safekeeper/pkg/wal"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/pgsafekeeper/safekeeper/pkg/auth"
	"github.com/pgsafekeeper/safekeeper/pkg/metrics"
)

// Config configures a Server.
type Config struct {
	// WalSenderTimeout drops a consumer silent for this long; keepalives
	// asking for a reply go out at half of it. 0 disables both.
	WalSenderTimeout time.Duration
	// MaxSendSize is the most WAL one XLogData message carries: 0 means
	// PostgreSQL's 128 KiB; rounded down to whole pages, at most
	// MaxSendSizeLimit.
	MaxSendSize int
	// DefaultServerVersion is reported before the first upstream contact.
	DefaultServerVersion string
	// TLS, when set, makes the server answer SSLRequest with 'S' and run
	// the TLS handshake with it; nil answers 'N' (plaintext only).
	TLS *tls.Config
	// Auth applies the host rules and runs the password exchange; nil
	// trusts every replication connection.
	Auth *auth.Authenticator
}

// Server accepts replication connections.
type Server struct {
	cfg  Config
	tls  Resolver
	log  *zap.Logger
	m    *metrics.Metrics
	pid  atomic.Uint32
	wg   sync.WaitGroup
	mu   sync.Mutex
	lns  []net.Listener
	stop chan struct{}
	// maxSend is the most WAL per XLogData message (cfg.MaxSendSize).
	maxSend uint64
	// frames holds XLogData buffers (*[]byte of frameHeader+maxSend)
	// between sends: a stream takes one while it has WAL to send and puts
	// it back before it waits, so that a consumer tailing an idle
	// timeline holds no send buffer (up to 1 MiB with --max-send-size).
	frames sync.Pool

	// keys maps the process ID of each connection past startup to it, for
	// CancelRequest.
	keysMu sync.Mutex
	keys   map[uint32]*conn
}

// New returns a server over the timelines reg resolves.
func New(cfg Config, reg Resolver, log *zap.Logger, m *metrics.Metrics) *Server {
	if cfg.DefaultServerVersion == "" {
		cfg.DefaultServerVersion = "15.0"
	}
	s := &Server{cfg: cfg, tls: reg, log: log, m: m, stop: make(chan struct{}), maxSend: MaxSendSize}
	if cfg.MaxSendSize > 0 {
		s.maxSend = uint64(min(max(cfg.MaxSendSize, wal.BlockSize), MaxSendSizeLimit)) &^ (wal.BlockSize - 1)
	}
	s.pid.Store(uint32(time.Now().UnixNano()%50000) + 10000)
	return s
}

// sendSize is the most WAL per XLogData message.
func (s *Server) sendSize() uint64 {
	if s.maxSend == 0 {
		return MaxSendSize
	}
	return s.maxSend
}

// getFrame returns an XLogData buffer from the pool.
func (s *Server) getFrame() *[]byte {
	if f, ok := s.frames.Get().(*[]byte); ok {
		return f
	}
	f := make([]byte, frameHeader+s.sendSize())
	return &f
}

// Serve accepts connections on ln until ctx is done. On cancellation, open
// connections get PostgreSQL's shutdown sequence and Serve returns once
// they have all ended.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	s.mu.Lock()
	s.lns = append(s.lns, ln)
	s.mu.Unlock()
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	var (
		tempDelay time.Duration
		failed    int       // failed accepts since the last success
		unlogged  int       // of those, not yet in a log line
		lastWarn  time.Time // when the last of those lines was written
	)
	for {
		nc, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				s.wg.Wait()
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				s.wg.Wait()
				return err
			}
			// Out of file descriptors (EMFILE, ENFILE), memory or socket
			// buffers: the connection waits in the backlog, and the
			// listener must outlive the shortage. PostgreSQL's postmaster
			// logs "could not accept new connection" and goes on (net/http
			// too, for the errors Go calls temporary). Wait, doubling up
			// to a second, and try again; log at most once a minute.
			if tempDelay == 0 {
				tempDelay = 5 * time.Millisecond
			} else if tempDelay *= 2; tempDelay > time.Second {
				tempDelay = time.Second
			}
			s.m.AcceptErrors.Inc()
			failed++
			unlogged++
			if now := time.Now(); now.Sub(lastWarn) >= time.Minute {
				s.log.Warn("could not accept new connection; retrying", zap.Error(err), zap.Int("failed_accepts", unlogged))
				lastWarn, unlogged = now, 0
			}
			select {
			case <-ctx.Done():
			case <-time.After(tempDelay):
			}
			continue
		}
		if failed > 0 {
			s.log.Info("accepting connections again", zap.Int("failed_accepts", failed))
			failed = 0
		}
		tempDelay = 0
		s.m.ConnectionsTotal.Inc()
		c := newConn(s, nc)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			c.serve(ctx)
		}()
	}
}

func (s *Server) nextPID() uint32 { return s.pid.Add(1) }

// register makes c's command cancellable by a CancelRequest quoting its
// process ID and secret key; unregister undoes it when c ends.
func (s *Server) register(c *conn) {
	s.keysMu.Lock()
	defer s.keysMu.Unlock()
	if s.keys == nil {
		s.keys = make(map[uint32]*conn)
	}
	s.keys[c.pid] = c
}

func (s *Server) unregister(c *conn) {
	s.keysMu.Lock()
	defer s.keysMu.Unlock()
	if s.keys[c.pid] == c {
		delete(s.keys, c.pid)
	}
}

// cancel is PostgreSQL's processCancelRequest: a request quoting a live
// connection's process ID and secret key cancels the command it is
// running (none: nothing happens); any other request is ignored. The
// requester gets no reply either way.
func (s *Server) cancel(pid uint32, key []byte) bool {
	s.keysMu.Lock()
	c := s.keys[pid]
	s.keysMu.Unlock()
	if c == nil || subtle.ConstantTimeCompare(c.key, key) != 1 { // 0 for another length too
		return false
	}
	c.cancelCommand()
	return true
}
