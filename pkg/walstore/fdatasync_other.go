//go:build !linux

package walstore

import "os"

func fdatasync(f *os.File) error { return f.Sync() }
