// Package auth decides who may open a replication connection and runs the
// password exchange, the way PostgreSQL's postmaster does for a physical
// walsender:
//
//   - a users file holds PostgreSQL's password verifiers (the
//     pg_authid.rolpassword formats SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>
//     and md5<hex>), never plaintext; SetUser and DeleteUser replace it
//     atomically;
//   - a rules file in the spirit of pg_hba.conf picks, first match wins,
//     trust, scram-sha-256, md5, jwt or reject by connection type (host,
//     hostssl, hostnossl), user and client address;
//   - Authenticator.Authenticate drives the AuthenticationSASL /
//     SASLContinue / SASLFinal (SCRAM-SHA-256 and, over TLS,
//     SCRAM-SHA-256-PLUS with tls-server-end-point channel binding),
//     AuthenticationMD5Password or, for jwt, AuthenticationCleartextPassword
//     exchange on a pgproto3.Backend. The SCRAM arithmetic and message
//     parsing are github.com/xdg-go/scram's.
//
// Tokens are Neon's storage tokens: a JWT given as the password, signed
// with EdDSA (Ed25519) and carrying {scope, tenant_id}. TokenVerifier
// checks them against one or more public keys from a PEM file (JWT
// parsing is github.com/golang-jwt/jwt/v5's, restricted to EdDSA);
// Authenticate returns the verified Claims and the caller decides with
// Claims.Allows which tenant's WAL they open: scope safekeeperdata every
// tenant, scope tenant its own. VerifyBearer takes the same tokens from an
// HTTP Authorization header.
//
// Failures carry PostgreSQL's FATAL texts and SQLSTATEs (28000 for a
// refused or unmatched connection, 28P01 for a failed password or a token
// that does not verify). A user without an entry goes through a complete
// SCRAM exchange with a salt derived from the user name and a server
// secret and fails only at the end, so the client cannot tell an unknown
// user from a wrong password. The real reason is logged server-side,
// through the Session's logger only.
package auth
