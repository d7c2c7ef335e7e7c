package walstore

import (
	"errors"
	"os"
	"syscall"
)

// allocate gives f size bytes of real blocks: fallocate where the file
// system has it, zeros written otherwise.
func allocate(f *os.File, size int64) error {
	err := syscall.Fallocate(int(f.Fd()), 0, 0, size)
	if err == nil || !errors.Is(err, syscall.EOPNOTSUPP) {
		return err
	}
	return writeZeros(f, size)
}
