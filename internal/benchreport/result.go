package benchreport

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// EnvOut names the environment variable holding the directory Save writes
// into.
const EnvOut = "BENCH_OUT"

// Result is one scenario's measurements: samples of the safekeeper and of the
// reference it is compared with, in the same unit, and the goal for the
// ratio of their medians.
type Result struct {
	ID       string // "P1", "P2", ...
	Scenario string // what was measured, e.g. "server CPU s/GiB, Go discard client, from the memory tier"
	Unit     string // "s/GiB", "MB/s", "ms", "TPS", "KiB"

	Safekeeper []float64 // samples of the safekeeper
	Reference  []float64 // samples of the reference, same unit; empty when there is none
	RefName    string    // "PostgreSQL walsender", "loopback TCP (Go)", ...

	Goal      string  // as printed, e.g. "≤ 0.5×"
	GoalRatio float64 // 0.5
	// HigherIsBetter says which way the goals point: the goal is met when
	// Ratio() >= GoalRatio if true (MB/s, TPS), <= GoalRatio otherwise.
	HigherIsBetter bool
	// GoalValue, when not zero, is a goal on median(Safekeeper) itself, in
	// Unit, pointing the same way (e.g. "≤ 64 KiB each", "≥ 500 MB/s").
	// With both GoalRatio and GoalValue set, both must be met.
	GoalValue float64 `json:",omitempty"`

	// Series holds raw data for plots, e.g. latency samples for a CDF or
	// the resident memory per consumer.
	Series map[string][]float64 `json:",omitempty"`
	Note   string               `json:",omitempty"`
}

// Ratio is median(Safekeeper)/median(Reference); ok is false when either
// side has no samples or the reference median is zero.
func (r Result) Ratio() (ratio float64, ok bool) {
	if len(r.Safekeeper) == 0 || len(r.Reference) == 0 {
		return 0, false
	}
	ref := Median(r.Reference)
	if ref == 0 {
		return 0, false
	}
	return Median(r.Safekeeper) / ref, true
}

// Met says whether the goals are reached; ok is false when there is no goal
// or nothing to compare it with (no samples, or a ratio goal without a
// reference).
func (r Result) Met() (met, ok bool) {
	if len(r.Safekeeper) == 0 || (r.GoalRatio == 0 && r.GoalValue == 0) {
		return false, false
	}
	reach := func(v, goal float64) bool {
		if r.HigherIsBetter {
			return v >= goal
		}
		return v <= goal
	}
	met = true
	if r.GoalRatio != 0 {
		ratio, ok := r.Ratio()
		if !ok {
			return false, false
		}
		met = reach(ratio, r.GoalRatio)
	}
	if r.GoalValue != 0 {
		met = met && reach(Median(r.Safekeeper), r.GoalValue)
	}
	return met, true
}

// FileName is the name Save gives r's file: <ID>-<slug of Scenario>.json.
// A slug cut short ends in a hash of the whole text, so that scenarios that
// differ only in their tails get files of their own.
func (r Result) FileName() string {
	return r.ID + "-" + Slug(r.Scenario) + ".json"
}

// Save writes r as JSON into $BENCH_OUT/r.FileName(), replacing an earlier
// file of the same scenario. It does nothing and returns nil when BENCH_OUT
// is unset.
func Save(r Result) error {
	dir := os.Getenv(EnvOut)
	if dir == "" {
		return nil
	}
	if r.ID == "" {
		return errors.New("benchreport: result without an ID")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("benchreport: %w", err)
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("benchreport: %s: %w", r.ID, err)
	}
	b = append(b, '\n')
	path := filepath.Join(dir, r.FileName())
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return fmt.Errorf("benchreport: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("benchreport: %w", err)
	}
	return nil
}

// Load reads every *.json file in dir as a Result, ordered by ID (P2 before
// P10) and then by Scenario (numbers in it compared as numbers).
func Load(dir string) ([]Result, error) {
	names, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		return nil, err
	}
	rs := make([]Result, 0, len(names))
	for _, name := range names {
		b, err := os.ReadFile(name)
		if err != nil {
			return nil, err
		}
		var r Result
		if err := json.Unmarshal(b, &r); err != nil {
			return nil, fmt.Errorf("benchreport: %s: %w", name, err)
		}
		rs = append(rs, r)
	}
	slices.SortStableFunc(rs, func(a, b Result) int {
		if c := compareID(a.ID, b.ID); c != 0 {
			return c
		}
		return naturalCompare(a.Scenario, b.Scenario)
	})
	return rs, nil
}

// compareID orders IDs by their letter prefix and then numerically, so that
// P9 sorts before P10.
func compareID(a, b string) int {
	if c := naturalCompare(a, b); c != 0 {
		return c
	}
	return strings.Compare(a, b)
}

