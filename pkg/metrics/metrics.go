package metrics

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics holds the collectors the process exports itself (the rest are
// read from the timelines at scrape time, see the collectors below).
// Per-timeline series carry tenant_id and timeline_id; ForTimeline gives a
// timeline its children and DeleteTimeline drops them when it goes, so
// the series count follows the hosted timelines. Histograms and
// connection counters are process-wide: their cardinality stays bounded
// however many timelines there are.
type Metrics struct {
	FsyncSeconds     prometheus.Histogram
	UploadSeconds    prometheus.Histogram
	ConnectionsTotal prometheus.Counter
	AcceptErrors     prometheus.Counter
	ProtocolErrors   *prometheus.CounterVec

	bytesReceived      *prometheus.CounterVec
	bytesSent          *prometheus.CounterVec
	flushLSN           *prometheus.GaugeVec
	consumers          *prometheus.GaugeVec
	upstreamConnected  *prometheus.GaugeVec
	upstreamReconnects *prometheus.CounterVec
	needsRebootstrap   *prometheus.CounterVec
	storageFull        *prometheus.GaugeVec
	walReadBytes       *prometheus.CounterVec
}

// Timeline is one timeline's series.
type Timeline struct {
	BytesReceived      prometheus.Counter
	BytesSent          prometheus.Counter
	FlushLSN           prometheus.Gauge
	Consumers          prometheus.Gauge
	UpstreamConnected  prometheus.Gauge
	UpstreamReconnects prometheus.Counter
	NeedsRebootstrap   prometheus.Counter
	StorageFull        prometheus.Gauge
	// WalReadBytes counts WAL bytes read for consumers, by the tier that
	// served them (ReadTiers).
	WalReadBytes map[string]prometheus.Counter
	// Process-wide, shared by every timeline.
	FsyncSeconds  prometheus.Observer
	UploadSeconds prometheus.Observer
}

// timelineLabels are the labels of per-timeline series.
var timelineLabels = []string{"tenant_id", "timeline_id"}

// ReadTiers are the values of safekeeper_wal_read_bytes_total's tier label,
// the names of walreader's tiers.
var ReadTiers = []string{"memory", "local", "archive"}

// WALRead counts n bytes read from tier (walreader.Observer).
func (t *Timeline) WALRead(tier string, n int) {
	if c := t.WalReadBytes[tier]; c != nil {
		c.Add(float64(n))
	}
}

// New creates the collectors and registers them with reg (which may be nil
// for tests that do not export them).
func New(reg prometheus.Registerer) *Metrics {
	counter := func(name, help string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, timelineLabels)
	}
	gauge := func(name, help string) *prometheus.GaugeVec {
		return prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, timelineLabels)
	}
	m := &Metrics{
		FsyncSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "safekeeper_wal_fsync_seconds", Help: "Latency of one group fsync of received WAL (all timelines).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
		UploadSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "safekeeper_archive_upload_seconds", Help: "Duration of one successful segment upload to the archive, compression included (all timelines).",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14),
		}),
		ConnectionsTotal: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "safekeeper_connections_total", Help: "Client connections accepted.",
		}),
		AcceptErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "safekeeper_accept_errors_total",
			Help: "Failed accepts on the replication port (out of file descriptors or memory); the listener waits and tries again.",
		}),
		ProtocolErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "safekeeper_client_errors_total", Help: "Errors sent to clients, by SQLSTATE.",
		}, []string{"sqlstate"}),
		bytesReceived:      counter("safekeeper_wal_received_bytes_total", "WAL bytes received from the upstream."),
		bytesSent:          counter("safekeeper_wal_sent_bytes_total", "WAL bytes sent to consumers."),
		flushLSN:           gauge("safekeeper_flush_lsn", "Durable end of WAL, as a byte position."),
		consumers:          gauge("safekeeper_consumers", "Consumers currently streaming WAL."),
		upstreamConnected:  gauge("safekeeper_upstream_connected", "1 while streaming from the upstream, else 0."),
		upstreamReconnects: counter("safekeeper_upstream_reconnects_total", "Upstream connection attempts after the first."),
		needsRebootstrap: counter("safekeeper_consumers_needs_rebootstrap_total",
			"Consumers refused because they asked for WAL no tier (memory, local files, archive) holds any more."),
		storageFull: gauge("safekeeper_wal_storage_full", "1 while WAL ingest is paused because the disk is full, else 0."),
		walReadBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "safekeeper_wal_read_bytes_total",
			Help: "WAL bytes read for consumers, by the tier that served them (memory, local, archive).",
		}, append(append([]string{}, timelineLabels...), "tier")),
	}
	if reg != nil {
		reg.MustRegister(m.FsyncSeconds, m.UploadSeconds, m.ConnectionsTotal, m.AcceptErrors, m.ProtocolErrors,
			m.bytesReceived, m.bytesSent, m.flushLSN, m.consumers, m.upstreamConnected, m.upstreamReconnects,
			m.needsRebootstrap, m.storageFull, m.walReadBytes)
	}
	return m
}

