package auth

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/xdg-go/scram"
	"go.uber.org/zap"

	"github.com/pgsafekeeper/safekeeper/pkg/pgerr"
)

// SASL mechanism names.
const (
	MechSCRAM     = "SCRAM-SHA-256"
	MechSCRAMPlus = "SCRAM-SHA-256-PLUS"
)

// ErrClosed is returned (wrapping the read error) when the client closed
// the connection or stopped answering during the exchange. libpq closes
// the socket when asked for a password it does not have; PostgreSQL sends
// nothing in that case, and neither should the caller.
var ErrClosed = errors.New("client closed the connection during authentication")

// Session is one connection's authentication.
type Session struct {
	// Backend carries the exchange; Authenticate flushes what it sends.
	Backend *pgproto3.Backend
	// User is the startup packet's user.
	User string
	// RemoteAddr is the client's address.
	RemoteAddr net.Addr
	// TLS is the connection's TLS state; nil for a plaintext connection.
	TLS *tls.ConnectionState
	// ServerCert is the certificate the server presented. With TLS and a
	// certificate whose signature hash is known, SCRAM-SHA-256-PLUS with
	// tls-server-end-point channel binding is offered.
	ServerCert *x509.Certificate
	// Log receives the real reason of a failure.
	Log *zap.Logger
}

// Authenticate applies the first matching rule to the session. It returns
// nil when the client may proceed (the caller then sends AuthenticationOk),
// a FATAL *pgerr.Error to send before closing, or an error wrapping
// ErrClosed when the client went away. Under a jwt rule it also returns
// the verified token's claims, which the caller must check against what
// the connection asks for (Claims.Allows); under any other rule the
// claims are nil.
func (a *Authenticator) Authenticate(s Session) (*Claims, error) {
	log := s.Log
	if log == nil {
		log = zap.NewNop()
	}
	log = log.With(zap.String("user", s.User))
	// Later 'p' messages (none are expected) decode as PasswordMessage again.
	defer s.Backend.SetAuthType(pgproto3.AuthTypeOk)
	users, rules, reloadErrs := a.current()
	for _, err := range reloadErrs {
		log.Error("authentication file not reloaded", zap.Error(err))
	}
	host, addr := remoteHost(s.RemoteAddr)
	enc := "no encryption"
	if s.TLS != nil {
		enc = "SSL encryption"
	}
	rule, ok := rules.Match(s.User, addr, s.TLS != nil)
	if !ok {
		log.Info("authentication failed: no rule matches", zap.String("host", host), zap.Bool("tls", s.TLS != nil))
		return nil, pgerr.Fatal(pgerr.InvalidAuthorizationSpec,
			"no pg_hba.conf entry for replication connection from host \"%s\", user \"%s\", %s", host, s.User, enc)
	}
	log = log.With(zap.Int("rule_line", rule.Line), zap.String("rule", rule.String()))
	v, known := users[s.User]
	switch rule.Method {
	case MethodTrust:
		log.Debug("connection trusted by rule")
		return nil, nil
	case MethodReject:
		log.Info("authentication failed: rule rejects the connection")
		return nil, pgerr.Fatal(pgerr.InvalidAuthorizationSpec,
			"pg_hba.conf rejects replication connection for host \"%s\", user \"%s\", %s", host, s.User, enc)
	case MethodJWT:
		return a.tokenExchange(s, log)
	case MethodMD5:
		// As in PostgreSQL: an md5 rule runs SCRAM for a user whose stored
		// verifier is SCRAM, and for a user without one (so that unknown
		// users look like the default kind of user).
		if known && v.SCRAM == nil {
			return nil, a.md5Exchange(s, log, v.MD5)
		}
	}
	var cred *SCRAMVerifier
	reason := ""
	switch {
	case !known:
		reason = "user has no entry in the users file"
	case v.SCRAM == nil:
		reason = "user has an md5 verifier, but the rule asks for scram-sha-256"
	default:
		cred = v.SCRAM
	}
	return nil, a.scramExchange(s, log, cred, reason)
}

func remoteHost(a net.Addr) (string, netip.Addr) {
	if a == nil {
		return "", netip.Addr{}
	}
	host := a.String()
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if ta, ok := a.(*net.TCPAddr); ok {
		if ip, ok := netip.AddrFromSlice(ta.IP); ok {
			return host, ip.Unmap()
		}
	}
	ip, _ := netip.ParseAddr(host)
	return host, ip.Unmap()
}

func passwordFailed(user string) error {
	return pgerr.Fatal(pgerr.InvalidPassword, "password authentication failed for user \"%s\"", user)
}

func malformedSCRAM(detail string) error {
	return pgerr.Fatal(pgerr.ProtocolViolation, "malformed SCRAM message").WithDetail("%s", detail)
}

