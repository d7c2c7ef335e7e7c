package auth

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/xdg-go/scram"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/pgsafekeeper/safekeeper/internal/testcert"
	"github.com/pgsafekeeper/safekeeper/pkg/pgerr"
)

// testServer accepts connections on loopback and authenticates them with
// a, the way the walsender does: SSLRequest ('S' with TLS, else 'N'),
// StartupMessage, Authenticate, then AuthenticationOk + ReadyForQuery or
// the FATAL error.
type testServer struct {
	t       *testing.T
	a       *Authenticator
	tls     *tls.Config
	addr    string
	results chan authResult // one Authenticate result per connection
}

type authResult struct {
	claims *Claims
	err    error
}

func startTestServer(t *testing.T, a *Authenticator, tlsCfg *tls.Config) *testServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &testServer{t: t, a: a, tls: tlsCfg, addr: ln.Addr().String(), results: make(chan authResult, 100)}
	t.Cleanup(func() { ln.Close() })
	log := zaptest.NewLogger(t)
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			go s.serve(nc, log)
		}
	}()
	return s
}

func (s *testServer) serve(nc net.Conn, log *zap.Logger) {
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(20 * time.Second))
	var conn net.Conn = nc
	be := pgproto3.NewBackend(conn, conn)
	var st *tls.ConnectionState
	var startup *pgproto3.StartupMessage
	for startup == nil {
		msg, err := be.ReceiveStartupMessage()
		if err != nil {
			s.results <- authResult{err: err}
			return
		}
		switch m := msg.(type) {
		case *pgproto3.SSLRequest:
			if s.tls == nil {
				conn.Write([]byte{'N'})
				continue
			}
			conn.Write([]byte{'S'})
			tc := tls.Server(nc, s.tls)
			if err := tc.Handshake(); err != nil {
				s.results <- authResult{err: err}
				return
			}
			cs := tc.ConnectionState()
			st = &cs
			conn = tc
			be = pgproto3.NewBackend(conn, conn)
		case *pgproto3.StartupMessage:
			startup = m
		default:
			s.results <- authResult{err: fmt.Errorf("unexpected %T", msg)}
			return
		}
	}
	sess := Session{Backend: be, User: startup.Parameters["user"], RemoteAddr: nc.RemoteAddr(), TLS: st, Log: log}
	if st != nil {
		sess.ServerCert = s.tls.Certificates[0].Leaf
	}
	claims, err := s.a.Authenticate(sess)
	if err == nil {
		be.Send(&pgproto3.AuthenticationOk{})
		be.Send(&pgproto3.ParameterStatus{Name: "server_version", Value: "15.0"})
		be.Send(&pgproto3.BackendKeyData{ProcessID: 1, SecretKey: []byte{0, 0, 0, 1}})
		be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
		be.Flush()
	} else if pe := pgerr.As(err); pe != nil {
		be.Send(&pgproto3.ErrorResponse{Severity: pe.Severity, SeverityUnlocalized: pe.Severity, Code: pe.Code, Message: pe.Message, Detail: pe.Detail})
		be.Flush()
	}
	s.results <- authResult{claims, err}
	if err == nil {
		// Wait for the client's Terminate.
		be.Receive()
	}
}

func (s *testServer) result(t *testing.T) error {
	t.Helper()
	_, err := s.resultClaims(t)
	return err
}

// resultClaims is result with the claims Authenticate returned.
func (s *testServer) resultClaims(t *testing.T) (*Claims, error) {
	t.Helper()
	select {
	case r := <-s.results:
		return r.claims, r.err
	case <-time.After(20 * time.Second):
		t.Fatal("server did not finish authentication")
		return nil, nil
	}
}

// connect connects with pgconn; params are extra key=value settings.
func (s *testServer) connect(t *testing.T, params string) error {
	t.Helper()
	host, port, _ := net.SplitHostPort(s.addr)
	cfg, err := pgconn.ParseConfig(fmt.Sprintf("host=%s port=%s %s", host, port, params))
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnectTimeout = 20 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgconn.ConnectConfig(ctx, cfg)
	if err == nil {
		c.Close(ctx)
	}
	return err
}

