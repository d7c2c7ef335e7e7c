package feedback_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/pgsafekeeper/safekeeper/pkg/feedback"
	"github.com/pgsafekeeper/safekeeper/pkg/pgerr"
)

// wantProtocolError checks that err is a 08P01 *pgerr.Error with message msg.
func wantProtocolError(t *testing.T, err error, msg string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got nil error, want %q", msg)
	}
	pe := pgerr.As(err)
	if pe == nil {
		t.Fatalf("error %v (%T) is not a *pgerr.Error", err, err)
	}
	if pe.Code != pgerr.ProtocolViolation || pe.Severity != pgerr.SeverityError || pe.Message != msg {
		t.Fatalf("got %s %s %q, want ERROR 08P01 %q", pe.Severity, pe.Code, pe.Message, msg)
	}
}

func repeat(c byte, n int) []byte { return bytes.Repeat([]byte{c}, n) }

func withType(t byte, n int) []byte {
	b := make([]byte, n)
	if n > 0 {
		b[0] = t
	}
	return b
}

// cat concatenates parts: []byte, string, byte, rune or int (one byte each).
func cat(parts ...any) []byte {
	var b []byte
	for _, p := range parts {
		switch v := p.(type) {
		case []byte:
			b = append(b, v...)
		case string:
			b = append(b, v...)
		case byte:
			b = append(b, v)
		case rune:
			b = append(b, byte(v))
		case int:
			b = append(b, byte(v))
		default:
			panic("cat: bad part")
		}
	}
	return b
}

func u64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }
func u32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
func i32(v int32) []byte  { return binary.BigEndian.AppendUint32(nil, uint32(v)) }

func TestParseStandbyStatusKnown(t *testing.T) {
	// 'r' write=0/600000 flush=0 apply=0 reply=1, as in protocol.md §9.
	b := cat('r', u64(0x600000), u64(0), u64(0), u64(0x0002_b0c1_d2e3_f405), 1)
	if len(b) != feedback.StandbyStatusLen {
		t.Fatalf("fixture is %d bytes", len(b))
	}
	got, err := feedback.ParseStandbyStatus(b)
	if err != nil {
		t.Fatal(err)
	}
	want := feedback.StandbyStatus{Write: 0x600000, SendTime: 0x0002_b0c1_d2e3_f405, ReplyRequested: true}
	if got != want {
		t.Fatalf("got %+v, want %+v", got, want)
	}

	b = cat('r', u64(0xFFFF_FFFF_FFFF_FFFF), u64(0x1_0000_0000), u64(1), u64(1<<63), 0)
	got, err = feedback.ParseStandbyStatus(b)
	if err != nil {
		t.Fatal(err)
	}
	want = feedback.StandbyStatus{Write: ^uint64(0), Flush: 1 << 32, Apply: 1, SendTime: -1 << 63}
	if got != want {
		t.Fatalf("got %+v, want %+v", got, want)
	}

	// Any non-zero reply byte is true (PostgreSQL reads it as a bool byte).
	b[33] = 7
	if got, err = feedback.ParseStandbyStatus(b); err != nil || !got.ReplyRequested {
		t.Fatalf("reply byte 7: got %+v, %v", got, err)
	}
}

func TestParseStandbyStatusLengths(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []byte
		msg  string // "" = success
	}{
		{"nil", nil, "no data left in message"},
		{"empty", []byte{}, "no data left in message"},
		{"type only", []byte{'r'}, "insufficient data left in message"},
		{"33 bytes", withType('r', 33), "insufficient data left in message"},
		{"34 bytes", withType('r', 34), ""},
		// PostgreSQL ignores bytes after the fields.
		{"35 bytes", withType('r', 35), ""},
		{"100 bytes", withType('r', 100), ""},
		{"hot standby size", withType('r', 25), "insufficient data left in message"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := feedback.ParseStandbyStatus(tc.in)
			if tc.msg == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			wantProtocolError(t, err, tc.msg)
			if got != (feedback.StandbyStatus{}) {
				t.Fatalf("got non-zero value %+v with error", got)
			}
		})
	}
}

