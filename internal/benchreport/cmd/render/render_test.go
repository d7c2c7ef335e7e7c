package main

import (
	"bytes"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgsafekeeper/safekeeper/internal/benchreport"
)

// fakes feed every table column and every plot.
func fakes() []benchreport.Result {
	return []benchreport.Result{
		{ID: "P1", Scenario: "server CPU s/GiB, from files", Unit: "s/GiB",
			Safekeeper: []float64{0.4, 0.5, 0.45}, Reference: []float64{1, 1.1, 0.9},
			RefName: "PostgreSQL walsender", Goal: "≤ 0.5×", GoalRatio: 0.5},
		{ID: "P3", Scenario: "8 streams | aggregate", Unit: "MB/s",
			Safekeeper: []float64{1000, 1200}, Reference: []float64{900, 1000},
			RefName: "PostgreSQL walsenders", Goal: "≥ 1.2×", GoalRatio: 1.2, HigherIsBetter: true},
		{ID: "P3", Scenario: "64 streams", Unit: "MB/s",
			Safekeeper: []float64{1300}, Reference: []float64{1000, 1000, 1000},
			RefName: "PostgreSQL walsenders", Goal: "≥ 1.2×", GoalRatio: 1.2, HigherIsBetter: true,
			Note: "each stream\nreads 16 MiB"},
		{ID: "P5", Scenario: "live tail", Unit: "ms", Safekeeper: []float64{1.5},
			Series: map[string][]float64{"safekeeper": {1, 2, 3, 1.5}, "primary": {0.5, 0.7, 0.6}}},
		{ID: "P7", Scenario: "PSS per idle consumer", Unit: "KiB",
			Safekeeper: []float64{20}, Reference: []float64{900, 1000}, RefName: "walsender PSS",
			Goal: "≤ 64 KiB each", GoalValue: 64,
			Series: map[string][]float64{"consumers": {0, 500, 1000}, "safekeeper PSS": {0, 10000, 20000}}},
	}
}

func TestRender(t *testing.T) {
	in := t.TempDir()
	t.Setenv(benchreport.EnvOut, in)
	for _, r := range fakes() {
		if err := benchreport.Save(r); err != nil {
			t.Fatal(err)
		}
	}
	rs, err := benchreport.Load(in)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "docs", "benchmarks.md")
	// RENDER_KEEP=DIR keeps the fake report and its plots there, to look at.
	keep := os.Getenv("RENDER_KEEP")
	if keep != "" {
		out = filepath.Join(keep, "benchmarks.md")
	}
	if err := render(rs, out); err != nil {
		t.Fatal(err)
	}
	md, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"| P1 | server CPU s/GiB, from files | s/GiB | 0.450 [0.400–0.500] | 1.00 [0.900–1.10] (PostgreSQL walsender) | 0.45× | ≤ 0.5× | yes | 3 |",
		// Load orders P3's scenarios by text, numbers as numbers: 8 before 64.
		`| P3a | 8 streams \| aggregate | MB/s | 1100 [1000–1200] | 950 [900–1000] (PostgreSQL walsenders) | 1.16× | ≥ 1.2× | **no** | 2 |`,
		"| P3b | 64 streams | MB/s | 1300 | 1000 [1000–1000] (PostgreSQL walsenders) | 1.30× | ≥ 1.2× | yes | 1/3 |",
		"| P5 | live tail | ms | 1.50 | – | – |  | – | 1 |",
		"| P7 | PSS per idle consumer | KiB | 20.0 | 950 [900–1000] (walsender PSS) | 0.021× | ≤ 64 KiB each | yes | 1/2 |",
		"- **P3b**: each stream reads 16 MiB",
		"![Throughput (MB/s, medians)](" + throughputPNG + ")",
		"![Latency CDF (P5)](" + latencyPNG + ")",
		"![Memory for idle tailing consumers (P7)](" + rssPNG + ")",
	} {
		if !strings.Contains(string(md), want+"\n") {
			t.Errorf("report lacks the line\n%s\nreport:\n%s", want, md)
		}
	}
	if n := strings.Count(string(md), "\n| P"); n != 5 {
		t.Errorf("%d table rows, want 5", n)
	}

	pngs := map[string][]byte{}
	for _, name := range []string{throughputPNG, latencyPNG, rssPNG} {
		b, err := os.ReadFile(filepath.Join(filepath.Dir(out), name))
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if r := img.Bounds(); r.Dx() < 100 || r.Dy() < 100 {
			t.Errorf("%s: %v pixels", name, r)
		}
		pngs[name] = b
	}

	// Same input, same bytes.
	if err := render(rs, out); err != nil {
		t.Fatal(err)
	}
	if again, _ := os.ReadFile(out); !bytes.Equal(again, md) {
		t.Error("second rendering changed the report")
	}
	for name, b := range pngs {
		if again, _ := os.ReadFile(filepath.Join(filepath.Dir(out), name)); !bytes.Equal(again, b) {
			t.Errorf("second rendering changed %s", name)
		}
	}

	// Without P5 and P7 results their plots go, and so do the stale files.
	if keep != "" {
		return
	}
	if err := render(rs[:3], out); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{latencyPNG, rssPNG} {
		if _, err := os.Stat(filepath.Join(filepath.Dir(out), name)); !os.IsNotExist(err) {
			t.Errorf("%s stays without results for it: %v", name, err)
		}
	}
	if md, _ := os.ReadFile(out); strings.Contains(string(md), latencyPNG) {
		t.Error("report links a plot that was not drawn")
	}
}