// writeFile writes content to a new file in dir.
func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func scramLine(t *testing.T, user, password string) string {
	t.Helper()
	v, err := NewSCRAMVerifier(password, DefaultIterations)
	if err != nil {
		t.Fatal(err)
	}
	return user + ":" + v.String() + "\n"
}

func newAuth(t *testing.T, users, rules string) *Authenticator {
	t.Helper()
	dir := t.TempDir()
	cfg := Config{MockSecret: []byte("0123456789abcdef0123456789abcdef")}
	if users != "" {
		cfg.UsersFile = writeFile(t, dir, "users", users)
	}
	if rules != "" {
		cfg.RulesFile = writeFile(t, dir, "hba", rules)
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func wantPgError(t *testing.T, err error, code, msg string) {
	t.Helper()
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		t.Fatalf("got %v, want a server error %s %q", err, code, msg)
	}
	if pe.Severity != "FATAL" || pe.Code != code || pe.Message != msg {
		t.Fatalf("got %s %s %q, want FATAL %s %q", pe.Severity, pe.Code, pe.Message, code, msg)
	}
}

func TestSCRAMWithPgconn(t *testing.T) {
	a := newAuth(t, scramLine(t, "alice", "s3cret")+"old:"+string(NewMD5Verifier("old", "md5pw"))+"\n", "")
	s := startTestServer(t, a, nil)

	if err := s.connect(t, "user=alice password=s3cret sslmode=disable require_auth=scram-sha-256"); err != nil {
		t.Fatalf("right password: %v", err)
	}
	if err := s.result(t); err != nil {
		t.Fatalf("server: %v", err)
	}

	err := s.connect(t, "user=alice password=wrong sslmode=disable")
	wantPgError(t, err, "28P01", `password authentication failed for user "alice"`)
	s.result(t)

	// An unknown user fails the same way, after the same exchange.
	err = s.connect(t, "user=mallory password=s3cret sslmode=disable require_auth=scram-sha-256")
	wantPgError(t, err, "28P01", `password authentication failed for user "mallory"`)
	s.result(t)

	// The default rule asks for SCRAM: a user with an md5 verifier fails.
	err = s.connect(t, "user=old password=md5pw sslmode=disable")
	wantPgError(t, err, "28P01", `password authentication failed for user "old"`)
	s.result(t)
}

func TestMD5WithPgconn(t *testing.T) {
	users := "old:" + string(NewMD5Verifier("old", "md5pw")) + "\n" + scramLine(t, "new", "scrampw")
	a := newAuth(t, users, "host all all md5\n")
	s := startTestServer(t, a, nil)

	if err := s.connect(t, "user=old password=md5pw sslmode=disable require_auth=md5"); err != nil {
		t.Fatalf("md5: %v", err)
	}
	s.result(t)
	err := s.connect(t, "user=old password=nope sslmode=disable")
	wantPgError(t, err, "28P01", `password authentication failed for user "old"`)
	s.result(t)
	// As in PostgreSQL, an md5 rule runs SCRAM for a SCRAM user.
	if err := s.connect(t, "user=new password=scrampw sslmode=disable require_auth=scram-sha-256"); err != nil {
		t.Fatalf("scram under an md5 rule: %v", err)
	}
	s.result(t)
	// And for an unknown one.
	err = s.connect(t, "user=ghost password=x sslmode=disable require_auth=scram-sha-256")
	wantPgError(t, err, "28P01", `password authentication failed for user "ghost"`)
	s.result(t)
}

func TestRulesWithPgconn(t *testing.T) {
	users := scramLine(t, "alice", "pw")
	rules := `# test rules
host     bob        all             trust
host     carol      127.0.0.1/32    reject
hostssl  alice      all             scram-sha-256
host     dave       10.0.0.0/8      trust
`
	a := newAuth(t, users, rules)
	s := startTestServer(t, a, nil)

	if err := s.connect(t, "user=bob sslmode=disable require_auth=none"); err != nil {
		t.Fatalf("trust: %v", err)
	}
	s.result(t)
	err := s.connect(t, "user=carol sslmode=disable")
	wantPgError(t, err, "28000", `pg_hba.conf rejects replication connection for host "127.0.0.1", user "carol", no encryption`)
	s.result(t)
	err = s.connect(t, "user=alice password=pw sslmode=disable")
	wantPgError(t, err, "28000", `no pg_hba.conf entry for replication connection from host "127.0.0.1", user "alice", no encryption`)
	s.result(t)
	err = s.connect(t, "user=dave sslmode=disable")
	wantPgError(t, err, "28000", `no pg_hba.conf entry for replication connection from host "127.0.0.1", user "dave", no encryption`)
	s.result(t)
}

func TestSCRAMPlusWithPgconn(t *testing.T) {
	tlsCfg := testcert.Must(t).ServerConfig()
	a := newAuth(t, scramLine(t, "alice", "pw"), "hostssl all all scram-sha-256\nhostnossl all all reject\n")
	s := startTestServer(t, a, tlsCfg)

	for _, cb := range []string{"require", "prefer", "disable"} {
		if err := s.connect(t, "user=alice password=pw sslmode=require channel_binding="+cb); err != nil {
			t.Fatalf("channel_binding=%s: %v", cb, err)
		}
		if err := s.result(t); err != nil {
			t.Fatalf("channel_binding=%s: server: %v", cb, err)
		}
	}
	err := s.connect(t, "user=alice password=bad sslmode=require channel_binding=require")
	wantPgError(t, err, "28P01", `password authentication failed for user "alice"`)
	s.result(t)
	err = s.connect(t, "user=alice password=pw sslmode=disable")
	wantPgError(t, err, "28000", `pg_hba.conf rejects replication connection for host "127.0.0.1", user "alice", no encryption`)
	s.result(t)
}

// rawClient speaks the protocol by hand, for what pgconn does not do.
type rawClient struct {
	t  *testing.T
	nc net.Conn
	fe *pgproto3.Frontend
}

func dialRaw(t *testing.T, s *testServer, user string, useTLS bool) *rawClient {
	t.Helper()
	nc, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(20 * time.Second))
	var conn net.Conn = nc
	if useTLS {
		fe := pgproto3.NewFrontend(nc, nc)
		fe.Send(&pgproto3.SSLRequest{})
		if err := fe.Flush(); err != nil {
			t.Fatal(err)
		}
		b := make([]byte, 1)
		if _, err := nc.Read(b); err != nil || b[0] != 'S' {
			t.Fatalf("SSLRequest answer %q, %v", b, err)
		}
		tc := tls.Client(nc, &tls.Config{InsecureSkipVerify: true})
		if err := tc.Handshake(); err != nil {
			t.Fatal(err)
		}
		conn = tc
	}
	c := &rawClient{t: t, nc: conn, fe: pgproto3.NewFrontend(conn, conn)}
	c.fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30, Parameters: map[string]string{"user": user, "replication": "true"}})
	if err := c.fe.Flush(); err != nil {
		t.Fatal(err)
	}
	return c
}

