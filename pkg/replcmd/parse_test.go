package replcmd_test

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/pgsafekeeper/safekeeper/pkg/pgerr"
	"github.com/pgsafekeeper/safekeeper/pkg/replcmd"
)

type cmd = replcmd.Command

// Error expectations: code and exact message.
type wantErr struct{ code, msg string }

var (
	notRepl      = &wantErr{pgerr.FeatureNotSupported, "cannot execute SQL commands in WAL sender for physical replication"}
	syntax       = &wantErr{pgerr.SyntaxError, "syntax error"}
	badTimeline  = &wantErr{pgerr.SyntaxError, "invalid timeline 0"}
	conflicting  = &wantErr{pgerr.SyntaxError, "conflicting or redundant options"}
	notBool      = &wantErr{pgerr.SyntaxError, "reserve_wal requires a Boolean value"}
	untermIdent  = &wantErr{pgerr.SyntaxError, "unterminated quoted string"} // PostgreSQL's text for '"' too
	untermString = &wantErr{pgerr.SyntaxError, "unterminated quoted string"}
)

func unrecognized(name string) *wantErr {
	return &wantErr{pgerr.InternalError, "unrecognized option: " + name}
}

type parseCase struct {
	q    string
	want cmd
	err  *wantErr
}

var parseCases = []parseCase{
	// Client strings: pg_receivewal, walreceiver, psql/TAP tests (protocol.md §2, §6, §9).
	{q: "IDENTIFY_SYSTEM", want: cmd{Kind: replcmd.IdentifySystem}},
	{q: "SHOW data_directory_mode", want: cmd{Kind: replcmd.Show, Name: "data_directory_mode"}},
	{q: "SHOW wal_segment_size", want: cmd{Kind: replcmd.Show, Name: "wal_segment_size"}},
	{q: "SHOW server_version_num", want: cmd{Kind: replcmd.Show, Name: "server_version_num"}},
	{q: "SHOW work_mem", want: cmd{Kind: replcmd.Show, Name: "work_mem"}},
	{q: "SHOW primary_conninfo", want: cmd{Kind: replcmd.Show, Name: "primary_conninfo"}},
	{q: "SHOW ALL", want: cmd{Kind: replcmd.Show, Name: "all"}},
	{q: "TIMELINE_HISTORY 2", want: cmd{Kind: replcmd.TimelineHistory, Timeline: 2, HasTimeline: true}},
	{q: "TIMELINE_HISTORY 4", want: cmd{Kind: replcmd.TimelineHistory, Timeline: 4, HasTimeline: true}},
	{q: "READ_REPLICATION_SLOT nosuch", want: cmd{Kind: replcmd.ReadReplicationSlot, Name: "nosuch"}},
	{q: "READ_REPLICATION_SLOT test", want: cmd{Kind: replcmd.ReadReplicationSlot, Name: "test"}},
	{q: "READ_REPLICATION_SLOT s2", want: cmd{Kind: replcmd.ReadReplicationSlot, Name: "s2"}},
	{q: "READ_REPLICATION_SLOT non_existent_slot", want: cmd{Kind: replcmd.ReadReplicationSlot, Name: "non_existent_slot"}},
	{q: "READ_REPLICATION_SLOT archive_slot", want: cmd{Kind: replcmd.ReadReplicationSlot, Name: "archive_slot"}},
	{q: `CREATE_REPLICATION_SLOT "test" PHYSICAL`, want: cmd{Kind: replcmd.CreateReplicationSlot, Name: "test"}},
	{q: "CREATE_REPLICATION_SLOT s2 PHYSICAL ( RESERVE_WAL)", want: cmd{Kind: replcmd.CreateReplicationSlot, Name: "s2", ReserveWAL: true}},
	{q: "CREATE_REPLICATION_SLOT archive_slot PHYSICAL (RESERVE_WAL)", want: cmd{Kind: replcmd.CreateReplicationSlot, Name: "archive_slot", ReserveWAL: true}},
	{q: `CREATE_REPLICATION_SLOT "test" PHYSICAL ( RESERVE_WAL)`, want: cmd{Kind: replcmd.CreateReplicationSlot, Name: "test", ReserveWAL: true}},
	{q: `CREATE_REPLICATION_SLOT "test" PHYSICAL RESERVE_WAL`, want: cmd{Kind: replcmd.CreateReplicationSlot, Name: "test", ReserveWAL: true}},
	{q: `CREATE_REPLICATION_SLOT "pg_walreceiver_21435" TEMPORARY PHYSICAL (RESERVE_WAL)`, want: cmd{Kind: replcmd.CreateReplicationSlot, Name: "pg_walreceiver_21435", Temporary: true, ReserveWAL: true}},
	{q: `CREATE_REPLICATION_SLOT "pg_walreceiver_21435" TEMPORARY PHYSICAL RESERVE_WAL`, want: cmd{Kind: replcmd.CreateReplicationSlot, Name: "pg_walreceiver_21435", Temporary: true, ReserveWAL: true}},
	{q: `DROP_REPLICATION_SLOT "test"`, want: cmd{Kind: replcmd.DropReplicationSlot, Name: "test"}},
	{q: "DROP_REPLICATION_SLOT s3", want: cmd{Kind: replcmd.DropReplicationSlot, Name: "s3"}},
	{q: `START_REPLICATION SLOT "rwslot" 0/900000 TIMELINE 1`, want: cmd{Kind: replcmd.StartReplication, Slot: "rwslot", LSN: 0x900000, Timeline: 1, HasTimeline: true}},
	{q: "START_REPLICATION 0/900000 TIMELINE 1", want: cmd{Kind: replcmd.StartReplication, LSN: 0x900000, Timeline: 1, HasTimeline: true}},
	{q: `START_REPLICATION SLOT "sbslot" 0/800000 TIMELINE 1`, want: cmd{Kind: replcmd.StartReplication, Slot: "sbslot", LSN: 0x800000, Timeline: 1, HasTimeline: true}},
	{q: "START_REPLICATION 0/C00000 TIMELINE 4", want: cmd{Kind: replcmd.StartReplication, LSN: 0xC00000, Timeline: 4, HasTimeline: true}},
	{q: "START_REPLICATION 0/C00000 TIMELINE 3", want: cmd{Kind: replcmd.StartReplication, LSN: 0xC00000, Timeline: 3, HasTimeline: true}},
	{q: "START_REPLICATION 0/600000 TIMELINE 1", want: cmd{Kind: replcmd.StartReplication, LSN: 0x600000, Timeline: 1, HasTimeline: true}},
	{q: `START_REPLICATION SLOT "archive_slot" 0/900000 TIMELINE 2`, want: cmd{Kind: replcmd.StartReplication, Slot: "archive_slot", LSN: 0x900000, Timeline: 2, HasTimeline: true}},
	{q: "START_REPLICATION 0/600123", want: cmd{Kind: replcmd.StartReplication, LSN: 0x600123}},

	// Lexical details.
	{q: "IDENTIFY_SYSTEM;", want: cmd{Kind: replcmd.IdentifySystem}},
	{q: " \t\n\r\f\vIDENTIFY_SYSTEM \v;\n", want: cmd{Kind: replcmd.IdentifySystem}},
	{q: "IDENTIFY_SYSTEM;;", err: syntax},
	{q: "IDENTIFY_SYSTEM; SHOW x", err: syntax},
	{q: "IDENTIFY_SYSTEM SHOW", err: syntax},
	{q: "IDENTIFY_SYSTEM x", err: syntax},
	{q: "IDENTIFY_SYSTEM ; x", err: syntax},
	{q: "IDENTIFY_SYSTEM 'x", err: unterminatedString()},
	{q: "SHOW Wal_Segment_Size", want: cmd{Kind: replcmd.Show, Name: "wal_segment_size"}},
	{q: `SHOW "Wal_Segment_Size"`, want: cmd{Kind: replcmd.Show, Name: "Wal_Segment_Size"}},
	// No doubled-quote escape in quoted identifiers, as in PostgreSQL's
	// replication scanner: these are two identifiers.
	{q: `SHOW "a""b"`, err: syntax},
	{q: `SHOW """"`, err: syntax},
	{q: `SHOW ""`, want: cmd{Kind: replcmd.Show, Name: ""}},
	{q: "SHOW a.b", want: cmd{Kind: replcmd.Show, Name: "a.b"}},
	{q: "SHOW a . b .c", want: cmd{Kind: replcmd.Show, Name: "a.b.c"}},
	{q: `SHOW a."B".c`, want: cmd{Kind: replcmd.Show, Name: "a.B.c"}},
	{q: `SHOW "A".b`, want: cmd{Kind: replcmd.Show, Name: "A.b"}},
	{q: "SHOW a.B.c", want: cmd{Kind: replcmd.Show, Name: "a.b.c"}},
	{q: "SHOW a.b.C", want: cmd{Kind: replcmd.Show, Name: "a.b.c"}},
	{q: "SHOW x;", want: cmd{Kind: replcmd.Show, Name: "x"}},
	{q: "SHOW\tx\n;", want: cmd{Kind: replcmd.Show, Name: "x"}},
	{q: "SHOW\"x\"", want: cmd{Kind: replcmd.Show, Name: "x"}},
	{q: "SHOW a$1_", want: cmd{Kind: replcmd.Show, Name: "a$1_"}},
	{q: "SHOW _x", want: cmd{Kind: replcmd.Show, Name: "_x"}},
	{q: "SHOW timeline", want: cmd{Kind: replcmd.Show, Name: "timeline"}},
	{q: "SHOW Slot", want: cmd{Kind: replcmd.Show, Name: "slot"}},
	{q: "SHOW é", want: cmd{Kind: replcmd.Show, Name: "é"}},
	{q: "SHOW É", want: cmd{Kind: replcmd.Show, Name: "É"}}, // only ASCII is down-cased
	{q: "SHOW abc/1", err: syntax},                          // hex/hex is an LSN token
	{q: "SHOW " + strings.Repeat("a", 70), want: cmd{Kind: replcmd.Show, Name: strings.Repeat("a", 63)}},
	{q: "SHOW " + strings.Repeat("A", 64), want: cmd{Kind: replcmd.Show, Name: strings.Repeat("a", 63)}},
	{q: `SHOW "` + strings.Repeat("B", 64) + `"`, want: cmd{Kind: replcmd.Show, Name: strings.Repeat("B", 63)}},
	{q: "SHOW " + strings.Repeat("a", 64) + "." + strings.Repeat("b", 64), want: cmd{Kind: replcmd.Show, Name: strings.Repeat("a", 63) + "." + strings.Repeat("b", 63)}},
	{q: "SHOW", err: syntax},
	{q: "SHOW;", err: syntax},
	{q: "SHOW a b", err: syntax},
	{q: "SHOW a.", err: syntax},
	{q: "SHOW .a", err: syntax},
	{q: "SHOW a..b", err: syntax},
	{q: "SHOW TIMELINE", err: syntax},
	{q: "SHOW SHOW", err: syntax},
	{q: "SHOW a.SLOT", err: syntax},
	{q: "SHOW 'x'", err: syntax},
	{q: "SHOW 1", err: syntax},
	{q: "SHOW 1abc", err: syntax},
	{q: "SHOW $a", err: syntax},
	{q: `SHOW "x`, err: unterminatedIdent()},
	{q: `SHOW a."x`, err: unterminatedIdent()},
	{q: `SHOW a "x`, err: unterminatedIdent()},

	// TIMELINE_HISTORY.
	{q: "TIMELINE_HISTORY 1", want: cmd{Kind: replcmd.TimelineHistory, Timeline: 1, HasTimeline: true}},
	{q: "TIMELINE_HISTORY 00002;", want: cmd{Kind: replcmd.TimelineHistory, Timeline: 2, HasTimeline: true}},
	{q: "TIMELINE_HISTORY 4294967295", want: cmd{Kind: replcmd.TimelineHistory, Timeline: 4294967295, HasTimeline: true}},
	{q: "TIMELINE_HISTORY 0", err: badTimeline},
	{q: "TIMELINE_HISTORY 000", err: badTimeline},
	{q: "TIMELINE_HISTORY 0 x", err: badTimeline},
	{q: "TIMELINE_HISTORY 4294967296", err: syntax},
	{q: "TIMELINE_HISTORY 99999999999999999999999", err: syntax},
	{q: "TIMELINE_HISTORY", err: syntax},
	{q: "TIMELINE_HISTORY -1", err: syntax},
	{q: "TIMELINE_HISTORY 1 2", err: syntax},
	{q: "TIMELINE_HISTORY x", err: syntax},
	{q: "TIMELINE_HISTORY '2'", err: syntax},
	{q: "TIMELINE_HISTORY 0/2", err: syntax},

	// START_REPLICATION.
	{q: "START_REPLICATION SLOT s PHYSICAL 16/B374D848 TIMELINE 3;", want: cmd{Kind: replcmd.StartReplication, Slot: "s", LSN: 0x16_B374D848, Timeline: 3, HasTimeline: true}},
	{q: "START_REPLICATION PHYSICAL 0/0", want: cmd{Kind: replcmd.StartReplication}},
	{q: "START_REPLICATION FFFFFFFF/FFFFFFFF TIMELINE 4294967295", want: cmd{Kind: replcmd.StartReplication, LSN: ^uint64(0), Timeline: 4294967295, HasTimeline: true}},
	{q: "START_REPLICATION abc/def", want: cmd{Kind: replcmd.StartReplication, LSN: 0xabc_00000def}},
	{q: "START_REPLICATION 00000000/00000001", want: cmd{Kind: replcmd.StartReplication, LSN: 1}},
	{q: "START_REPLICATION 0/900000TIMELINE 1", want: cmd{Kind: replcmd.StartReplication, LSN: 0x900000, Timeline: 1, HasTimeline: true}},
	{q: "START_REPLICATION SLOT slot 0/1", want: cmd{Kind: replcmd.StartReplication, Slot: "slot", LSN: 1}},
	{q: `START_REPLICATION SLOT "PHYSICAL" 0/1`, want: cmd{Kind: replcmd.StartReplication, Slot: "PHYSICAL", LSN: 1}},
	{q: "START_REPLICATION SLOT RwSlot 0/1", want: cmd{Kind: replcmd.StartReplication, Slot: "rwslot", LSN: 1}},
	{q: `START_REPLICATION SLOT "s" LOGICAL 0/0`, want: cmd{Kind: replcmd.StartReplication, Slot: "s", Logical: true}},
	{q: `START_REPLICATION SLOT "s" LOGICAL 1/2 (proto_version '1', publication_names '"p"')`, want: cmd{Kind: replcmd.StartReplication, Slot: "s", Logical: true, LSN: 1<<32 | 2}},
	{q: `START_REPLICATION SLOT s LOGICAL 0/0 ((( anything`, err: syntax},
	{q: `START_REPLICATION SLOT s LOGICAL 0/0 garbage`, err: syntax},
	{q: `START_REPLICATION SLOT s LOGICAL 0/0 (a 'b', c);`, want: cmd{Kind: replcmd.StartReplication, Slot: "s", Logical: true}},
	{q: `START_REPLICATION SLOT s LOGICAL 0/0 (SLOT 'b')`, err: syntax},
	{q: `START_REPLICATION SLOT s LOGICAL 0/0 (a 1)`, err: syntax},
	{q: `START_REPLICATION SLOT s LOGICAL 0/0 ()`, err: syntax},
	{q: `START_REPLICATION SLOT s LOGICAL 0/0 ('x`, err: unterminatedString()},
	{q: "START_REPLICATION SLOT s LOGICAL", err: syntax},
	{q: "START_REPLICATION SLOT s LOGICAL 1", err: syntax},
	{q: "START_REPLICATION LOGICAL 0/0", err: syntax},
	{q: `START_REPLICATION SLOT "" 0/0`, err: &wantErr{pgerr.UndefinedObject, `replication slot "" does not exist`}},
	// PostgreSQL checks wal_level before it looks for a logical slot.
	{q: `START_REPLICATION SLOT "" LOGICAL 0/0`, want: cmd{Kind: replcmd.StartReplication, Logical: true}},
	{q: `START_REPLICATION SLOT "" 0/0 x`, err: syntax},
	{q: "START_REPLICATION", err: syntax},
	{q: "START_REPLICATION;", err: syntax},
	{q: "START_REPLICATION SLOT", err: syntax},
	{q: "START_REPLICATION SLOT s", err: syntax},
	{q: "START_REPLICATION SLOT 0/0", err: syntax},
	{q: "START_REPLICATION SLOT PHYSICAL 0/0", err: syntax},
	{q: "START_REPLICATION SLOT 's' 0/0", err: syntax},
	{q: "START_REPLICATION SLOT a.b 0/0", err: syntax},
	{q: "START_REPLICATION PHYSICAL SLOT s 0/0", err: syntax},
	{q: "START_REPLICATION PHYSICAL PHYSICAL 0/0", err: syntax},
	{q: "START_REPLICATION 0/0 PHYSICAL", err: syntax},
	{q: "START_REPLICATION 0/0 TIMELINE", err: syntax},
	{q: "START_REPLICATION 0/0 TIMELINE 0", err: badTimeline},
	{q: "START_REPLICATION 0/0 TIMELINE 0 junk", err: badTimeline},
	{q: "START_REPLICATION 0/0 TIMELINE 4294967296", err: syntax},
	{q: "START_REPLICATION 0/0 TIMELINE 1 2", err: syntax},
	{q: "START_REPLICATION 0/0 TIMELINE 1 TIMELINE 1", err: syntax},
	{q: "START_REPLICATION 0/0 timeline 1", err: syntax},
	{q: "START_REPLICATION 0/0 TIMELINE x", err: syntax},
	{q: "START_REPLICATION 0/0; START_REPLICATION 0/0", err: syntax},
	{q: "START_REPLICATION 0/123456789", err: syntax},
	{q: "START_REPLICATION 123456789/0", err: syntax},
	{q: "START_REPLICATION 0/", err: syntax},
	{q: "START_REPLICATION /0", err: syntax},
	{q: "START_REPLICATION 0//0", err: syntax},
	{q: "START_REPLICATION 0x0/0", err: syntax},
	{q: "START_REPLICATION 0/0/0", err: syntax},
	{q: "START_REPLICATION 0/G", err: syntax},
	{q: "START_REPLICATION 12", err: syntax},
	{q: "START_REPLICATION '0/0'", err: syntax},
	{q: "START_REPLICATION 0 / 0", err: syntax},
	{q: `START_REPLICATION SLOT "rwslot 0/900000 TIMELINE 1`, err: unterminatedIdent()},

	// CREATE_REPLICATION_SLOT.
	{q: "CREATE_REPLICATION_SLOT x PHYSICAL;", want: cmd{Kind: replcmd.CreateReplicationSlot, Name: "x"}},
	{q: "CREATE_REPLICATION_SLOT X TEMPORARY PHYSICAL", want: cmd{Kind: replcmd.CreateReplicationSlot, Name: "x", Temporary: true}},
	{q: `CREATE_REPLICATION_SLOT "Bad-Name" PHYSICAL`, want: cmd{Kind: replcmd.CreateReplicationSlot, Name: "Bad-Name"}},
	{q: "CREATE_REPLICATION_SLOT x PHYSICAL (reserve_wal)", want: cmd{Kind: replcmd.CreateReplicationSlot, Name: "x", ReserveWAL: true}},
	{q: "CREATE_REPLICATION_SLOT x PHYSICAL(RESERVE_WAL);", want: cmd{Kind: replcmd.CreateReplicationSlot, Name: "x", ReserveWAL: true}},
	{q: "CREATE_REPLICATION_SLOT x PHYSICAL (Reserve_Wal)", want: cmd{Kind: replcmd.CreateReplicationSlot, Name: "x", ReserveWAL: true}},
	{q: "CREATE_REPLICATION_SLOT x PHYSICAL (reserve_wal true)", want: cmd{Kind: replcmd.CreateReplicationSlot, Name: "x", ReserveWAL: true}},
	{q: "CREATE_REPLICATION_SLOT x PHYSICAL (reserve_wal TRUE)", want: cmd{Kind: replcmd.CreateReplicationSlot, Name: "x", ReserveWAL: true}},
	{q: "CREATE_REPLICATION_SLOT x PHYSICAL (reserve_wal false)", want: cmd{Kind: replcmd.CreateReplicationSlot, Name: "x"}},
	{q: "CREATE_REPLICATION_SLOT x PHYSICAL (reserve_wal 'on')", want: cmd{Kind: replcmd.CreateReplicationSlot, Name: "x", ReserveWAL: true}},
	{q: "CREATE_REPLICATION_SLOT x PHYSICAL (reserve_wal 'OFF')", want: cmd{Kind: replcmd.CreateReplicationSlot, Name: "x"}},
	{q: "CREATE_REPLICATION_SLOT x PHYSICAL (reserve_wal off)", want: cmd{Kind: replcmd.CreateReplicationSlot, Name: "x"}},
	// PostgreSQL's defGetBoolean: true/false/on/off or the numbers 0 and 1.
	{q: "CREATE_REPLICATION_SLOT x PHYSICAL (reserve_wal yes)", err: notBool},
	// PostgreSQL's defGetBoolean: true/false/on/off or the numbers 0 and 1.
	{q: "CREATE_REPLICATION_SLOT x PHYSICAL (reserve_wal No)", err: notBool},
	{q: "CREATE_REPLICATION_SLOT x PHYSICAL (reserve_wal 1)", want: cmd{Kind: replcmd.CreateReplicationSlot, Name: "x", ReserveWAL: true}},
	{q: "CREATE_REPLICATION_SLOT x PHYSICAL (reserve_wal 0)", want: cmd{Kind: replcmd.CreateReplicationSlot, Name: "x"}},
	// PostgreSQL's defGetBoolean: true/false/on/off or the numbers 0 and 1.
	{q: "CREATE_REPLICATION_SLOT x PHYSICAL (reserve_wal '1')", err: notBool},
	{q: `CREATE_REPLICATION_SLOT x PHYSICAL ("reserve_wal")`, want: cmd{Kind: replcmd.CreateReplicationSlot, Name: "x", ReserveWAL: true}},
	{q: "CREATE_REPLICATION_SLOT x PHYSICAL (reserve_wal 2)", err: notBool},
	{q: "CREATE_REPLICATION_SLOT x PHYSICAL (reserve_wal maybe)", err: notBool},
	{q: "CREATE_REPLICATION_SLOT x PHYSICAL (reserve_wal '')", err: notBool},
	{q: "CREATE_REPLICATION_SLOT x PHYSICAL (reserve_wal, reserve_wal)", err: conflicting},
	{q: "CREATE_REPLICATION_SLOT x PHYSICAL (RESERVE_WAL,RESERVE_WAL false)", err: conflicting},
	{q: "CREATE_REPLICATION_SLOT x PHYSICAL (reserve_wal maybe, reserve_wal)", err: notBool},
	{q: "CREATE_REPLICATION_SLOT x PHYSICAL (reserve_wal, snapshot 'nothing')", err: conflicting},
	{q: "CREATE_REPLICATION_SLOT x PHYSICAL (snapshot 'export')", err: conflicting},
	{q: "CREATE_REPLICATION_SLOT x PHYSICAL (two_phase)", err: conflicting},
	{q: "CREATE_REPLICATION_SLOT x PHYSICAL (TWO_PHASE true)", err: conflicting},
	{q: "CREATE_REPLICATION_SLOT x PHYSICAL (failover)", err: conflicting},
	{q: "CREATE_REPLICATION_SLOT x PHYSICAL (Foo)", err: unrecognized("foo")},
	{q: `CREATE_REPLICATION_SLOT x PHYSICAL ("Foo" 'bar')`, err: unrecognized("Foo")},
	{q: "CREATE_REPLICATION_SLOT x PHYSICAL (TIMELINE 1)", err: unrecognized("timeline")},
	{q: "CREATE_REPLICATION_SLOT x PHYSICAL (foo, reserve_wal, reserve_wal)", err: unrecognized("foo")},
	{q: "CREATE_REPLICATION_SLOT x PHYSICAL (reserve_wal, foo)", err: unrecognized("foo")},
	{q: "CREATE_REPLICATION_SLOT x PHYSICAL (foo) x", err: syntax},
	{q: "CREATE_REPLICATION_SLOT x PHYSICAL (reserve_wal, reserve_wal", err: syntax},
	{q: "CREATE_REPLICATION_SLOT x PHYSICAL ()", err: syntax},
	{q: "CREATE_REPLICATION_SLOT x PHYSICAL (reserve_wal", err: syntax},
	{q: "CREATE_REPLICATION_SLOT x PHYSICAL (reserve_wal,)", err: syntax},
	{q: "CREATE_REPLICATION_SLOT x PHYSICAL (,reserve_wal)", err: syntax},
	{q: "CREATE_REPLICATION_SLOT x PHYSICAL (reserve_wal true false)", err: syntax},
	{q: "CREATE_REPLICATION_SLOT x PHYSICAL (reserve_wal 4294967296)", err: syntax},
	{q: "CREATE_REPLICATION_SLOT x PHYSICAL (reserve_wal 1.5)", err: syntax},
	{q: "CREATE_REPLICATION_SLOT x PHYSICAL (snapshot EXPORT_SNAPSHOT)", err: syntax},
	{q: "CREATE_REPLICATION_SLOT x PHYSICAL ('reserve_wal')", err: syntax},
	{q: "CREATE_REPLICATION_SLOT x PHYSICAL (reserve_wal) (reserve_wal)", err: syntax},
	{q: "CREATE_REPLICATION_SLOT x PHYSICAL (reserve_wal 'on", err: unterminatedString()},
	{q: "CREATE_REPLICATION_SLOT x PHYSICAL RESERVE_WAL;", want: cmd{Kind: replcmd.CreateReplicationSlot, Name: "x", ReserveWAL: true}},
	{q: "CREATE_REPLICATION_SLOT x PHYSICAL RESERVE_WAL RESERVE_WAL", err: conflicting},
	{q: "CREATE_REPLICATION_SLOT x PHYSICAL EXPORT_SNAPSHOT", err: conflicting},
	{q: "CREATE_REPLICATION_SLOT x PHYSICAL NOEXPORT_SNAPSHOT", err: conflicting},
	{q: "CREATE_REPLICATION_SLOT x PHYSICAL USE_SNAPSHOT", err: conflicting},
	{q: "CREATE_REPLICATION_SLOT x PHYSICAL TWO_PHASE", err: conflicting},
	{q: "CREATE_REPLICATION_SLOT x PHYSICAL RESERVE_WAL x", err: syntax},
	{q: "CREATE_REPLICATION_SLOT x PHYSICAL reserve_wal", err: syntax},
	{q: "CREATE_REPLICATION_SLOT x PHYSICAL RESERVE_WAL (reserve_wal)", err: syntax},
	{q: "CREATE_REPLICATION_SLOT x PHYSICAL TEMPORARY", err: syntax},
	{q: "CREATE_REPLICATION_SLOT x TEMPORARY TEMPORARY PHYSICAL", err: syntax},
	{q: "CREATE_REPLICATION_SLOT x TEMPORARY", err: syntax},
	{q: "CREATE_REPLICATION_SLOT x", err: syntax},
	{q: "CREATE_REPLICATION_SLOT x physical", err: syntax},
	{q: "CREATE_REPLICATION_SLOT PHYSICAL", err: syntax},
	{q: "CREATE_REPLICATION_SLOT", err: syntax},
	{q: "CREATE_REPLICATION_SLOT 'x' PHYSICAL", err: syntax},
	{q: "CREATE_REPLICATION_SLOT x.y PHYSICAL", err: syntax},
	{q: "CREATE_REPLICATION_SLOT x LOGICAL pgoutput", want: cmd{Kind: replcmd.CreateReplicationSlot, Name: "x", Logical: true}},
	{q: `CREATE_REPLICATION_SLOT "x" TEMPORARY LOGICAL pgoutput (SNAPSHOT 'nothing', TWO_PHASE)`, want: cmd{Kind: replcmd.CreateReplicationSlot, Name: "x", Logical: true, Temporary: true}},
	{q: "CREATE_REPLICATION_SLOT x LOGICAL test_decoding EXPORT_SNAPSHOT", want: cmd{Kind: replcmd.CreateReplicationSlot, Name: "x", Logical: true}},
	{q: "CREATE_REPLICATION_SLOT x LOGICAL 'p", err: unterminatedString()},
	// Logical slots' options as PostgreSQL 15.18 checks them (before its
	// wal_level check, which the caller makes).
	{q: "CREATE_REPLICATION_SLOT s LOGICAL", err: syntax},
	{q: "CREATE_REPLICATION_SLOT s LOGICAL 'p'", err: syntax},
	{q: "CREATE_REPLICATION_SLOT s LOGICAL p garbage", err: syntax},
	{q: "CREATE_REPLICATION_SLOT s LOGICAL p (snapshot 'bogus')", err: &wantErr{pgerr.InvalidParameterValue, `unrecognized value for CREATE_REPLICATION_SLOT option "snapshot": "bogus"`}},
	{q: "CREATE_REPLICATION_SLOT s LOGICAL p (snapshot 1)", err: &wantErr{pgerr.InvalidParameterValue, `unrecognized value for CREATE_REPLICATION_SLOT option "snapshot": "1"`}},
	{q: "CREATE_REPLICATION_SLOT s LOGICAL p (snapshot)", err: &wantErr{pgerr.SyntaxError, "snapshot requires a parameter"}},
	{q: "CREATE_REPLICATION_SLOT s LOGICAL p (reserve_wal)", err: conflicting},
	{q: "CREATE_REPLICATION_SLOT s LOGICAL p RESERVE_WAL", err: conflicting},
	{q: "CREATE_REPLICATION_SLOT s LOGICAL p EXPORT_SNAPSHOT USE_SNAPSHOT", err: conflicting},
	{q: "CREATE_REPLICATION_SLOT s LOGICAL p (snapshot 'use', two_phase 1, snapshot 'x')", err: conflicting},
	{q: "CREATE_REPLICATION_SLOT s LOGICAL p (two_phase 'maybe')", err: &wantErr{pgerr.SyntaxError, "two_phase requires a Boolean value"}},
	{q: "CREATE_REPLICATION_SLOT s LOGICAL p (foo)", err: unrecognized("foo")},
	{q: "CREATE_REPLICATION_SLOT s LOGICAL p (snapshot 'use', SLOT)", err: unrecognized("slot")},
	{q: "CREATE_REPLICATION_SLOT s PHYSICAL (two_phase)", err: conflicting},
	{q: `CREATE_REPLICATION_SLOT "" LOGICAL p (snapshot 'use', two_phase off)`, want: cmd{Kind: replcmd.CreateReplicationSlot, Logical: true}},

	// DROP_REPLICATION_SLOT.
	{q: "DROP_REPLICATION_SLOT s3 WAIT", want: cmd{Kind: replcmd.DropReplicationSlot, Name: "s3", Wait: true}},
	{q: `DROP_REPLICATION_SLOT "S3" WAIT;`, want: cmd{Kind: replcmd.DropReplicationSlot, Name: "S3", Wait: true}},
	{q: `DROP_REPLICATION_SLOT "a""b"`, err: syntax},
	{q: `DROP_REPLICATION_SLOT ""`, want: cmd{Kind: replcmd.DropReplicationSlot, Name: ""}},
	{q: "DROP_REPLICATION_SLOT S3", want: cmd{Kind: replcmd.DropReplicationSlot, Name: "s3"}},
	{q: "DROP_REPLICATION_SLOT s3 wait", err: syntax},
	{q: "DROP_REPLICATION_SLOT s3 WAIT WAIT", err: syntax},
	{q: "DROP_REPLICATION_SLOT", err: syntax},
	{q: "DROP_REPLICATION_SLOT WAIT", err: syntax},
	{q: "DROP_REPLICATION_SLOT a.b", err: syntax},
	{q: "DROP_REPLICATION_SLOT a b", err: syntax},
	{q: `DROP_REPLICATION_SLOT "abc`, err: unterminatedIdent()},
	{q: `DROP_REPLICATION_SLOT "abc""`, err: unterminatedIdent()},

	// READ_REPLICATION_SLOT.
	{q: `READ_REPLICATION_SLOT "Test"`, want: cmd{Kind: replcmd.ReadReplicationSlot, Name: "Test"}},
	{q: "READ_REPLICATION_SLOT Test;", want: cmd{Kind: replcmd.ReadReplicationSlot, Name: "test"}},
	{q: "READ_REPLICATION_SLOT a.b", want: cmd{Kind: replcmd.ReadReplicationSlot, Name: "a.b"}},
	{q: "READ_REPLICATION_SLOT", err: syntax},
	{q: "READ_REPLICATION_SLOT a b", err: syntax},
	{q: "READ_REPLICATION_SLOT SLOT", err: syntax},

	// Commands recognised but not parsed further.
	{q: "BASE_BACKUP", want: cmd{Kind: replcmd.BaseBackup}},
	{q: "BASE_BACKUP (LABEL 'x', PROGRESS, MANIFEST 'yes')", want: cmd{Kind: replcmd.BaseBackup}},
	{q: "BASE_BACKUP 'unterminated", want: cmd{Kind: replcmd.BaseBackup}},
	{q: "ALTER_REPLICATION_SLOT x (failover true)", want: cmd{Kind: replcmd.AlterReplicationSlot}},
	{q: "UPLOAD_MANIFEST", want: cmd{Kind: replcmd.UploadManifest}},
	{q: "UPLOAD_MANIFEST;", want: cmd{Kind: replcmd.UploadManifest}},

	// Not replication commands.
	{q: "", err: notRepl},
	{q: " \t\n", err: notRepl},
	{q: ";", err: notRepl},
	{q: "SELECT 1", err: notRepl},
	{q: "select pg_current_wal_lsn()", err: notRepl},
	{q: "BEGIN", err: notRepl},
	{q: "identify_system", err: notRepl},
	{q: "Identify_System", err: notRepl},
	{q: "show wal_segment_size", err: notRepl},
	{q: "start_replication 0/0", err: notRepl},
	{q: "IDENTIFY_SYSTEMX", err: notRepl},
	{q: "IDENTIFY_SYSTEM2", err: notRepl},
	{q: "IDENTIFY_SYSTEMé", err: notRepl},
	{q: `"IDENTIFY_SYSTEM"`, err: notRepl},
	{q: "'IDENTIFY_SYSTEM'", err: notRepl},
	{q: "(IDENTIFY_SYSTEM)", err: notRepl},
	{q: "SLOT x", err: notRepl},
	{q: "PHYSICAL", err: notRepl},
	{q: "TIMELINE 1", err: notRepl},
	{q: "0/0", err: notRepl},
	{q: "1", err: notRepl},
	{q: "-- IDENTIFY_SYSTEM", err: notRepl},
	{q: `"abc`, err: untermString},
	{q: "'abc", err: untermString},
	{q: "\x00IDENTIFY_SYSTEM", err: notRepl},
	{q: "CREATE TABLE t(x int)", err: notRepl},
}

