//go:build !linux

package walstore

import (
	"errors"
	"os"
	"sync/atomic"
)

// Refold does nothing here: see refold_linux.go.
func Refold(*os.File, int64, *atomic.Bool) error { return ErrRefoldUseless }

// ErrRefoldUseless: see refold_linux.go.
var ErrRefoldUseless = errors.New("refold: no 2 MiB folios on this platform")
