// Package testcert makes the throwaway TLS certificates tests need: a CA
// and a server certificate it signed, for 127.0.0.1 and localhost, ECDSA
// P-256 with SHA-256 signatures (the hash SCRAM's tls-server-end-point
// channel binding takes). It serves the TLS tests of the auth and upstream
// packages, the end-to-end tests, and the S3 test server. It is for tests
// only: the keys live in memory and in files a test's temporary
// directory removes.
package testcert