func unterminatedIdent() *wantErr  { return untermIdent }
func unterminatedString() *wantErr { return untermString }

func TestParse(t *testing.T) {
	for _, tc := range parseCases {
		got, err := replcmd.Parse(tc.q)
		got.Notices = nil // TestParseNotices
		if tc.err == nil {
			if err != nil {
				t.Errorf("Parse(%q): unexpected error %v", tc.q, err)
			} else if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Parse(%q)\n got %+v\nwant %+v", tc.q, got, tc.want)
			}
			continue
		}
		if err == nil {
			t.Errorf("Parse(%q) = %+v, want error %s %q", tc.q, got, tc.err.code, tc.err.msg)
			continue
		}
		if !reflect.DeepEqual(got, cmd{}) {
			t.Errorf("Parse(%q): non-zero command %+v with error", tc.q, got)
		}
		pe := pgerr.As(err)
		if pe == nil {
			t.Errorf("Parse(%q): error %v (%T) is not a *pgerr.Error", tc.q, err, err)
			continue
		}
		if pe.Severity != pgerr.SeverityError || pe.Code != tc.err.code || pe.Message != tc.err.msg {
			t.Errorf("Parse(%q): got %s %s %q, want ERROR %s %q", tc.q, pe.Severity, pe.Code, pe.Message, tc.err.code, tc.err.msg)
		}
		if is := errors.Is(err, replcmd.ErrNotReplicationCommand); is != (tc.err == notRepl) {
			t.Errorf("Parse(%q): errors.Is(ErrNotReplicationCommand) = %v", tc.q, is)
		}
	}
}

