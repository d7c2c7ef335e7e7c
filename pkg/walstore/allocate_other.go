//go:build !linux

package walstore

import "os"

// allocate gives f size bytes of real blocks by writing zeros.
func allocate(f *os.File, size int64) error { return writeZeros(f, size) }
