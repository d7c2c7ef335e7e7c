//go:build !linux

package walstore

import "os"

// rawSyncMax is Linux's (see fdatasync_linux.go); here every call is an
// ordinary one.
const rawSyncMax = 256 << 10

func fdatasync(f *os.File, _ bool) error { return f.Sync() }

func pwrite(f *os.File, b []byte, off int64) (int, error) { return f.WriteAt(b, off) }
