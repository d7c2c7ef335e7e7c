package walfetch

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgsafekeeper/safekeeper/pkg/wal"
)

// fakeWalsender speaks just enough of the replication protocol, as a
// safekeeper does: IDENTIFY_SYSTEM, SHOW wal_segment_size,
// TIMELINE_HISTORY and START_REPLICATION, serving walByte's WAL.
type fakeWalsender struct {
	sysID     uint64
	tli       uint32
	flush     wal.LSN
	noWAL     bool
	histories map[uint32]string

	ln net.Listener

	mu       sync.Mutex
	startups []map[string]string
	commands []string
	replies  int // standby status updates received
}

func startFake(t *testing.T, f *fakeWalsender) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.ln = ln
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go f.serve(c)
		}
	}()
	return ln.Addr().String()
}

func (f *fakeWalsender) log() ([]map[string]string, []string, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.startups, f.commands, f.replies
}

func sendError(be *pgproto3.Backend, code, msg string) {
	be.Send(&pgproto3.ErrorResponse{Severity: "ERROR", Code: code, Message: msg})
	be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
}

func sendRows(be *pgproto3.Backend, tag string, cols []string, row ...string) {
	var fields []pgproto3.FieldDescription
	for _, c := range cols {
		fields = append(fields, pgproto3.FieldDescription{Name: []byte(c), DataTypeOID: 25, DataTypeSize: -1, TypeModifier: -1})
	}
	be.Send(&pgproto3.RowDescription{Fields: fields})
	var vals [][]byte
	for _, v := range row {
		vals = append(vals, []byte(v))
	}
	be.Send(&pgproto3.DataRow{Values: vals})
	be.Send(&pgproto3.CommandComplete{CommandTag: []byte(tag)})
	be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
}

func (f *fakeWalsender) serve(c net.Conn) {
	defer c.Close()
	be := pgproto3.NewBackend(c, c)
	var startup *pgproto3.StartupMessage
	for startup == nil {
		msg, err := be.ReceiveStartupMessage()
		if err != nil {
			return
		}
		switch m := msg.(type) {
		case *pgproto3.SSLRequest, *pgproto3.GSSEncRequest:
			c.Write([]byte{'N'})
		case *pgproto3.StartupMessage:
			startup = m
		default:
			return
		}
	}
	f.mu.Lock()
	f.startups = append(f.startups, startup.Parameters)
	f.mu.Unlock()
	be.Send(&pgproto3.AuthenticationOk{})
	be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
	be.Flush()
	for {
		msg, err := be.Receive()
		if err != nil {
			return
		}
		q, ok := msg.(*pgproto3.Query)
		if !ok {
			return // Terminate or a stray message
		}
		f.mu.Lock()
		f.commands = append(f.commands, q.String)
		f.mu.Unlock()
		words := strings.Fields(q.String)
		switch {
		case q.String == "IDENTIFY_SYSTEM":
			if f.noWAL {
				sendError(be, "55000", "safekeeper holds no WAL yet")
				break
			}
			sendRows(be, "IDENTIFY_SYSTEM", []string{"systemid", "timeline", "xlogpos", "dbname"},
				strconv.FormatUint(f.sysID, 10), strconv.Itoa(int(f.tli)), f.flush.String(), "")
		case q.String == "SHOW wal_segment_size":
			sendRows(be, "SHOW", []string{"wal_segment_size"}, wal.FormatSegmentSize(testSegSize))
		case len(words) == 2 && words[0] == "TIMELINE_HISTORY":
			tli, _ := strconv.Atoi(words[1])
			h, ok := f.histories[uint32(tli)]
			if !ok {
				sendError(be, "58P01", "could not open file")
				break
			}
			sendRows(be, "TIMELINE_HISTORY", []string{"filename", "content"}, wal.HistoryFileName(uint32(tli)), h)
		case len(words) == 5 && words[0] == "START_REPLICATION":
			start, _ := wal.ParseLSN(words[2])
			tli, _ := strconv.Atoi(words[4])
			if !f.stream(be, start, uint32(tli)) {
				return
			}
		default:
			sendError(be, "42601", "syntax error")
		}
		if err := be.Flush(); err != nil {
			return
		}
	}
}

