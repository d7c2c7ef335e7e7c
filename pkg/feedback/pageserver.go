package feedback

import (
	"bytes"
	"encoding/binary"
)

// pageserverHeaderLen is 'z', the u64 length and the u8 key count.
const pageserverHeaderLen = 10

// Keys of the pageserver feedback message, in the order the encoder writes
// them, with the length of their values.
const (
	keyCurrentTimelineSize = "current_timeline_size" // u64
	keyWriteLSN            = "ps_writelsn"           // u64: last_received_lsn
	keyFlushLSN            = "ps_flushlsn"           // u64: disk_consistent_lsn
	keyApplyLSN            = "ps_applylsn"           // u64: remote_consistent_lsn
	keyReplyTime           = "ps_replytime"          // i64: µs since 2000-01-01
	keyShardNumber         = "shard_number"          // u32, sent only if > 0
	keyCorruptionDetected  = "corruption_detected"   // u8, sent only if true
)

// Pageserver is Neon's pageserver feedback ('z'). Keys absent from the
// message leave their field zero.
type Pageserver struct {
	// CurrentTimelineSize is the logical timeline size (only shard 0 sends
	// a non-zero value).
	CurrentTimelineSize uint64
	// LastReceivedLSN (ps_writelsn) is the LSN ingested by the pageserver.
	LastReceivedLSN uint64
	// DiskConsistentLSN (ps_flushlsn) is persisted on the pageserver's disk.
	DiskConsistentLSN uint64
	// RemoteConsistentLSN (ps_applylsn) is persisted in remote storage.
	RemoteConsistentLSN uint64
	// ReplyTime (ps_replytime) is microseconds since 2000-01-01 UTC.
	ReplyTime          int64
	ShardNumber        uint32
	CorruptionDetected bool
}

// ParsePageserver decodes pageserver feedback. The header's u64 length is
// not checked (Neon's safekeeper ignores it too); instead the key list must
// end exactly at the end of b. A known key whose value has the wrong length
// is an error. A non-zero corruption_detected byte is true.
func ParsePageserver(b []byte) (Pageserver, error) {
	if len(b) == 0 {
		return Pageserver{}, errNoData()
	}
	if b[0] != byte(KindPageserver) {
		return Pageserver{}, unexpectedType(b[0])
	}
	if len(b) < pageserverHeaderLen {
		return Pageserver{}, errInsufficient()
	}
	nkeys := int(b[9])
	rest := b[pageserverHeaderLen:]
	var p Pageserver
	for range nkeys {
		nul := bytes.IndexByte(rest, 0)
		if nul < 0 {
			return Pageserver{}, protocolError(msgString)
		}
		key := rest[:nul]
		rest = rest[nul+1:]
		if len(rest) < 4 {
			return Pageserver{}, errInsufficient()
		}
		n := int32(binary.BigEndian.Uint32(rest))
		rest = rest[4:]
		if n < 0 || int64(n) > int64(len(rest)) {
			return Pageserver{}, errInsufficient()
		}
		val := rest[:n]
		rest = rest[n:]
		var want int
		switch string(key) {
		case keyCurrentTimelineSize, keyWriteLSN, keyFlushLSN, keyApplyLSN, keyReplyTime:
			want = 8
		case keyShardNumber:
			want = 4
		case keyCorruptionDetected:
			want = 1
		default:
			continue // unknown key: skipped
		}
		if len(val) != want {
			return Pageserver{}, keyLengthError(key, len(val), want)
		}
		switch string(key) {
		case keyCurrentTimelineSize:
			p.CurrentTimelineSize = binary.BigEndian.Uint64(val)
		case keyWriteLSN:
			p.LastReceivedLSN = binary.BigEndian.Uint64(val)
		case keyFlushLSN:
			p.DiskConsistentLSN = binary.BigEndian.Uint64(val)
		case keyApplyLSN:
			p.RemoteConsistentLSN = binary.BigEndian.Uint64(val)
		case keyReplyTime:
			p.ReplyTime = int64(binary.BigEndian.Uint64(val))
		case keyShardNumber:
			p.ShardNumber = binary.BigEndian.Uint32(val)
		case keyCorruptionDetected:
			p.CorruptionDetected = val[0] != 0
		}
	}
	if len(rest) != 0 {
		return Pageserver{}, errFormat()
	}
	return p, nil
}

func keyLengthError(key []byte, got, want int) error {
	return protocolError(msgFormat).WithDetail(
		"Pageserver feedback key %q has a value of %d bytes, expected %d.", key, got, want)
}

// AppendPageserver appends the encoding of p to dst. The five LSN, size and
// time keys are always written, in the order current_timeline_size,
// ps_writelsn, ps_flushlsn, ps_applylsn, ps_replytime; shard_number follows
// only if non-zero and corruption_detected only if true.
func AppendPageserver(dst []byte, p Pageserver) []byte {
	start := len(dst)
	nkeys := byte(5)
	if p.ShardNumber > 0 {
		nkeys++
	}
	if p.CorruptionDetected {
		nkeys++
	}
	dst = append(dst, byte(KindPageserver))
	dst = binary.BigEndian.AppendUint64(dst, 0) // length, filled in below
	dst = append(dst, nkeys)
	dst = appendKeyU64(dst, keyCurrentTimelineSize, p.CurrentTimelineSize)
	dst = appendKeyU64(dst, keyWriteLSN, p.LastReceivedLSN)
	dst = appendKeyU64(dst, keyFlushLSN, p.DiskConsistentLSN)
	dst = appendKeyU64(dst, keyApplyLSN, p.RemoteConsistentLSN)
	dst = appendKeyU64(dst, keyReplyTime, uint64(p.ReplyTime))
	if p.ShardNumber > 0 {
		dst = appendKey(dst, keyShardNumber, 4)
		dst = binary.BigEndian.AppendUint32(dst, p.ShardNumber)
	}
	if p.CorruptionDetected {
		dst = appendKey(dst, keyCorruptionDetected, 1)
		dst = append(dst, 1)
	}
	binary.BigEndian.PutUint64(dst[start+1:], uint64(len(dst)-start-9))
	return dst
}

func appendKey(dst []byte, key string, n int32) []byte {
	dst = append(dst, key...)
	dst = append(dst, 0)
	return binary.BigEndian.AppendUint32(dst, uint32(n))
}

func appendKeyU64(dst []byte, key string, v uint64) []byte {
	return binary.BigEndian.AppendUint64(appendKey(dst, key, 8), v)
}
