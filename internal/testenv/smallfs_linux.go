package testenv

import (
	"fmt"
	"syscall"
	"testing"
)

// SmallFS mounts a file system of size bytes (tmpfs) on a new temporary
// directory and returns its path; it is unmounted when t ends. It lets a
// test fill a disk for real: writes past size fail with ENOSPC, and so
// does creating more than maxFiles files and directories (0 = no limit
// but memory). Mounting needs root (CAP_SYS_ADMIN), which CI has.
func SmallFS(t testing.TB, size int64, maxFiles int) string {
	t.Helper()
	dir := t.TempDir()
	opts := fmt.Sprintf("size=%d,mode=0700", size)
	if maxFiles > 0 {
		opts += fmt.Sprintf(",nr_inodes=%d", maxFiles+1) // the root directory counts
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, opts); err != nil {
		Unavailable(t, "smallfs", fmt.Sprintf("cannot mount a %d-byte tmpfs: %v", size, err), "run the tests as root")
		return ""
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}