// maxSlug bounds Slug's result.
const maxSlug = 60

// Slug turns a scenario text into a file-name part: lower-case ASCII
// letters and digits, runs of anything else turned into one '-'. A slug
// longer than maxSlug is cut and ends in 8 hex digits of a hash of s.
func Slug(s string) string {
	var b strings.Builder
	dash := false
	for _, c := range strings.ToLower(s) {
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
			if dash && b.Len() > 0 {
				b.WriteByte('-')
			}
			dash = false
			b.WriteRune(c)
		default:
			dash = true
		}
	}
	out := b.String()
	if out == "" {
		return "x"
	}
	if len(out) <= maxSlug {
		return out
	}
	h := fnv.New32a()
	h.Write([]byte(s))
	return strings.TrimRight(out[:maxSlug-9], "-") + fmt.Sprintf("-%08x", h.Sum32())
}

// naturalCompare orders strings with their digit runs compared as numbers,
// so that "8 streams" sorts before "64 streams".
func naturalCompare(a, b string) int {
	for a != "" && b != "" {
		da, db := digitsPrefix(a), digitsPrefix(b)
		if da != "" && db != "" {
			na, nb := strings.TrimLeft(da, "0"), strings.TrimLeft(db, "0")
			if c := cmp.Compare(len(na), len(nb)); c != 0 {
				return c
			}
			if c := strings.Compare(na, nb); c != 0 {
				return c
			}
			a, b = a[len(da):], b[len(db):]
			continue
		}
		if a[0] != b[0] {
			return cmp.Compare(a[0], b[0])
		}
		a, b = a[1:], b[1:]
	}
	return cmp.Compare(len(a), len(b))
}

func digitsPrefix(s string) string {
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	return s[:i]
}

// Median of xs; NaN when xs is empty. xs is not modified.
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	m := len(s) / 2
	if len(s)%2 == 1 {
		return s[m]
	}
	return (s[m-1] + s[m]) / 2
}

// Min of xs; NaN when xs is empty.
func Min(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	return slices.Min(xs)
}

// Max of xs; NaN when xs is empty.
func Max(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	return slices.Max(xs)
}

// Quantile of xs at q in [0,1] by linear interpolation between the closest
// ranks; NaN when xs is empty. xs is not modified.
func Quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	q = math.Max(0, math.Min(1, q))
	pos := q * float64(len(s)-1)
	lo := int(math.Floor(pos))
	hi := int(math.Ceil(pos))
	return s[lo] + (s[hi]-s[lo])*(pos-float64(lo))
}

// Summary is one readable line for a benchmark's log: the medians with their
// spread, the ratio and whether the goal is met.
func (r Result) Summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s: safekeeper %s %s", r.ID, r.Scenario, Spread(r.Safekeeper), r.Unit)
	if len(r.Reference) > 0 {
		fmt.Fprintf(&b, ", %s %s %s", r.RefName, Spread(r.Reference), r.Unit)
	}
	if ratio, ok := r.Ratio(); ok {
		fmt.Fprintf(&b, ", ratio %s", FormatRatio(ratio))
	}
	if met, ok := r.Met(); ok {
		verdict := "not met"
		if met {
			verdict = "met"
		}
		fmt.Fprintf(&b, " (goal %s: %s)", r.Goal, verdict)
	}
	fmt.Fprintf(&b, " n=%d", len(r.Safekeeper))
	return b.String()
}

// Spread formats xs as "median [min–max]", or "–" when xs is empty.
func Spread(xs []float64) string {
	switch len(xs) {
	case 0:
		return "–"
	case 1:
		return FormatValue(xs[0])
	}
	return FormatValue(Median(xs)) + " [" + FormatValue(Min(xs)) + "–" + FormatValue(Max(xs)) + "]"
}

// FormatValue prints v with three significant digits in fixed notation
// (1300, 20.0, 1.50, 0.450), the exponent form only below 0.0001.
func FormatValue(v float64) string {
	a := math.Abs(v)
	switch {
	case math.IsNaN(v):
		return "–"
	case a == 0:
		return "0"
	case a < 1e-4:
		return strconv.FormatFloat(v, 'e', 2, 64)
	}
	prec := max(0, 2-int(math.Floor(math.Log10(a))))
	return strconv.FormatFloat(v, 'f', prec, 64)
}

// FormatRatio prints a ratio of medians with two decimals ("0.45×"), or two
// significant digits below 0.1 ("0.031×").
func FormatRatio(v float64) string {
	if a := math.Abs(v); a != 0 && a < 0.1 {
		return strconv.FormatFloat(v, 'g', 2, 64) + "×"
	}
	return strconv.FormatFloat(v, 'f', 2, 64) + "×"
}
