package consumers

import (
	"net"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pgsafekeeper/safekeeper/internal/notify"
	"github.com/pgsafekeeper/safekeeper/pkg/feedback"
	"github.com/pgsafekeeper/safekeeper/pkg/wal"
)

// Info describes a connected consumer.
type Info struct {
	ApplicationName string
	Addr            string
	PID             uint32
	Slot            string
}

// Consumer is one streaming consumer of a timeline. The sender goroutine
// advances SentLSN; the feedback goroutine records feedback.
type Consumer struct {
	Info
	id        uint64
	startLSN  atomic.Uint64
	sent      atomic.Uint64
	tier      atomic.Pointer[string] // tier that served the last read
	connected time.Time

	hsChanged chan struct{}     // the timeline's hot standby aggregate may have changed
	psChanged *notify.Broadcast // the timeline's pageserver horizon may have changed

	mu       sync.Mutex
	standby  feedback.StandbyStatus
	hot      feedback.HotStandby
	ps       feedback.Pageserver
	kinds    uint8 // bit set of feedback kinds seen
	lastFeed time.Time
}

const (
	seenStandby uint8 = 1 << iota
	seenHot
	seenPageserver
)

// SetStart records where streaming started.
func (c *Consumer) SetStart(lsn wal.LSN) {
	c.startLSN.Store(uint64(lsn))
	c.sent.Store(uint64(lsn))
	c.mu.Lock()
	ps := c.kinds&seenPageserver != 0
	c.mu.Unlock()
	if ps {
		c.notifyHorizon() // the start holds WAL until a remote_consistent_lsn comes
	}
}

func (c *Consumer) notifyHorizon() {
	if c.psChanged != nil {
		c.psChanged.Notify()
	}
}

// SetSent records the end of WAL sent so far.
func (c *Consumer) SetSent(lsn wal.LSN) { c.sent.Store(uint64(lsn)) }

// WALRead records the tier that served the consumer's last read
// (walreader.Observer); it allocates only when the tier changes.
func (c *Consumer) WALRead(tier string, _ int) {
	if p := c.tier.Load(); p == nil || *p != tier {
		t := tier
		c.tier.Store(&t)
	}
}

// Tier returns the tier that served the consumer's last read ("" before
// the first).
func (c *Consumer) Tier() string {
	if p := c.tier.Load(); p != nil {
		return *p
	}
	return ""
}

// SentLSN returns the end of WAL sent.
func (c *Consumer) SentLSN() wal.LSN { return wal.LSN(c.sent.Load()) }

// RecordStandby stores a standby status update.
func (c *Consumer) RecordStandby(s feedback.StandbyStatus) {
	c.mu.Lock()
	c.standby = s
	c.kinds |= seenStandby
	c.lastFeed = time.Now()
	c.mu.Unlock()
}

// RecordHotStandby stores hot standby feedback.
func (c *Consumer) RecordHotStandby(h feedback.HotStandby) {
	c.mu.Lock()
	changed := c.hot.FullXmin() != h.FullXmin() || c.hot.FullCatalogXmin() != h.FullCatalogXmin() || c.kinds&seenHot == 0
	c.hot = h
	c.kinds |= seenHot
	c.lastFeed = time.Now()
	c.mu.Unlock()
	if changed && c.hsChanged != nil {
		select {
		case c.hsChanged <- struct{}{}:
		default:
		}
	}
}

// RecordPageserver stores pageserver feedback.
func (c *Consumer) RecordPageserver(p feedback.Pageserver) {
	c.mu.Lock()
	moved := c.kinds&seenPageserver == 0 || c.ps.RemoteConsistentLSN != p.RemoteConsistentLSN
	c.ps = p
	c.kinds |= seenPageserver
	c.lastFeed = time.Now()
	c.mu.Unlock()
	if moved {
		c.notifyHorizon()
	}
}

// Status is a snapshot of a consumer for the status API.
type Status struct {
	ID              uint64               `json:"id"`
	ApplicationName string               `json:"application_name"`
	Address         string               `json:"address"`
	PID             uint32               `json:"pid"`
	Slot            string               `json:"slot,omitempty"`
	ConnectedAt     time.Time            `json:"connected_at"`
	StartLSN        string               `json:"start_lsn"`
	SentLSN         string               `json:"sent_lsn"`
	Tier            string               `json:"tier,omitempty"`
	Feedback        *StandbyFeedbackJSON `json:"feedback,omitempty"`
	HotStandby      *HotStandbyJSON      `json:"hot_standby_feedback,omitempty"`
	Pageserver      *PageserverJSON      `json:"pageserver_feedback,omitempty"`
	LastFeedbackAt  *time.Time           `json:"last_feedback_at,omitempty"`
}