func (c *rawClient) receive() pgproto3.BackendMessage {
	c.t.Helper()
	m, err := c.fe.Receive()
	if err != nil {
		c.t.Fatalf("receive: %v", err)
	}
	return m
}

func (c *rawClient) send(m pgproto3.FrontendMessage) {
	c.t.Helper()
	c.fe.Send(m)
	if err := c.fe.Flush(); err != nil {
		c.t.Fatal(err)
	}
}

// scramViaLibraryClient runs the exchange with xdg-go/scram's client (empty
// user name, as libpq) and returns the server's last message.
func scramViaLibraryClient(t *testing.T, c *rawClient, password string, wantMechs []string) (serverFirst string, last pgproto3.BackendMessage) {
	t.Helper()
	sasl, ok := c.receive().(*pgproto3.AuthenticationSASL)
	if !ok {
		t.Fatal("no AuthenticationSASL")
	}
	if fmt.Sprint(sasl.AuthMechanisms) != fmt.Sprint(wantMechs) {
		t.Fatalf("mechanisms %v, want %v", sasl.AuthMechanisms, wantMechs)
	}
	client, err := scram.SHA256.NewClient("", password, "")
	if err != nil {
		t.Fatal(err)
	}
	conv := client.NewConversation()
	first, err := conv.Step("")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(first, "n,,n=,r=") {
		t.Fatalf("client-first %q", first)
	}
	c.send(&pgproto3.SASLInitialResponse{AuthMechanism: MechSCRAM, Data: []byte(first)})
	cont, ok := c.receive().(*pgproto3.AuthenticationSASLContinue)
	if !ok {
		t.Fatal("no AuthenticationSASLContinue")
	}
	serverFirst = string(cont.Data)
	final, err := conv.Step(serverFirst)
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	c.send(&pgproto3.SASLResponse{Data: []byte(final)})
	last = c.receive()
	if fin, ok := last.(*pgproto3.AuthenticationSASLFinal); ok {
		if _, err := conv.Step(string(fin.Data)); err != nil {
			t.Fatalf("server signature: %v", err)
		}
		if !conv.Valid() {
			t.Fatal("server signature not valid")
		}
		last = c.receive()
	}
	return serverFirst, last
}

