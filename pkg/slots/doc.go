// Package slots owns a timeline's physical replication slots: creation and
// dropping with PostgreSQL's names, errors and SQLSTATEs, activation by one
// streaming connection at a time, restart positions that follow the
// consumer's flush feedback, persistence of permanent slots (a checksummed
// state file replaced atomically), and the removal horizon they impose on
// local WAL: the oldest restart position among slots that are not lost.
//
// A slot is lost when it is further behind the end of WAL than
// --max-slot-wal-keep-size, or behind the oldest WAL any tier still holds.
// Lost slots are reported, never silently kept or dropped.
package slots
