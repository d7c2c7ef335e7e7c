package walsender

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgsafekeeper/safekeeper/pkg/pgerr"
)

func TestCheckClientText(t *testing.T) {
	seq := func(enc, bytes string) string {
		return `invalid byte sequence for encoding "` + enc + `": ` + bytes
	}
	for _, c := range []struct {
		enc, s, want string // want "" for valid text
	}{
		{"SQL_ASCII", "SHOW \xff\xfe", ""},
		{"LATIN1", "SHOW \xe9", ""},
		{"WIN1251", "SHOW \xc0\xff", ""},
		{"UTF8", "SHOW \"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"", ""},
		{"UTF8", "\xef\xbf\xbd", ""}, // U+FFFD itself is valid
		{"UTF8", "a\xc3\x28", seq("UTF8", "0xc3 0x28")},
		{"UNICODE", "a\xc3", seq("UTF8", "0xc3")},
		{"UTF8", "a\xe2\x82", seq("UTF8", "0xe2 0x82")},
		{"UTF8", "\xed\xa0\x80x", seq("UTF8", "0xed 0xa0 0x80")},         // a surrogate
		{"UTF8", "\xc0\xaf", seq("UTF8", "0xc0 0xaf")},                   // overlong
		{"UTF8", "\xf4\x90\x80\x80", seq("UTF8", "0xf4 0x90 0x80 0x80")}, // above U+10FFFF
		{"UTF8", "\xf8\x88\x80\x80\x80", seq("UTF8", "0xf8")},
		{"UTF8", "\x80", seq("UTF8", "0x80")},
		{"EUC_JP", "\xa4\xa2\x8e\xb1\x8f\xb0\xa1", ""},
		{"EUC_JP", "\xa1\"", seq("EUC_JP", "0xa1 0x22")},
		{"EUC_JIS_2004", "\x8e\xe0", seq("EUC_JIS_2004", "0x8e 0xe0")},
		{"EUC_JP", "\x8f\xa1", seq("EUC_JP", "0x8f 0xa1")},
		{"EUC_KR", "\xb0\xa1", ""},
		{"EUC_KR", "\x8e\xa1", seq("EUC_KR", "0x8e 0xa1")},
		{"EUC_CN", "\xb0", seq("EUC_CN", "0xb0")},
		{"EUC_TW", "\x8e\xa2\xa1\xa1\xc4\xa1", ""},
		{"EUC_TW", "\x8e\xa8\xa1\xa1", seq("EUC_TW", "0x8e 0xa8 0xa1 0xa1")},
		{"EUC_TW", "\x8f\xa1\xa1", seq("EUC_TW", "0x8f 0xa1 0xa1")},
		{"MULE_INTERNAL", "\x81\xe9\x92\xb0\xa1", ""},
		{"MULE_INTERNAL", "\x9c\xf0\x41\x42", seq("MULE_INTERNAL", "0x9c 0xf0 0x41 0x42")},
		{"SJIS", "SHOW x", ""},
		{"SJIS", "SHOW \x82\xa0", `invalid byte value for encoding "SQL_ASCII": 0x82`},
		{"GB18030", "\x81\x30\x81\x30", `invalid byte value for encoding "SQL_ASCII": 0x81`},
		{"UTF8", "\xf0\x9f\x98\x80\xf0\x9f\x98\x80\xf0\x9f\x98", seq("UTF8", "0xf0 0x9f 0x98")},
	} {
		if c.enc == "UTF8" || c.enc == "UNICODE" {
			if got := pgUTF8(c.s); got != c.want {
				t.Errorf("the fuzz target's oracle on %q: %q, want %q", c.s, got, c.want)
			}
		}
		err := checkClientText(c.enc, c.s)
		if c.want == "" {
			if err != nil {
				t.Errorf("%s %q: %v, want valid", c.enc, c.s, err)
			}
			continue
		}
		pe := pgerr.As(err)
		if pe == nil || pe.Code != pgerr.CharacterNotInRepertoire || pe.Severity != pgerr.SeverityError || pe.Message != c.want {
			t.Errorf("%s %q: %v, want ERROR 22021 %q", c.enc, c.s, err, c.want)
		}
	}
}

// pgUTF8 is PostgreSQL's UTF-8 check, rule by rule, without Go's decoder
// (pg_utf8_verifychar and pg_utf8_islegal in src/common/wchar.c): the
// error message for s, or "" when s is valid.
func pgUTF8(s string) string {
	for i := 0; i < len(s); {
		c := s[i]
		if c != 0 && c < 0x80 {
			i++
			continue
		}
		l := utf8Len(c)
		if c != 0 && l <= len(s)-i && pgUTF8Legal(s[i:i+l]) {
			i += l
			continue
		}
		n := min(l, len(s)-i, 8)
		msg := `invalid byte sequence for encoding "UTF8": `
		for j := 0; j < n; j++ {
			if j > 0 {
				msg += " "
			}
			msg += fmt.Sprintf("0x%02x", s[i+j])
		}
		return msg
	}
	return ""
}

func pgUTF8Legal(b string) bool {
	in := func(c, lo, hi byte) bool { return c >= lo && c <= hi }
	switch len(b) {
	case 4:
		if !in(b[3], 0x80, 0xbf) {
			return false
		}
		fallthrough
	case 3:
		if !in(b[2], 0x80, 0xbf) {
			return false
		}
		fallthrough
	case 2:
		lo, hi := byte(0x80), byte(0xbf)
		switch b[0] {
		case 0xe0:
			lo = 0xa0
		case 0xed:
			hi = 0x9f
		case 0xf0:
			lo = 0x90
		case 0xf4:
			hi = 0x8f
		}
		if !in(b[1], lo, hi) {
			return false
		}
	}
	return !in(b[0], 0x80, 0xc1) && b[0] <= 0xf4
}

// FuzzCheckClientText holds the UTF-8 check, message included, to
// PostgreSQL's rules written out independently of Go's decoder (pgUTF8),
// and the other encodings to a typed error or none on any bytes.
func FuzzCheckClientText(f *testing.F) {
	f.Add("IDENTIFY_SYSTEM", "UTF8")
	f.Add("SHOW \"\xc3\x28\"", "UTF8")
	f.Add("\xed\xa0\x80\xf4\x90\x80\x80\xe0\x80\xaf\xf0\x8f", "UTF8")
	f.Add("\x8e\xa2\xa1", "EUC_TW")
	f.Add("\x9c\xf0", "MULE_INTERNAL")
	f.Fuzz(func(t *testing.T, s, enc string) {
		for _, e := range []string{enc, "UTF8", "EUC_JP", "EUC_KR", "EUC_CN", "EUC_TW", "MULE_INTERNAL", "SJIS", "LATIN1", "SQL_ASCII"} {
			err := checkClientText(e, s)
			if pe := pgerr.As(err); err != nil && (pe == nil || pe.Code != pgerr.CharacterNotInRepertoire) {
				t.Fatalf("%s %q: %v, want nil or a 22021 error", e, s, err)
			}
		}
		got := ""
		if err := checkClientText("UTF8", s); err != nil {
			got = pgerr.As(err).Message
		}
		if want := pgUTF8(s); got != want {
			t.Fatalf("UTF8 %q: %q, PostgreSQL's rules give %q", s, got, want)
		}
	})
}

// TestUndecodableMessages pins the pgproto3 errors the command loop
// recognises, and checks that the next message is read in step after each.
func TestUndecodableMessages(t *testing.T) {
	msg := func(typ byte, body string) []byte {
		b := binary.BigEndian.AppendUint32([]byte{typ}, uint32(4+len(body)))
		return append(b, body...)
	}
	for _, c := range []struct {
		name string
		in   []byte
		want byte
	}{
		{"Query without NUL", msg('Q', "IDENTIFY_SYSTEM"), 'Q'},
		{"Query with a NUL inside", msg('Q', "IDENTIFY_SYSTEM\x00x\x00"), 'Q'},
		{"empty Query", msg('Q', ""), 'Q'},
		{"Parse", msg('P', "x"), 'P'},
		{"Parse without OID count", msg('P', "\x00\x00"), 'P'},
		{"Bind", msg('B', "x"), 'B'},
		{"Execute without NUL", msg('E', "x"), 'P'},
		{"Execute short", msg('E', "\x00"), 'E'},
		{"Describe", msg('D', ""), 'D'},
		{"Describe without NUL", msg('D', "Sx"), 'D'},
		{"Close", msg('C', ""), 'C'},
		{"FunctionCall", msg('F', ""), 'F'},
		{"CopyFail", msg('f', "x"), 'f'},
	} {
		be := pgproto3.NewBackend(bytes.NewReader(append(c.in, msg('S', "")...)), &bytes.Buffer{})
		_, err := be.Receive()
		if err == nil {
			t.Errorf("%s: decoded", c.name)
			continue
		}
		got := byte(0)
		if m := undecodable(err); m != nil {
			got = frontendType(m)
		}
		if got != c.want {
			t.Errorf("%s: %v taken for %q, want %q", c.name, err, got, c.want)
		}
		if next, err := be.Receive(); err != nil {
			t.Errorf("%s: next message: %v", c.name, err)
		} else if _, ok := next.(*pgproto3.Sync); !ok {
			t.Errorf("%s: next message %T, want Sync", c.name, next)
		}
	}
	// The end of the connection, mid-header or mid-body, is not one.
	for _, in := range [][]byte{nil, {'Q', 0}, msg('Q', "IDENTIFY_SYSTEM\x00")[:10]} {
		be := pgproto3.NewBackend(bytes.NewReader(in), &bytes.Buffer{})
		if _, err := be.Receive(); undecodable(err) != nil {
			t.Errorf("%q: %v taken for an undecodable message", in, err)
		}
	}
}

// TestUnknownMessageType pins the text of pgproto3's error for a frontend
// message type it does not know, from which unknownMessageType takes the
// type byte (PostgreSQL names it in its FATAL).
func TestUnknownMessageType(t *testing.T) {
	for _, typ := range []byte{'Z', 'x', 'A', 0, 0x7f, 0x80, 0xe9, 0xff} {
		in := binary.BigEndian.AppendUint32([]byte{typ}, 4)
		_, err := pgproto3.NewBackend(bytes.NewReader(in), &bytes.Buffer{}).Receive()
		if err == nil {
			t.Fatalf("type %#x decoded", typ)
		}
		got, ok := unknownMessageType(err)
		if !ok || got != typ {
			t.Errorf("type %#x: %v read as %#x, %v", typ, err, got, ok)
		}
	}
	for _, err := range []error{io.EOF, errors.New("unknown message type: ab"), errors.New("unknown message type: \u0100")} {
		if typ, ok := unknownMessageType(err); ok {
			t.Errorf("%q read as type %#x", err, typ)
		}
	}
}

// TestShowSettings: SHOW ALL lists the settings in PostgreSQL's order
// (by name, without case), and SHOW finds them without regard to case.
func TestShowSettings(t *testing.T) {
	for i := 1; i < len(showSettings); i++ {
		if a, b := strings.ToLower(showSettings[i-1].name), strings.ToLower(showSettings[i].name); a >= b {
			t.Errorf("%q listed before %q", showSettings[i-1].name, showSettings[i].name)
		}
	}
	for _, st := range showSettings {
		for _, n := range []string{st.name, strings.ToUpper(st.name), strings.ToLower(st.name)} {
			if got, ok := lookupSetting(n); !ok || got.name != st.name {
				t.Errorf("SHOW %q found %+v, %v", n, got, ok)
			}
		}
	}
	if st, ok := lookupSetting("work_mem"); ok {
		t.Errorf("work_mem found: %+v", st)
	}
}
