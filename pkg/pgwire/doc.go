// Package pgwire owns the server side of PostgreSQL's frontend/backend
// protocol up to the point where commands run: reading the untyped
// pre-startup packets (SSLRequest, GSSENCRequest, CancelRequest,
// StartupMessage) with PostgreSQL's exact length and layout rules, parsing
// the startup parameters a replication client sends, and encoding errors and
// simple result sets. It does no I/O beyond the reader and writer it is
// given and keeps no state.
package pgwire
