// Package metrics defines the Prometheus collectors of a safekeeper process.
// The collectors are created against an injected registry; nothing is
// registered globally.
package metrics
