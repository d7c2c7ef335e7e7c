package walsender

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/pgsafekeeper/safekeeper/pkg/pgerr"
	"github.com/pgsafekeeper/safekeeper/pkg/pgwire"
)

// The session settings a replication connection may choose at startup,
// either in "options" (-c name=value) or as startup parameters. Other
// settings are accepted and ignored: PostgreSQL has hundreds, and a client
// that sets statement_timeout must still connect.

// applySettings applies the settings of the startup packet pkt as
// PostgreSQL does: those in "options" first, then the startup parameters,
// each list in its order, so that a later value wins but every value is
// checked; names are case-insensitive. Values of settings that are names
// are cut to 63 bytes with PostgreSQL's NOTICE first.
func (c *conn) applySettings(pkt *pgwire.Packet) error {
	c.walSenderTimeout = c.s.cfg.WalSenderTimeout
	c.clientEncoding = "SQL_ASCII"
	c.appName = ""
	settings := pgwire.ParseOptionList(pkt.Params["options"])
	for _, k := range pkt.Keys {
		switch k {
		case "user", "database", "replication", "options":
			continue
		}
		settings = append(settings, [2]string{k, pkt.Params[k]})
	}
	for _, kv := range settings {
		// Errors name the setting as the client spelled it.
		name, value := kv[0], kv[1]
		switch strings.ToLower(name) {
		case "wal_sender_timeout":
			d, err := parseMillisSetting(name, value)
			if err != nil {
				return err
			}
			c.walSenderTimeout = d
		case "client_encoding":
			value = c.truncateName(value)
			enc, ok := clientEncoding(value)
			if !ok {
				return pgerr.Fatal(pgerr.InvalidParameterValue, "invalid value for parameter \"%s\": \"%s\"", name, value)
			}
			c.clientEncoding = enc
		case "application_name":
			c.appName = cleanASCII(c.truncateName(value), c.serverVersion())
		}
	}
	return nil
}

// truncateName cuts the value of a setting that is a name to 63 bytes
// (NAMEDATALEN-1, by bytes: the walsender's encoding is SQL_ASCII) and
// sends PostgreSQL's NOTICE when it does.
func (c *conn) truncateName(v string) string {
	const maxLen = 63
	if len(v) <= maxLen {
		return v
	}
	n := pgerr.New(pgerr.NameTooLong, "identifier \"%s\" will be truncated to \"%s\"", v, v[:maxLen])
	n.Severity = pgerr.SeverityNotice
	c.be.Send(pgwire.NoticeResponse(n))
	return v[:maxLen]
}

// cleanASCII is application_name as PostgreSQL keeps it: each byte outside
// printable ASCII replaced by '?' up to version 15, written as \xNN from
// version 16 on.
func cleanASCII(v, serverVersion string) string {
	clean := true
	for i := 0; i < len(v); i++ {
		if v[i] < 32 || v[i] > 126 {
			clean = false
			break
		}
	}
	if clean {
		return v
	}
	major, _, _ := strings.Cut(serverVersion, ".")
	n, _ := strconv.Atoi(major)
	escape := n >= 16
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		switch ch := v[i]; {
		case ch >= 32 && ch <= 126:
			b.WriteByte(ch)
		case escape:
			fmt.Fprintf(&b, "\\x%02x", ch)
		default:
			b.WriteByte('?')
		}
	}
	return b.String()
}

// timeUnits are PostgreSQL's units for a setting in milliseconds, each
// with its size, largest first (as SHOW picks them).
var timeUnits = []struct {
	name string
	ms   float64
}{{"d", 86400000}, {"h", 3600000}, {"min", 60000}, {"s", 1000}, {"ms", 1}, {"us", 0.001}}

