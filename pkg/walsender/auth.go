package walsender

import (
	"fmt"

	"github.com/pgsafekeeper/safekeeper/pkg/pgwire"
)

// negotiateTLS answers an SSLRequest. Without a TLS configuration it
// answers 'N' and the client continues in plaintext on the same socket.
func (c *conn) negotiateTLS() error {
	if _, err := c.nc.Write([]byte{'N'}); err != nil {
		return fmt.Errorf("%w: %w", pgwire.ErrCloseSilently, err)
	}
	return nil
}

// authenticate runs the authentication exchange for the startup user
// before AuthenticationOk is sent. Without configured rules every
// replication connection is trusted.
func (c *conn) authenticate(database string) error {
	return nil
}
