// Package retention removes a timeline's local WAL once every holder has
// released it. The horizon is the oldest of:
//
//   - the archived position (backup_lsn), when an archive is configured;
//   - the restart position of every replication slot that is not lost;
//   - --wal-keep-size behind the durable end of WAL;
//   - what connected pageserver-style consumers still need (their
//     remote_consistent_lsn from 'z' feedback);
//   - the start of the segment holding the durable end, which is never
//     removed.
//
// Segments entirely before the horizon are removed through
// timeline.RemoveBefore, which records the new local start in the control
// file before unlinking anything. The holder that sets the horizon is
// reported (held_by), so an operator can see why WAL is kept.
package retention
