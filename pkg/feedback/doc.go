// Package feedback decodes and encodes the CopyData payloads that a WAL
// consumer sends back to the safekeeper while it is streaming:
//
//	'r'  standby status update (34 bytes, PostgreSQL walreceiver and pg_receivewal)
//	'h'  hot standby feedback  (25 bytes, PostgreSQL walreceiver)
//	'z'  pageserver feedback   (Neon key/value message)
//
// The payload passed to the parsers is the CopyData body, type byte included
// (the bytes after 'd' and the Int32 length). All integers are big-endian and
// timestamps are microseconds since 2000-01-01 00:00:00 UTC.
//
// # Contract
//
// This is a codec package: it does no I/O, no logging and keeps no state.
// Parsers refuse short messages, never panic on any input, never retain
// the input slice and allocate nothing when they succeed (an error value is
// allocated only on the failure path). Encoders append to dst and allocate
// only when dst lacks capacity.
//
// # Errors
//
// Every parse error is a *pgerr.Error with SQLSTATE 08P01
// (pgerr.ProtocolViolation), using PostgreSQL's message texts:
//
//	empty payload                         "no data left in message"
//	shorter than the layout               "insufficient data left in message"
//	'z' longer than its keys              "invalid message format"
//	'z' key without NUL terminator        "invalid string in message"
//	wrong type byte                       `unexpected message type "%c"`
//
// The last one also matches errors.Is(err, ErrUnknownType); a type byte
// outside printable ASCII is shown as \xNN. A known 'z' key with a value of
// the wrong length gives "invalid message format" with a DETAIL naming the
// key. Retrieve the SQLSTATE and text with pgerr.As.
//
// Bytes after the fields of an 'r' or 'h' message are ignored, as
// PostgreSQL's walsender ignores them: it reads the fields it knows and
// never checks that the message ends there.
//
// # Layouts
//
// Standby status update ('r'):
//
//	off size
//	0   1    'r'
//	1   8    write LSN
//	9   8    flush LSN (0 = not reported)
//	17  8    apply LSN (0 = not reported)
//	25  8    client send time
//	33  1    reply requested (non-zero = true)
//
// Hot standby feedback ('h'):
//
//	0   1    'h'
//	1   8    client send time
//	9   4    xmin
//	13  4    xmin epoch
//	17  4    catalog_xmin
//	21  4    catalog_xmin epoch
//
// Pageserver feedback ('z'):
//
//	0   1    'z'
//	1   8    length of what follows (written by the encoder, not checked by
//	         the parser, as in Neon's safekeeper)
//	9   1    number of keys
//	10  ...  per key: NUL-terminated name, Int32 value length, value
//
// Known keys and their value lengths: current_timeline_size (8),
// ps_writelsn (8), ps_flushlsn (8), ps_applylsn (8), ps_replytime (8),
// shard_number (4), corruption_detected (1). Unknown keys are skipped using
// their length; a known key with another length is an error. When a key
// repeats, the last value wins.
package feedback
