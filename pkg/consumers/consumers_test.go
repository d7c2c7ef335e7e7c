package consumers_test

import (
	"fmt"
	"testing"

	"github.com/pgsafekeeper/safekeeper/pkg/consumers"
	"github.com/pgsafekeeper/safekeeper/pkg/feedback"
	"github.com/pgsafekeeper/safekeeper/pkg/wal"
)

func pageserver(r *consumers.Registry, app string, start, remote wal.LSN) *consumers.Consumer {
	c := r.Add(consumers.Info{ApplicationName: app, Addr: "10.0.0.9:6400"})
	c.SetStart(start)
	c.RecordPageserver(feedback.Pageserver{LastReceivedLSN: 0x9000000, DiskConsistentLSN: 0x8000000, RemoteConsistentLSN: uint64(remote)})
	return c
}

func TestPageserverHorizon(t *testing.T) {
	r := consumers.NewRegistry()
	if _, _, ok := r.PageserverHorizon(); ok {
		t.Fatal("horizon without consumers")
	}
	// Consumers without 'z' feedback hold nothing, whatever else they send.
	standby := r.Add(consumers.Info{ApplicationName: "standby"})
	standby.SetStart(0x100)
	standby.RecordStandby(feedback.StandbyStatus{Write: 0x100, Flush: 0x100, Apply: 0x100})
	hot := r.Add(consumers.Info{ApplicationName: "hot"})
	hot.SetStart(0x200)
	hot.RecordHotStandby(feedback.HotStandby{Xmin: 5})
	silent := r.Add(consumers.Info{ApplicationName: "silent"})
	silent.SetStart(0x300)
	if lsn, app, ok := r.PageserverHorizon(); ok {
		t.Fatalf("horizon %s (%s) from consumers without pageserver feedback", lsn, app)
	}

	a := pageserver(r, "ps-a", 0x1000000, 0x5000000)
	if lsn, app, ok := r.PageserverHorizon(); !ok || lsn != 0x5000000 || app != "ps-a" {
		t.Fatalf("horizon = %s %q %v, want 0/5000000 ps-a", lsn, app, ok)
	}
	// One that has nothing in remote storage yet needs all it streamed.
	b := pageserver(r, "ps-b", 0x3000000, 0)
	if lsn, app, ok := r.PageserverHorizon(); !ok || lsn != 0x3000000 || app != "ps-b" {
		t.Fatalf("horizon = %s %q %v, want 0/3000000 ps-b (its start)", lsn, app, ok)
	}
	// Feedback moves on: the latest message counts.
	b.RecordPageserver(feedback.Pageserver{RemoteConsistentLSN: 0x6000000})
	if lsn, app, ok := r.PageserverHorizon(); !ok || lsn != 0x5000000 || app != "ps-a" {
		t.Fatalf("horizon = %s %q %v, want 0/5000000 ps-a", lsn, app, ok)
	}
	// A consumer that leaves holds nothing any more.
	r.Remove(a)
	if lsn, app, ok := r.PageserverHorizon(); !ok || lsn != 0x6000000 || app != "ps-b" {
		t.Fatalf("horizon = %s %q %v, want 0/6000000 ps-b", lsn, app, ok)
	}
	r.Remove(b)
	if lsn, app, ok := r.PageserverHorizon(); ok {
		t.Fatalf("horizon %s (%s) after every pageserver left", lsn, app)
	}
}

func full(epoch, xid uint32) uint64 { return uint64(epoch)<<32 | uint64(xid) }

// signalled reports (and consumes) a pending HotStandbyChanged signal.
func signalled(r *consumers.Registry) bool {
	select {
	case <-r.HotStandbyChanged():
		return true
	default:
		return false
	}
}

