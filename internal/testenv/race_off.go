//go:build !race

package testenv

// RaceEnabled reports whether the race detector is built in (see
// race_on.go).
const RaceEnabled = false
