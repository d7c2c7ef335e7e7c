package manager

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/pgsafekeeper/safekeeper/pkg/supervisor"
	"github.com/pgsafekeeper/safekeeper/pkg/timeline"
	"github.com/pgsafekeeper/safekeeper/pkg/walstore"
)

// Errors of the run-time operations.
var (
	ErrExists   = errors.New("timeline already exists")
	ErrNotFound = errors.New("timeline not found")
	ErrInvalid  = errors.New("invalid timeline definition")
)

// Opener opens the supervisor of a defined timeline (the caller adds what
// is process-wide: archive, cluster, limits, metrics).
type Opener func(def Definition, dir string) (*supervisor.Supervisor, error)

// Timeline states.
const (
	StateStarting = "starting"
	StateActive   = "active"
	StateFailed   = "failed" // retried after a backoff
	StateDetached = "detached"
)

// Info describes one timeline the manager knows.
type Info struct {
	Definition Definition         `json:"definition"`
	State      string             `json:"state"`
	Since      time.Time          `json:"since"`
	Error      string             `json:"error,omitempty"`
	Status     *supervisor.Status `json:"status,omitempty"` // while active
}

// Config configures a Manager.
type Config struct {
	DataDir string
	Open    Opener
	// MinBackoff and MaxBackoff bound the wait before a failed timeline
	// is opened again (defaults 1 s and 1 min).
	MinBackoff, MaxBackoff time.Duration
	// OpenWorkers bounds how many timelines open at once at start
	// (default 8).
	OpenWorkers int
	// DeleteArchive, when set, deletes a timeline's archived WAL (Delete
	// with archive=true); nil: no archive is configured.
	DeleteArchive func(ctx context.Context, id timeline.ID) (deleted int, err error)
}

// Manager hosts timelines; see the package documentation.
type Manager struct {
	cfg Config
	log *zap.Logger
	reg *supervisor.Registry

	mu     sync.Mutex
	ctx    context.Context // set by Start
	hosted map[timeline.ID]*hosted
	wg     sync.WaitGroup
	sem    chan struct{} // bounds concurrent opens
}

// hosted is one timeline and its run loop.
type hosted struct {
	def    Definition
	dir    string
	cancel context.CancelFunc
	done   chan struct{}

	mu    sync.Mutex
	state string
	since time.Time
	err   string
	sup   *supervisor.Supervisor
}

// New returns a manager publishing running timelines in reg.
func New(cfg Config, reg *supervisor.Registry, log *zap.Logger) *Manager {
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = time.Second
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = time.Minute
	}
	if cfg.OpenWorkers <= 0 {
		cfg.OpenWorkers = 8
	}
	return &Manager{cfg: cfg, log: log, reg: reg, hosted: make(map[timeline.ID]*hosted), sem: make(chan struct{}, cfg.OpenWorkers)}
}

// Dir returns the directory of timeline id.
func (m *Manager) Dir(id timeline.ID) string {
	return filepath.Join(m.cfg.DataDir, id.TenantID, id.TimelineID)
}

// Scan lists the timelines stored in the data directory: their
// definitions, or for a directory holding a control file but no
// definition (made before definitions existed, or by --upstream), one
// without an upstream.
func (m *Manager) Scan() ([]Definition, error) {
	tenants, err := os.ReadDir(m.cfg.DataDir)
	if err != nil {
		return nil, err
	}
	var out []Definition
	for _, t := range tenants {
		if !t.IsDir() {
			continue
		}
		if _, err := timeline.ParseHexID(t.Name()); err != nil {
			continue
		}
		tls, err := os.ReadDir(filepath.Join(m.cfg.DataDir, t.Name()))
		if err != nil {
			return nil, err
		}
		for _, l := range tls {
			if _, err := timeline.ParseHexID(l.Name()); err != nil || !l.IsDir() {
				continue
			}
			dir := filepath.Join(m.cfg.DataDir, t.Name(), l.Name())
			def, ok, err := readDefinition(dir)
			if err != nil {
				return nil, err
			}
			if !ok {
				if _, err := os.Stat(filepath.Join(dir, walstore.ControlFileName)); err != nil {
					continue // neither a definition nor a timeline
				}
			}
			def.TenantID, def.TimelineID = t.Name(), l.Name()
			out = append(out, def)
		}
	}
	return out, nil
}

// Start begins hosting defs (from Scan and the command line); every
// timeline opens in the background, failures are retried per timeline;
// pre holds timelines the caller already opened. ctx bounds all of them;
// Stop waits for them.
func (m *Manager) Start(ctx context.Context, defs []Definition, pre map[timeline.ID]*supervisor.Supervisor) {
	m.mu.Lock()
	m.ctx = ctx
	m.mu.Unlock()
	for _, d := range defs {
		if err := m.host(d, false, pre[d.ID()]); err != nil {
			m.log.Error("cannot host timeline", zap.String("tenant_id", d.TenantID), zap.String("timeline_id", d.TimelineID), zap.Error(err))
		}
	}
}