func TestHotStandbyXmin(t *testing.T) {
	r := consumers.NewRegistry()
	if x, c := r.HotStandbyXmin(); x != 0 || c != 0 {
		t.Fatalf("empty registry: %d %d", x, c)
	}
	c1 := r.Add(consumers.Info{ApplicationName: "s1"})
	c2 := r.Add(consumers.Info{ApplicationName: "s2"})
	c3 := r.Add(consumers.Info{ApplicationName: "s3"})
	plain := r.Add(consumers.Info{ApplicationName: "no-feedback"})
	if signalled(r) {
		t.Fatal("signal before any feedback")
	}
	c1.RecordHotStandby(feedback.HotStandby{Xmin: 100, XminEpoch: 1})
	if !signalled(r) {
		t.Fatal("no signal after first hot standby feedback")
	}
	c2.RecordHotStandby(feedback.HotStandby{Xmin: 50, XminEpoch: 2, CatalogXmin: 70, CatalogXminEpoch: 1})
	c3.RecordHotStandby(feedback.HotStandby{}) // feedback turned off
	signalled(r)
	// The oldest of each among those that set it; the epoch counts.
	if x, c := r.HotStandbyXmin(); x != full(1, 100) || c != full(1, 70) {
		t.Fatalf("HotStandbyXmin = %#x %#x, want %#x %#x", x, c, full(1, 100), full(1, 70))
	}
	// The same values again: nothing changed, no signal.
	c1.RecordHotStandby(feedback.HotStandby{Xmin: 100, XminEpoch: 1, SendTime: 12345})
	if signalled(r) {
		t.Fatal("signal for unchanged feedback")
	}
	c1.RecordHotStandby(feedback.HotStandby{Xmin: 101, XminEpoch: 1})
	if !signalled(r) {
		t.Fatal("no signal after xmin moved")
	}
	// A consumer without hot standby feedback leaves: no signal.
	r.Remove(plain)
	if signalled(r) {
		t.Fatal("signal after a consumer without feedback left")
	}
	// Feedback of consumers that left is gone (and that is signalled).
	r.Remove(c1)
	if !signalled(r) {
		t.Fatal("no signal after a consumer with feedback left")
	}
	if x, c := r.HotStandbyXmin(); x != full(2, 50) || c != full(1, 70) {
		t.Fatalf("HotStandbyXmin = %#x %#x, want %#x %#x", x, c, full(2, 50), full(1, 70))
	}
	r.Remove(c2)
	if x, c := r.HotStandbyXmin(); x != 0 || c != 0 {
		t.Fatalf("HotStandbyXmin = %#x %#x after feedback senders left, want 0 0", x, c)
	}
}

