// Package httpapi serves the operator's HTTP endpoints: GET /v1/status
// (JSON state of every timeline, its upstream, archive, consumers and
// slots), GET /metrics (Prometheus) and GET /healthz.
package httpapi