// Create defines and hosts a new timeline, or attaches a detached one
// (its definition is replaced by def).
func (m *Manager) Create(def Definition) (Info, error) {
	if err := def.Validate(); err != nil {
		return Info{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	m.mu.Lock()
	if h, ok := m.hosted[def.ID()]; ok && h.currentState() != StateDetached {
		m.mu.Unlock()
		return Info{}, ErrExists
	}
	m.mu.Unlock()
	if err := writeDefinition(m.Dir(def.ID()), def); err != nil {
		return Info{}, err
	}
	if err := m.host(def, true, nil); err != nil {
		return Info{}, err
	}
	info, _ := m.Get(def.ID())
	return info, nil
}

// Host hosts def without writing it to disk (the timeline the command
// line defines).
func (m *Manager) Host(def Definition) error { return m.host(def, false, nil) }

// host starts the run loop of def (replacing a detached entry); sup, when
// not nil, is def's supervisor already opened.
func (m *Manager) host(def Definition, replace bool, sup *supervisor.Supervisor) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ctx == nil {
		return errors.New("manager not started")
	}
	if old, ok := m.hosted[def.ID()]; ok && !(replace && old.currentState() == StateDetached) {
		return ErrExists
	}
	h := &hosted{def: def, dir: m.Dir(def.ID()), done: make(chan struct{}), state: StateStarting, since: time.Now()}
	m.hosted[def.ID()] = h
	if def.Detached {
		h.state = StateDetached
		close(h.done)
		return nil
	}
	ctx, cancel := context.WithCancel(m.ctx)
	h.cancel = cancel
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		defer close(h.done)
		m.run(ctx, h, sup)
	}()
	return nil
}

// run opens and runs one timeline until ctx ends; a failure to open, or a
// service that fails, closes it and opens it again after a backoff (as a
// restart would: recovery rescans what is on disk).
func (m *Manager) run(ctx context.Context, h *hosted, sup *supervisor.Supervisor) {
	log := m.log.With(zap.String("tenant_id", h.def.TenantID), zap.String("timeline_id", h.def.TimelineID))
	backoff := m.cfg.MinBackoff
	for {
		var err error
		if sup == nil {
			sup, err = m.open(ctx, h)
		}
		if ctx.Err() != nil {
			if sup != nil {
				sup.Close()
			}
			return
		}
		if err == nil {
			h.set(StateActive, nil, sup)
			m.reg.Add(sup)
			log.Info("hosting timeline", zap.Stringer("flush_lsn", sup.FlushLSN()))
			started := time.Now()
			err = sup.Run(ctx)
			m.reg.Remove(h.def.ID())
			cerr := sup.Close()
			if ctx.Err() != nil && err == nil {
				if cerr != nil {
					log.Error("closing timeline", zap.Error(cerr))
				} else {
					log.Info("timeline closed", zap.Stringer("flush_lsn", sup.FlushLSN()))
				}
				h.set(StateStarting, nil, nil)
				return
			}
			if err == nil {
				err = cerr
			}
			if time.Since(started) > m.cfg.MaxBackoff {
				backoff = m.cfg.MinBackoff
			}
		}
		sup = nil
		if err == nil {
			err = errors.New("timeline stopped")
		}
		h.set(StateFailed, err, nil)
		log.Error("timeline failed; it is opened again after a backoff; other timelines are not affected",
			zap.Error(err), zap.Duration("backoff", backoff))
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, m.cfg.MaxBackoff)
	}
}

// open opens h's supervisor, at most OpenWorkers at a time.
func (m *Manager) open(ctx context.Context, h *hosted) (*supervisor.Supervisor, error) {
	select {
	case m.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-m.sem }()
	return m.cfg.Open(h.def, h.dir)
}

func (h *hosted) set(state string, err error, sup *supervisor.Supervisor) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.state != state {
		h.since = time.Now()
	}
	h.state, h.sup = state, sup
	h.err = ""
	if err != nil {
		h.err = err.Error()
	}
}

func (h *hosted) currentState() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.state
}

func (h *hosted) info(withStatus bool) Info {
	h.mu.Lock()
	i := Info{Definition: h.def.Redacted(), State: h.state, Since: h.since, Error: h.err}
	sup := h.sup
	h.mu.Unlock()
	if sup != nil && withStatus {
		st := sup.Status()
		i.Status = &st
	}
	return i
}

// stop ends h's run loop and waits for it.
func (h *hosted) stop() {
	if h.cancel != nil {
		h.cancel()
	}
	<-h.done
}

// Get returns timeline id with its status.
func (m *Manager) Get(id timeline.ID) (Info, bool) {
	m.mu.Lock()
	h, ok := m.hosted[id]
	m.mu.Unlock()
	if !ok {
		return Info{}, false
	}
	return h.info(true), true
}

