package walsender

import (
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/pgsafekeeper/safekeeper/pkg/pgerr"
)

// The session settings a replication connection may choose at startup,
// either as startup parameters or in "options" (-c name=value), the
// startup parameters winning, as in PostgreSQL. Other settings are
// accepted and ignored: PostgreSQL has hundreds, and a client that sets
// statement_timeout must still connect.

// setting returns the value a client chose for name (case-insensitive,
// as setting names are), and whether it did.
func setting(params, opts map[string]string, name string) (string, bool) {
	for _, m := range []map[string]string{params, opts} {
		for k, v := range m {
			if strings.EqualFold(k, name) {
				return v, true
			}
		}
	}
	return "", false
}

// timeUnits are PostgreSQL's units for a setting in milliseconds, each
// with its size, largest first (as SHOW picks them).
var timeUnits = []struct {
	name string
	ms   float64
}{{"d", 86400000}, {"h", 3600000}, {"min", 60000}, {"s", 1000}, {"ms", 1}, {"us", 0.001}}

// parseMillisSetting parses a time setting whose base unit is the
// millisecond (wal_sender_timeout) as PostgreSQL does: a number, possibly
// fractional, then optionally a unit; the result rounded to whole
// milliseconds and within 0 .. INT_MAX.
func parseMillisSetting(name, value string) (time.Duration, error) {
	s := strings.TrimSpace(value)
	i := 0
	for i < len(s) && (s[i] == '+' || s[i] == '-' || s[i] == '.' || s[i] == 'e' || s[i] == 'E' || (s[i] >= '0' && s[i] <= '9')) {
		i++
	}
	num, unit := s[:i], strings.TrimSpace(s[i:])
	f, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, pgerr.Fatal(pgerr.InvalidParameterValue, "invalid value for parameter \"%s\": \"%s\"", name, value)
	}
	if unit != "" {
		found := false
		for _, u := range timeUnits {
			if u.name == unit {
				f *= u.ms
				found = true
				break
			}
		}
		if !found {
			return 0, pgerr.Fatal(pgerr.InvalidParameterValue, "invalid value for parameter \"%s\": \"%s\"", name, value).
				WithHint("Valid units for this parameter are \"us\", \"ms\", \"s\", \"min\", \"h\", and \"d\".")
		}
	}
	f = math.RoundToEven(f)
	if f > math.MaxInt32 || f < math.MinInt32 || math.IsNaN(f) {
		return 0, pgerr.Fatal(pgerr.InvalidParameterValue, "invalid value for parameter \"%s\": \"%s\"", name, value).
			WithHint("Value exceeds integer range.")
	}
	if f < 0 {
		return 0, pgerr.Fatal(pgerr.InvalidParameterValue, "%d ms is outside the valid range for parameter \"%s\" (0 .. %d)", int64(f), name, math.MaxInt32)
	}
	return time.Duration(f) * time.Millisecond, nil
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
