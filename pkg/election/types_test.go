package election

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestNodeInfoJSON(t *testing.T) {
	in := NodeInfo{
		Name: "sk1", Addr: "10.0.0.1:5454", HTTPAddr: "10.0.0.1:7676", TLI: 2,
		FlushLSN: 0x16B374D848, LocalStartLSN: 0x1000000, BackupLSN: 0,
		WalSegSize: segSize, State: "streaming", Eligible: true,
		UpdatedAt: time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC),
	}
	data, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"flush_lsn":"16/B374D848"`, `"local_start_lsn":"0/1000000"`, `"backup_lsn":"0/0"`,
		`"http_addr":"10.0.0.1:7676"`, `"eligible":true`, `"wal_seg_size":16777216`, `"tli":2`} {
		if !strings.Contains(string(data), want) {
			t.Errorf("%s lacks %s", data, want)
		}
	}
	var out NodeInfo
	if err := json.Unmarshal(data, &out); err != nil {
		t.Fatal(err)
	}
	if out != in {
		t.Fatalf("round trip:\n got %+v\nwant %+v", out, in)
	}
	// In a slice (Status.Peers) too.
	data, err = json.Marshal(Status{Peers: []NodeInfo{in}})
	if err != nil || !strings.Contains(string(data), `"flush_lsn":"16/B374D848"`) {
		t.Fatalf("status JSON %s, %v", data, err)
	}
	if err := json.Unmarshal([]byte(`{"name":"x","flush_lsn":"nonsense"}`), &out); err == nil {
		t.Fatal("a bad LSN was accepted")
	}
	if err := json.Unmarshal([]byte(`{"name":"x"}`), &out); err != nil || out.FlushLSN != 0 || out.Name != "x" {
		t.Fatalf("absent LSNs: %+v, %v", out, err)
	}
}

func TestBackupPosEncoding(t *testing.T) {
	ps := []BackupPos{pos(0, 0), pos(1, 0), pos(1, 0x1000000), pos(1, 0xFFFFFFFF), pos(1, 0x100000000),
		pos(2, 0), pos(0xA, 5), pos(0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF)}
	for i, p := range ps {
		s := p.String()
		if len(s) != 25 {
			t.Errorf("%v: %q", p, s)
		}
		got, err := parseBackupPos(s)
		if err != nil || got != p {
			t.Errorf("parse(%q) = %v, %v", s, got, err)
		}
		if i > 0 {
			// etcd compares values byte-wise: the strings sort like
			// the positions.
			if !ps[i-1].Less(p) || p.Less(ps[i-1]) || strings.Compare(ps[i-1].String(), s) >= 0 {
				t.Errorf("order of %v and %v", ps[i-1], p)
			}
		}
	}
	if pos(1, 0x2000000).String() != "00000001/0000000002000000" {
		t.Errorf("format: %s", pos(1, 0x2000000))
	}
	for _, bad := range []string{"", "1/2", "00000001/000000000200000", "00000001-0000000002000000", "0000000a/0000000002000000",
		"00000001/000000000200000G", " 0000001/0000000002000000"} {
		if _, err := parseBackupPos(bad); err == nil {
			t.Errorf("parse(%q) accepted", bad)
		}
	}
}

func TestConfigDefaults(t *testing.T) {
	c := Config{}.withDefaults()
	if c.Prefix != DefaultPrefix || c.TTL != DefaultTTL || c.MaxLag != DefaultMaxLag || c.StallTimeout != 3*DefaultTTL {
		t.Fatalf("defaults: %+v", c)
	}
	c = Config{Prefix: "/x/", TTL: 1500 * time.Millisecond}.withDefaults()
	if c.Prefix != "/x" || c.TTL != 2*time.Second || c.StallTimeout != 6*time.Second {
		t.Fatalf("%+v", c)
	}
	if c := (Config{TTL: time.Millisecond}).withDefaults(); c.TTL != time.Second {
		t.Fatalf("TTL %s", c.TTL)
	}
	k := newKeys("/sk", "t", "l")
	if k.nodes+"n1" != "/sk/timelines/t/l/nodes/n1" || k.election != "/sk/timelines/t/l/offloader" ||
		k.backup != "/sk/timelines/t/l/backup_lsn" || k.candidate(0x1a2b) != "/sk/timelines/t/l/offloader/1a2b" {
		t.Fatalf("keys %+v", k)
	}
}

func TestArchiveLag(t *testing.T) {
	for _, c := range []struct {
		flush, backup uint64
		seg           uint64
		want          uint64
	}{
		{0x3000060, 0x3000000, segSize, 0},
		{0x3000060, 0x1000000, segSize, 0x2000000},
		{0x3000060, 0x4000000, segSize, 0},
		{0x3000060, 0x1000000, 0, 0x2000060}, // unknown segment size: flush position
	} {
		info := NodeInfo{FlushLSN: lsnOf(c.flush), BackupLSN: lsnOf(c.backup), WalSegSize: c.seg}
		if got := archiveLag(info); got != c.want {
			t.Errorf("archiveLag(%v, %v, %d) = %#x, want %#x", info.FlushLSN, info.BackupLSN, c.seg, got, c.want)
		}
	}
}

func TestRunRejectsBadConfig(t *testing.T) {
	for _, name := range []string{"", "a/b"} {
		m := NewMember(Config{Name: name}, "t", "l", "", newFakeLocal(true), func(ctx context.Context, _ *Term) error { return nil }, nil)
		err := m.Run(context.Background())
		if err == nil {
			t.Errorf("name %q: Run accepted a config without client and with a bad name", name)
		}
		if !slices.ContainsFunc([]string{"Client", "Name"}, func(s string) bool { return strings.Contains(err.Error(), s) }) {
			t.Errorf("error %v", err)
		}
	}
}