func TestParseHotStandbyKnown(t *testing.T) {
	b := cat('h', u64(123456789), u32(1000), u32(2), u32(900), u32(1))
	if len(b) != feedback.HotStandbyLen {
		t.Fatalf("fixture is %d bytes", len(b))
	}
	got, err := feedback.ParseHotStandby(b)
	if err != nil {
		t.Fatal(err)
	}
	want := feedback.HotStandby{SendTime: 123456789, Xmin: 1000, XminEpoch: 2, CatalogXmin: 900, CatalogXminEpoch: 1}
	if got != want {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	if x := got.FullXmin(); x != 2<<32|1000 {
		t.Fatalf("FullXmin = %#x", x)
	}
	if x := got.FullCatalogXmin(); x != 1<<32|900 {
		t.Fatalf("FullCatalogXmin = %#x", x)
	}
	// xid 0 is "not set", whatever the epoch.
	off := feedback.HotStandby{XminEpoch: 5, CatalogXminEpoch: 7}
	if off.FullXmin() != 0 || off.FullCatalogXmin() != 0 {
		t.Fatalf("unset xids: %#x %#x", off.FullXmin(), off.FullCatalogXmin())
	}
	max := feedback.HotStandby{Xmin: ^uint32(0), XminEpoch: ^uint32(0)}
	if max.FullXmin() != ^uint64(0) {
		t.Fatalf("max FullXmin = %#x", max.FullXmin())
	}
}

func TestParseHotStandbyLengths(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []byte
		msg  string
	}{
		{"empty", nil, "no data left in message"},
		{"type only", []byte{'h'}, "insufficient data left in message"},
		{"24 bytes", withType('h', 24), "insufficient data left in message"},
		{"25 bytes", withType('h', 25), ""},
		{"26 bytes", withType('h', 26), ""},
		{"standby size", withType('h', 34), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := feedback.ParseHotStandby(tc.in)
			if tc.msg == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			wantProtocolError(t, err, tc.msg)
		})
	}
}

func TestWrongType(t *testing.T) {
	parsers := map[string]func([]byte) error{
		"standby":    func(b []byte) error { _, err := feedback.ParseStandbyStatus(b); return err },
		"hot":        func(b []byte) error { _, err := feedback.ParseHotStandby(b); return err },
		"pageserver": func(b []byte) error { _, err := feedback.ParsePageserver(b); return err },
	}
	for name, parse := range parsers {
		for _, tc := range []struct {
			in  []byte
			msg string
		}{
			{withType('x', 34), `unexpected message type "x"`},
			{withType('w', 25), `unexpected message type "w"`},
			{[]byte{'k'}, `unexpected message type "k"`},
			{[]byte{0}, `unexpected message type "\x00"`},
			{[]byte{0xff, 1, 2}, `unexpected message type "\xff"`},
		} {
			err := parse(tc.in)
			wantProtocolError(t, err, tc.msg)
			if !errors.Is(err, feedback.ErrUnknownType) {
				t.Errorf("%s(%q): errors.Is(ErrUnknownType) = false", name, tc.in)
			}
		}
	}
	// Each parser refuses the other kinds' type bytes.
	if _, err := feedback.ParseStandbyStatus(withType('h', 34)); !errors.Is(err, feedback.ErrUnknownType) {
		t.Errorf("'h' to ParseStandbyStatus: %v", err)
	}
	if _, err := feedback.ParseHotStandby(withType('r', 25)); !errors.Is(err, feedback.ErrUnknownType) {
		t.Errorf("'r' to ParseHotStandby: %v", err)
	}
	if _, err := feedback.ParsePageserver(withType('r', 34)); !errors.Is(err, feedback.ErrUnknownType) {
		t.Errorf("'r' to ParsePageserver: %v", err)
	}
	// Length errors are not ErrUnknownType.
	if _, err := feedback.ParseStandbyStatus(withType('r', 33)); errors.Is(err, feedback.ErrUnknownType) {
		t.Errorf("length error matches ErrUnknownType")
	}
}

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		in   []byte
		want feedback.Kind
		msg  string
	}{
		{[]byte("r"), feedback.KindStandbyStatus, ""},
		{withType('r', 34), feedback.KindStandbyStatus, ""},
		{withType('h', 3), feedback.KindHotStandby, ""},
		{[]byte("z"), feedback.KindPageserver, ""},
		{nil, 0, "no data left in message"},
		{[]byte{}, 0, "no data left in message"},
		{[]byte("R"), 0, `unexpected message type "R"`},
		{[]byte("c"), 0, `unexpected message type "c"`},
		{[]byte("d....."), 0, `unexpected message type "d"`},
		{[]byte{'\n'}, 0, `unexpected message type "\x0a"`},
	} {
		got, err := feedback.Classify(tc.in)
		if tc.msg == "" {
			if err != nil || got != tc.want {
				t.Errorf("Classify(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
			}
			continue
		}
		wantProtocolError(t, err, tc.msg)
		if got != 0 {
			t.Errorf("Classify(%q) kind = %v with error", tc.in, got)
		}
		if isUnknown := errors.Is(err, feedback.ErrUnknownType); isUnknown != (len(tc.in) > 0) {
			t.Errorf("Classify(%q): errors.Is(ErrUnknownType) = %v", tc.in, isUnknown)
		}
	}
	if feedback.KindStandbyStatus.String() != "standby status update" || feedback.Kind('q').String() == "" {
		t.Error("Kind.String")
	}
}

