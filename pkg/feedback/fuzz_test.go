package feedback_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/pgsafekeeper/safekeeper/pkg/feedback"
	"github.com/pgsafekeeper/safekeeper/pkg/pgerr"
)

// checkErr asserts the error contract shared by all parsers: a 08P01
// *pgerr.Error, matching ErrUnknownType exactly when the type byte is wrong.
func checkErr(t *testing.T, k feedback.Kind, b []byte, err error) {
	t.Helper()
	pe := pgerr.As(err)
	if pe == nil || pe.Code != pgerr.ProtocolViolation || pe.Severity != pgerr.SeverityError {
		t.Fatalf("parse(%q): error %v is not an ERROR 08P01 *pgerr.Error", b, err)
	}
	wrongType := len(b) > 0 && b[0] != byte(k)
	if errors.Is(err, feedback.ErrUnknownType) != wrongType {
		t.Fatalf("parse(%q): errors.Is(ErrUnknownType) = %v, wrong type byte = %v", b, !wrongType, wrongType)
	}
}

func FuzzParseStandbyStatus(f *testing.F) {
	f.Add(feedback.AppendStandbyStatus(nil, feedback.StandbyStatus{Write: 0x600000, ReplyRequested: true}))
	f.Add(withType('r', 33))
	f.Add(withType('r', 35))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := feedback.ParseStandbyStatus(b)
		if err != nil {
			checkErr(t, feedback.KindStandbyStatus, b, err)
			return
		}
		if len(b) < feedback.StandbyStatusLen || b[0] != 'r' {
			t.Fatalf("accepted %d bytes starting %q", len(b), b[0])
		}
		// Bytes past the layout are ignored, as PostgreSQL ignores them.
		enc := feedback.AppendStandbyStatus(nil, s)
		if b[33] <= 1 && !bytes.Equal(enc, b[:feedback.StandbyStatusLen]) {
			t.Fatalf("re-encoded %x, input %x", enc, b)
		}
		s2, err := feedback.ParseStandbyStatus(enc)
		if err != nil || s2 != s {
			t.Fatalf("re-parse: %+v, %v; want %+v", s2, err, s)
		}
	})
}

func FuzzParseHotStandby(f *testing.F) {
	f.Add(feedback.AppendHotStandby(nil, feedback.HotStandby{SendTime: 1, Xmin: 1000, XminEpoch: 1}))
	f.Add(withType('h', 24))
	f.Add(withType('h', 26))
	f.Add([]byte{'r'})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := feedback.ParseHotStandby(b)
		if err != nil {
			checkErr(t, feedback.KindHotStandby, b, err)
			return
		}
		if len(b) < feedback.HotStandbyLen || b[0] != 'h' {
			t.Fatalf("accepted %d bytes starting %q", len(b), b[0])
		}
		enc := feedback.AppendHotStandby(nil, h)
		if !bytes.Equal(enc, b[:feedback.HotStandbyLen]) {
			t.Fatalf("re-encoded %x, input %x", enc, b)
		}
		h2, err := feedback.ParseHotStandby(enc)
		if err != nil || h2 != h {
			t.Fatalf("re-parse: %+v, %v; want %+v", h2, err, h)
		}
	})
}

func FuzzParsePageserver(f *testing.F) {
	f.Add(feedback.AppendPageserver(nil, feedback.Pageserver{LastReceivedLSN: 0x1000, ShardNumber: 1, CorruptionDetected: true}))
	f.Add(zmsg(kv("unknown", []byte("v")), kv("ps_applylsn", u64(7))))
	f.Add(zmsg(kv("shard_number", u64(1))))
	f.Add(cat('z', u64(0), 1, "foo", 0, i32(-1)))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := feedback.ParsePageserver(b)
		if err != nil {
			checkErr(t, feedback.KindPageserver, b, err)
			return
		}
		enc := feedback.AppendPageserver(nil, p)
		p2, err := feedback.ParsePageserver(enc)
		if err != nil || p2 != p {
			t.Fatalf("re-parse: %+v, %v; want %+v", p2, err, p)
		}
		// Encoding is canonical: encode(parse(encode(p))) == encode(p).
		if enc2 := feedback.AppendPageserver(nil, p2); !bytes.Equal(enc2, enc) {
			t.Fatalf("encoding not stable: %x vs %x", enc2, enc)
		}
	})
}
