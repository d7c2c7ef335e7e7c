package feedback

import "encoding/binary"

// StandbyStatusLen is the exact size of a standby status update payload,
// type byte included.
const StandbyStatusLen = 34

// StandbyStatus is a standby status update ('r'). LSNs of 0 mean "not
// reported". SendTime is microseconds since 2000-01-01 UTC.
type StandbyStatus struct {
	Write, Flush, Apply uint64
	SendTime            int64
	ReplyRequested      bool
}

// ParseStandbyStatus decodes a standby status update. b must be at least
// StandbyStatusLen bytes starting with 'r' (more are ignored). A non-zero reply-requested byte
// is true, as in PostgreSQL.
func ParseStandbyStatus(b []byte) (StandbyStatus, error) {
	if err := checkFixed(b, KindStandbyStatus, StandbyStatusLen); err != nil {
		return StandbyStatus{}, err
	}
	b = b[:StandbyStatusLen]
	return StandbyStatus{
		Write:          binary.BigEndian.Uint64(b[1:9]),
		Flush:          binary.BigEndian.Uint64(b[9:17]),
		Apply:          binary.BigEndian.Uint64(b[17:25]),
		SendTime:       int64(binary.BigEndian.Uint64(b[25:33])),
		ReplyRequested: b[33] != 0,
	}, nil
}

// AppendStandbyStatus appends the encoding of s to dst.
func AppendStandbyStatus(dst []byte, s StandbyStatus) []byte {
	dst = append(dst, byte(KindStandbyStatus))
	dst = binary.BigEndian.AppendUint64(dst, s.Write)
	dst = binary.BigEndian.AppendUint64(dst, s.Flush)
	dst = binary.BigEndian.AppendUint64(dst, s.Apply)
	dst = binary.BigEndian.AppendUint64(dst, uint64(s.SendTime))
	return append(dst, boolByte(s.ReplyRequested))
}

func boolByte(v bool) byte {
	if v {
		return 1
	}
	return 0
}
