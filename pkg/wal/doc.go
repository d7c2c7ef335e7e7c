// Package wal owns the facts about PostgreSQL's write-ahead log format as it
// appears on disk and over the replication wire: LSNs and their text form,
// segment and timeline history file names, XLOG page and record headers,
// CRC-32C record checksums, the scan that finds the end of valid WAL in a
// segment, and the parsing of timeline history files.
//
// Everything here follows docs/protocol.md §5 (PostgreSQL 15 to 18). WAL files
// are in the server's native byte order; this package assumes little-endian,
// which is what x86-64 and arm64 servers write.
//
// The package is pure: it does no logging, no file handling of its own and
// keeps no mutable package state, so all functions are safe for concurrent
// use. Test helpers that generate valid synthetic WAL live in the sub-package
// waltest.
package wal
