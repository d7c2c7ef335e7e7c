package httpapi

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/pgsafekeeper/safekeeper/pkg/supervisor"
)

// Status is the body of GET /v1/status.
type Status struct {
	Node      string              `json:"node"`
	Version   string              `json:"version"`
	Timelines []supervisor.Status `json:"timelines"`
}

// Handler returns the HTTP handler.
func Handler(node, version string, reg *supervisor.Registry, gatherer prometheus.Gatherer, ready Readiness) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		st := Status{Node: node, Version: version, Timelines: []supervisor.Status{}}
		for _, s := range reg.All() {
			st.Timelines = append(st.Timelines, s.Status())
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
	// /healthz is liveness (the process answers); /readyz says whether
	// the node does its job, and if not, why.
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		var tls []supervisor.Status
		for _, s := range reg.All() {
			tls = append(tls, s.Status())
		}
		body := Ready{Reasons: notReady(tls, ready, time.Now())}
		body.Ready = len(body.Reasons) == 0
		w.Header().Set("Content-Type", "application/json")
		if !body.Ready {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_ = json.NewEncoder(w).Encode(body)
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{}))
	return mux
}
