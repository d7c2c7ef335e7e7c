// Package metrics defines the Prometheus collectors of a safekeeper process.
// The collectors are created against an injected registry; nothing is
// registered globally.
package metrics

import "github.com/prometheus/client_golang/prometheus"

// Metrics holds every collector the process exports.
type Metrics struct {
	BytesReceived      prometheus.Counter
	BytesSent          prometheus.Counter
	FlushLSN           prometheus.Gauge
	FsyncSeconds       prometheus.Histogram
	Consumers          prometheus.Gauge
	UpstreamConnected  prometheus.Gauge
	UpstreamReconnects prometheus.Counter
	ConnectionsTotal   prometheus.Counter
	ProtocolErrors     *prometheus.CounterVec
	NeedsRebootstrap   prometheus.Counter
}

// New creates the collectors and registers them with reg (which may be nil
// for tests that do not export them).
func New(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		BytesReceived: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "safekeeper_wal_received_bytes_total", Help: "WAL bytes received from the upstream.",
		}),
		BytesSent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "safekeeper_wal_sent_bytes_total", Help: "WAL bytes sent to consumers.",
		}),
		FlushLSN: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "safekeeper_flush_lsn", Help: "Durable end of WAL, as a byte position.",
		}),
		FsyncSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "safekeeper_wal_fsync_seconds", Help: "Latency of one group fsync of received WAL.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
		Consumers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "safekeeper_consumers", Help: "Consumers currently streaming WAL.",
		}),
		UpstreamConnected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "safekeeper_upstream_connected", Help: "1 while streaming from the upstream, else 0.",
		}),
		UpstreamReconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "safekeeper_upstream_reconnects_total", Help: "Upstream connection attempts after the first.",
		}),
		ConnectionsTotal: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "safekeeper_connections_total", Help: "Client connections accepted.",
		}),
		ProtocolErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "safekeeper_client_errors_total", Help: "Errors sent to clients, by SQLSTATE.",
		}, []string{"sqlstate"}),
		NeedsRebootstrap: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "safekeeper_consumers_needs_rebootstrap_total",
			Help: "Consumers refused because they asked for WAL no tier (memory, local files, archive) holds any more.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.BytesReceived, m.BytesSent, m.FlushLSN, m.FsyncSeconds, m.Consumers,
			m.UpstreamConnected, m.UpstreamReconnects, m.ConnectionsTotal, m.ProtocolErrors, m.NeedsRebootstrap)
	}
	return m
}

// SlotSample is one replication slot as the slot collector reports it.
type SlotSample struct {
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
		lost:   prometheus.NewDesc("safekeeper_slot_lost", "1 when the replication slot is further behind than --max-slot-wal-keep-size.", []string{"slot"}, nil),
		behind: prometheus.NewDesc("safekeeper_slot_behind_bytes", "WAL bytes between the slot's restart_lsn and the end of WAL.", []string{"slot"}, nil),
	}
}

func (c *slotCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.lost; ch <- c.behind }

func (c *slotCollector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range c.src() {
		lost := 0.0
		if s.Lost {
			lost = 1
		}
		ch <- prometheus.MustNewConstMetric(c.lost, prometheus.GaugeValue, lost, s.Name)
		ch <- prometheus.MustNewConstMetric(c.behind, prometheus.GaugeValue, float64(s.BehindBytes), s.Name)
	}
}
