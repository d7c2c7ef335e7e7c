package feedback

import (
	"errors"
	"fmt"

	"github.com/pgsafekeeper/safekeeper/pkg/pgerr"
)

// ErrUnknownType is matched (errors.Is) by the error returned when a payload
// starts with a type byte that Classify does not know, or that is not the one
// the called parser decodes. The returned error is also a *pgerr.Error
// (pgerr.As) with SQLSTATE 08P01 and PostgreSQL's text
// `unexpected message type "<c>"`.
var ErrUnknownType = errors.New("feedback: unknown message type")

// PostgreSQL's message texts (pqformat.c, walsender.c).
const (
	msgNoData       = "no data left in message"
	msgInsufficient = "insufficient data left in message"
	msgFormat       = "invalid message format"
	msgString       = "invalid string in message"
)

func protocolError(msg string) *pgerr.Error {
	return pgerr.New(pgerr.ProtocolViolation, "%s", msg)
}

func errNoData() error       { return protocolError(msgNoData) }
func errInsufficient() error { return protocolError(msgInsufficient) }
func errFormat() error       { return protocolError(msgFormat) }

// typeError is the error for an unexpected type byte. It unwraps to both the
// *pgerr.Error (for pgerr.As) and ErrUnknownType (for errors.Is).
type typeError struct {
	pg *pgerr.Error
}

func (e *typeError) Error() string   { return e.pg.Error() }
func (e *typeError) Unwrap() []error { return []error{e.pg, ErrUnknownType} }

// unexpectedType builds the error for type byte c. Printable ASCII is shown
// as itself, as PostgreSQL's "%c" does; other bytes are shown as \xNN so the
// text never carries a NUL or invalid UTF-8 into an ErrorResponse.
func unexpectedType(c byte) error {
	var shown string
	if c >= 0x20 && c < 0x7f {
		shown = string(rune(c))
	} else {
		shown = fmt.Sprintf(`\x%02x`, c)
	}
	return &typeError{
		pg: pgerr.New(pgerr.ProtocolViolation, "unexpected message type \"%s\"", shown),
	}
}

// checkFixed validates the type byte and the length of a fixed-size
// message. Bytes past the layout are ignored: PostgreSQL's walsender reads
// the fields it knows and never checks that the message ends there.
func checkFixed(b []byte, k Kind, size int) error {
	switch {
	case len(b) == 0:
		return errNoData()
	case b[0] != byte(k):
		return unexpectedType(b[0])
	case len(b) < size:
		return errInsufficient()
	}
	return nil
}
