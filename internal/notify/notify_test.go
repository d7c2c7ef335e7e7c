package notify

import "testing"

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func TestBroadcast(t *testing.T) {
	var b Broadcast
	b.Notify() // no one waits: nothing to do
	a1, a2 := b.C(), b.C()
	if a1 != a2 || closed(a1) {
		t.Fatal("waiters before a change share one open channel")
	}
	b.Notify()
	if !closed(a1) {
		t.Fatal("Notify did not wake the waiters")
	}
	next := b.C()
	if closed(next) {
		t.Fatal("the channel after a Notify is already closed")
	}
	b.Notify()
	b.Notify()
	if !closed(next) {
		t.Fatal("second Notify did not wake")
	}
}
