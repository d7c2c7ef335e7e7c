package feedback

import "encoding/binary"

// HotStandbyLen is the exact size of a hot standby feedback payload, type
// byte included.
const HotStandbyLen = 25

// HotStandby is hot standby feedback ('h'). Xmin and CatalogXmin of 0 mean
// "not set"; both 0 means the standby has turned feedback off. SendTime is
// microseconds since 2000-01-01 UTC.
type HotStandby struct {
	SendTime                      int64
	Xmin, XminEpoch               uint32
	CatalogXmin, CatalogXminEpoch uint32
}

// FullXmin returns xmin as a 64-bit FullTransactionId (epoch<<32 | xid), or
// 0 if xmin is not set.
func (h HotStandby) FullXmin() uint64 { return fullXid(h.XminEpoch, h.Xmin) }

// FullCatalogXmin returns catalog_xmin as a 64-bit FullTransactionId, or 0
// if catalog_xmin is not set.
func (h HotStandby) FullCatalogXmin() uint64 { return fullXid(h.CatalogXminEpoch, h.CatalogXmin) }

func fullXid(epoch, xid uint32) uint64 {
	if xid == 0 {
		return 0
	}
	return uint64(epoch)<<32 | uint64(xid)
}

// ParseHotStandby decodes hot standby feedback. b must be at least
// HotStandbyLen bytes starting with 'h' (more are ignored).
func ParseHotStandby(b []byte) (HotStandby, error) {
	if err := checkFixed(b, KindHotStandby, HotStandbyLen); err != nil {
		return HotStandby{}, err
	}
	b = b[:HotStandbyLen]
	return HotStandby{
		SendTime:         int64(binary.BigEndian.Uint64(b[1:9])),
		Xmin:             binary.BigEndian.Uint32(b[9:13]),
		XminEpoch:        binary.BigEndian.Uint32(b[13:17]),
		CatalogXmin:      binary.BigEndian.Uint32(b[17:21]),
		CatalogXminEpoch: binary.BigEndian.Uint32(b[21:25]),
	}, nil
}

// AppendHotStandby appends the encoding of h to dst.
func AppendHotStandby(dst []byte, h HotStandby) []byte {
	dst = append(dst, byte(KindHotStandby))
	dst = binary.BigEndian.AppendUint64(dst, uint64(h.SendTime))
	dst = binary.BigEndian.AppendUint32(dst, h.Xmin)
	dst = binary.BigEndian.AppendUint32(dst, h.XminEpoch)
	dst = binary.BigEndian.AppendUint32(dst, h.CatalogXmin)
	return binary.BigEndian.AppendUint32(dst, h.CatalogXminEpoch)
}
