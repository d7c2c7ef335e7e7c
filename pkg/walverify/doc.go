// Package walverify owns `safekeeper wal-verify`: it checks a WAL archive
// (pkg/archive over pkg/objstore) timeline by timeline and reports what a
// restore from it would run into.
//
// For each timeline it lists the segments and history files and reports
// their counts, the first and last segment, the history files, gaps (a
// segment number between the first and the last archived that no
// timeline's segment covers), duplicates (one segment stored both plain
// and zstd-compressed), keys it does not recognise, timelines with
// segments but without their history file, and every object that fails
// verification: each one is downloaded (a few at once) and checked
// against its recorded checksum and size, and against the system
// identifier and segment size of the timeline's first segment, so objects
// that disagree with the others are reported by name. History files must
// also parse.
//
// The segment size, needed to number segments, is read from the metadata
// of the first segment object.
package walverify
