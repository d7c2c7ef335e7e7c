//go:build !linux

package walstore

import (
	"os"
	"sync/atomic"
)

// Refold does nothing here: see refold_linux.go.
func Refold(*os.File, int64, *atomic.Bool) error { return ErrRefoldUseless }