// ForTimeline returns the series of one timeline, created at zero.
func (m *Metrics) ForTimeline(tenantID, timelineID string) *Timeline {
	l := prometheus.Labels{"tenant_id": tenantID, "timeline_id": timelineID}
	read := make(map[string]prometheus.Counter, len(ReadTiers))
	for _, tier := range ReadTiers {
		read[tier] = m.walReadBytes.With(prometheus.Labels{"tenant_id": tenantID, "timeline_id": timelineID, "tier": tier})
	}
	return &Timeline{
		WalReadBytes:       read,
		BytesReceived:      m.bytesReceived.With(l),
		BytesSent:          m.bytesSent.With(l),
		FlushLSN:           m.flushLSN.With(l),
		Consumers:          m.consumers.With(l),
		UpstreamConnected:  m.upstreamConnected.With(l),
		UpstreamReconnects: m.upstreamReconnects.With(l),
		NeedsRebootstrap:   m.needsRebootstrap.With(l),
		StorageFull:        m.storageFull.With(l),
		FsyncSeconds:       m.FsyncSeconds,
		UploadSeconds:      m.UploadSeconds,
	}
}

// Unexported returns series of a timeline that are not registered
// anywhere, for code paths (tests, tools) that export nothing.
func Unexported() *Timeline {
	return New(nil).ForTimeline("", "")
}

// DeleteTimeline drops the series of a timeline that is no longer hosted.
func (m *Metrics) DeleteTimeline(tenantID, timelineID string) {
	l := prometheus.Labels{"tenant_id": tenantID, "timeline_id": timelineID}
	for _, v := range []interface{ Delete(prometheus.Labels) bool }{m.bytesReceived, m.bytesSent, m.flushLSN,
		m.consumers, m.upstreamConnected, m.upstreamReconnects, m.needsRebootstrap, m.storageFull} {
		v.Delete(l)
	}
	m.walReadBytes.DeletePartialMatch(l)
}

// SlotSample is one replication slot as the slot collector reports it.
type SlotSample struct {
	TenantID    string
	TimelineID  string
	Name        string
	Lost        bool
	BehindBytes uint64
}

type slotCollector struct {
	src    func() []SlotSample
	lost   *prometheus.Desc
	behind *prometheus.Desc
}

// NewSlotCollector exports every slot's state at scrape time:
// safekeeper_slot_lost (1 when the slot is past --max-slot-wal-keep-size)
// and safekeeper_slot_behind_bytes.
func NewSlotCollector(src func() []SlotSample) prometheus.Collector {
	return &slotCollector{
		src:    src,
		lost:   prometheus.NewDesc("safekeeper_slot_lost", "1 when the replication slot is further behind than --max-slot-wal-keep-size.", []string{"tenant_id", "timeline_id", "slot"}, nil),
		behind: prometheus.NewDesc("safekeeper_slot_behind_bytes", "WAL bytes between the slot's restart_lsn and the end of WAL.", []string{"tenant_id", "timeline_id", "slot"}, nil),
	}
}

