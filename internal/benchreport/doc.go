// Package benchreport owns the result format of the benchmark suite in
// ./tests (make bench): one Result per scenario, written as a JSON file into
// the directory named by $BENCH_OUT, and the small statistics the report
// quotes (median and spread). The renderer in cmd/render reads those files
// back and writes docs/benchmarks.md with its plots.
//
// The package is a codec: it does not log, keeps no state and does nothing
// when BENCH_OUT is unset, so a benchmark run by hand with go test only
// prints its own lines.
package benchreport
