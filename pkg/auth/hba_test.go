package auth

import (
	"net/netip"
	"strings"
	"testing"
)

func TestRulesMatch(t *testing.T) {
	rules, err := ParseRules(strings.NewReader(`
# type    user          address          method
hostnossl all           192.168.0.0/16   reject     # no plaintext from the LAN
hostssl   replicator    all              scram-sha-256
host      legacy        10.1.2.3         md5
host      a,b           10.0.0.0/8       trust
host      replication   all  ::1/128     trust      # pg_hba style, database column
host      all           2001:db8::/32    scram-sha-256
host      all           ::ffff:172.16.0.0/108 trust
`))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		user, addr string
		tls        bool
		line       int // 0: no match
	}{
		{"anyone", "192.168.1.1", false, 3},
		{"replicator", "192.168.1.1", true, 4},
		{"replicator", "192.168.1.1", false, 3},
		{"replicator", "8.8.8.8", true, 4},
		{"replicator", "8.8.8.8", false, 0},
		{"legacy", "10.1.2.3", false, 5},
		{"legacy", "10.1.2.3", true, 5},
		{"legacy", "10.1.2.4", false, 0},
		{"a", "10.9.9.9", false, 6},
		{"b", "10.9.9.9", true, 6},
		{"c", "10.9.9.9", false, 0},
		{"all", "10.9.9.9", false, 0}, // "all" is a keyword only in the rules
		{"anyone", "::1", false, 7},
		{"anyone", "2001:db8::5", false, 8},
		{"anyone", "::ffff:10.1.2.3", false, 0},
		{"legacy", "::ffff:10.1.2.3", false, 5}, // IPv4-mapped matches IPv4 rules
		{"x", "172.16.3.4", false, 9},
		{"x", "172.32.3.4", false, 0},
	}
	for _, c := range cases {
		r, ok := rules.Match(c.user, netip.MustParseAddr(c.addr), c.tls)
		got := 0
		if ok {
			got = r.Line
		}
		if got != c.line {
			t.Errorf("%s from %s tls=%v: matched line %d, want %d", c.user, c.addr, c.tls, got, c.line)
		}
	}
	if r, _ := rules.Match("legacy", netip.MustParseAddr("10.1.2.3"), false); r.Method != MethodMD5 || r.String() != "host legacy 10.1.2.3/32 md5" {
		t.Errorf("rule %v", r)
	}
	if r, ok := DefaultRules.Match("x", netip.MustParseAddr("1.2.3.4"), true); !ok || r.Method != MethodSCRAM {
		t.Error("default rules")
	}
}

func TestParseRulesErrors(t *testing.T) {
	bad := []string{
		"local all all trust",
		"hostgssenc all all trust",
		"host all all",
		"host all all trust extra words",
		"host mydb all all trust",
		"host all 10.0.0.0/33 trust",
		"host all example.com trust",
		"host all all password",
		"host all all cert",
		"host +admins all trust",
		"host @users all trust",
		"host a,,b all trust",
		"host all ::ffff:1.2.3.4/64 trust",
	}
	for _, line := range bad {
		if _, err := ParseRules(strings.NewReader("# ok\n" + line + "\n")); err == nil || !strings.Contains(err.Error(), "line 2") {
			t.Errorf("%q: %v", line, err)
		}
	}
	rs, err := ParseRules(strings.NewReader("\n# only comments\n   \n"))
	if err != nil || len(rs) != 0 {
		t.Fatalf("%v %v", rs, err)
	}
}