func TestNotReplicationError(t *testing.T) {
	_, err := replcmd.Parse("SELECT 1")
	if got, want := err.Error(), "ERROR: cannot execute SQL commands in WAL sender for physical replication (SQLSTATE 0A000)"; got != want {
		t.Fatalf("Error() = %q, want %q", got, want)
	}
	if replcmd.NotReplicationCommandMessage != notRepl.msg {
		t.Fatalf("NotReplicationCommandMessage = %q", replcmd.NotReplicationCommandMessage)
	}
	// Each call returns a fresh *pgerr.Error, so callers may modify it.
	_, err2 := replcmd.Parse("SELECT 1")
	if pgerr.As(err) == pgerr.As(err2) {
		t.Fatal("errors share a *pgerr.Error")
	}
}

func TestKindString(t *testing.T) {
	for k, want := range map[replcmd.Kind]string{
		replcmd.IdentifySystem:        "IDENTIFY_SYSTEM",
		replcmd.Show:                  "SHOW",
		replcmd.TimelineHistory:       "TIMELINE_HISTORY",
		replcmd.StartReplication:      "START_REPLICATION",
		replcmd.CreateReplicationSlot: "CREATE_REPLICATION_SLOT",
		replcmd.DropReplicationSlot:   "DROP_REPLICATION_SLOT",
		replcmd.ReadReplicationSlot:   "READ_REPLICATION_SLOT",
		replcmd.BaseBackup:            "BASE_BACKUP",
		replcmd.AlterReplicationSlot:  "ALTER_REPLICATION_SLOT",
		replcmd.UploadManifest:        "UPLOAD_MANIFEST",
		0:                             "UNKNOWN",
	} {
		if got := k.String(); got != want {
			t.Errorf("Kind(%d).String() = %q, want %q", int(k), got, want)
		}
		// Every command keyword starts a replication command.
		if k != 0 {
			if c, err := replcmd.Parse(want + " junk"); err != nil && errors.Is(err, replcmd.ErrNotReplicationCommand) || err == nil && c.Kind != k {
				t.Errorf("Parse(%q) = %+v, %v", want+" junk", c, err)
			}
		}
	}
}

