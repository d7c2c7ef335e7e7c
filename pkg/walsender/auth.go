package walsender

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"

	"go.uber.org/zap"

	"github.com/pgsafekeeper/safekeeper/pkg/auth"
	"github.com/pgsafekeeper/safekeeper/pkg/pgerr"
	"github.com/pgsafekeeper/safekeeper/pkg/pgwire"
)

// negotiateTLS answers an SSLRequest. Without a TLS configuration it
// answers 'N' and the client continues in plaintext on the same socket;
// with one it answers 'S', runs the handshake and replaces c.nc with the
// TLS connection (c.be is created from c.nc after the startup packets).
func (c *conn) negotiateTLS() error {
	cfg := c.s.cfg.TLS
	if cfg == nil {
		if _, err := c.nc.Write([]byte{'N'}); err != nil {
			return fmt.Errorf("%w: %w", pgwire.ErrCloseSilently, err)
		}
		return nil
	}
	if _, err := c.nc.Write([]byte{'S'}); err != nil {
		return fmt.Errorf("%w: %w", pgwire.ErrCloseSilently, err)
	}
	// pgwire.ReadPacket reads exactly the packet, so bytes a client sent
	// after the SSLRequest without waiting for 'S' are fed to the handshake
	// and make it fail, as PostgreSQL requires.
	tc := tls.Server(c.nc, cfg)
	if err := tc.Handshake(); err != nil {
		return fmt.Errorf("%w: TLS handshake: %w", pgwire.ErrCloseSilently, err)
	}
	c.nc = tc
	c.tls = true
	st := tc.ConnectionState()
	c.log = c.log.With(zap.String("tls", tls.VersionName(st.Version)))
	return nil
}

// authenticate runs the authentication exchange for the startup user
// before AuthenticationOk is sent. Without configured rules every
// replication connection is trusted. A token's claims are kept in
// c.claims for authorize.
func (c *conn) authenticate(database string) error {
	a := c.s.cfg.Auth
	if a == nil {
		return nil
	}
	sess := auth.Session{Backend: c.be, User: c.user, RemoteAddr: c.nc.RemoteAddr(), Log: c.log}
	if tc, ok := c.nc.(*tls.Conn); ok {
		st := tc.ConnectionState()
		sess.TLS = &st
		// Channel binding needs the certificate that was presented; with
		// exactly one configured, that is it.
		if cfg := c.s.cfg.TLS; cfg != nil && len(cfg.Certificates) == 1 && cfg.GetCertificate == nil {
			sess.ServerCert = cfg.Certificates[0].Leaf
		}
	}
	claims, err := a.Authenticate(sess)
	if errors.Is(err, auth.ErrClosed) {
		// libpq without a password closes the socket when asked for one;
		// PostgreSQL sends nothing and logs nothing at the default level.
		c.log.Debug("client closed the connection during authentication", zap.String("user", c.user), zap.Error(err))
		return fmt.Errorf("%w: %w", pgwire.ErrCloseSilently, io.EOF)
	}
	if err != nil {
		return err
	}
	c.claims = claims
	return nil
}

// authorize checks a token-authenticated connection's claims against the
// tenant it asks for; connections authenticated otherwise (no claims) may
// use any timeline. tenant is "" when the connection named none and is
// served the only hosted timeline, whose tenant is hostedTenant: the
// refusal then names no tenant, so that a token for one tenant does not
// learn another's id. The refusal is FATAL 28000 in either case; the
// reason is logged.
func (c *conn) authorize(tenant, hostedTenant string) error {
	if c.claims == nil {
		return nil
	}
	want := tenant
	if want == "" {
		want = hostedTenant
	}
	err := c.claims.Allows(want)
	if err == nil {
		return nil
	}
	c.log.Info("authorization failed: the token does not grant the tenant",
		zap.String("user", c.user), zap.String("scope", string(c.claims.Scope)),
		zap.String("token_tenant_id", c.claims.TenantID), zap.String("tenant_id", want),
		zap.Bool("named_in_options", tenant != ""), zap.Error(err))
	if tenant == "" {
		return pgerr.Fatal(pgerr.InvalidAuthorizationSpec, "permission denied for the hosted timeline").
			WithHint("Name the tenant and timeline the token is for: options='-c tenant_id=... timeline_id=...'.")
	}
	return pgerr.Fatal(pgerr.InvalidAuthorizationSpec, "permission denied for tenant %s", tenant)
}
