// Command render turns the benchmark results that make bench leaves in a
// directory (one benchreport.Result per JSON file) into a Markdown table and
// PNG plots:
//
//	go run ./internal/benchreport/cmd/render -in .cache/bench -out docs/benchmarks.md
//
// The plots are written next to the table (benchmarks-*.png). The output
// depends only on the input files, so regenerating from the same results
// gives the same bytes.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/pgsafekeeper/safekeeper/internal/benchreport"
)

func main() {
	in := flag.String("in", ".cache/bench", "directory of benchmark result files (*.json)")
	out := flag.String("out", "docs/benchmarks.md", "Markdown file to write; plots go next to it")
	flag.Parse()

	rs, err := benchreport.Load(*in)
	if err != nil {
		fmt.Fprintln(os.Stderr, "render:", err)
		os.Exit(1)
	}
	if len(rs) == 0 {
		fmt.Fprintf(os.Stderr, "render: no results in %s\n", *in)
		os.Exit(1)
	}
	if err := render(rs, *out); err != nil {
		fmt.Fprintln(os.Stderr, "render:", err)
		os.Exit(1)
	}
}