func TestNoteRebootstrap(t *testing.T) {
	r := consumers.NewRegistry()
	if got := r.NeedsRebootstrap(); len(got) != 0 {
		t.Fatalf("initial list %+v", got)
	}
	r.NoteRebootstrap(consumers.Info{ApplicationName: "standby", Addr: "10.1.1.1:40000", Slot: "s"}, 0x1000000, 0x3000000)
	r.NoteRebootstrap(consumers.Info{ApplicationName: "standby", Addr: "10.1.1.1:40000", Slot: "other"}, 0x1000000, 0x3000000)
	r.NoteRebootstrap(consumers.Info{ApplicationName: "standby", Addr: "10.1.1.2:40000", Slot: "s"}, 0x1000000, 0x3000000)
	r.NoteRebootstrap(consumers.Info{ApplicationName: "receiver", Addr: "10.1.1.1:40000", Slot: "s"}, 0x1000000, 0x3000000)
	// The first consumer reconnects from another port and asks again:
	// its entry is replaced and becomes the newest.
	r.NoteRebootstrap(consumers.Info{ApplicationName: "standby", Addr: "10.1.1.1:40001", Slot: "s"}, 0x2000000, 0x4000000)
	got := r.NeedsRebootstrap()
	if len(got) != 4 {
		t.Fatalf("%d entries, want 4: %+v", len(got), got)
	}
	last := got[3]
	if last.ApplicationName != "standby" || last.Address != "10.1.1.1:40001" || last.Slot != "s" ||
		last.RequestedLSN != "0/2000000" || last.OldestAvailable != "0/4000000" || last.At.IsZero() {
		t.Fatalf("replaced entry %+v", last)
	}
	order := []string{got[0].Slot + "@" + got[0].Address, got[1].Slot + "@" + got[1].Address, got[2].ApplicationName}
	if order[0] != "other@10.1.1.1:40000" || order[1] != "s@10.1.1.2:40000" || order[2] != "receiver" {
		t.Fatalf("order %v", order)
	}
	// The returned list is a copy.
	got[0].Slot = "changed"
	if r.NeedsRebootstrap()[0].Slot != "other" {
		t.Fatal("NeedsRebootstrap returned the registry's own slice")
	}
	// Bounded: only the newest 64 are kept.
	b := consumers.NewRegistry()
	for i := 0; i < 70; i++ {
		b.NoteRebootstrap(consumers.Info{ApplicationName: fmt.Sprintf("app%02d", i), Addr: "[::1]:5000"}, wal.LSN(i), 100)
	}
	list := b.NeedsRebootstrap()
	if len(list) != 64 || list[0].ApplicationName != "app06" || list[63].ApplicationName != "app69" {
		t.Fatalf("bounded list: %d entries from %s to %s, want 64 from app06 to app69", len(list), list[0].ApplicationName, list[len(list)-1].ApplicationName)
	}
	// Dedupe also applies to IPv6 addresses and to addresses without a port.
	b.NoteRebootstrap(consumers.Info{ApplicationName: "app10", Addr: "[::1]:6000"}, 1, 100)
	b.NoteRebootstrap(consumers.Info{ApplicationName: "sock", Addr: "/tmp/.s.PGSQL.5432"}, 1, 100)
	b.NoteRebootstrap(consumers.Info{ApplicationName: "sock", Addr: "/tmp/.s.PGSQL.5432"}, 2, 100)
	list = b.NeedsRebootstrap()
	if len(list) != 64 || list[62].ApplicationName != "app10" || list[63].ApplicationName != "sock" || list[63].RequestedLSN != "0/2" {
		t.Fatalf("after dedupe: %d entries, last %+v %+v", len(list), list[62], list[63])
	}
	for _, e := range list[:62] {
		if e.ApplicationName == "app10" || e.ApplicationName == "sock" {
			t.Fatalf("duplicate entry %+v", e)
		}
	}
}

func TestStatusAndRemove(t *testing.T) {
	r := consumers.NewRegistry()
	c := r.Add(consumers.Info{ApplicationName: "walreceiver", Addr: "10.0.0.5:5555", PID: 77, Slot: "sb"})
	d := r.Add(consumers.Info{ApplicationName: "pg_receivewal"})
	c.SetStart(0x3000000)
	if c.SentLSN() != 0x3000000 {
		t.Fatalf("SentLSN after SetStart = %s", c.SentLSN())
	}
	c.SetSent(0x3000800)
	list := r.List()
	if len(list) != 2 || r.Len() != 2 || list[0].ApplicationName != "walreceiver" || list[1].ApplicationName != "pg_receivewal" || list[0].ID >= list[1].ID {
		t.Fatalf("List = %+v", list)
	}
	s := list[0]
	if s.StartLSN != "0/3000000" || s.SentLSN != "0/3000800" || s.PID != 77 || s.Slot != "sb" || s.Address != "10.0.0.5:5555" || s.ConnectedAt.IsZero() {
		t.Fatalf("status %+v", s)
	}
	if s.Feedback != nil || s.HotStandby != nil || s.Pageserver != nil || s.LastFeedbackAt != nil {
		t.Fatalf("feedback reported before any: %+v", s)
	}
	c.RecordStandby(feedback.StandbyStatus{Write: 0x3000800, Flush: 0x3000400, Apply: 0x3000000})
	c.RecordHotStandby(feedback.HotStandby{Xmin: 9, XminEpoch: 1, CatalogXmin: 8})
	c.RecordPageserver(feedback.Pageserver{LastReceivedLSN: 3, DiskConsistentLSN: 2, RemoteConsistentLSN: 1, CurrentTimelineSize: 42})
	s = c.Status()
	if s.Feedback == nil || *s.Feedback != (consumers.StandbyFeedbackJSON{WriteLSN: "0/3000800", FlushLSN: "0/3000400", ApplyLSN: "0/3000000"}) {
		t.Fatalf("standby feedback %+v", s.Feedback)
	}
	if s.HotStandby == nil || *s.HotStandby != (consumers.HotStandbyJSON{Xmin: full(1, 9), CatalogXmin: 8}) {
		t.Fatalf("hot standby feedback %+v", s.HotStandby)
	}
	if s.Pageserver == nil || *s.Pageserver != (consumers.PageserverJSON{LastReceivedLSN: "0/3", DiskConsistentLSN: "0/2", RemoteConsistentLSN: "0/1", CurrentTimelineSize: 42}) {
		t.Fatalf("pageserver feedback %+v", s.Pageserver)
	}
	if s.LastFeedbackAt == nil {
		t.Fatal("no last feedback time")
	}
	// Removing drops the consumer and its feedback.
	r.Remove(c)
	if r.Len() != 1 || len(r.List()) != 1 || r.List()[0].ApplicationName != "pg_receivewal" {
		t.Fatalf("after Remove: %+v", r.List())
	}
	if _, _, ok := r.PageserverHorizon(); ok {
		t.Fatal("removed consumer's pageserver feedback still holds WAL")
	}
	if x, cx := r.HotStandbyXmin(); x != 0 || cx != 0 {
		t.Fatalf("removed consumer's hot standby feedback still counts: %d %d", x, cx)
	}
	r.Remove(d)
	if r.Len() != 0 {
		t.Fatal("registry not empty")
	}
	// Ids are not reused.
	if e := r.Add(consumers.Info{}); e.Status().ID <= list[1].ID {
		t.Fatalf("id %d reused", e.Status().ID)
	}
}