func TestErrorText(t *testing.T) {
	_, err := feedback.Classify([]byte("Q"))
	if got, want := err.Error(), `ERROR: unexpected message type "Q" (SQLSTATE 08P01)`; got != want {
		t.Fatalf("Error() = %q, want %q", got, want)
	}
}

func TestStandbyStatusRoundTrip(t *testing.T) {
	for _, s := range []feedback.StandbyStatus{
		{},
		{Write: 0x900000, Flush: 0x900000, SendTime: 770000000000000},
		{Write: ^uint64(0), Flush: ^uint64(0) - 1, Apply: 1, SendTime: -1, ReplyRequested: true},
	} {
		b := feedback.AppendStandbyStatus(nil, s)
		if len(b) != feedback.StandbyStatusLen {
			t.Fatalf("encoded %d bytes", len(b))
		}
		got, err := feedback.ParseStandbyStatus(b)
		if err != nil || got != s {
			t.Fatalf("round trip %+v: got %+v, %v", s, got, err)
		}
	}
	// Byte-exact encoding, appended after a prefix.
	s := feedback.StandbyStatus{Write: 0x0102030405060708, Flush: 0x1112131415161718, Apply: 0x2122232425262728, SendTime: 0x3132333435363738, ReplyRequested: true}
	want := cat("pfx", 'r', u64(s.Write), u64(s.Flush), u64(s.Apply), u64(uint64(s.SendTime)), 1)
	if got := feedback.AppendStandbyStatus([]byte("pfx"), s); !bytes.Equal(got, want) {
		t.Fatalf("encoded %x, want %x", got, want)
	}
}

func TestHotStandbyRoundTrip(t *testing.T) {
	for _, h := range []feedback.HotStandby{
		{},
		{SendTime: 1, Xmin: 3, XminEpoch: 0, CatalogXmin: 0, CatalogXminEpoch: 0},
		{SendTime: -5, Xmin: ^uint32(0), XminEpoch: 1, CatalogXmin: 2, CatalogXminEpoch: ^uint32(0)},
	} {
		b := feedback.AppendHotStandby(nil, h)
		if len(b) != feedback.HotStandbyLen {
			t.Fatalf("encoded %d bytes", len(b))
		}
		got, err := feedback.ParseHotStandby(b)
		if err != nil || got != h {
			t.Fatalf("round trip %+v: got %+v, %v", h, got, err)
		}
	}
	h := feedback.HotStandby{SendTime: 0x0a0b0c0d0e0f1011, Xmin: 0x01020304, XminEpoch: 5, CatalogXmin: 0x0a0b0c0d, CatalogXminEpoch: 6}
	want := cat('h', u64(0x0a0b0c0d0e0f1011), u32(0x01020304), u32(5), u32(0x0a0b0c0d), u32(6))
	if got := feedback.AppendHotStandby(nil, h); !bytes.Equal(got, want) {
		t.Fatalf("encoded %x, want %x", got, want)
	}
}

func TestAppendNoAlloc(t *testing.T) {
	buf := make([]byte, 0, 512)
	p := feedback.Pageserver{CurrentTimelineSize: 1, ShardNumber: 2, CorruptionDetected: true}
	n := testing.AllocsPerRun(100, func() {
		b := feedback.AppendStandbyStatus(buf[:0], feedback.StandbyStatus{Write: 1})
		b = feedback.AppendHotStandby(b, feedback.HotStandby{Xmin: 1})
		_ = feedback.AppendPageserver(b, p)
	})
	if n != 0 {
		t.Fatalf("Append* allocated %v times with enough capacity", n)
	}
}

func TestParseNoAlloc(t *testing.T) {
	r := feedback.AppendStandbyStatus(nil, feedback.StandbyStatus{Write: 1})
	h := feedback.AppendHotStandby(nil, feedback.HotStandby{Xmin: 1})
	z := feedback.AppendPageserver(nil, feedback.Pageserver{LastReceivedLSN: 1, ShardNumber: 1, CorruptionDetected: true})
	z = appendUnknownKey(z, "future_key", []byte("abc"))
	var sink uint64
	n := testing.AllocsPerRun(100, func() {
		k, _ := feedback.Classify(z)
		a, _ := feedback.ParseStandbyStatus(r)
		b, _ := feedback.ParseHotStandby(h)
		c, err := feedback.ParsePageserver(z)
		if err != nil {
			panic(err)
		}
		sink += uint64(k) + a.Write + b.FullXmin() + c.LastReceivedLSN
	})
	if n != 0 {
		t.Fatalf("parsers allocated %v times", n)
	}
	_ = sink
}
