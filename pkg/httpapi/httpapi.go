// Package httpapi serves the operator's HTTP endpoints: GET /v1/status
// (JSON state of every timeline, its upstream and its consumers), GET
// /metrics (Prometheus) and GET /healthz.
package httpapi

import (
	"encoding/json"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/pgsafekeeper/safekeeper/pkg/timeline"
	"github.com/pgsafekeeper/safekeeper/pkg/wal"
)

// Status is the body of GET /v1/status.
type Status struct {
	Node      string           `json:"node"`
	Version   string           `json:"version"`
	Timelines []TimelineStatus `json:"timelines"`
}

// TimelineStatus describes one timeline.
type TimelineStatus struct {
	TenantID     string                    `json:"tenant_id"`
	TimelineID   string                    `json:"timeline_id"`
	SystemID     string                    `json:"system_id"`
	PGVersion    string                    `json:"pg_version"`
	PGVersionNum int                       `json:"pg_version_num"`
	WalSegSize   uint64                    `json:"wal_seg_size"`
	TLI          uint32                    `json:"tli"`
	StartLSN     string                    `json:"start_lsn"`
	FlushLSN     string                    `json:"flush_lsn"`
	WrittenLSN   string                    `json:"written_lsn"`
	HasWAL       bool                      `json:"has_wal"`
	Upstream     timeline.UpstreamStatus   `json:"upstream"`
	Consumers    []timeline.ConsumerStatus `json:"consumers"`
	Slots        []timeline.SlotStatus     `json:"replication_slots"`
}

// Handler returns the HTTP handler.
func Handler(node, version string, reg *timeline.Registry, gatherer prometheus.Gatherer) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		st := Status{Node: node, Version: version, Timelines: []TimelineStatus{}}
		for _, tl := range reg.All() {
			ctl := tl.Control()
			ts := TimelineStatus{
				TenantID: ctl.TenantID, TimelineID: ctl.TimelineID,
				PGVersion: ctl.ServerVersion, PGVersionNum: ctl.ServerVersionNum,
				WalSegSize: ctl.WalSegSize, TLI: ctl.TLI,
				StartLSN: ctl.StartLSN.String(), FlushLSN: tl.FlushLSN().String(),
				WrittenLSN: wal.LSN(tl.WrittenLSN()).String(),
				HasWAL:     ctl.Initialized(),
				Upstream:   tl.UpstreamStatus(), Consumers: tl.Consumers(), Slots: tl.Slots(),
			}
			if ctl.SystemID != 0 {
				ts.SystemID = uintString(ctl.SystemID)
			}
			st.Timelines = append(st.Timelines, ts)
		}
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(st)
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{}))
	return mux
}

func uintString(v uint64) string {
	b, _ := json.Marshal(v)
	return string(b)
}