// StandbyFeedbackJSON is the latest 'r' message.
type StandbyFeedbackJSON struct {
	WriteLSN string `json:"write_lsn"`
	FlushLSN string `json:"flush_lsn"`
	ApplyLSN string `json:"apply_lsn"`
}

// HotStandbyJSON is the latest 'h' message.
type HotStandbyJSON struct {
	Xmin        uint64 `json:"xmin"`
	CatalogXmin uint64 `json:"catalog_xmin"`
}

// PageserverJSON is the latest 'z' message.
type PageserverJSON struct {
	LastReceivedLSN     string `json:"last_received_lsn"`
	DiskConsistentLSN   string `json:"disk_consistent_lsn"`
	RemoteConsistentLSN string `json:"remote_consistent_lsn"`
	CurrentTimelineSize uint64 `json:"current_timeline_size"`
}

// Status returns a snapshot of the consumer.
func (c *Consumer) Status() Status {
	s := Status{
		ID: c.id, ApplicationName: c.ApplicationName, Address: c.Addr, PID: c.PID, Slot: c.Slot,
		ConnectedAt: c.connected,
		StartLSN:    wal.LSN(c.startLSN.Load()).String(),
		SentLSN:     c.SentLSN().String(),
		Tier:        c.Tier(),
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.kinds&seenStandby != 0 {
		s.Feedback = &StandbyFeedbackJSON{
			WriteLSN: wal.LSN(c.standby.Write).String(),
			FlushLSN: wal.LSN(c.standby.Flush).String(),
			ApplyLSN: wal.LSN(c.standby.Apply).String(),
		}
	}
	if c.kinds&seenHot != 0 {
		s.HotStandby = &HotStandbyJSON{Xmin: c.hot.FullXmin(), CatalogXmin: c.hot.FullCatalogXmin()}
	}
	if c.kinds&seenPageserver != 0 {
		s.Pageserver = &PageserverJSON{
			LastReceivedLSN:     wal.LSN(c.ps.LastReceivedLSN).String(),
			DiskConsistentLSN:   wal.LSN(c.ps.DiskConsistentLSN).String(),
			RemoteConsistentLSN: wal.LSN(c.ps.RemoteConsistentLSN).String(),
			CurrentTimelineSize: c.ps.CurrentTimelineSize,
		}
	}
	if c.kinds != 0 {
		t := c.lastFeed
		s.LastFeedbackAt = &t
	}
	return s
}

// Registry holds the consumers streaming one timeline.
type Registry struct {
	mu        sync.Mutex
	nextID    uint64
	m         map[uint64]*Consumer
	hsChanged chan struct{}
	psChanged notify.Broadcast
	closed    chan struct{} // closed when the timeline stops being hosted
	closeOnce sync.Once

	rebootstrap []Rebootstrap
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{m: make(map[uint64]*Consumer), hsChanged: make(chan struct{}, 1), closed: make(chan struct{})}
}

// Close tells every consumer of the timeline to end its stream: the
// timeline is no longer hosted (shut down, detached, deleted, reopened).
func (r *Registry) Close() { r.closeOnce.Do(func() { close(r.closed) }) }

// Closed is closed by Close.
func (r *Registry) Closed() <-chan struct{} { return r.closed }

// HotStandbyChanged is signalled when the aggregated hot standby feedback
// may have changed (feedback arrived, or a consumer that sent some left).
func (r *Registry) HotStandbyChanged() <-chan struct{} { return r.hsChanged }

// HotStandbyXmin aggregates the hot standby feedback of the connected
// consumers: the oldest xmin and catalog_xmin (epoch<<32 | xid) among those
// that report one; 0 where none does. Feedback of consumers that left is gone.
func (r *Registry) HotStandbyXmin() (xmin, catalogXmin uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.m {
		c.mu.Lock()
		if c.kinds&seenHot != 0 {
			if x := c.hot.FullXmin(); x != 0 && (xmin == 0 || x < xmin) {
				xmin = x
			}
			if x := c.hot.FullCatalogXmin(); x != 0 && (catalogXmin == 0 || x < catalogXmin) {
				catalogXmin = x
			}
		}
		c.mu.Unlock()
	}
	return xmin, catalogXmin
}

// PageserverChanged returns a channel closed when PageserverHorizon may
// have changed: a consumer sent its first pageserver feedback or a new
// remote_consistent_lsn, or one that had sent some left. Take it before
// calling PageserverHorizon.
func (r *Registry) PageserverChanged() <-chan struct{} { return r.psChanged.C() }

// PageserverHorizon returns the oldest WAL position a connected
// pageserver-style consumer (one that sent 'z' feedback) still needs
// locally: its remote_consistent_lsn, or where it started streaming while
// it reports none. ok is false when no such consumer is connected.
func (r *Registry) PageserverHorizon() (lsn wal.LSN, app string, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.m {
		c.mu.Lock()
		if c.kinds&seenPageserver != 0 {
			need := wal.LSN(c.ps.RemoteConsistentLSN)
			if need == 0 {
				need = wal.LSN(c.startLSN.Load())
			}
			if !ok || need < lsn {
				lsn, app, ok = need, c.ApplicationName, true
			}
		}
		c.mu.Unlock()
	}
	return lsn, app, ok
}

// Add registers a consumer; call Remove when it leaves.
func (r *Registry) Add(info Info) *Consumer {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.nextID++
	c := &Consumer{Info: info, id: r.nextID, connected: time.Now(), hsChanged: r.hsChanged, psChanged: &r.psChanged}
	r.m[c.id] = c
	return c
}

// Remove unregisters a consumer; its feedback is dropped with it.
func (r *Registry) Remove(c *Consumer) {
	r.mu.Lock()
	delete(r.m, c.id)
	r.mu.Unlock()
	c.mu.Lock()
	sentHot := c.kinds&seenHot != 0
	sentPS := c.kinds&seenPageserver != 0
	c.mu.Unlock()
	if sentPS {
		r.psChanged.Notify()
	}
	if sentHot {
		select {
		case r.hsChanged <- struct{}{}:
		default:
		}
	}
}

// List returns snapshots of the connected consumers, oldest first.
func (r *Registry) List() []Status {
	r.mu.Lock()
	cs := make([]*Consumer, 0, len(r.m))
	for _, c := range r.m {
		cs = append(cs, c)
	}
	r.mu.Unlock()
	sort.Slice(cs, func(i, j int) bool { return cs[i].id < cs[j].id })
	out := make([]Status, len(cs))
	for i, c := range cs {
		out[i] = c.Status()
	}
	return out
}

// Len returns how many consumers are connected.
func (r *Registry) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.m)
}

