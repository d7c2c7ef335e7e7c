package benchreport

import (
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestStats(t *testing.T) {
	xs := []float64{5, 1, 4, 2, 3}
	if got := Median(xs); got != 3 {
		t.Errorf("Median = %v, want 3", got)
	}
	if got := Median([]float64{4, 1, 2, 3}); got != 2.5 {
		t.Errorf("Median of even count = %v, want 2.5", got)
	}
	if !reflect.DeepEqual(xs, []float64{5, 1, 4, 2, 3}) {
		t.Errorf("Median sorted its argument: %v", xs)
	}
	if Min(xs) != 1 || Max(xs) != 5 {
		t.Errorf("Min, Max = %v, %v", Min(xs), Max(xs))
	}
	if got := Quantile(xs, 0.99); math.Abs(got-4.96) > 1e-9 {
		t.Errorf("Quantile(0.99) = %v, want 4.96", got)
	}
	if !math.IsNaN(Median(nil)) || !math.IsNaN(Min(nil)) || !math.IsNaN(Max(nil)) {
		t.Error("empty input should give NaN")
	}
}

func TestRatioAndGoal(t *testing.T) {
	r := Result{Safekeeper: []float64{1, 2, 3}, Reference: []float64{4, 4}, GoalRatio: 0.5}
	if ratio, ok := r.Ratio(); !ok || ratio != 0.5 {
		t.Fatalf("Ratio = %v, %v", ratio, ok)
	}
	if met, ok := r.Met(); !ok || !met {
		t.Errorf("lower is better, 0.5 ≤ 0.5: Met = %v, %v", met, ok)
	}
	r.GoalRatio = 0.9
	r.HigherIsBetter = true
	if met, _ := r.Met(); met {
		t.Error("higher is better, 0.5 < 0.9 reported met")
	}
	r.Reference = nil
	if _, ok := r.Met(); ok {
		t.Error("no reference, yet a verdict")
	}

	// An absolute goal needs no reference; with a ratio goal both count.
	v := Result{Safekeeper: []float64{40, 50, 70}, GoalValue: 64}
	if met, ok := v.Met(); !ok || !met {
		t.Errorf("50 ≤ 64: Met = %v, %v", met, ok)
	}
	v.Reference, v.GoalRatio = []float64{60}, 0.5
	if met, ok := v.Met(); !ok || met {
		t.Errorf("50/60 > 0.5: Met = %v, %v", met, ok)
	}
}

func TestSlug(t *testing.T) {
	for in, want := range map[string]string{
		"server CPU s/GiB, Go discard client, from the memory tier": "server-cpu-s-gib-go-discard-client-from-the-memory-tier",
		"  --  ":              "x",
		"8 streams × 128 MiB": "8-streams-128-mib",
	} {
		if got := Slug(in); got != want {
			t.Errorf("Slug(%q) = %q, want %q", in, got, want)
		}
	}
	// Long texts that differ only in their tails get different slugs.
	long1 := Slug("server CPU per GiB streamed, one Go discard client, safekeeper from files")
	long2 := Slug("server CPU per GiB streamed, one Go discard client, safekeeper from the memory tier")
	if len(long1) > maxSlug || len(long2) > maxSlug || long1 == long2 {
		t.Errorf("long slugs %q, %q", long1, long2)
	}
	if !strings.HasPrefix(long1, "server-cpu-per-gib-streamed-") {
		t.Errorf("long slug %q lost its start", long1)
	}
}

func TestSaveLoad(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(EnvOut, "")
	if err := Save(Result{ID: "P1"}); err != nil {
		t.Fatalf("Save without BENCH_OUT: %v", err)
	}
	if names, _ := filepath.Glob(filepath.Join(dir, "*")); len(names) != 0 {
		t.Fatalf("files written without BENCH_OUT: %v", names)
	}

	out := filepath.Join(dir, "out")
	t.Setenv(EnvOut, out)
	rs := []Result{
		{ID: "P10", Scenario: "ten", Unit: "MB/s", Safekeeper: []float64{1}},
		{ID: "P2", Scenario: "two", Unit: "MB/s", Safekeeper: []float64{1, 2}, Reference: []float64{3},
			RefName: "loopback", Goal: "≥ 0.9×", GoalRatio: 0.9, HigherIsBetter: true,
			Series: map[string][]float64{"x": {1, 2}}},
		{ID: "P2", Scenario: "a two", Unit: "MB/s", Safekeeper: []float64{1}},
		{ID: "P3", Scenario: "64 streams", Unit: "MB/s", Safekeeper: []float64{1}},
		{ID: "P3", Scenario: "8 streams", Unit: "MB/s", Safekeeper: []float64{1}},
	}
	for _, r := range rs {
		if err := Save(r); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(filepath.Join(out, "P2-two.json")); err != nil {
		t.Fatal(err)
	}
	got, err := Load(out)
	if err != nil {
		t.Fatal(err)
	}
	want := []Result{rs[2], rs[1], rs[4], rs[3], rs[0]}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Load = %+v\nwant %+v", got, want)
	}
}

func TestSummary(t *testing.T) {
	r := Result{ID: "P2", Scenario: "one stream", Unit: "MB/s", Safekeeper: []float64{900, 950, 1000},
		Reference: []float64{1000}, RefName: "loopback TCP (Go)", Goal: "≥ 0.9×", GoalRatio: 0.9, HigherIsBetter: true}
	want := "P2 one stream: safekeeper 950 [900–1000] MB/s, loopback TCP (Go) 1000 MB/s, ratio 0.95× (goal ≥ 0.9×: met) n=3"
	if got := r.Summary(); got != want {
		t.Errorf("Summary =\n%s\nwant\n%s", got, want)
	}
}

func TestFormatValue(t *testing.T) {
	for v, want := range map[float64]string{
		1300: "1300", 20: "20.0", 1.5: "1.50", 0.45: "0.450", 0.0123: "0.0123", 99.96: "100.0",
		0: "0", 0.00001234: "1.23e-05", math.NaN(): "–",
	} {
		if got := FormatValue(v); got != want {
			t.Errorf("FormatValue(%v) = %q, want %q", v, got, want)
		}
	}
}