// stream serves START_REPLICATION; false ends the connection.
func (f *fakeWalsender) stream(be *pgproto3.Backend, start wal.LSN, tli uint32) bool {
	end, historic := f.flush, false
	if tli != f.tli {
		hist, _ := wal.ParseHistory([]byte(f.histories[f.tli]), f.tli)
		sp, next, ok := wal.SwitchPoint(hist, tli)
		if !ok || tli > f.tli {
			sendError(be, "XX000", "requested timeline is not in this server's history")
			return true
		}
		end, historic = sp, true
		if start >= end {
			sendRows(be, "START_STREAMING", []string{"next_tli", "next_tli_startpos"}, strconv.Itoa(int(next)), sp.String())
			return true
		}
	}
	be.Send(&pgproto3.CopyBothResponse{})
	// A keepalive asking for a reply first, then the WAL in 128 kB pieces.
	ka := []byte{'k'}
	ka = binary.BigEndian.AppendUint64(ka, uint64(start))
	ka = binary.BigEndian.AppendUint64(ka, 0)
	be.Send(&pgproto3.CopyData{Data: append(ka, 1)})
	for l := start; l < end; {
		e := min(end, l+131072)
		be.Send(xlogData(l, end, walBytes(l, e)))
		if err := be.Flush(); err != nil {
			return false
		}
		l = e
	}
	if historic {
		be.Send(&pgproto3.CopyDone{})
	}
	if err := be.Flush(); err != nil {
		return false
	}
	for {
		msg, err := be.Receive()
		if err != nil {
			return false
		}
		switch m := msg.(type) {
		case *pgproto3.CopyData:
			if len(m.Data) > 0 && m.Data[0] == 'r' {
				f.mu.Lock()
				f.replies++
				f.mu.Unlock()
			}
		case *pgproto3.CopyDone:
			if !historic {
				be.Send(&pgproto3.CopyDone{})
			}
			be.Send(&pgproto3.CommandComplete{CommandTag: []byte("START_REPLICATION")})
			be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
			return true
		default:
			return false
		}
	}
}

