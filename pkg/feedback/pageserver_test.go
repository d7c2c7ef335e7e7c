package feedback_test

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/pgsafekeeper/safekeeper/pkg/feedback"
	"github.com/pgsafekeeper/safekeeper/pkg/pgerr"
)

// kv encodes one key/value entry of a 'z' message.
func kv(key string, val []byte) []byte {
	return cat(key, 0, i32(int32(len(val))), val)
}

// zmsg builds a 'z' message from entries, with the header length set to the
// length of what follows it.
func zmsg(entries ...[]byte) []byte {
	body := []byte{byte(len(entries))}
	for _, e := range entries {
		body = append(body, e...)
	}
	return cat('z', u64(uint64(len(body))), body)
}

// appendUnknownKey adds an entry to an encoded 'z' message and fixes up the
// count and header length.
func appendUnknownKey(z []byte, key string, val []byte) []byte {
	z = append(z, kv(key, val)...)
	z[9]++
	binary.BigEndian.PutUint64(z[1:], uint64(len(z)-9))
	return z
}

func TestParsePageserverKnown(t *testing.T) {
	full := zmsg(
		kv("current_timeline_size", u64(25165824)),
		kv("ps_writelsn", u64(0x1_6B2F_7D28)),
		kv("ps_flushlsn", u64(0x1_6B2F_7000)),
		kv("ps_applylsn", u64(0x1_6A00_0000)),
		kv("ps_replytime", u64(0x0002_C3B0_1A2B_3C4D)),
		kv("shard_number", u32(3)),
		kv("corruption_detected", []byte{1}),
	)
	want := feedback.Pageserver{
		CurrentTimelineSize: 25165824,
		LastReceivedLSN:     0x1_6B2F_7D28,
		DiskConsistentLSN:   0x1_6B2F_7000,
		RemoteConsistentLSN: 0x1_6A00_0000,
		ReplyTime:           0x0002_C3B0_1A2B_3C4D,
		ShardNumber:         3,
		CorruptionDetected:  true,
	}
	got, err := feedback.ParsePageserver(full)
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	// The encoder produces exactly these bytes (same key order).
	if enc := feedback.AppendPageserver(nil, want); !bytes.Equal(enc, full) {
		t.Fatalf("encoded\n%x\nwant\n%x", enc, full)
	}

	// The 2022 five-key form.
	five := zmsg(
		kv("current_timeline_size", u64(0)),
		kv("ps_writelsn", u64(10)),
		kv("ps_flushlsn", u64(9)),
		kv("ps_applylsn", u64(8)),
		kv("ps_replytime", u64(7)),
	)
	got, err = feedback.ParsePageserver(five)
	if err != nil {
		t.Fatal(err)
	}
	if want := (feedback.Pageserver{LastReceivedLSN: 10, DiskConsistentLSN: 9, RemoteConsistentLSN: 8, ReplyTime: 7}); got != want {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	if enc := feedback.AppendPageserver(nil, got); !bytes.Equal(enc, five) {
		t.Fatalf("encoded\n%x\nwant\n%x", enc, five)
	}
}

func TestParsePageserverCases(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []byte
		want feedback.Pageserver
		msg  string // "" = success
	}{
		{name: "no keys", in: zmsg()},
		{name: "keys in any order, unknown skipped",
			in:   zmsg(kv("ps_applylsn", u64(3)), kv("x", nil), kv("future_thing", []byte("hello")), kv("ps_writelsn", u64(4))),
			want: feedback.Pageserver{RemoteConsistentLSN: 3, LastReceivedLSN: 4}},
		{name: "empty key name", in: zmsg(kv("", []byte{1, 2})), want: feedback.Pageserver{}},
		{name: "last duplicate wins", in: zmsg(kv("ps_writelsn", u64(1)), kv("ps_writelsn", u64(2))),
			want: feedback.Pageserver{LastReceivedLSN: 2}},
		{name: "shard zero explicit", in: zmsg(kv("shard_number", u32(0)))},
		{name: "corruption byte 0", in: zmsg(kv("corruption_detected", []byte{0}))},
		{name: "corruption byte 2", in: zmsg(kv("corruption_detected", []byte{2})), want: feedback.Pageserver{CorruptionDetected: true}},
		{name: "negative reply time", in: zmsg(kv("ps_replytime", u64(^uint64(0)))), want: feedback.Pageserver{ReplyTime: -1}},
		{name: "header length not checked",
			in:   cat('z', u64(12345), 1, kv("ps_flushlsn", u64(5))),
			want: feedback.Pageserver{DiskConsistentLSN: 5}},

		{name: "empty", in: nil, msg: "no data left in message"},
		{name: "type only", in: []byte{'z'}, msg: "insufficient data left in message"},
		{name: "9 bytes", in: withType('z', 9), msg: "insufficient data left in message"},
		{name: "missing keys", in: cat('z', u64(0), 1), msg: "invalid string in message"},
		{name: "key without NUL", in: cat('z', u64(0), 1, "ps_writelsn"), msg: "invalid string in message"},
		{name: "no length", in: cat('z', u64(0), 1, "ps_writelsn", 0, 0, 0, 8), msg: "insufficient data left in message"},
		{name: "truncated value", in: cat('z', u64(0), 1, "ps_writelsn", 0, i32(8), 1, 2, 3), msg: "insufficient data left in message"},
		{name: "truncated unknown value", in: cat('z', u64(0), 1, "foo", 0, i32(100), "abc"), msg: "insufficient data left in message"},
		{name: "negative length", in: cat('z', u64(0), 1, "foo", 0, i32(-1)), msg: "insufficient data left in message"},
		{name: "min int32 length", in: cat('z', u64(0), 1, "foo", 0, i32(-1<<31), "abc"), msg: "insufficient data left in message"},
		{name: "too few keys declared", in: cat(zmsg(kv("ps_writelsn", u64(1)))[:9], 0, kv("ps_writelsn", u64(1))), msg: "invalid message format"},
		{name: "trailing garbage", in: cat(zmsg(kv("ps_writelsn", u64(1))), 0), msg: "invalid message format"},
		{name: "trailing garbage no keys", in: cat(zmsg(), "x"), msg: "invalid message format"},
		{name: "u64 key with 4 bytes", in: zmsg(kv("ps_writelsn", u32(1))), msg: "invalid message format"},
		{name: "u64 key with 9 bytes", in: zmsg(kv("current_timeline_size", repeat(1, 9))), msg: "invalid message format"},
		{name: "reply time empty", in: zmsg(kv("ps_replytime", nil)), msg: "invalid message format"},
		{name: "shard with 8 bytes", in: zmsg(kv("shard_number", u64(1))), msg: "invalid message format"},
		{name: "corruption with 4 bytes", in: zmsg(kv("corruption_detected", u32(1))), msg: "invalid message format"},
		{name: "corruption empty", in: zmsg(kv("corruption_detected", nil)), msg: "invalid message format"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := feedback.ParsePageserver(tc.in)
			if tc.msg != "" {
				wantProtocolError(t, err, tc.msg)
				if got != (feedback.Pageserver{}) {
					t.Fatalf("non-zero value %+v with error", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestParsePageserverKeyLengthDetail(t *testing.T) {
	_, err := feedback.ParsePageserver(zmsg(kv("shard_number", []byte{1})))
	pe := pgerr.As(err)
	if pe == nil || pe.Detail != `Pageserver feedback key "shard_number" has a value of 1 bytes, expected 4.` {
		t.Fatalf("got %#v", pe)
	}
}

func TestPageserverRoundTrip(t *testing.T) {
	for _, p := range []feedback.Pageserver{
		{},
		{CurrentTimelineSize: 1, LastReceivedLSN: 2, DiskConsistentLSN: 3, RemoteConsistentLSN: 4, ReplyTime: 5},
		{ShardNumber: 1},
		{CorruptionDetected: true},
		{CurrentTimelineSize: ^uint64(0), LastReceivedLSN: ^uint64(0), ReplyTime: -1 << 63, ShardNumber: ^uint32(0), CorruptionDetected: true},
	} {
		b := feedback.AppendPageserver([]byte("prefix"), p)
		if !bytes.HasPrefix(b, []byte("prefix")) {
			t.Fatalf("prefix clobbered: %q", b)
		}
		b = b[len("prefix"):]
		if n := binary.BigEndian.Uint64(b[1:9]); n != uint64(len(b)-9) {
			t.Fatalf("header length %d, body %d", n, len(b)-9)
		}
		wantKeys := 5
		if p.ShardNumber > 0 {
			wantKeys++
		}
		if p.CorruptionDetected {
			wantKeys++
		}
		if int(b[9]) != wantKeys {
			t.Fatalf("nkeys %d, want %d", b[9], wantKeys)
		}
		got, err := feedback.ParsePageserver(b)
		if err != nil || got != p {
			t.Fatalf("round trip %+v: got %+v, %v", p, got, err)
		}
	}
}