// maxRebootstrap bounds the needs_rebootstrap list; the newest entries stay.
const maxRebootstrap = 64

// Rebootstrap records a consumer that asked for WAL no tier holds any
// more: it cannot continue without a new base backup.
type Rebootstrap struct {
	ApplicationName string    `json:"application_name"`
	Address         string    `json:"address"`
	Slot            string    `json:"slot,omitempty"`
	RequestedLSN    string    `json:"requested_lsn"`
	OldestAvailable string    `json:"oldest_available_lsn"`
	At              time.Time `json:"at"`
}

// NoteRebootstrap records that a consumer asked for requested, below the
// oldest WAL any tier holds. An entry for the same application, address
// and slot is replaced.
func (r *Registry) NoteRebootstrap(info Info, requested, oldest wal.LSN) {
	e := Rebootstrap{ApplicationName: info.ApplicationName, Address: info.Addr, Slot: info.Slot,
		RequestedLSN: requested.String(), OldestAvailable: oldest.String(), At: time.Now()}
	host := hostOf(info.Addr)
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, old := range r.rebootstrap {
		if old.ApplicationName == e.ApplicationName && hostOf(old.Address) == host && old.Slot == e.Slot {
			r.rebootstrap = append(r.rebootstrap[:i], r.rebootstrap[i+1:]...)
			break
		}
	}
	r.rebootstrap = append(r.rebootstrap, e)
	if len(r.rebootstrap) > maxRebootstrap {
		r.rebootstrap = r.rebootstrap[len(r.rebootstrap)-maxRebootstrap:]
	}
}

// NeedsRebootstrap returns the consumers that asked for WAL no tier holds,
// oldest first.
func (r *Registry) NeedsRebootstrap() []Rebootstrap {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Rebootstrap{}, r.rebootstrap...)
}

// hostOf strips the port: a consumer that reconnects comes from a new one.
func hostOf(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}