// receivePassword reads the client's 'p' message, decoded for authType.
func receivePassword(be *pgproto3.Backend, authType uint32, what string) (pgproto3.FrontendMessage, error) {
	if err := be.SetAuthType(authType); err != nil {
		return nil, err
	}
	msg, err := be.Receive()
	if err != nil {
		var ne net.Error
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) || (errors.As(err, &ne) && ne.Timeout()) {
			return nil, fmt.Errorf("%w: %w", ErrClosed, err)
		}
		return nil, pgerr.Fatal(pgerr.ProtocolViolation, "invalid frontend message: %s", err.Error())
	}
	switch msg.(type) {
	case *pgproto3.SASLInitialResponse, *pgproto3.SASLResponse, *pgproto3.PasswordMessage:
		return msg, nil
	}
	typ := byte(0)
	if b, err := msg.Encode(nil); err == nil && len(b) > 0 {
		typ = b[0]
	}
	if _, ok := msg.(*pgproto3.Terminate); ok {
		return nil, fmt.Errorf("%w: Terminate", ErrClosed)
	}
	return nil, pgerr.Fatal(pgerr.ProtocolViolation, "expected %s response, got message type %d", what, typ)
}

func flush(be *pgproto3.Backend) error {
	if err := be.Flush(); err != nil {
		return fmt.Errorf("%w: %w", ErrClosed, err)
	}
	return nil
}

// mockCredentials are shown to a user without a usable SCRAM verifier:
// salt and keys derive from the user name and the server secret, so the
// same user always sees the same salt, like a real one.
func (a *Authenticator) mockCredentials(user string) *SCRAMVerifier {
	mac := func(label string) []byte {
		h := hmac.New(sha256.New, a.secret)
		h.Write([]byte(label))
		h.Write([]byte{0})
		h.Write([]byte(user))
		return h.Sum(nil)
	}
	return &SCRAMVerifier{
		Iterations: DefaultIterations,
		Salt:       mac("mock salt")[:saltLen],
		StoredKey:  mac("mock StoredKey"),
		ServerKey:  mac("mock ServerKey"),
	}
}

// scramExchange runs SCRAM-SHA-256 (or -PLUS) against cred; a nil cred
// runs the full exchange with mock credentials and fails at the end,
// logging reason.
func (a *Authenticator) scramExchange(s Session, log *zap.Logger, cred *SCRAMVerifier, reason string) error {
	be := s.Backend
	mock := cred == nil
	if mock {
		cred = a.mockCredentials(s.User)
	}
	var cb scram.ChannelBinding
	mechs := []string{MechSCRAM}
	if s.TLS != nil && s.ServerCert != nil {
		var err error
		cb, err = scram.NewTLSServerEndpointBinding(&tls.ConnectionState{PeerCertificates: []*x509.Certificate{s.ServerCert}})
		if err != nil {
			log.Debug("not offering SCRAM-SHA-256-PLUS", zap.Error(err))
		} else {
			mechs = []string{MechSCRAMPlus, MechSCRAM}
		}
	}
	be.Send(&pgproto3.AuthenticationSASL{AuthMechanisms: mechs})
	if err := flush(be); err != nil {
		return err
	}

	msg, err := receivePassword(be, pgproto3.AuthTypeSASL, "SASL")
	if err != nil {
		return err
	}
	init, ok := msg.(*pgproto3.SASLInitialResponse)
	if !ok {
		return pgerr.Fatal(pgerr.ProtocolViolation, "expected SASL response, got message type %d", 'p')
	}
	mech := init.AuthMechanism
	if !containsString(mechs, mech) {
		log.Info("authentication failed: client selected an unoffered SASL mechanism", zap.String("mechanism", mech))
		return pgerr.Fatal(pgerr.ProtocolViolation, "client selected an invalid SASL authentication mechanism")
	}
	first := string(init.Data)
	// The gs2 flag must agree with the mechanism (PostgreSQL's
	// read_client_first_message); the library checks the rest.
	switch {
	case mech == MechSCRAMPlus && !strings.HasPrefix(first, "p="):
		return malformedSCRAM("The client selected SCRAM-SHA-256-PLUS, but the SCRAM message does not include channel binding data.")
	case mech == MechSCRAM && strings.HasPrefix(first, "p"):
		return malformedSCRAM("The client selected SCRAM-SHA-256 without channel binding, but the SCRAM message includes channel binding data.")
	}

	srv, err := scram.SHA256.NewServer(func(string) (scram.StoredCredentials, error) {
		// libpq sends an empty n=; the startup packet's user is the one
		// authenticated, as in PostgreSQL.
		return scram.StoredCredentials{
			KeyFactors: scram.KeyFactors{Salt: string(cred.Salt), Iters: cred.Iterations},
			StoredKey:  cred.StoredKey,
			ServerKey:  cred.ServerKey,
		}, nil
	})
	if err != nil {
		return err
	}
	srv.WithNonceGenerator(nonceGen)
	var conv *scram.ServerConversation
	if cb.IsSupported() {
		conv = srv.NewConversationWithChannelBinding(cb)
	} else {
		conv = srv.NewConversation()
	}
	serverFirst, err := conv.Step(first)
	if err != nil {
		log.Info("authentication failed: bad SCRAM client-first-message", zap.String("mechanism", mech), zap.Error(err))
		if serverFirst == scram.ErrServerDoesSupportChannelBinding {
			return pgerr.Fatal(pgerr.ProtocolViolation, "SCRAM channel binding negotiation error").
				WithDetail("The client supports SCRAM channel binding but thinks the server does not.  However, this server does support channel binding.")
		}
		return malformedSCRAM("The client-first-message could not be parsed.")
	}
	be.Send(&pgproto3.AuthenticationSASLContinue{Data: []byte(serverFirst)})
	if err := flush(be); err != nil {
		return err
	}

	msg, err = receivePassword(be, pgproto3.AuthTypeSASLContinue, "SASL")
	if err != nil {
		return err
	}
	resp, ok := msg.(*pgproto3.SASLResponse)
	if !ok {
		return pgerr.Fatal(pgerr.ProtocolViolation, "expected SASL response, got message type %d", 'p')
	}
	serverFinal, err := conv.Step(string(resp.Data))
	switch {
	case err != nil && serverFinal == "":
		log.Info("authentication failed: bad SCRAM client-final-message", zap.Error(err))
		return malformedSCRAM("The client-final-message could not be parsed.")
	case err != nil && serverFinal == scram.ErrChannelBindingsDontMatch:
		log.Info("authentication failed: SCRAM channel binding check failed", zap.Error(err))
		return pgerr.Fatal(pgerr.ProtocolViolation, "SCRAM channel binding check failed")
	case mock:
		log.Info("authentication failed: " + reason)
		return passwordFailed(s.User)
	case err != nil || !conv.Valid():
		log.Info("authentication failed: wrong password (SCRAM proof does not verify)", zap.NamedError("scram", err))
		return passwordFailed(s.User)
	}
	be.Send(&pgproto3.AuthenticationSASLFinal{Data: []byte(serverFinal)})
	log.Debug("SCRAM authentication succeeded", zap.String("mechanism", mech))
	return nil
}

