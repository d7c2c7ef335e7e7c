package walsender

import (
	"strings"
	"testing"
	"time"

	"github.com/pgsafekeeper/safekeeper/pkg/pgerr"
)

func TestMillisSetting(t *testing.T) {
	for _, c := range []struct {
		in   string
		want time.Duration
		show string
	}{
		{"0", 0, "0"},
		{"4000", 4 * time.Second, "4s"},
		{"4s", 4 * time.Second, "4s"},
		{" 4 s ", 4 * time.Second, "4s"},
		{"1min", time.Minute, "1min"},
		{"90s", 90 * time.Second, "90s"},
		{"1.5s", 1500 * time.Millisecond, "1500ms"},
		{"2h", 2 * time.Hour, "2h"},
		{"1d", 24 * time.Hour, "1d"},
		{"2500us", 2 * time.Millisecond, "2ms"}, // rounded half to even
		{"2147483647", 2147483647 * time.Millisecond, "2147483647ms"},
		// strtol with base 0, as PostgreSQL reads integers.
		{"010", 8 * time.Millisecond, "8ms"},
		{"0x10", 16 * time.Millisecond, "16ms"},
		{"1e3", time.Second, "1s"},
		{".5s", 500 * time.Millisecond, "500ms"},
		// A fraction in a unit is rounded to the next smaller unit first.
		{"0.01min", time.Second, "1s"},
		{"1.5005min", 90 * time.Second, "90s"},
		{"0.0001d", 0, "0"},
		{"4.5ms", 4 * time.Millisecond, "4ms"},
		{"99999999999999999999e-15", 100 * time.Second, "100s"}, // strtol overflows: strtod
	} {
		got, err := parseMillisSetting("wal_sender_timeout", c.in)
		if err != nil || got != c.want {
			t.Errorf("%q: %v, %v; want %v", c.in, got, err, c.want)
			continue
		}
		if s := formatMillisSetting(got); s != c.show {
			t.Errorf("%q shown as %q, want %q", c.in, s, c.show)
		}
	}
	for _, c := range []struct{ in, msg, hint string }{
		{"abc", `invalid value for parameter "wal_sender_timeout": "abc"`, ""},
		{"", `invalid value for parameter "wal_sender_timeout": ""`, ""},
		{"4x", `invalid value for parameter "wal_sender_timeout": "4x"`, `Valid units for this parameter are "us", "ms", "s", "min", "h", and "d".`},
		{"4 S", `invalid value for parameter "wal_sender_timeout": "4 S"`, `Valid units for this parameter are "us", "ms", "s", "min", "h", and "d".`},
		{"-5", `-5 ms is outside the valid range for parameter "wal_sender_timeout" (0 .. 2147483647)`, ""},
		{"3000000000", `invalid value for parameter "wal_sender_timeout": "3000000000"`, "Value exceeds integer range."},
		{"1e", `invalid value for parameter "wal_sender_timeout": "1e"`, `Valid units for this parameter are "us", "ms", "s", "min", "h", and "d".`},
		{"08", `invalid value for parameter "wal_sender_timeout": "08"`, `Valid units for this parameter are "us", "ms", "s", "min", "h", and "d".`},
		{"5 s x", `invalid value for parameter "wal_sender_timeout": "5 s x"`, `Valid units for this parameter are "us", "ms", "s", "min", "h", and "d".`},
		{"nan", `invalid value for parameter "wal_sender_timeout": "nan"`, ""},
	} {
		_, err := parseMillisSetting("wal_sender_timeout", c.in)
		pe := pgerr.As(err)
		if pe == nil || pe.Code != pgerr.InvalidParameterValue || pe.Severity != pgerr.SeverityFatal || pe.Message != c.msg || pe.Hint != c.hint {
			t.Errorf("%q: got %+v, want FATAL 22023 %q hint %q", c.in, pe, c.msg, c.hint)
		}
	}
}

// TestClientEncoding checks client_encoding's values as PostgreSQL 15.18
// reports them (SHOW client_encoding after PGCLIENTENCODING=name).
func TestClientEncoding(t *testing.T) {
	for _, tc := range []struct{ name, want string }{
		{"UNICODE", "UNICODE"}, {"unicode", "UTF8"}, {"Utf_8", "UTF8"}, {"utf-8", "UTF8"},
		{"win1252", "WIN1252"}, {"SJIS", "SJIS"}, {"koi8", "KOI8R"}, {"EUC_JIS_2004", "EUC_JIS_2004"},
		{"mule_internal", "MULE_INTERNAL"}, {"latin1", "LATIN1"}, {"ISO-8859-1", "LATIN1"},
		{"iso8859_5", "ISO_8859_5"}, {"SQL_ASCII", "SQL_ASCII"}, {"Windows-1251", "WIN1251"},
		{"bogus", ""}, {"auto", ""}, {"", ""}, {"utf8" + strings.Repeat("-", 59), "UTF8"}, {"utf9", ""},
	} {
		got, ok := clientEncoding(tc.name)
		if got != tc.want || ok != (tc.want != "") {
			t.Errorf("clientEncoding(%q) = %q, %v; want %q", tc.name, got, ok, tc.want)
		}
	}
}

// TestCleanASCII checks application_name's cleaning as PostgreSQL 15.18
// does it ('?', checked with SHOW) and as 16 on does it (\xNN).
func TestCleanASCII(t *testing.T) {
	for _, tc := range []struct{ in, version, want string }{
		{"plain name", "15.18", "plain name"},
		{"h\xc3\xa9llo\x01x", "15.18", "h??llo?x"},
		{"h\xc3\xa9llo\x01x", "16.4", `h\xc3\xa9llo\x01x`},
		{"tab\there", "17.2", `tab\x09here`},
		{"~\x7f", "15.0", "~?"},
	} {
		if got := cleanASCII(tc.in, tc.version); got != tc.want {
			t.Errorf("cleanASCII(%q, %s) = %q, want %q", tc.in, tc.version, got, tc.want)
		}
	}
}
