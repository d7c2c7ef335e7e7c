// Package walstore owns a timeline's files on disk: the WAL segment files
// (named exactly as PostgreSQL names them, the one being written carrying a
// ".partial" suffix), the timeline history files, the control file, and the
// data directory lock.
//
// Durability rules it enforces:
//   - segment bytes are written with write(2) and made durable by Sync, one
//     fdatasync covering everything written so far (group commit);
//   - a segment is renamed from "<name>.partial" to "<name>" only after it is
//     complete and fsynced, and the directory is fsynced after the rename;
//   - the control file is replaced atomically: temp file, fsync, rename,
//     fsync directory; it carries a magic, a version and a CRC-32C;
//   - on open, Recover finds the true end of valid WAL by scanning page
//     headers and record CRCs of the last segment and truncates the rest;
//   - old segments are removed only after the control file records the new
//     first position (StartLSN); Open removes files a crash left below it,
//     so the directory never has a hole the control file claims is filled.
//
// The next segment is created, zero-filled and made durable (file and
// directory entry) in the background while the writer fills the current
// one, so that a commit's fdatasync writes data only; while the writer is
// catching up on a backlog (SetCatchingUp) the next segment is created
// empty instead and the writes extend it, so that each byte reaches the
// disk once.
//
// Dir is the one place that knows the layout of a timeline directory;
// Open runs the whole open sequence.
package walstore
