// Package manager owns the set of timelines a safekeeper process hosts:
// their definitions (which upstream feeds each one), persisted in the
// timeline's directory so that they come back after a restart; opening
// every timeline found in the data directory at start; running each one
// under its own restart loop, so that a timeline that fails (an upstream
// that refuses, an unreadable directory, a failed fsync) is retried alone
// and never stops another; and the run-time operations of the HTTP API:
// create or attach, change the upstream, detach, delete.
//
// The timelines that are running are published in a supervisor.Registry,
// which the walsender resolves consumers against.
package manager