func (c *slotCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.lost; ch <- c.behind }

func (c *slotCollector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range c.src() {
		lost := 0.0
		if s.Lost {
			lost = 1
		}
		ch <- prometheus.MustNewConstMetric(c.lost, prometheus.GaugeValue, lost, s.TenantID, s.TimelineID, s.Name)
		ch <- prometheus.MustNewConstMetric(c.behind, prometheus.GaugeValue, float64(s.BehindBytes), s.TenantID, s.TimelineID, s.Name)
	}
}

// TimelineSample is one timeline's archive and retention state, read at
// scrape time.
type TimelineSample struct {
	TenantID, TimelineID string
	LocalStartLSN        uint64
	LocalBytes           int64
	LocalSegments        int
	RemovedSegments      uint64
	Archive              bool // an archive is configured
	BackupLSN            uint64
	ArchiveLagBytes      uint64
	UploadedBytes        uint64
	UploadedObjects      uint64
	UploadErrors         uint64
	ArchiveConflict      bool
	WrittenLSN           uint64
	OldestLSN            uint64  // oldest position any tier holds
	LastSyncUnix         float64 // 0: none yet
	MappedBytes          int64   // segment files kept mapped for consumers
	// UpstreamKnown says whether UpstreamWalEnd and UpstreamLagBytes are
	// known (see upstream.Status).
	UpstreamKnown    bool
	UpstreamWalEnd   uint64
	UpstreamLagBytes uint64
}

type timelineCollector struct {
	src func() []TimelineSample

	localStart, localBytes, localSegs, removed                   *prometheus.Desc
	backup, lag, upBytes, upObjects, upErrors, archiveConflicted *prometheus.Desc
	written, oldest, lastSync, upEnd, upLag                      *prometheus.Desc
	mapped                                                       *prometheus.Desc
}

// NewTimelineCollector exports each timeline's local WAL, retention and
// archive state at scrape time, labelled with tenant_id and timeline_id.
func NewTimelineCollector(src func() []TimelineSample) prometheus.Collector {
	l := []string{"tenant_id", "timeline_id"}
	d := func(name, help string) *prometheus.Desc { return prometheus.NewDesc(name, help, l, nil) }
	return &timelineCollector{
		src:               src,
		localStart:        d("safekeeper_local_start_lsn", "First WAL position held in local segment files."),
		localBytes:        d("safekeeper_local_wal_bytes", "Bytes of local WAL segment files."),
		localSegs:         d("safekeeper_local_wal_segments", "Number of local WAL segment files."),
		removed:           d("safekeeper_removed_segments_total", "Local WAL segments removed by retention."),
		backup:            d("safekeeper_backup_lsn", "End of the contiguous archived prefix of WAL (backup_lsn)."),
		lag:               d("safekeeper_archive_lag_bytes", "WAL in complete segments not archived yet: the start of the segment holding the flush LSN minus backup_lsn."),
		upBytes:           d("safekeeper_archive_uploaded_bytes_total", "Bytes stored in the archive (after compression)."),
		upObjects:         d("safekeeper_archive_uploaded_objects_total", "Objects (segments and history files) stored in the archive."),
		upErrors:          d("safekeeper_archive_upload_errors_total", "Failed archive operations (each is retried)."),
		archiveConflicted: d("safekeeper_archive_conflict", "1 when offloading stopped because the archive holds a different object under a name to upload."),
		written:           d("safekeeper_written_lsn", "End of WAL received and written, durable or not."),
		oldest:            d("safekeeper_oldest_lsn", "Oldest WAL position any tier (local files, archive) still holds."),
		lastSync:          d("safekeeper_last_fsync_timestamp_seconds", "Unix time of the last fsync that made new WAL durable (0: none since start)."),
		upEnd:             d("safekeeper_upstream_wal_end_lsn", "The upstream's end of WAL as last reported; absent while not known."),
		upLag:             d("safekeeper_upstream_lag_bytes", "How far the durable end of WAL is behind the upstream's; absent while not known."),
		mapped:            d("safekeeper_wal_mapped_bytes", "Bytes of finished segment files kept mapped for the timeline's consumers: page cache, which counts in the process's RSS as file pages while mapped."),
	}
}