func woke(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// PageserverChanged wakes retention exactly when the pageserver horizon
// can have moved, not at every message.
func TestPageserverChanged(t *testing.T) {
	r := consumers.NewRegistry()
	step := func(what string, want bool, do func()) {
		t.Helper()
		ch := r.PageserverChanged()
		do()
		if got := woke(ch); got != want {
			t.Fatalf("%s: woke %v, want %v", what, got, want)
		}
	}
	var ps, standby *consumers.Consumer
	step("a consumer connects", false, func() { ps = r.Add(consumers.Info{ApplicationName: "ps"}) })
	step("its start, before any feedback", false, func() { ps.SetStart(0x1000000) })
	step("first pageserver feedback", true, func() { ps.RecordPageserver(feedback.Pageserver{LastReceivedLSN: 0x2000000}) })
	step("feedback without a new remote_consistent_lsn", false, func() {
		ps.RecordPageserver(feedback.Pageserver{LastReceivedLSN: 0x3000000, DiskConsistentLSN: 0x3000000})
	})
	step("a new remote_consistent_lsn", true, func() { ps.RecordPageserver(feedback.Pageserver{RemoteConsistentLSN: 0x2000000}) })
	step("a standby connects and reports", false, func() {
		standby = r.Add(consumers.Info{ApplicationName: "standby"})
		standby.SetStart(0x100)
		standby.RecordStandby(feedback.StandbyStatus{Flush: 0x100})
	})
	step("the standby leaves", false, func() { r.Remove(standby) })
	step("the pageserver leaves", true, func() { r.Remove(ps) })
}

// The status shows the tier that served the consumer's last read; noting
// an unchanged tier allocates nothing.
func TestConsumerTier(t *testing.T) {
	r := consumers.NewRegistry()
	c := r.Add(consumers.Info{ApplicationName: "a"})
	if s := c.Status(); s.Tier != "" {
		t.Fatalf("tier %q before any read", s.Tier)
	}
	c.WALRead("local", 100)
	c.WALRead("memory", 100)
	if s := c.Status(); s.Tier != "memory" {
		t.Fatalf("tier %q, want memory", s.Tier)
	}
	if a := testing.AllocsPerRun(100, func() { c.WALRead("memory", 100) }); a != 0 {
		t.Fatalf("%v allocations per read from the same tier", a)
	}
}
