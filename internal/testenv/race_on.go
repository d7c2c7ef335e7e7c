//go:build race

package testenv

// RaceEnabled reports whether the race detector is built in. Under it
// sync.Pool drops items on purpose, so code that pools its buffers
// (crypto/tls's records) allocates where it otherwise would not; `make
// test` runs the allocation tests once more without it.
const RaceEnabled = true