// parseMillisSetting parses a time setting whose base unit is the
// millisecond (wal_sender_timeout) as PostgreSQL's parse_int does: an
// integer as strtol reads it with base 0 (so 010 is octal and 0x10 hex),
// or, when that stops at '.', 'e' or 'E' or overflows, a float as strtod
// reads it; then, after optional spaces, an optional unit, a fractional
// value in a unit rounded to the next smaller unit; the result rounded to
// whole milliseconds and within 0 .. INT_MAX.
func parseMillisSetting(name, value string) (time.Duration, error) {
	invalid := func(hint string) error {
		e := pgerr.Fatal(pgerr.InvalidParameterValue, "invalid value for parameter \"%s\": \"%s\"", name, value)
		if hint != "" {
			e = e.WithHint("%s", hint)
		}
		return e
	}
	const unitsHint = `Valid units for this parameter are "us", "ms", "s", "min", "h", and "d".`
	v, n, erange := cStrtol(value)
	if n < len(value) && strings.ContainsRune(".eE", rune(value[n])) || erange {
		v, n, erange = cStrtod(value)
	}
	if n == 0 || erange || math.IsNaN(v) {
		return 0, invalid("")
	}
	rest := strings.TrimLeft(value[n:], cSpace)
	if rest != "" {
		unit := rest
		if i := strings.IndexAny(rest, cSpace); i >= 0 {
			unit = rest[:i]
			if strings.TrimLeft(rest[i:], cSpace) != "" {
				return 0, invalid(unitsHint)
			}
		}
		found := false
		for i, u := range timeUnits {
			if u.name == unit {
				v *= u.ms
				if i+1 < len(timeUnits) {
					next := timeUnits[i+1].ms
					v = math.RoundToEven(v/next) * next
				}
				found = true
				break
			}
		}
		if !found {
			return 0, invalid(unitsHint)
		}
	}
	v = math.RoundToEven(v)
	if v > math.MaxInt32 || v < math.MinInt32 {
		return 0, invalid("Value exceeds integer range.")
	}
	if v < 0 {
		return 0, pgerr.Fatal(pgerr.InvalidParameterValue, "%d ms is outside the valid range for parameter \"%s\" (0 .. %d)", int64(v), name, math.MaxInt32)
	}
	return time.Duration(v) * time.Millisecond, nil
}

// cSpace is what C's isspace accepts.
const cSpace = " \t\n\v\f\r"

// cStrtol reads an integer at the start of s as C's strtol(s, &end, 0):
// leading spaces, a sign, then hexadecimal after 0x, octal after 0,
// decimal otherwise. n is how many bytes it used (0: no number);
// erange reports an overflow of a 64-bit long.
func cStrtol(s string) (v float64, n int, erange bool) {
	i := len(s) - len(strings.TrimLeft(s, cSpace))
	neg := false
	if i < len(s) && (s[i] == '+' || s[i] == '-') {
		neg = s[i] == '-'
		i++
	}
	base := uint64(10)
	if i+1 < len(s) && s[i] == '0' && (s[i+1] == 'x' || s[i+1] == 'X') && i+2 < len(s) && digitVal(s[i+2]) < 16 {
		base, i = 16, i+2
	} else if i < len(s) && s[i] == '0' {
		base = 8
	}
	start := i
	var acc uint64
	for ; i < len(s) && digitVal(s[i]) < base; i++ {
		d := digitVal(s[i])
		if acc > (math.MaxUint64-d)/base {
			erange = true
		}
		acc = acc*base + d
	}
	if i == start {
		return 0, 0, false
	}
	if acc > math.MaxInt64 {
		erange = true
	}
	v = float64(acc)
	if neg {
		v = -v
	}
	return v, i, erange
}

func digitVal(c byte) uint64 {
	switch {
	case c >= '0' && c <= '9':
		return uint64(c - '0')
	case c >= 'a' && c <= 'f':
		return uint64(c-'a') + 10
	case c >= 'A' && c <= 'F':
		return uint64(c-'A') + 10
	}
	return 99
}

