package walstore

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
)

// ReserveFileName is the emergency reserve file in the data directory.
const ReserveFileName = "safekeeper.reserve"

// DefaultReserveSize is the size of the emergency reserve: room for
// thousands of control-file and slot-file rewrites.
const DefaultReserveSize = 1 << 20

// Reserve is a file of preallocated space kept in the data directory so
// that a full disk cannot wedge the node. When WAL can no longer be
// written, the reserve is released: control-file writes (the offloader's
// backup position, retention's new local start) then still succeed, so
// that retention can remove archived segments and free the space that
// lets ingest resume. CockroachDB keeps an emergency ballast for the same
// reason.
type Reserve struct {
	path string
	size int64

	mu   sync.Mutex
	held bool
}

// NewReserve returns the reserve of dataDir; call Ensure to create it.
func NewReserve(dataDir string, size int64) *Reserve {
	return &Reserve{path: filepath.Join(dataDir, ReserveFileName), size: size}
}

// Ensure creates the reserve file when it is missing or short. On a full
// disk it fails with an error IsNoSpace recognizes and leaves no file.
func (r *Reserve) Ensure() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if fi, err := os.Stat(r.path); err == nil && fi.Size() == r.size {
		r.held = true
		return nil
	}
	f, err := os.OpenFile(r.path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("create reserve %q: %w", r.path, err)
	}
	err = allocate(f, r.size)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(r.path)
		return fmt.Errorf("fill reserve %q: %w", r.path, err)
	}
	r.held = true
	return nil
}

// writeZeros gives f size bytes by writing zeros.
func writeZeros(f *os.File, size int64) error {
	buf := make([]byte, 64<<10)
	for off := int64(0); off < size; off += int64(len(buf)) {
		n := min(int64(len(buf)), size-off)
		if _, err := f.WriteAt(buf[:n], off); err != nil {
			return err
		}
	}
	return nil
}

// Release removes the reserve file, freeing its space. It reports whether
// there was one to remove.
func (r *Reserve) Release() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.held = false
	return os.Remove(r.path) == nil
}

// Resume reports whether there is room to take WAL again: at least need
// bytes free besides the reserve, which is put back first. free is what
// the file system offers to unprivileged writers.
func (r *Reserve) Resume(need uint64) (free uint64, ok bool, err error) {
	free, err = FreeBytes(filepath.Dir(r.path))
	if err != nil {
		return 0, false, err
	}
	r.mu.Lock()
	held := r.held
	r.mu.Unlock()
	want := need
	if !held {
		want += uint64(r.size)
	}
	if free < want {
		return free, false, nil
	}
	if err := r.Ensure(); err != nil {
		if IsNoSpace(err) {
			return free, false, nil
		}
		return free, false, err
	}
	return free, true, nil
}

// FreeBytes returns the space available to unprivileged writers on the
// file system holding path.
func FreeBytes(path string) (uint64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return 0, fmt.Errorf("statfs %q: %w", path, err)
	}
	return st.Bavail * uint64(st.Bsize), nil
}
