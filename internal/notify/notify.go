// Package notify has the wake-up the timeline's services wait on instead
// of polling: a channel closed, and replaced, on every change.
package notify

import "sync"

// Broadcast wakes every waiter of a change at once. C returns a channel
// that the next Notify closes; take it before reading the state it
// guards, so that a change made after the read is not missed. The zero
// value is ready to use; a Notify with no one waiting allocates nothing.
type Broadcast struct {
	mu sync.Mutex
	ch chan struct{}
}

// C returns the channel the next Notify closes.
func (b *Broadcast) C() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ch == nil {
		b.ch = make(chan struct{})
	}
	return b.ch
}

// Notify wakes everyone waiting on a channel from C.
func (b *Broadcast) Notify() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ch != nil {
		close(b.ch)
		b.ch = nil
	}
}
