//go:build !linux

package walstore

import "os"

// Refold does nothing here: see refold_linux.go.
func Refold(*os.File, int64) error { return nil }
