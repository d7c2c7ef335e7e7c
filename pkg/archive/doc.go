// Package archive is the layout of a timeline's WAL archive on top of an
// object store (pkg/objstore): what an archived segment or history file is
// called, how it is compressed, what it records about itself, and how it
// is checked when it comes back.
//
// Layout, relative to the store root (the s3://bucket/prefix or the
// file:// directory):
//
//	<tenant_id>/<timeline_id>/wal/<segment name>[.zst]   a complete segment
//	<tenant_id>/<timeline_id>/wal/<TLI>.history           a history file
//
// Segment and history names are PostgreSQL's (000000010000000000000003,
// 00000002.history). Segments are zstd-compressed (klauspost/compress) when
// the archive is configured so, and carry the ".zst" suffix then; history
// files are stored as they are. Every object records, as object metadata:
//
//	sk-sha256        SHA-256 of the uncompressed content, hex
//	sk-size          uncompressed size in bytes
//	sk-system-id     the cluster's database system identifier
//	sk-wal-seg-size  the cluster's WAL segment size
//	sk-compression   "zstd" or "none"
//
// Objects are never overwritten. Put uses the store's create-if-absent;
// when a name (under either compression suffix) already exists, its
// checksum is compared with ours: equal means the object is already there
// (a retry after a lost response), different is ErrConflict, which the
// offloader treats as a reason to stop, never to overwrite.
//
// An archive is deleted only as a whole and only on an operator's explicit
// request (deleting the timeline and asking for its archive to go too):
// DeleteAll removes every object below <tenant_id>/<timeline_id>/wal/, in
// key order, and nothing else; other timelines in the same store are not
// touched.
//
// Reads verify everything the object records: checksum and size of the
// decompressed content, and system identifier and segment size against
// what the caller expects.
package archive
