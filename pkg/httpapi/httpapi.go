package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/pgsafekeeper/safekeeper/pkg/manager"
	"github.com/pgsafekeeper/safekeeper/pkg/supervisor"
	"github.com/pgsafekeeper/safekeeper/pkg/timeline"
)

// Status is the body of GET /v1/status.
type Status struct {
	Node      string              `json:"node"`
	Version   string              `json:"version"`
	Timelines []supervisor.Status `json:"timelines"`
}

// Timelines is the timeline management the API exposes (manager.Manager).
type Timelines interface {
	Create(def manager.Definition) (manager.Info, error)
	Get(id timeline.ID) (manager.Info, bool)
	List(tenant string) []manager.Info
	SetUpstream(id timeline.ID, up *manager.Upstream) (manager.Info, error)
	Detach(id timeline.ID) (manager.Info, error)
	Delete(ctx context.Context, id timeline.ID, archive bool) error
}

// Config configures the HTTP handler.
type Config struct {
	Node, Version string
	// Registry holds the running timelines (status, readiness).
	Registry *supervisor.Registry
	// Timelines, when set, serves the timeline management API.
	Timelines Timelines
	Gatherer  prometheus.Gatherer
	Ready     Readiness
	// Tokens, when set, requires a bearer token on every path but
	// /healthz, /readyz and /metrics: scope safekeeperdata for everything,
	// scope tenant for reading its own tenant's timelines.
	Tokens Tokens
	Log    *zap.Logger
}

// Handler returns the HTTP handler.
func Handler(cfg Config) http.Handler {
	reg := cfg.Registry
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		if !allowed(w, r, "") {
			return
		}
		st := Status{Node: cfg.Node, Version: cfg.Version, Timelines: []supervisor.Status{}}
		for _, s := range reg.All() {
			st.Timelines = append(st.Timelines, s.Status())
		}
		writeJSON(w, http.StatusOK, st)
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
		body := Ready{Reasons: notReady(tls, cfg.Ready, time.Now())}
		if cfg.Timelines != nil {
			// Timelines not running: still opening, or failed and waiting
			// to be opened again.
			for _, i := range cfg.Timelines.List("") {
				id := i.Definition.TenantID + "/" + i.Definition.TimelineID
				switch i.State {
				case manager.StateFailed:
					body.Reasons = append(body.Reasons, fmt.Sprintf("%s: failed, opened again after a backoff: %s", id, i.Error))
				case manager.StateStarting:
					body.Reasons = append(body.Reasons, id+": opening")
				}
			}
		}
		body.Ready = len(body.Reasons) == 0
		code := http.StatusOK
		if !body.Ready {
			code = http.StatusServiceUnavailable
		}
		writeJSON(w, code, body)
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(cfg.Gatherer, promhttp.HandlerOpts{}))
	if cfg.Timelines != nil {
		timelineRoutes(mux, cfg.Timelines)
	}
	if cfg.Tokens != nil {
		log := cfg.Log
		if log == nil {
			log = zap.NewNop()
		}
		return requireToken(cfg.Tokens, log, mux)
	}
	return mux
}