// TestParseNoAlloc checks that the commands real clients send parse without
// allocating (all strings are substrings of the query).
func TestParseNoAlloc(t *testing.T) {
	for _, q := range []string{
		"IDENTIFY_SYSTEM",
		"SHOW wal_segment_size",
		"SHOW a.b.c",
		"TIMELINE_HISTORY 2",
		`START_REPLICATION SLOT "rwslot" 0/900000 TIMELINE 1`,
		"START_REPLICATION 0/C00000 TIMELINE 4",
		`CREATE_REPLICATION_SLOT "test" PHYSICAL`,
		"CREATE_REPLICATION_SLOT s2 PHYSICAL ( RESERVE_WAL)",
		`CREATE_REPLICATION_SLOT "pg_walreceiver_21435" TEMPORARY PHYSICAL (RESERVE_WAL)`,
		`DROP_REPLICATION_SLOT "test"`,
		"READ_REPLICATION_SLOT test",
	} {
		n := testing.AllocsPerRun(50, func() {
			if _, err := replcmd.Parse(q); err != nil {
				panic(err)
			}
		})
		if n != 0 {
			t.Errorf("Parse(%q): %v allocs", q, n)
		}
	}
}

func ExampleParse() {
	c, err := replcmd.Parse(`START_REPLICATION SLOT "rwslot" 0/900000 TIMELINE 1`)
	if err != nil {
		panic(err)
	}
	fmt.Printf("%s slot=%s lsn=%X/%X timeline=%d\n", c.Kind, c.Slot, c.LSN>>32, uint32(c.LSN), c.Timeline)

	_, err = replcmd.Parse("SELECT 1")
	fmt.Println(errors.Is(err, replcmd.ErrNotReplicationCommand), pgerr.As(err).Code)
	// Output:
	// START_REPLICATION slot=rwslot lsn=0/900000 timeline=1
	// true 0A000
}

