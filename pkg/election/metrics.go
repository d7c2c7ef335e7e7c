package election

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the election's Prometheus collectors, shared by all members
// of a process. A member deletes its label values when its Run returns.
type Metrics struct {
	// IsLeader is 1 while the member runs the leader's work, else 0.
	IsLeader *prometheus.GaugeVec
	// LeaderChanges counts changes of the observed leader from one node
	// to another (a timeline seen leaderless in between counts once; the
	// first leader a member sees does not count).
	LeaderChanges *prometheus.CounterVec
	// EtcdErrors counts failed etcd operations of any kind.
	EtcdErrors prometheus.Counter
}

// NewMetrics creates the collectors and registers them with reg, which may
// be nil for tests that do not export them.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	labels := []string{"tenant_id", "timeline_id"}
	m := &Metrics{
		IsLeader: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "safekeeper_offloader_is_leader",
			Help: "1 while this safekeeper is the timeline's offloader, else 0.",
		}, labels),
		LeaderChanges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "safekeeper_offloader_leader_changes_total",
			Help: "Times the timeline's offloader was seen changing to another safekeeper.",
		}, labels),
		EtcdErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "safekeeper_etcd_errors_total",
			Help: "Failed etcd operations (session, publish, watch, campaign, backup_lsn).",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.IsLeader, m.LeaderChanges, m.EtcdErrors)
	}
	return m
}
