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

// quoteIdent renders s as a quoted identifier.
// A parsed name never holds '"': a quoted identifier has no escape for it.
func quoteIdent(s string) string {
	return `"` + s + `"`
}

// quoteVarName renders a dotted name as quoted parts.
func quoteVarName(s string) string {
	parts := strings.Split(s, ".")
	for i, p := range parts {
		parts[i] = quoteIdent(p)
	}
	return strings.Join(parts, ".")
}

// render writes c back as a canonical query. ok is false for kinds whose
// arguments Parse does not keep.
func render(c replcmd.Command) (string, bool) {
	switch c.Kind {
	case replcmd.IdentifySystem:
		return "IDENTIFY_SYSTEM", true
	case replcmd.Show:
		return "SHOW " + quoteVarName(c.Name), true
	case replcmd.ReadReplicationSlot:
		return "READ_REPLICATION_SLOT " + quoteVarName(c.Name), true
	case replcmd.TimelineHistory:
		return fmt.Sprintf("TIMELINE_HISTORY %d", c.Timeline), true
	case replcmd.StartReplication:
		var b strings.Builder
		b.WriteString("START_REPLICATION")
		if c.Slot != "" || c.Logical {
			b.WriteString(" SLOT " + quoteIdent(c.Slot))
		}
		if c.Logical {
			b.WriteString(" LOGICAL")
		}
		fmt.Fprintf(&b, " %X/%X", uint32(c.LSN>>32), uint32(c.LSN))
		if c.HasTimeline {
			fmt.Fprintf(&b, " TIMELINE %d", c.Timeline)
		}
		return b.String(), true
	case replcmd.CreateReplicationSlot:
		q := "CREATE_REPLICATION_SLOT " + quoteIdent(c.Name)
		if c.Temporary {
			q += " TEMPORARY"
		}
		if c.Logical {
			return q + " LOGICAL pgoutput", true
		}
		q += " PHYSICAL"
		if c.ReserveWAL {
			q += " (RESERVE_WAL)"
		}
		return q, true
	case replcmd.DropReplicationSlot:
		q := "DROP_REPLICATION_SLOT " + quoteIdent(c.Name)
		if c.Wait {
			q += " WAIT"
		}
		return q, true
	}
	return "", false
}

func TestRenderRoundTrip(t *testing.T) {
	for _, tc := range parseCases {
		if tc.err != nil {
			continue
		}
		q, ok := render(tc.want)
		if !ok {
			continue
		}
		got, err := replcmd.Parse(q)
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("Parse(render(%q)) = Parse(%q) = %+v, %v; want %+v", tc.q, q, got, err, tc.want)
		}
	}
}

var knownCodes = map[string]bool{
	pgerr.FeatureNotSupported:   true,
	pgerr.SyntaxError:           true,
	pgerr.InternalError:         true,
	pgerr.UndefinedObject:       true,
	pgerr.InvalidParameterValue: true,
}

func FuzzParse(f *testing.F) {
	for _, tc := range parseCases {
		f.Add(tc.q)
	}
	f.Fuzz(func(t *testing.T, q string) {
		c, err := replcmd.Parse(q)
		for _, n := range c.Notices {
			if n.Severity != pgerr.SeverityNotice || n.Code != pgerr.NameTooLong || !strings.HasPrefix(n.Message, "identifier ") {
				t.Fatalf("Parse(%q): unexpected notice %#v", q, n)
			}
		}
		c.Notices = nil // names are truncated: rendered again, they raise none
		if err != nil {
			pe := pgerr.As(err)
			if pe == nil || !knownCodes[pe.Code] || pe.Severity != pgerr.SeverityError || pe.Message == "" {
				t.Fatalf("Parse(%q): unexpected error %#v", q, err)
			}
			if errors.Is(err, replcmd.ErrNotReplicationCommand) != (pe.Code == pgerr.FeatureNotSupported) {
				t.Fatalf("Parse(%q): ErrNotReplicationCommand mismatch for %v", q, err)
			}
			if !reflect.DeepEqual(c, replcmd.Command{}) {
				t.Fatalf("Parse(%q): non-zero command with error: %+v", q, c)
			}
			return
		}
		if c.Kind < replcmd.IdentifySystem || c.Kind > replcmd.UploadManifest {
			t.Fatalf("Parse(%q): bad kind %d", q, c.Kind)
		}
		if c.HasTimeline && c.Timeline == 0 || !c.HasTimeline && c.Timeline != 0 {
			t.Fatalf("Parse(%q): timeline %d has=%v", q, c.Timeline, c.HasTimeline)
		}
		if len(c.Slot) > 63 || (c.Kind != replcmd.Show && c.Kind != replcmd.ReadReplicationSlot && len(c.Name) > 63) {
			t.Fatalf("Parse(%q): name longer than 63 bytes: %+v", q, c)
		}
		r, ok := render(c)
		if !ok {
			return
		}
		c2, err := replcmd.Parse(r)
		if err != nil {
			t.Fatalf("Parse(%q) = %+v; re-rendered %q fails: %v", q, c, r, err)
		}
		if !reflect.DeepEqual(c2, c) {
			t.Fatalf("Parse(%q) = %+v; re-rendered %q parses to %+v", q, c, r, c2)
		}
	})
}

var sinkCmd replcmd.Command

func BenchmarkParseStartReplication(b *testing.B) {
	const q = `START_REPLICATION SLOT "s" 0/900000 TIMELINE 1`
	b.ReportAllocs()
	b.SetBytes(int64(len(q)))
	for b.Loop() {
		c, err := replcmd.Parse(q)
		if err != nil {
			b.Fatal(err)
		}
		sinkCmd = c
	}
}

func BenchmarkParseCreateSlot(b *testing.B) {
	const q = `CREATE_REPLICATION_SLOT "pg_walreceiver_21435" TEMPORARY PHYSICAL (RESERVE_WAL)`
	b.ReportAllocs()
	for b.Loop() {
		c, err := replcmd.Parse(q)
		if err != nil {
			b.Fatal(err)
		}
		sinkCmd = c
	}
}

func BenchmarkParseNotReplication(b *testing.B) {
	const q = `SELECT 1`
	b.ReportAllocs()
	for b.Loop() {
		_, err := replcmd.Parse(q)
		if err == nil {
			b.Fatal("no error")
		}
	}
}