// nonceGen makes server nonces; tests replace it.
var nonceGen = serverNonce

// serverNonce is PostgreSQL's server nonce: 18 random bytes, base64.
func serverNonce() string {
	b := make([]byte, 18)
	_, _ = rand.Read(b)
	return base64Std(b)
}

// md5Exchange runs AuthenticationMD5Password against v.
func (a *Authenticator) md5Exchange(s Session, log *zap.Logger, v MD5Verifier) error {
	be := s.Backend
	var salt [4]byte
	_, _ = rand.Read(salt[:])
	be.Send(&pgproto3.AuthenticationMD5Password{Salt: salt})
	if err := flush(be); err != nil {
		return err
	}
	msg, err := receivePassword(be, pgproto3.AuthTypeMD5Password, "password")
	if err != nil {
		return err
	}
	pw, ok := msg.(*pgproto3.PasswordMessage)
	if !ok {
		return pgerr.Fatal(pgerr.ProtocolViolation, "expected password response, got message type %d", 'p')
	}
	if !v.CheckMD5Response(salt, pw.Password) {
		log.Info("authentication failed: wrong password (md5 response does not match)")
		return passwordFailed(s.User)
	}
	log.Debug("md5 authentication succeeded")
	return nil
}

// tokenExchange asks for the password with AuthenticationCleartextPassword,
// as Neon's safekeeper does, and verifies it as a JWT. Every failure is
// PostgreSQL's 28P01 for a wrong password: the client learns nothing
// about why; the log says.
func (a *Authenticator) tokenExchange(s Session, log *zap.Logger) (*Claims, error) {
	be := s.Backend
	be.Send(&pgproto3.AuthenticationCleartextPassword{})
	if err := flush(be); err != nil {
		return nil, err
	}
	msg, err := receivePassword(be, pgproto3.AuthTypeCleartextPassword, "password")
	if err != nil {
		return nil, err
	}
	pw, ok := msg.(*pgproto3.PasswordMessage)
	if !ok {
		return nil, pgerr.Fatal(pgerr.ProtocolViolation, "expected password response, got message type %d", 'p')
	}
	if a.tokens == nil {
		// New and the rules reload refuse jwt rules without keys.
		log.Error("authentication failed: the rule asks for jwt but no token public key is configured")
		return nil, passwordFailed(s.User)
	}
	if pw.Password == "" {
		log.Info("authentication failed: empty token (password) from the client")
		return nil, passwordFailed(s.User)
	}
	claims, err := a.tokens.Verify(pw.Password)
	if err != nil {
		log.Info("authentication failed: token rejected", zap.Error(err))
		return nil, passwordFailed(s.User)
	}
	log.Debug("token authentication succeeded", zap.String("scope", string(claims.Scope)), zap.String("token_tenant_id", claims.TenantID))
	return &claims, nil
}
