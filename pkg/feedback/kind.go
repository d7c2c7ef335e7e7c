package feedback

// Kind is the type byte that starts a consumer CopyData payload.
type Kind byte

// Message kinds a consumer may send while streaming.
const (
	KindStandbyStatus Kind = 'r' // standby status update
	KindHotStandby    Kind = 'h' // hot standby feedback
	KindPageserver    Kind = 'z' // Neon pageserver feedback
)

// String returns a human-readable name for k.
func (k Kind) String() string {
	switch k {
	case KindStandbyStatus:
		return "standby status update"
	case KindHotStandby:
		return "hot standby feedback"
	case KindPageserver:
		return "pageserver feedback"
	}
	return "unknown feedback message"
}

// Classify returns the kind of the payload b from its first byte, without
// validating the rest. An empty payload is an error; an unknown type byte
// gives an error that matches ErrUnknownType.
func Classify(b []byte) (Kind, error) {
	if len(b) == 0 {
		return 0, errNoData()
	}
	switch k := Kind(b[0]); k {
	case KindStandbyStatus, KindHotStandby, KindPageserver:
		return k, nil
	}
	return 0, unexpectedType(b[0])
}
