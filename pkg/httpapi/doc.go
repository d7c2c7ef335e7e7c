// Package httpapi serves the operator's HTTP endpoints: GET /v1/status
// (JSON state of every timeline, its upstream, archive, consumers and
// slots), GET /metrics (Prometheus), GET /healthz (liveness) and GET
// /readyz (200, or 503 with the reasons the node is not doing its job).
package httpapi