func isolateLibpq(t *testing.T) {
	t.Setenv("PGPASSFILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("PGSERVICEFILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("PGUSER", "")
	t.Setenv("PGPASSWORD", "")
	t.Setenv("PGSSLMODE", "")
	t.Setenv("PGOPTIONS", "")
	t.Setenv("PGAPPNAME", "")
}

func fetchWithin(t *testing.T, src Source, name string) (Result, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return (&Fetcher{Sources: []Source{src}, Backoff: 10 * time.Millisecond}).Fetch(ctx, name)
}

func TestSafekeeperSegments(t *testing.T) {
	isolateLibpq(t)
	seg := func(n uint64) wal.LSN { return wal.LSN(n * testSegSize) }
	behind := &fakeWalsender{sysID: testSystemID, tli: 1, flush: seg(3) + 300000}
	ahead := &fakeWalsender{sysID: testSystemID, tli: 1, flush: seg(5) + 123457}
	src := &SafekeeperSource{Addrs: []string{startFake(t, behind), startFake(t, ahead)}}

	// Complete on the one ahead.
	res, err := fetchWithin(t, src, segName(3))
	if err != nil {
		t.Fatal(err)
	}
	checkSegment(t, res.Data, res.Durable, seg(3), testSegSize)
	if !strings.Contains(res.From, ahead.ln.Addr().String()) || res.Partial() {
		t.Fatalf("from %s", res.From)
	}
	// The segment holding the flush position: its WAL, then zeros.
	res, err = fetchWithin(t, src, segName(5))
	if err != nil {
		t.Fatal(err)
	}
	checkSegment(t, res.Data, res.Durable, seg(5), 123457)
	if !res.Partial() || !strings.Contains(res.From, "partial") {
		t.Fatalf("from %s", res.From)
	}
	// Past everyone's end, or on a later timeline: not found.
	for _, name := range []string{segName(6), wal.SegmentFileName(2, 3, testSegSize), "00000002.history"} {
		if _, err := fetchWithin(t, src, name); !errors.Is(err, ErrNotFound) {
			t.Fatalf("%s: %v, want ErrNotFound", name, err)
		}
	}
	startups, commands, replies := ahead.log()
	if replies == 0 {
		t.Error("the keepalive asking for a reply got none")
	}
	for _, p := range startups {
		if p["replication"] != "true" || p["user"] != "postgres" || p["database"] != "replication" || p["options"] != "" {
			t.Errorf("startup parameters %v", p)
		}
	}
	want := fmt.Sprintf("START_REPLICATION PHYSICAL %s TIMELINE 1", seg(3))
	found := false
	for _, c := range commands {
		found = found || c == want
	}
	if !found {
		t.Errorf("commands %q lack %q", commands, want)
	}
	if _, commands, _ := behind.log(); strings.Contains(strings.Join(commands, ";"), "START_REPLICATION") {
		t.Errorf("the safekeeper behind was asked to stream: %q", commands)
	}
}

func TestSafekeeperTimelines(t *testing.T) {
	isolateLibpq(t)
	// Timeline 2 forked from 1 in the middle of segment 40.
	sp := wal.LSN(40*testSegSize + 0x80000)
	hist := "1\t" + sp.String() + "\tno recovery target specified\n"
	sk := &fakeWalsender{sysID: testSystemID, tli: 2, flush: 45 * testSegSize, histories: map[uint32]string{2: hist}}
	src := &SafekeeperSource{Addrs: []string{startFake(t, sk)}, User: "replicator",
		TenantID: testTenant, TimelineID: testTimeline}

	res, err := fetchWithin(t, src, "00000002.history")
	if err != nil || string(res.Data) != hist {
		t.Fatalf("history: %q %v", res.Data, err)
	}
	// Timeline 1 up to its switch point: a complete segment, then the
	// segment holding the switch point (to where timeline 1 ends).
	res, err = fetchWithin(t, src, segName(39))
	if err != nil {
		t.Fatal(err)
	}
	checkSegment(t, res.Data, res.Durable, 39*testSegSize, testSegSize)
	res, err = fetchWithin(t, src, segName(40))
	if err != nil {
		t.Fatal(err)
	}
	checkSegment(t, res.Data, res.Durable, 40*testSegSize, 0x80000)
	// Timeline 2's own segment holding the switch point.
	res, err = fetchWithin(t, src, wal.SegmentFileName(2, 40, testSegSize))
	if err != nil {
		t.Fatal(err)
	}
	checkSegment(t, res.Data, res.Durable, 40*testSegSize, testSegSize)
	// Timeline 1 past its switch point, and a timeline not in the history.
	for _, name := range []string{segName(41), wal.SegmentFileName(3, 40, testSegSize), "00000003.history"} {
		if _, err := fetchWithin(t, src, name); !errors.Is(err, ErrNotFound) {
			t.Fatalf("%s: %v, want ErrNotFound", name, err)
		}
	}
	startups, _, _ := sk.log()
	for _, p := range startups {
		if p["user"] != "replicator" || p["options"] != "-c tenant_id="+testTenant+" -c timeline_id="+testTimeline {
			t.Errorf("startup parameters %v", p)
		}
	}
}

func TestSafekeeperFailures(t *testing.T) {
	isolateLibpq(t)
	empty := &fakeWalsender{noWAL: true}
	down := "127.0.0.1:" + strconv.Itoa(closedPort(t))

	// Holding no WAL is an answer.
	src := &SafekeeperSource{Addrs: []string{startFake(t, empty)}}
	if _, err := fetchWithin(t, src, segName(1)); !errors.Is(err, ErrNotFound) {
		t.Fatalf("no WAL: %v", err)
	}
	// An unreachable safekeeper while nobody has the file: a failure.
	src = &SafekeeperSource{Addrs: []string{startFake(t, empty), down}}
	if _, err := fetchWithin(t, src, segName(1)); err == nil || errors.Is(err, ErrNotFound) {
		t.Fatalf("one down: %v", err)
	}
	// ... but another one having it is enough.
	has := &fakeWalsender{sysID: testSystemID, tli: 1, flush: 2 * testSegSize}
	src = &SafekeeperSource{Addrs: []string{down, startFake(t, has)}}
	if res, err := fetchWithin(t, src, segName(1)); err != nil || res.Partial() {
		t.Fatalf("one down, one has it: %v", err)
	}
	// One down and the others hold only part of the segment: the one
	// that is down may hold more (acknowledged commits), so this is a
	// failure, not a padded segment.
	partial := &fakeWalsender{sysID: testSystemID, tli: 1, flush: testSegSize + 1000}
	src = &SafekeeperSource{Addrs: []string{down, startFake(t, partial)}}
	if res, err := fetchWithin(t, src, segName(1)); err == nil || errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "partial") {
		t.Fatalf("one down, the other partial: %+v %v", res.From, err)
	}
	// With every safekeeper answering, the partial segment is the answer.
	src = &SafekeeperSource{Addrs: []string{startFake(t, empty), startFake(t, partial)}}
	if res, err := fetchWithin(t, src, segName(1)); err != nil || !res.Partial() || res.Durable != 1000 {
		t.Fatalf("all answered, partial: %+v %v", res.Durable, err)
	}
	// Safekeepers of different clusters: a failure.
	other := &fakeWalsender{sysID: testSystemID + 1, tli: 1, flush: 2 * testSegSize}
	src = &SafekeeperSource{Addrs: []string{startFake(t, has), startFake(t, other)}}
	if _, err := fetchWithin(t, src, segName(1)); err == nil || errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "disagree") {
		t.Fatalf("two clusters: %v", err)
	}
}

func TestConnString(t *testing.T) {
	isolateLibpq(t)
	s := &SafekeeperSource{ConnInfo: "sslmode=disable user=bob application_name=x"}
	cs, err := s.connString("sk1.example:6000")
	if err != nil || cs != "dbname=replication user=postgres sslmode=disable user=bob application_name=x host='sk1.example' port=6000" {
		t.Fatalf("%q %v", cs, err)
	}
	s = &SafekeeperSource{User: "o'neil"}
	if cs, err = s.connString("[::1]"); err != nil || cs != `dbname=replication user=postgres host='::1' port=5454 user='o\'neil'` {
		t.Fatalf("%q %v", cs, err)
	}
	t.Setenv("PGUSER", "carol")
	if cs, err = (&SafekeeperSource{}).connString("h:1"); err != nil || cs != "dbname=replication host='h' port=1" {
		t.Fatalf("%q %v", cs, err)
	}
	for _, bad := range []string{":5454", "h:port", "h:70000"} {
		if _, err := (&SafekeeperSource{}).connString(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if _, err := (&SafekeeperSource{ConnInfo: "postgres://u@h/db"}).connString("h:1"); err == nil {
		t.Error("URL accepted")
	}
}
