package pgwire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/pgsafekeeper/safekeeper/pkg/pgerr"
)

func packet(code uint32, params ...string) []byte {
	body := binary.BigEndian.AppendUint32(nil, code)
	for _, p := range params {
		body = append(body, p...)
		body = append(body, 0)
	}
	body = append(body, 0)
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(body)+4)), body...)
}

func TestReadPacket(t *testing.T) {
	p, err := ReadPacket(bytes.NewReader(packet(ProtocolV3, "user", "u", "replication", "true", "application_name", "x")))
	if err != nil {
		t.Fatal(err)
	}
	if p.Params["user"] != "u" || p.Params["replication"] != "true" || len(p.Keys) != 3 {
		t.Fatalf("params %v keys %v", p.Params, p.Keys)
	}
	ssl := binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, 8), SSLRequestCode)
	if p, err := ReadPacket(bytes.NewReader(ssl)); err != nil || p.Code != SSLRequestCode {
		t.Fatalf("ssl: %v %v", p, err)
	}
	// A CancelRequest carries the process ID and secret key it quotes.
	cancel := binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, 16), CancelRequest)
	cancel = binary.BigEndian.AppendUint32(cancel, 4242)
	cancel = append(cancel, 1, 2, 3, 4)
	if p, err := ReadPacket(bytes.NewReader(cancel)); err != nil || p.Code != CancelRequest || p.CancelPID != 4242 || !bytes.Equal(p.CancelKey, []byte{1, 2, 3, 4}) {
		t.Fatalf("cancel: %+v %v", p, err)
	}
	cases := []struct {
		name   string
		in     []byte
		silent bool
		code   string
	}{
		{"empty", nil, true, ""},
		{"short length", []byte{0, 0, 0, 7, 0, 3, 0, 0}, true, ""},
		{"too long", binary.BigEndian.AppendUint32(nil, 10005), true, ""},
		{"truncated", packet(ProtocolV3, "user", "u")[:10], true, ""},
		{"no terminator", func() []byte {
			b := packet(ProtocolV3, "user", "u")
			b = b[:len(b)-1]
			binary.BigEndian.PutUint32(b, uint32(len(b)))
			return b
		}(), false, pgerr.ProtocolViolation},
		{"protocol 2", packet(2<<16, "user", "u"), false, pgerr.FeatureNotSupported},
		{"missing value", packet(ProtocolV3, "user"), false, pgerr.ProtocolViolation},
	}
	for _, c := range cases {
		_, err := ReadPacket(bytes.NewReader(c.in))
		if c.silent {
			if !errors.Is(err, ErrCloseSilently) {
				t.Errorf("%s: want silent close, got %v", c.name, err)
			}
			continue
		}
		pe := pgerr.As(err)
		if pe == nil || pe.Code != c.code || pe.Severity != pgerr.SeverityFatal {
			t.Errorf("%s: want FATAL %s, got %v", c.name, c.code, err)
		}
	}
}

func TestParseReplication(t *testing.T) {
	for v, want := range map[string]ReplicationMode{
		"true": PhysicalReplication, "t": PhysicalReplication, "TRU": PhysicalReplication, "yes": PhysicalReplication,
		"on": PhysicalReplication, "1": PhysicalReplication, "database": LogicalReplication,
		"false": NotReplication, "f": NotReplication, "no": NotReplication, "of": NotReplication, "off": NotReplication, "0": NotReplication,
	} {
		got, err := ParseReplication(v)
		if err != nil || got != want {
			t.Errorf("%q: got %v, %v; want %v", v, got, err, want)
		}
	}
	for _, v := range []string{"o", "", "Database", "2", "truex", "onn"} {
		if _, err := ParseReplication(v); pgerr.As(err) == nil || pgerr.As(err).Code != pgerr.InvalidParameterValue {
			t.Errorf("%q: want 22023, got %v", v, err)
		}
	}
}

func TestParseOptions(t *testing.T) {
	got := ParseOptions(`-c tenant_id=aa -ctimeline_id=bb --foo-bar=x\ y -c`)
	if got["tenant_id"] != "aa" || got["timeline_id"] != "bb" || got["foo_bar"] != "x y" || len(got) != 3 {
		t.Fatalf("got %v", got)
	}
	// Neon's form: one -c, several settings.
	got = ParseOptions("-c timeline_id=bb tenant_id=aa")
	if got["tenant_id"] != "aa" || got["timeline_id"] != "bb" || len(got) != 2 {
		t.Fatalf("Neon's form: got %v", got)
	}
	// Words that are neither settings nor -c/-- are ignored.
	got = ParseOptions(`-B 100 plain -c a=b`)
	if got["a"] != "b" || len(got) != 1 {
		t.Fatalf("got %v", got)
	}
}

// FuzzReadPacket feeds arbitrary bytes to the startup packet reader: it
// must never panic, and any parsed startup message must round-trip.
func FuzzReadPacket(f *testing.F) {
	f.Add(packet(ProtocolV3, "user", "postgres", "database", "replication", "replication", "true", "application_name", "pg_receivewal"))
	f.Add(binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, 8), SSLRequestCode))
	f.Add([]byte{0, 0, 0, 8, 0, 3, 0, 0})
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ReadPacket(bytes.NewReader(b))
		if err != nil {
			if !errors.Is(err, ErrCloseSilently) && pgerr.As(err) == nil {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		if p.Code == ProtocolV3 {
			var params []string
			for _, k := range p.Keys {
				params = append(params, k, p.Params[k])
			}
			q, err := ReadPacket(bytes.NewReader(packet(ProtocolV3, params...)))
			if err != nil || len(q.Keys) != len(p.Keys) {
				t.Fatalf("round trip: %v %v vs %v", err, q.Keys, p.Keys)
			}
		}
	})
}