func (c *timelineCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.localStart, c.localBytes, c.localSegs, c.removed, c.backup, c.lag, c.upBytes, c.upObjects, c.upErrors, c.archiveConflicted,
		c.written, c.oldest, c.lastSync, c.upEnd, c.upLag, c.mapped} {
		ch <- d
	}
}

func (c *timelineCollector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range c.src() {
		g := func(d *prometheus.Desc, v float64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, s.TenantID, s.TimelineID)
		}
		n := func(d *prometheus.Desc, v float64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, s.TenantID, s.TimelineID)
		}
		g(c.localStart, float64(s.LocalStartLSN))
		g(c.localBytes, float64(s.LocalBytes))
		g(c.localSegs, float64(s.LocalSegments))
		n(c.removed, float64(s.RemovedSegments))
		g(c.written, float64(s.WrittenLSN))
		g(c.oldest, float64(s.OldestLSN))
		g(c.lastSync, s.LastSyncUnix)
		g(c.mapped, float64(s.MappedBytes))
		if s.UpstreamKnown {
			g(c.upEnd, float64(s.UpstreamWalEnd))
			g(c.upLag, float64(s.UpstreamLagBytes))
		}
		if !s.Archive {
			continue
		}
		g(c.backup, float64(s.BackupLSN))
		g(c.lag, float64(s.ArchiveLagBytes))
		n(c.upBytes, float64(s.UploadedBytes))
		n(c.upObjects, float64(s.UploadedObjects))
		n(c.upErrors, float64(s.UploadErrors))
		conflict := 0.0
		if s.ArchiveConflict {
			conflict = 1
		}
		g(c.archiveConflicted, conflict)
	}
}

// RegisterBuildInfo exports safekeeper_build_info{version,revision,goversion} 1.
func RegisterBuildInfo(reg prometheus.Registerer, version, revision, goVersion string) {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "safekeeper_build_info",
		Help:        "The running binary: module version, VCS revision and Go version (always 1).",
		ConstLabels: prometheus.Labels{"version": version, "revision": revision, "goversion": goVersion},
	})
	g.Set(1)
	reg.MustRegister(g)
}

// ConsumerSample is one connected consumer's lag, read at scrape time.
type ConsumerSample struct {
	TenantID, TimelineID, ApplicationName string
	PID                                   uint32
	SentLag                               uint64
	// FlushLag and ApplyLag are known once the consumer sent feedback.
	HasFeedback        bool
	FlushLag, ApplyLag uint64
}

type consumerCollector struct {
	src func() []ConsumerSample
	lag *prometheus.Desc
}

// NewConsumerCollector exports safekeeper_consumer_lag_bytes{kind} of every
// connected consumer: how far what was sent (kind="sent"), and what the
// consumer reports flushed ("flush") and applied ("apply"), trail the
// durable end of WAL. Only connected consumers are exported, so the
// series are bounded by the connections.
func NewConsumerCollector(src func() []ConsumerSample) prometheus.Collector {
	return &consumerCollector{src: src, lag: prometheus.NewDesc("safekeeper_consumer_lag_bytes",
		"How far a connected consumer trails the durable end of WAL: sent, and flushed and applied as its feedback reports.",
		[]string{"tenant_id", "timeline_id", "application_name", "pid", "kind"}, nil)}
}

func (c *consumerCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.lag }

func (c *consumerCollector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range c.src() {
		pid := strconv.FormatUint(uint64(s.PID), 10)
		m := func(kind string, v uint64) {
			ch <- prometheus.MustNewConstMetric(c.lag, prometheus.GaugeValue, float64(v), s.TenantID, s.TimelineID, s.ApplicationName, pid, kind)
		}
		m("sent", s.SentLag)
		if s.HasFeedback {
			m("flush", s.FlushLag)
			m("apply", s.ApplyLag)
		}
	}
}
