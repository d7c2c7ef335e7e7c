// Package walfetch owns `safekeeper wal-fetch`, a restore_command helper:
// given the name of a WAL file PostgreSQL asks for (restore_command's %f,
// a segment such as 000000010000000000000003 or a history file such as
// 00000002.history), it finds the file in a list of sources, in order, and
// writes it atomically where PostgreSQL wants it (%p).
//
// Sources:
//
//   - ArchiveSource: the WAL archive (pkg/archive over pkg/objstore). Every
//     object is verified against what it records about itself: checksum,
//     size, segment size, and the system identifier and segment size the
//     caller expects when it knows them.
//   - SafekeeperSource: safekeepers (or any walsender) over the physical
//     replication protocol, for WAL that is not archived yet. Each one is
//     asked IDENTIFY_SYSTEM and SHOW wal_segment_size; the one holding the
//     most WAL is asked first. A history file comes from TIMELINE_HISTORY;
//     a segment from START_REPLICATION PHYSICAL <segment start> TIMELINE
//     <tli>, collected until the segment end or until everything the server
//     holds has arrived. The segment holding a server's end of WAL is
//     returned as its durable bytes followed by zeros up to the segment
//     size, which recovery reads as the end of WAL in that segment.
//
// Errors: a source that answered that it does not hold the file returns an
// error wrapping ErrNotFound; any other error means it could not answer
// (unreachable, refused, corrupt object, misconfiguration). Fetcher.Fetch
// returns ErrNotFound only when every source answered "not there"; any
// other failure is retried a few times and then returned as it is. The
// command maps ErrNotFound to exit status 1 (PostgreSQL ends recovery, or
// switches to streaming) and every other error to 126 (PostgreSQL aborts
// recovery instead of ending it at the wrong point).
//
// WriteFile writes the result: a temporary file in the target's directory,
// written, fsynced, renamed over the target, and the directory fsynced.
package walfetch