// apiError is the body of every error answer of the API.
type apiError struct {
	Error string `json:"error"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, code int, format string, args ...any) {
	writeJSON(w, code, apiError{Error: fmt.Sprintf(format, args...)})
}

// CreateRequest is the body of POST /v1/tenant/{tenant_id}/timeline.
type CreateRequest struct {
	TimelineID string            `json:"timeline_id"`
	Upstream   *manager.Upstream `json:"upstream"`
}

// PatchRequest is the body of PATCH /v1/tenant/{tenant_id}/timeline/{timeline_id}:
// the new upstream (null: none).
type PatchRequest struct {
	Upstream *manager.Upstream `json:"upstream"`
}

// maxBody bounds request bodies.
const maxBody = 1 << 20

func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(io.LimitReader(r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, "invalid request body: %v", err)
		return false
	}
	return true
}

// pathID reads and checks the ids of the path.
func pathID(w http.ResponseWriter, r *http.Request, withTimeline bool) (timeline.ID, bool) {
	var id timeline.ID
	var err error
	if id.TenantID, err = timeline.ParseHexID(r.PathValue("tenant_id")); err != nil {
		writeError(w, http.StatusBadRequest, "invalid tenant_id %q: want 32 hexadecimal characters", r.PathValue("tenant_id"))
		return id, false
	}
	if withTimeline {
		if id.TimelineID, err = timeline.ParseHexID(r.PathValue("timeline_id")); err != nil {
			writeError(w, http.StatusBadRequest, "invalid timeline_id %q: want 32 hexadecimal characters", r.PathValue("timeline_id"))
			return id, false
		}
	}
	return id, true
}

// managerError answers a failed management operation.
func managerError(w http.ResponseWriter, id timeline.ID, err error) {
	switch {
	case errors.Is(err, manager.ErrNotFound):
		writeError(w, http.StatusNotFound, "timeline %s/%s not found", id.TenantID, id.TimelineID)
	case errors.Is(err, manager.ErrExists):
		writeError(w, http.StatusConflict, "timeline %s/%s already exists", id.TenantID, id.TimelineID)
	case errors.Is(err, manager.ErrInvalid):
		writeError(w, http.StatusBadRequest, "%s", strings.TrimPrefix(err.Error(), manager.ErrInvalid.Error()+": "))
	default:
		writeError(w, http.StatusInternalServerError, "%v", err)
	}
}

// timelineRoutes serves the timeline management API.
func timelineRoutes(mux *http.ServeMux, tls Timelines) {
	mux.HandleFunc("GET /v1/timeline", func(w http.ResponseWriter, r *http.Request) {
		if !allowed(w, r, "") {
			return
		}
		writeJSON(w, http.StatusOK, tls.List(""))
	})
	mux.HandleFunc("GET /v1/tenant/{tenant_id}/timeline", func(w http.ResponseWriter, r *http.Request) {
		id, ok := pathID(w, r, false)
		if !ok || !allowed(w, r, id.TenantID) {
			return
		}
		writeJSON(w, http.StatusOK, tls.List(id.TenantID))
	})
	mux.HandleFunc("POST /v1/tenant/{tenant_id}/timeline", func(w http.ResponseWriter, r *http.Request) {
		id, ok := pathID(w, r, false)
		if !ok || !allowed(w, r, "") {
			return
		}
		var req CreateRequest
		if !decode(w, r, &req) {
			return
		}
		if id.TimelineID, _ = timeline.ParseHexID(req.TimelineID); id.TimelineID == "" {
			writeError(w, http.StatusBadRequest, "invalid timeline_id %q: want 32 hexadecimal characters", req.TimelineID)
			return
		}
		info, err := tls.Create(manager.Definition{TenantID: id.TenantID, TimelineID: id.TimelineID, Upstream: req.Upstream})
		if err != nil {
			managerError(w, id, err)
			return
		}
		writeJSON(w, http.StatusCreated, info)
	})
	mux.HandleFunc("GET /v1/tenant/{tenant_id}/timeline/{timeline_id}", func(w http.ResponseWriter, r *http.Request) {
		id, ok := pathID(w, r, true)
		if !ok || !allowed(w, r, id.TenantID) {
			return
		}
		info, ok := tls.Get(id)
		if !ok {
			managerError(w, id, manager.ErrNotFound)
			return
		}
		writeJSON(w, http.StatusOK, info)
	})
	mux.HandleFunc("PATCH /v1/tenant/{tenant_id}/timeline/{timeline_id}", func(w http.ResponseWriter, r *http.Request) {
		id, ok := pathID(w, r, true)
		if !ok || !allowed(w, r, "") {
			return
		}
		var req PatchRequest
		if !decode(w, r, &req) {
			return
		}
		info, err := tls.SetUpstream(id, req.Upstream)
		if err != nil {
			managerError(w, id, err)
			return
		}
		writeJSON(w, http.StatusOK, info)
	})
	mux.HandleFunc("POST /v1/tenant/{tenant_id}/timeline/{timeline_id}/detach", func(w http.ResponseWriter, r *http.Request) {
		id, ok := pathID(w, r, true)
		if !ok || !allowed(w, r, "") {
			return
		}
		info, err := tls.Detach(id)
		if err != nil {
			managerError(w, id, err)
			return
		}
		writeJSON(w, http.StatusOK, info)
	})
	mux.HandleFunc("DELETE /v1/tenant/{tenant_id}/timeline/{timeline_id}", func(w http.ResponseWriter, r *http.Request) {
		id, ok := pathID(w, r, true)
		if !ok || !allowed(w, r, "") {
			return
		}
		archive := false
		if v := r.URL.Query().Get("archive"); v != "" {
			b, err := strconv.ParseBool(v)
			if err != nil {
				writeError(w, http.StatusBadRequest, "invalid archive=%q: want true or false", v)
				return
			}
			archive = b
		}
		if err := tls.Delete(r.Context(), id, archive); err != nil {
			managerError(w, id, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"deleted": id.TenantID + "/" + id.TimelineID})
	})
}