// List returns the timelines of tenant ("" = all), without status.
func (m *Manager) List(tenant string) []Info {
	m.mu.Lock()
	var hs []*hosted
	for id, h := range m.hosted {
		if tenant == "" || id.TenantID == tenant {
			hs = append(hs, h)
		}
	}
	m.mu.Unlock()
	out := make([]Info, 0, len(hs))
	for _, h := range hs {
		out = append(out, h.info(false))
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].Definition.ID().String() < out[j].Definition.ID().String()
	})
	return out
}

// SetUpstream replaces the upstream of timeline id (nil: none) and
// restarts its services with it.
func (m *Manager) SetUpstream(id timeline.ID, up *Upstream) (Info, error) {
	return m.redefine(id, func(d *Definition) error {
		if d.FromFlags {
			return fmt.Errorf("%w: the command line (--upstream) defines this timeline's upstream", ErrInvalid)
		}
		d.Upstream = up
		return nil
	})
}

// Detach stops hosting timeline id and keeps its data; Create attaches
// it again.
func (m *Manager) Detach(id timeline.ID) (Info, error) {
	return m.redefine(id, func(d *Definition) error {
		if d.FromFlags {
			return fmt.Errorf("%w: the command line (--upstream) defines this timeline", ErrInvalid)
		}
		d.Detached = true
		return nil
	})
}

// redefine stops timeline id, persists the changed definition and hosts
// it again.
func (m *Manager) redefine(id timeline.ID, change func(*Definition) error) (Info, error) {
	m.mu.Lock()
	h, ok := m.hosted[id]
	m.mu.Unlock()
	if !ok {
		return Info{}, ErrNotFound
	}
	def := h.def
	if err := change(&def); err != nil {
		return Info{}, err
	}
	if err := def.Validate(); err != nil {
		return Info{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	h.stop()
	werr := writeDefinition(h.dir, def)
	if werr != nil {
		def = h.def // host it again as it was
	}
	m.mu.Lock()
	delete(m.hosted, id)
	m.mu.Unlock()
	if err := m.host(def, false, nil); err != nil {
		return Info{}, err
	}
	if werr != nil {
		return Info{}, werr
	}
	info, _ := m.Get(id)
	return info, nil
}

// Delete stops timeline id and removes its directory; with archive, its
// archived WAL too (first, so that a failure leaves the timeline as it
// was, only stopped and started again).
func (m *Manager) Delete(ctx context.Context, id timeline.ID, archive bool) error {
	m.mu.Lock()
	h, ok := m.hosted[id]
	m.mu.Unlock()
	if !ok {
		return ErrNotFound
	}
	if h.def.FromFlags {
		return fmt.Errorf("%w: the command line (--upstream) defines this timeline", ErrInvalid)
	}
	if archive && m.cfg.DeleteArchive == nil {
		return fmt.Errorf("%w: no archive is configured (--archive)", ErrInvalid)
	}
	h.stop()
	if archive {
		n, err := m.cfg.DeleteArchive(ctx, id)
		if err != nil {
			m.mu.Lock()
			delete(m.hosted, id)
			m.mu.Unlock()
			if herr := m.host(h.def, false, nil); herr != nil {
				m.log.Error("hosting the timeline again after a failed archive deletion", zap.Error(herr))
			}
			return fmt.Errorf("delete the archive (%d objects deleted): %w", n, err)
		}
		m.log.Info("deleted the timeline's archive", zap.String("tenant_id", id.TenantID),
			zap.String("timeline_id", id.TimelineID), zap.Int("objects", n))
	}
	m.mu.Lock()
	delete(m.hosted, id)
	m.mu.Unlock()
	// The definition goes first: a crash part-way leaves a directory
	// that is no longer hosted with an upstream.
	if err := os.Remove(filepath.Join(h.dir, DefinitionFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if err := os.RemoveAll(h.dir); err != nil {
		return err
	}
	tenantDir := filepath.Dir(h.dir)
	_ = os.Remove(tenantDir) // only when empty
	if err := walstore.SyncDir(filepath.Dir(tenantDir)); err != nil {
		return err
	}
	m.log.Info("timeline deleted", zap.String("tenant_id", id.TenantID), zap.String("timeline_id", id.TimelineID))
	return nil
}

// Stop ends every timeline (ctx of Start must be cancelled first, or
// Stop cancels each) and waits for them to close.
func (m *Manager) Stop() {
	m.mu.Lock()
	hs := make([]*hosted, 0, len(m.hosted))
	for _, h := range m.hosted {
		hs = append(hs, h)
	}
	m.mu.Unlock()
	for _, h := range hs {
		if h.cancel != nil {
			h.cancel()
		}
	}
	m.wg.Wait()
}