func TestSCRAMWithLibraryClient(t *testing.T) {
	a := newAuth(t, scramLine(t, "alice", "pw"), "")
	s := startTestServer(t, a, nil)

	c := dialRaw(t, s, "alice", false)
	sf, last := scramViaLibraryClient(t, c, "pw", []string{MechSCRAM})
	if _, ok := last.(*pgproto3.AuthenticationOk); !ok {
		t.Fatalf("got %T, want AuthenticationOk", last)
	}
	s.result(t)
	// r=, s=, i= in that order and nothing after.
	f := strings.Split(sf, ",")
	if len(f) != 3 || !strings.HasPrefix(f[0], "r=") || !strings.HasPrefix(f[1], "s=") || f[2] != "i=4096" {
		t.Fatalf("server-first-message %q", sf)
	}

	// Unknown users get a full exchange with a stable salt per name.
	salts := map[string]string{}
	for _, user := range []string{"ghost", "ghost", "spook"} {
		c := dialRaw(t, s, user, false)
		sf, last := scramViaLibraryClient(t, c, "pw", []string{MechSCRAM})
		e, ok := last.(*pgproto3.ErrorResponse)
		if !ok || e.Code != "28P01" || e.Message != fmt.Sprintf("password authentication failed for user \"%s\"", user) {
			t.Fatalf("unknown user: got %#v", last)
		}
		s.result(t)
		salt := strings.Split(sf, ",")[1]
		if prev, ok := salts[user]; ok && prev != salt {
			t.Fatalf("mock salt of %s changed: %s, %s", user, prev, salt)
		}
		salts[user] = salt
		if !strings.HasSuffix(sf, ",i=4096") {
			t.Fatalf("mock server-first %q", sf)
		}
	}
	if salts["ghost"] == salts["spook"] {
		t.Fatal("two unknown users share a salt")
	}
}

func TestSCRAMProtocolErrors(t *testing.T) {
	tlsCfg := testcert.Must(t).ServerConfig()
	a := newAuth(t, scramLine(t, "alice", "pw"), "")
	s := startTestServer(t, a, tlsCfg)

	cases := []struct {
		name     string
		tls      bool
		mech     string
		first    string
		code     string
		message  string
		wantMech []string
	}{
		{"unknown mechanism", false, "SCRAM-SHA-1", "n,,n=,r=abc", "08P01", "client selected an invalid SASL authentication mechanism", []string{MechSCRAM}},
		{"PLUS not offered", false, MechSCRAMPlus, "p=tls-server-end-point,,n=,r=abc", "08P01", "client selected an invalid SASL authentication mechanism", []string{MechSCRAM}},
		{"garbage", false, MechSCRAM, "hello", "08P01", "malformed SCRAM message", []string{MechSCRAM}},
		{"binding data without PLUS", true, MechSCRAM, "p=tls-server-end-point,,n=,r=abc", "08P01", "malformed SCRAM message", []string{MechSCRAMPlus, MechSCRAM}},
		{"PLUS without binding", true, MechSCRAMPlus, "n,,n=,r=abc", "08P01", "malformed SCRAM message", []string{MechSCRAMPlus, MechSCRAM}},
		{"downgrade", true, MechSCRAM, "y,,n=,r=abc", "08P01", "SCRAM channel binding negotiation error", []string{MechSCRAMPlus, MechSCRAM}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRaw(t, s, "alice", tc.tls)
			sasl, ok := c.receive().(*pgproto3.AuthenticationSASL)
			if !ok || fmt.Sprint(sasl.AuthMechanisms) != fmt.Sprint(tc.wantMech) {
				t.Fatalf("got %#v", sasl)
			}
			c.send(&pgproto3.SASLInitialResponse{AuthMechanism: tc.mech, Data: []byte(tc.first)})
			e, ok := c.receive().(*pgproto3.ErrorResponse)
			if !ok || e.Severity != "FATAL" || e.Code != tc.code || e.Message != tc.message {
				t.Fatalf("got %#v", e)
			}
			s.result(t)
		})
	}

	// Without PLUS offered (plaintext), 'y' is accepted.
	t.Run("y without TLS", func(t *testing.T) {
		c := dialRaw(t, s, "alice", false)
		c.receive()
		c.send(&pgproto3.SASLInitialResponse{AuthMechanism: MechSCRAM, Data: []byte("y,,n=,r=abcdef")})
		if _, ok := c.receive().(*pgproto3.AuthenticationSASLContinue); !ok {
			t.Fatal("no SASLContinue")
		}
		c.nc.Close()
		if err := s.result(t); !errors.Is(err, ErrClosed) {
			t.Fatalf("server: %v, want ErrClosed", err)
		}
	})
}

