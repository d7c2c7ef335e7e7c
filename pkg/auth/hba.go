package auth

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
)

// Method is an authentication method of a rule.
type Method string

// The methods a rule can name.
const (
	MethodTrust  Method = "trust"
	MethodSCRAM  Method = "scram-sha-256"
	MethodMD5    Method = "md5"
	MethodReject Method = "reject"
	// MethodJWT asks for the password as PostgreSQL's cleartext exchange
	// does and takes it as a JWT (Neon's storage tokens), verified with
	// the configured public keys.
	MethodJWT Method = "jwt"
)

// ConnType is the first column of a rule.
type ConnType string

// Connection types: host matches any TCP connection, hostssl only TLS ones,
// hostnossl only plaintext ones.
const (
	Host      ConnType = "host"
	HostSSL   ConnType = "hostssl"
	HostNoSSL ConnType = "hostnossl"
)

// Rule is one line of the rules file.
type Rule struct {
	Line   int // 1-based line number in the file; 0 for built-in rules
	Type   ConnType
	Users  []string // nil means all
	Prefix netip.Prefix
	AllIPs bool
	Method Method
}

func (r *Rule) String() string {
	users := "all"
	if r.Users != nil {
		users = strings.Join(r.Users, ",")
	}
	addr := "all"
	if !r.AllIPs {
		addr = r.Prefix.String()
	}
	return fmt.Sprintf("%s %s %s %s", r.Type, users, addr, r.Method)
}

// Rules is an ordered rule list; the first matching rule decides.
type Rules []Rule

// DefaultRules are used when a users file is configured without a rules
// file: every connection must authenticate with SCRAM-SHA-256.
var DefaultRules = Rules{{Type: Host, AllIPs: true, Method: MethodSCRAM}}

// DefaultTokenRules are used when token keys are configured without a
// users file or a rules file: every connection must present a JWT.
var DefaultTokenRules = Rules{{Type: Host, AllIPs: true, Method: MethodJWT}}

// Match returns the first rule matching a connection of user from addr,
// encrypted or not.
func (rs Rules) Match(user string, addr netip.Addr, tls bool) (*Rule, bool) {
	addr = addr.Unmap()
	for i := range rs {
		r := &rs[i]
		switch r.Type {
		case HostSSL:
			if !tls {
				continue
			}
		case HostNoSSL:
			if tls {
				continue
			}
		}
		if !r.AllIPs && !r.Prefix.Contains(addr) {
			continue
		}
		if r.Users != nil && !containsString(r.Users, user) {
			continue
		}
		return r, true
	}
	return nil, false
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// ParseRules reads a rules file. Each non-blank line is
//
//	host|hostssl|hostnossl  <user|all>  <CIDR|IP|all>  <trust|scram-sha-256|md5|jwt|reject>
//
// or, as in pg_hba.conf, with a database column (replication or all)
// after the connection type. Users may be a comma-separated list.
// '#' starts a comment.
func ParseRules(r io.Reader) (Rules, error) {
	var rules Rules
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		rule, err := parseRule(f)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		rule.Line = n
		rules = append(rules, rule)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return rules, nil
}

func parseRule(f []string) (Rule, error) {
	var r Rule
	switch ConnType(f[0]) {
	case Host, HostSSL, HostNoSSL:
		r.Type = ConnType(f[0])
	case "local":
		return r, errors.New(`"local" rules do not apply: safekeeper listens on TCP only`)
	default:
		return r, fmt.Errorf("invalid connection type %q (want host, hostssl or hostnossl)", f[0])
	}
	switch len(f) {
	case 4:
	case 5:
		if f[1] != "replication" && f[1] != "all" {
			return r, fmt.Errorf("invalid database %q: safekeeper takes replication connections only (use replication or all, or leave the column out)", f[1])
		}
		f = append(f[:1:1], f[2:]...)
	default:
		return r, errors.New("expected: <host|hostssl|hostnossl> <user|all> <CIDR|all> <trust|scram-sha-256|md5|jwt|reject>")
	}
	if f[1] != "all" {
		for _, u := range strings.Split(f[1], ",") {
			if u == "" {
				return r, fmt.Errorf("invalid user list %q", f[1])
			}
			if strings.HasPrefix(u, "+") || strings.HasPrefix(u, "@") {
				return r, fmt.Errorf("user %q: group (+) and file (@) references are not supported", u)
			}
			r.Users = append(r.Users, u)
		}
	}
	switch addr := f[2]; {
	case addr == "all":
		r.AllIPs = true
	case strings.Contains(addr, "/"):
		p, err := netip.ParsePrefix(addr)
		if err != nil {
			return r, fmt.Errorf("invalid CIDR address %q", addr)
		}
		bits := p.Bits()
		if p.Addr().Is4In6() {
			if bits < 96 {
				return r, fmt.Errorf("invalid CIDR address %q", addr)
			}
			bits -= 96
		}
		r.Prefix = netip.PrefixFrom(p.Addr().Unmap(), bits).Masked()
	default:
		a, err := netip.ParseAddr(addr)
		if err != nil {
			return r, fmt.Errorf("invalid address %q (host names are not supported)", addr)
		}
		a = a.Unmap()
		r.Prefix = netip.PrefixFrom(a, a.BitLen())
	}
	switch m := Method(f[3]); m {
	case MethodTrust, MethodSCRAM, MethodMD5, MethodJWT, MethodReject:
		r.Method = m
	default:
		return r, fmt.Errorf("invalid authentication method %q (want trust, scram-sha-256, md5, jwt or reject)", f[3])
	}
	return r, nil
}

// LoadRules reads and parses the rules file at path.
func LoadRules(path string) (Rules, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	rs, err := ParseRules(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return rs, nil
}

// usesPasswords reports whether any rule asks for a password.
func (rs Rules) usesPasswords() bool {
	for _, r := range rs {
		if r.Method == MethodSCRAM || r.Method == MethodMD5 {
			return true
		}
	}
	return false
}

// usesTokens reports whether any rule asks for a JWT.
func (rs Rules) usesTokens() bool {
	for _, r := range rs {
		if r.Method == MethodJWT {
			return true
		}
	}
	return false
}
