// Package supervisor runs each hosted timeline. A Supervisor opens the
// timeline's WAL, its replication slots and its consumer registry, and
// starts and stops the timeline's background services under one context:
// the upstream receiver, the offloader that archives finished segments,
// and retention, which removes local WAL every holder has released. It is
// also the walsender's view of the timeline: positions, wake-ups, history,
// and readers over every tier (local files, then the archive).
//
// The Registry holds the supervisors of a process, keyed by timeline id.
package supervisor