// A client without a password (libpq) closes the socket when asked for
// one: Authenticate reports ErrClosed and sends nothing more.
func TestClientClosesWhenAskedForPassword(t *testing.T) {
	a := newAuth(t, scramLine(t, "alice", "pw")+"old:"+string(NewMD5Verifier("old", "x"))+"\n", "host old all md5\nhost all all scram-sha-256\n")
	s := startTestServer(t, a, nil)
	for _, user := range []string{"alice", "old"} {
		c := dialRaw(t, s, user, false)
		c.receive()
		c.nc.Close()
		if err := s.result(t); !errors.Is(err, ErrClosed) {
			t.Fatalf("%s: server: %v, want ErrClosed", user, err)
		}
	}
	// pgconn, unlike libpq, goes on with an empty password.
	err := s.connect(t, "user=alice sslmode=disable")
	wantPgError(t, err, "28P01", `password authentication failed for user "alice"`)
	s.result(t)
}

// The users and rules files are re-read when they change; a broken
// version leaves the previous one in force.
func TestFilesReloaded(t *testing.T) {
	dir := t.TempDir()
	usersPath := writeFile(t, dir, "users", scramLine(t, "alice", "one"))
	a, err := New(Config{UsersFile: usersPath, MockSecret: make([]byte, 32)})
	if err != nil {
		t.Fatal(err)
	}
	s := startTestServer(t, a, nil)
	if err := s.connect(t, "user=alice password=one sslmode=disable"); err != nil {
		t.Fatal(err)
	}
	s.result(t)

	v, _ := NewSCRAMVerifier("two", DefaultIterations)
	if err := SetUser(usersPath, "alice", Verifier{SCRAM: v}); err != nil {
		t.Fatal(err)
	}
	if err := s.connect(t, "user=alice password=two sslmode=disable"); err != nil {
		t.Fatalf("after SetUser: %v", err)
	}
	s.result(t)

	if err := os.WriteFile(usersPath, []byte("alice:plaintext\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.connect(t, "user=alice password=two sslmode=disable"); err != nil {
		t.Fatalf("a broken file must keep the previous users: %v", err)
	}
	s.result(t)
}

func TestNewErrors(t *testing.T) {
	dir := t.TempDir()
	secret := make([]byte, 32)
	if _, err := New(Config{MockSecret: secret}); err == nil {
		t.Error("no files accepted")
	}
	hba := writeFile(t, dir, "hba", "host all all scram-sha-256\n")
	if _, err := New(Config{RulesFile: hba, MockSecret: secret}); err == nil {
		t.Error("password rules without a users file accepted")
	}
	trustOnly := writeFile(t, dir, "hba2", "hostssl all all trust\n")
	if _, err := New(Config{RulesFile: trustOnly, MockSecret: secret}); err != nil {
		t.Errorf("trust rules without a users file: %v", err)
	}
	bad := writeFile(t, dir, "users", "alice:secret\n")
	if _, err := New(Config{UsersFile: bad, MockSecret: secret}); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Errorf("plaintext users file: %v", err)
	}
	if _, err := New(Config{UsersFile: filepath.Join(dir, "missing"), MockSecret: secret}); err == nil {
		t.Error("missing users file accepted")
	}
}