// TestParseNotices checks the NOTICE PostgreSQL's scanner raises for each
// identifier it truncates, before the command runs or fails (texts as
// PostgreSQL 15.18 sends them).
func TestParseNotices(t *testing.T) {
	long, cut := strings.Repeat("a", 70), strings.Repeat("a", 63)
	notice := func(ident, truncated string) string {
		return `identifier "` + ident + `" will be truncated to "` + truncated + `"`
	}
	for _, tc := range []struct {
		q       string
		notices []string
		errCode string
	}{
		{q: "IDENTIFY_SYSTEM"},
		{q: "SHOW " + cut},
		{q: "SHOW " + strings.ToUpper(long), notices: []string{notice(long, cut)}},
		{q: `DROP_REPLICATION_SLOT "A` + long + `" garbage`, notices: []string{notice("A"+long, "A"+cut[1:])}, errCode: pgerr.SyntaxError},
		{q: "x" + long + " y", notices: []string{notice("x"+long, "x"+cut[1:])}, errCode: pgerr.FeatureNotSupported},
		{q: "SHOW " + long + "." + long, notices: []string{notice(long, cut), notice(long, cut)}},
		// A token read ahead and read again raises its notice once.
		{q: "SHOW x " + long, notices: []string{notice(long, cut)}, errCode: pgerr.SyntaxError},
		{q: "SHOW " + long + " " + long, notices: []string{notice(long, cut), notice(long, cut)}, errCode: pgerr.SyntaxError},
		{q: "READ_REPLICATION_SLOT x " + long, notices: []string{notice(long, cut)}, errCode: pgerr.SyntaxError},
		// Nothing is scanned past a syntax error.
		{q: "START_REPLICATION SLOT s LOGICAL 0/0 " + long + " " + long, notices: []string{notice(long, cut)}, errCode: pgerr.SyntaxError},
		{q: "CREATE_REPLICATION_SLOT s LOGICAL p x " + long, errCode: pgerr.SyntaxError},
		{q: "START_REPLICATION SLOT " + long + " PHYSICAL 0/0", notices: []string{notice(long, cut)}},
	} {
		c, err := replcmd.Parse(tc.q)
		var code string
		if pe := pgerr.As(err); pe != nil {
			code = pe.Code
		} else if err != nil {
			t.Fatalf("Parse(%q): %v", tc.q, err)
		}
		if code != tc.errCode {
			t.Errorf("Parse(%q): error code %q, want %q", tc.q, code, tc.errCode)
		}
		var got []string
		for _, n := range c.Notices {
			if n.Severity != pgerr.SeverityNotice || n.Code != pgerr.NameTooLong {
				t.Errorf("Parse(%q): notice %s %s, want NOTICE 42622", tc.q, n.Severity, n.Code)
			}
			got = append(got, n.Message)
		}
		if !reflect.DeepEqual(got, tc.notices) {
			t.Errorf("Parse(%q): notices\n got %q\nwant %q", tc.q, got, tc.notices)
		}
	}
}
