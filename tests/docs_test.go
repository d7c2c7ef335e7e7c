package tests

import (
	"os"
	"strings"
	"testing"

	"github.com/pgsafekeeper/safekeeper/internal/testenv"
)

// Every metric name the code defines is documented in the README.
func TestEveryMetricDocumented(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for name, file := range testenv.MetricNames(t) {
		if !strings.Contains(string(readme), "`"+name) {
			t.Errorf("%s: metric %s is not in the README's metrics table", file, name)
		}
	}
}
