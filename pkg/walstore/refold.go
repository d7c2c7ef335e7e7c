package walstore

import (
	"errors"
	"os"
	"path/filepath"
	"sync/atomic"

	"github.com/pgsafekeeper/safekeeper/internal/pagemap"
)

// ErrRefoldUseless: this kernel or file system does not give a refolded
// segment 2 MiB folios, so refolding only costs a disk read; Refold does
// nothing from then on.
var ErrRefoldUseless = errors.New("refold: no 2 MiB folios on this kernel or file system")

// refoldUseless: see ErrRefoldUseless.
var refoldUseless atomic.Bool

// SetRefold says whether writers refold each segment they finish (see
// Refold) in the background; on by default (--wal-refold).
func SetRefold(on bool) { refoldOff.Store(!on) }

var refoldOff atomic.Bool

// refoldQueueMax bounds the finished segments waiting for a refold (16
// GiB of 16 MiB segments): a writer catching up on a longer backlog
// skips the refold of the oldest, which are then served by copying.
const refoldQueueMax = 1024

// refoldLater queues the finished, durable segment name for a goroutine
// that refolds the segments in order, opening each by name (one removed
// meanwhile is skipped); one per writer at a time, started when there is
// work and ended when there is none, so that an idle timeline costs
// nothing and no descriptor is held while a segment waits.
func (w *Writer) refoldLater(name string) {
	if refoldOff.Load() || refoldUseless.Load() || w.segSize < pagemap.HugeSize {
		return // off, of no use here, or segments too small for a huge entry
	}
	w.refoldMu.Lock()
	defer w.refoldMu.Unlock()
	if w.refoldStop.Load() {
		return
	}
	if len(w.refoldQueue) >= refoldQueueMax {
		w.refoldQueue = append(w.refoldQueue[:0], w.refoldQueue[1:]...)
	}
	w.refoldQueue = append(w.refoldQueue, name)
	if w.refoldRunning {
		return
	}
	w.refoldRunning = true
	idle := make(chan struct{})
	w.refoldIdle = idle
	go func() {
		for {
			w.refoldMu.Lock()
			if len(w.refoldQueue) == 0 || w.refoldStop.Load() {
				w.refoldQueue = nil
				w.refoldRunning = false
				close(idle)
				w.refoldMu.Unlock()
				return
			}
			name := w.refoldQueue[0]
			w.refoldQueue = w.refoldQueue[1:]
			w.refoldMu.Unlock()
			if f, err := os.Open(filepath.Join(w.dir, name)); err == nil {
				_ = Refold(f, int64(w.segSize), &w.refoldStop) // only speed is at stake
				f.Close()
			}
		}
	}()
}

// WaitRefolds waits until the segments finished so far are refolded, for
// tests that need to know what the page cache holds.
func (w *Writer) WaitRefolds() {
	w.refoldMu.Lock()
	idle, running := w.refoldIdle, w.refoldRunning
	w.refoldMu.Unlock()
	if running {
		<-idle
	}
}

// stopRefold skips the refolds not yet started, ends the one under way
// after the region it is reading (see Refold), and waits for it.
func (w *Writer) stopRefold() {
	w.refoldStop.Store(true) // read by the goroutine under refoldMu, and by Refold
	w.WaitRefolds()
}