// cStrtod reads a decimal floating-point number (or inf, infinity, nan)
// at the start of s as C's strtod: n is how many bytes it used (0: no
// number); erange reports an overflow.
func cStrtod(s string) (v float64, n int, erange bool) {
	i := len(s) - len(strings.TrimLeft(s, cSpace))
	start := i
	if i < len(s) && (s[i] == '+' || s[i] == '-') {
		i++
	}
	for _, w := range []string{"infinity", "inf", "nan"} {
		if len(s)-i >= len(w) && strings.EqualFold(s[i:i+len(w)], w) {
			f, _ := strconv.ParseFloat(s[start:i+len(w)], 64)
			return f, i + len(w), false
		}
	}
	digits := 0
	for ; i < len(s) && s[i] >= '0' && s[i] <= '9'; i++ {
		digits++
	}
	if i < len(s) && s[i] == '.' {
		for i++; i < len(s) && s[i] >= '0' && s[i] <= '9'; i++ {
			digits++
		}
	}
	if digits == 0 {
		return 0, 0, false
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		j := i + 1
		if j < len(s) && (s[j] == '+' || s[j] == '-') {
			j++
		}
		if j < len(s) && s[j] >= '0' && s[j] <= '9' {
			for j < len(s) && s[j] >= '0' && s[j] <= '9' {
				j++
			}
			i = j
		}
	}
	f, err := strconv.ParseFloat(s[start:i], 64)
	if err != nil && math.IsInf(f, 0) {
		erange = true
	}
	return f, i, erange
}

// formatMillisSetting is SHOW's form of a time setting in milliseconds:
// the largest unit the value is a whole number of, "0" for zero.
func formatMillisSetting(d time.Duration) string {
	ms := d.Milliseconds()
	if ms == 0 {
		return "0"
	}
	for _, u := range timeUnits {
		if u.ms >= 1 && ms%int64(u.ms) == 0 {
			return strconv.FormatInt(ms/int64(u.ms), 10) + u.name
		}
	}
	return strconv.FormatInt(ms, 10) + "ms"
}

// showSetting is a setting a replication connection can SHOW.
type showSetting struct {
	name     string // as PostgreSQL spells it
	desc     string // SHOW ALL's description
	notInAll bool   // PostgreSQL leaves it out of SHOW ALL
}

// showSettings are the settings SHOW knows, by name (compared without
// case, as SHOW ALL orders them): those a replication client asks for and
// those announced at startup. Values come from conn.settingValue.
var showSettings = []showSetting{
	{name: "application_name", desc: "Name the client gave for itself; a consumer's name in status and slots."},
	{name: "client_encoding", desc: "Encoding the client's text is checked in."},
	{name: "data_directory_mode", desc: "Permissions of the data directory, as pg_basebackup asks."},
	{name: "DateStyle", desc: "Format of dates and times in text."},
	{name: "default_transaction_read_only", desc: "Whether transactions start read-only."},
	{name: "in_hot_standby", desc: "Whether this server is a hot standby."},
	{name: "integer_datetimes", desc: "Whether timestamps are 64-bit integers."},
	{name: "IntervalStyle", desc: "Format of intervals in text."},
	{name: "is_superuser", desc: "Whether the session's user is a superuser.", notInAll: true},
	{name: "server_encoding", desc: "Encoding of the server's text."},
	{name: "server_version", desc: "PostgreSQL version of the WAL served."},
	{name: "server_version_num", desc: "PostgreSQL version of the WAL served, as a number."},
	{name: "session_authorization", desc: "User of the session.", notInAll: true},
	{name: "standard_conforming_strings", desc: "Whether backslashes in ordinary string literals are literal."},
	{name: "TimeZone", desc: "Time zone of timestamps in text."},
	{name: "wal_block_size", desc: "Size of a WAL page."},
	{name: "wal_level", desc: "Level of WAL the primary writes."},
	{name: "wal_segment_size", desc: "Size of a WAL segment file."},
	{name: "wal_sender_timeout", desc: "Time after which a silent consumer is disconnected."},
}

// lookupSetting finds a setting by name without regard to case, as
// PostgreSQL finds them (SHOW "TimeZone", SHOW timezone, SHOW "TIMEZONE").
func lookupSetting(name string) (showSetting, bool) {
	for _, st := range showSettings {
		if strings.EqualFold(st.name, name) {
			return st, true
		}
	}
	return showSetting{}, false
}
