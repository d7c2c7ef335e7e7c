package tests

// A stand-in for internal/benchreport (written on another branch) so that
// the ingest and commit benchmarks compile on their own; the merge replaces
// benchResult2 with benchreport.Result and saveBench with benchreport.Save,
// and removes this file.

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
)

type benchResult2 struct {
	ID             string
	Scenario       string
	Unit           string
	Safekeeper     []float64
	Reference      []float64
	RefName        string
	Goal           string
	GoalRatio      float64
	HigherIsBetter bool
	GoalValue      float64              `json:",omitempty"`
	Series         map[string][]float64 `json:",omitempty"`
	Note           string               `json:",omitempty"`
}

// saveBench writes r to $BENCH_OUT/<ID>-<slug>.json; nothing when BENCH_OUT
// is unset.
func saveBench(r benchResult2) error {
	dir := os.Getenv("BENCH_OUT")
	if dir == "" {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var slug strings.Builder
	for _, c := range strings.ToLower(r.Scenario) {
		if (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') {
			slug.WriteRune(c)
		} else if s := slug.String(); s != "" && !strings.HasSuffix(s, "-") {
			slug.WriteByte('-')
		}
	}
	name := strings.TrimRight(slug.String()[:min(slug.Len(), 60)], "-")
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, r.ID+"-"+name+".json"), append(b, '\n'), 0o644)
}
