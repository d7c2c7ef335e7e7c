package pgwire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/pgsafekeeper/safekeeper/pkg/pgerr"
)

// Pre-startup request codes.
const (
	ProtocolV3      = 3 << 16
	SSLRequestCode  = 1234<<16 | 5679
	GSSENCRequest   = 1234<<16 | 5680
	CancelRequest   = 1234<<16 | 5678
	MaxStartupBytes = 10000 // PostgreSQL's MAX_STARTUP_PACKET_LENGTH
)

// Packet is one pre-startup packet.
type Packet struct {
	Code   uint32            // ProtocolV3-style version, or one of the request codes
	Params map[string]string // StartupMessage parameters
	Keys   []string          // parameter names in the order sent
	// CancelPID and CancelKey are a CancelRequest's process ID and secret
	// key (the BackendKeyData it quotes).
	CancelPID uint32
	CancelKey []byte
}

// Major and Minor return the protocol version of a StartupMessage.
func (p Packet) Major() uint32 { return p.Code >> 16 }
func (p Packet) Minor() uint32 { return p.Code & 0xFFFF }

// ErrCloseSilently marks failures where PostgreSQL logs a COMMERROR and
// closes the connection without sending anything.
var ErrCloseSilently = errors.New("close connection without response")

// ReadPacket reads one untyped packet (Int32 length, Int32 code, body).
// Framing errors wrap ErrCloseSilently, as PostgreSQL sends nothing for them;
// layout errors are *pgerr.Error (FATAL) to send before closing.
func ReadPacket(r io.Reader) (Packet, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		if errors.Is(err, io.EOF) {
			// A connection closed before sending anything (a port probe).
			return Packet{}, fmt.Errorf("%w: %w", ErrCloseSilently, io.EOF)
		}
		return Packet{}, fmt.Errorf("%w: incomplete startup packet", ErrCloseSilently)
	}
	n := int64(binary.BigEndian.Uint32(hdr[:])) - 4
	if n < 4 || n > MaxStartupBytes {
		return Packet{}, fmt.Errorf("%w: invalid length of startup packet", ErrCloseSilently)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return Packet{}, fmt.Errorf("%w: incomplete startup packet", ErrCloseSilently)
	}
	p := Packet{Code: binary.BigEndian.Uint32(body)}
	switch p.Code {
	case CancelRequest:
		if len(body) >= 8 {
			p.CancelPID = binary.BigEndian.Uint32(body[4:])
			p.CancelKey = body[8:]
		}
		return p, nil
	case SSLRequestCode, GSSENCRequest:
		return p, nil
	}
	if p.Major() != 3 {
		return p, pgerr.Fatal(pgerr.FeatureNotSupported,
			"unsupported frontend protocol %d.%d: server supports 3.0 to 3.0", p.Major(), p.Minor())
	}
	params, keys, err := parseParams(body[4:])
	if err != nil {
		return p, err
	}
	p.Params, p.Keys = params, keys
	return p, nil
}

// parseParams parses NUL-terminated name/value pairs ending with an empty
// name exactly at the last byte.
func parseParams(b []byte) (map[string]string, []string, error) {
	params := make(map[string]string)
	var keys []string
	off := 0
	for off < len(b) {
		name, ok := cstring(b[off:])
		if !ok {
			break
		}
		if name == "" {
			break
		}
		voff := off + len(name) + 1
		if voff >= len(b) {
			break
		}
		val, ok := cstring(b[voff:])
		if !ok {
			off = len(b)
			break
		}
		if _, dup := params[name]; !dup {
			keys = append(keys, name)
		}
		params[name] = val
		off = voff + len(val) + 1
	}
	if off != len(b)-1 || b[len(b)-1] != 0 {
		return nil, nil, pgerr.Fatal(pgerr.ProtocolViolation,
			"invalid startup packet layout: expected terminator as last byte")
	}
	return params, keys, nil
}

func cstring(b []byte) (string, bool) {
	for i, c := range b {
		if c == 0 {
			return string(b[:i]), true
		}
	}
	return "", false
}

// ReplicationMode is the kind of connection the replication parameter asks for.
type ReplicationMode int

const (
	NotReplication ReplicationMode = iota
	PhysicalReplication
	LogicalReplication
)

// ParseReplication applies PostgreSQL's rules for the replication startup
// parameter: exactly "database" is logical, otherwise a boolean where any
// unique prefix of true/yes/on/false/no/off (case-insensitive), 1 or 0 is
// accepted.
func ParseReplication(v string) (ReplicationMode, error) {
	if v == "database" {
		return LogicalReplication, nil
	}
	if b, ok := ParseBool(v); ok {
		if b {
			return PhysicalReplication, nil
		}
		return NotReplication, nil
	}
	return NotReplication, pgerr.Fatal(pgerr.InvalidParameterValue,
		"invalid value for parameter \"replication\": \"%s\"", v).
		WithHint("Valid values are: \"false\", 0, \"true\", 1, \"database\".")
}

// ParseBool implements PostgreSQL's parse_bool.
func ParseBool(v string) (bool, bool) {
	l := strings.ToLower(v)
	if l == "" {
		return false, false
	}
	switch l[0] {
	case 't':
		return true, strings.HasPrefix("true", l)
	case 'y':
		return true, strings.HasPrefix("yes", l)
	case 'f':
		return false, strings.HasPrefix("false", l)
	case 'n':
		return false, strings.HasPrefix("no", l)
	case 'o':
		if len(l) < 2 {
			return false, false
		}
		if strings.HasPrefix("on", l) {
			return true, true
		}
		if strings.HasPrefix("off", l) {
			return false, true
		}
		return false, false
	case '1':
		return true, l == "1"
	case '0':
		return false, l == "0"
	}
	return false, false
}

// ParseOptions splits a libpq "options" value ("-c a=b -c c=d", "--a=b",
// "-ca=b", and Neon's "-c a=b c=d") into settings. Backslash escapes a
// space, as in PostgreSQL. A setting given twice keeps its last value.
func ParseOptions(s string) map[string]string {
	out := make(map[string]string)
	for _, kv := range ParseOptionList(s) {
		out[kv[0]] = kv[1]
	}
	return out
}

// ParseOptionList is ParseOptions keeping the settings' order, in which
// PostgreSQL applies them.
func ParseOptionList(s string) [][2]string {
	var words []string
	var cur strings.Builder
	esc, in := false, false
	for _, r := range s {
		switch {
		case esc:
			cur.WriteRune(r)
			esc, in = false, true
		case r == '\\':
			esc = true
		case r == ' ' || r == '\t' || r == '\n' || r == '\r':
			if in {
				words = append(words, cur.String())
				cur.Reset()
				in = false
			}
		default:
			cur.WriteRune(r)
			in = true
		}
	}
	if in {
		words = append(words, cur.String())
	}
	var out [][2]string
	for i := 0; i < len(words); i++ {
		w := words[i]
		var kv string
		switch {
		case w == "-c" && i+1 < len(words):
			i++
			kv = words[i]
		case strings.HasPrefix(w, "-c"):
			kv = w[2:]
		case strings.HasPrefix(w, "--"):
			kv = w[2:]
		case !strings.HasPrefix(w, "-"):
			// Neon's walproposer and pageserver send one -c followed by
			// several key=value words: "-c timeline_id=... tenant_id=...".
			kv = w
		default:
			continue
		}
		if k, v, ok := strings.Cut(kv, "="); ok {
			out = append(out, [2]string{strings.ReplaceAll(k, "-", "_"), v})
		}
	}
	return out
}
