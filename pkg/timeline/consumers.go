package timeline

import (
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pgsafekeeper/safekeeper/pkg/feedback"
	"github.com/pgsafekeeper/safekeeper/pkg/wal"
)

// ConsumerInfo describes a connected consumer.
type ConsumerInfo struct {
	ApplicationName string
	Addr            string
	PID             uint32
	Slot            string
}

// Consumer is one streaming consumer of a timeline. The sender goroutine
// advances SentLSN; the feedback goroutine records feedback.
type Consumer struct {
	ConsumerInfo
	id        uint64
	startLSN  atomic.Uint64
	sent      atomic.Uint64
	connected time.Time

	hsChanged chan struct{} // the timeline's hot standby aggregate may have changed

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
func (c *Consumer) SetStart(lsn wal.LSN) { c.startLSN.Store(uint64(lsn)); c.sent.Store(uint64(lsn)) }

// SetSent records the end of WAL sent so far.
func (c *Consumer) SetSent(lsn wal.LSN) { c.sent.Store(uint64(lsn)) }

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
	c.ps = p
	c.kinds |= seenPageserver
	c.lastFeed = time.Now()
	c.mu.Unlock()
}

// ConsumerStatus is a snapshot of a consumer for the status API.
type ConsumerStatus struct {
	ID              uint64               `json:"id"`
	ApplicationName string               `json:"application_name"`
	Address         string               `json:"address"`
	PID             uint32               `json:"pid"`
	Slot            string               `json:"slot,omitempty"`
	ConnectedAt     time.Time            `json:"connected_at"`
	StartLSN        string               `json:"start_lsn"`
	SentLSN         string               `json:"sent_lsn"`
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
func (c *Consumer) Status() ConsumerStatus {
	s := ConsumerStatus{
		ID: c.id, ApplicationName: c.ApplicationName, Address: c.Addr, PID: c.PID, Slot: c.Slot,
		ConnectedAt: c.connected,
		StartLSN:    wal.LSN(c.startLSN.Load()).String(),
		SentLSN:     c.SentLSN().String(),
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

type consumerRegistry struct {
	mu        sync.Mutex
	nextID    uint64
	m         map[uint64]*Consumer
	hsChanged chan struct{}
}

func (r *consumerRegistry) init() {
	r.m = make(map[uint64]*Consumer)
	r.hsChanged = make(chan struct{}, 1)
}

// HotStandbyChanged is signalled when the aggregated hot standby feedback
// may have changed (feedback arrived, or a consumer that sent some left).
func (t *Timeline) HotStandbyChanged() <-chan struct{} { return t.consumers.hsChanged }

// HotStandbyXmin aggregates the hot standby feedback of the connected
// consumers: the oldest xmin and catalog_xmin (epoch<<32 | xid) among those
// that report one; 0 where none does. Feedback of consumers that left is gone.
func (t *Timeline) HotStandbyXmin() (xmin, catalogXmin uint64) {
	r := &t.consumers
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

// AddConsumer registers a consumer; call RemoveConsumer when it leaves.
func (t *Timeline) AddConsumer(info ConsumerInfo) *Consumer {
	r := &t.consumers
	r.mu.Lock()
	defer r.mu.Unlock()
	r.nextID++
	c := &Consumer{ConsumerInfo: info, id: r.nextID, connected: time.Now(), hsChanged: r.hsChanged}
	r.m[c.id] = c
	return c
}

// RemoveConsumer unregisters a consumer; its feedback is dropped with it.
func (t *Timeline) RemoveConsumer(c *Consumer) {
	r := &t.consumers
	r.mu.Lock()
	delete(r.m, c.id)
	r.mu.Unlock()
	c.mu.Lock()
	sentHot := c.kinds&seenHot != 0
	c.mu.Unlock()
	if sentHot {
		select {
		case r.hsChanged <- struct{}{}:
		default:
		}
	}
}

// Consumers returns snapshots of the connected consumers, oldest first.
func (t *Timeline) Consumers() []ConsumerStatus {
	r := &t.consumers
	r.mu.Lock()
	cs := make([]*Consumer, 0, len(r.m))
	for _, c := range r.m {
		cs = append(cs, c)
	}
	r.mu.Unlock()
	sort.Slice(cs, func(i, j int) bool { return cs[i].id < cs[j].id })
	out := make([]ConsumerStatus, len(cs))
	for i, c := range cs {
		out[i] = c.Status()
	}
	return out
}

// NumConsumers returns how many consumers are connected.
func (t *Timeline) NumConsumers() int {
	r := &t.consumers
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.m)
}
