package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/pgsafekeeper/safekeeper/pkg/auth"
	"github.com/pgsafekeeper/safekeeper/pkg/httpapi"
	"github.com/pgsafekeeper/safekeeper/pkg/walsender"
)

// mockSecretFile is kept in the data directory: the server secret from
// which the SCRAM salts shown to unknown users derive (PostgreSQL keeps its
// equivalent, mock_authentication_nonce, in pg_control). It must survive
// restarts, or a restart would show which user names exist.
const mockSecretFile = "auth_mock_secret"

// securityConfig holds the authentication and TLS flags.
type securityConfig struct {
	usersFile       string
	hbaFile         string
	pgAuthPublicKey string
	tlsCert         string
	tlsKey          string
	tlsMinVersion   string

	// httpTokens verifies bearer tokens for the HTTP API: the keys of
	// --http-auth-public-key, nil without it. It is loaded while the flags
	// are parsed (httpKeyFlag), because applySecurity gets a copy of this
	// struct; httpTokensErr keeps a load error for applySecurity to report
	// as a configuration error.
	httpTokens    *auth.TokenVerifier
	httpKeyFile   string
	httpTokensErr error

	fs *flag.FlagSet // to find --data-dir
}

// httpKeyFlag is --http-auth-public-key: Set loads the key file into the
// securityConfig the flags were registered with.
type httpKeyFlag struct{ c *securityConfig }

func (f httpKeyFlag) String() string {
	if f.c == nil {
		return ""
	}
	return f.c.httpKeyFile
}

func (f httpKeyFlag) Set(path string) error {
	f.c.httpKeyFile, f.c.httpTokens, f.c.httpTokensErr = path, nil, nil
	if path != "" {
		f.c.httpTokens, f.c.httpTokensErr = auth.LoadTokenVerifier(path)
	}
	return nil
}

// registerSecurityFlags adds the authentication and TLS flags to fs.
func registerSecurityFlags(fs *flag.FlagSet, c *securityConfig) {
	c.fs = fs
	fs.StringVar(&c.usersFile, "users-file", "", "file of user:verifier lines (SCRAM-SHA-256 or md5, as in pg_authid); maintain it with 'safekeeper passwd'")
	fs.StringVar(&c.hbaFile, "hba-file", "", "host rules (host|hostssl|hostnossl user CIDR trust|scram-sha-256|md5|jwt|reject), first match wins; default with --users-file: host all all scram-sha-256, with --pg-auth-public-key: host all all jwt")
	fs.StringVar(&c.pgAuthPublicKey, "pg-auth-public-key", "", "PEM `FILE` of Ed25519 public keys (one or more \"PUBLIC KEY\" blocks): replication clients give a JWT (EdDSA, Neon's {scope, tenant_id}) as their password")
	fs.Var(httpKeyFlag{c}, "http-auth-public-key", "PEM `FILE` of Ed25519 public keys for bearer tokens on the HTTP API (loaded and checked; the HTTP API does not ask for tokens yet)")
	fs.StringVar(&c.tlsCert, "tls-cert", "", "PEM certificate (chain) for TLS; with --tls-key, SSLRequest is answered 'S'")
	fs.StringVar(&c.tlsKey, "tls-key", "", "PEM private key of --tls-cert")
	fs.StringVar(&c.tlsMinVersion, "tls-min-version", "1.2", "lowest TLS version accepted: 1.2 or 1.3")
}

// applySecurity fills the walsender configuration's authentication and TLS
// settings from the flags.
func applySecurity(c securityConfig, wc *walsender.Config) error {
	if c.httpTokensErr != nil {
		return fmt.Errorf("--http-auth-public-key: %w", c.httpTokensErr)
	}
	if (c.tlsCert == "") != (c.tlsKey == "") {
		return errors.New("--tls-cert and --tls-key must be given together")
	}
	if c.tlsCert != "" {
		v, err := auth.ParseTLSVersion(c.tlsMinVersion)
		if err != nil {
			return fmt.Errorf("--tls-min-version: %w", err)
		}
		warnAccess(c.tlsKey, "TLS private key")
		cfg, err := auth.LoadTLSConfig(c.tlsCert, c.tlsKey, v)
		if err != nil {
			return err
		}
		wc.TLS = cfg
	}
	var tokens *auth.TokenVerifier
	if c.pgAuthPublicKey != "" {
		var err error
		if tokens, err = auth.LoadTokenVerifier(c.pgAuthPublicKey); err != nil {
			return fmt.Errorf("--pg-auth-public-key: %w", err)
		}
	}
	if c.usersFile == "" && c.hbaFile == "" && tokens == nil {
		return nil
	}
	if c.usersFile != "" && tokens != nil && c.hbaFile == "" {
		return errors.New("--users-file and --pg-auth-public-key need an --hba-file that says which connections use scram-sha-256 (or md5) and which jwt")
	}
	if c.usersFile != "" {
		warnAccess(c.usersFile, "users file")
	}
	secret, err := loadMockSecret(c)
	if err != nil {
		return err
	}
	a, err := auth.New(auth.Config{UsersFile: c.usersFile, RulesFile: c.hbaFile, Tokens: tokens, MockSecret: secret})
	if err != nil {
		return fmt.Errorf("%s: %w", authFlags(c), err)
	}
	wc.Auth = a
	return nil
}

// authFlags names the authentication flags given, for an error message.
func authFlags(c securityConfig) string {
	var given []string
	for _, f := range []struct{ name, value string }{
		{"--users-file", c.usersFile}, {"--hba-file", c.hbaFile}, {"--pg-auth-public-key", c.pgAuthPublicKey},
	} {
		if f.value != "" {
			given = append(given, f.name)
		}
	}
	return strings.Join(given, "/")
}

func loadMockSecret(c securityConfig) ([]byte, error) {
	if c.fs != nil {
		if f := c.fs.Lookup("data-dir"); f != nil && f.Value.String() != "" {
			s, err := auth.LoadOrCreateSecret(filepath.Join(f.Value.String(), mockSecretFile))
			if err != nil {
				return nil, fmt.Errorf("authentication secret: %w", err)
			}
			return s, nil
		}
	}
	return nil, errors.New("authentication needs --data-dir for its secret")
}

// warnAccess warns about a secret file others can read.
func warnAccess(path, what string) {
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o007 != 0 {
		fmt.Fprintf(os.Stderr, "safekeeper: warning: %s %s is accessible to all users (mode %v); use chmod 0600\n", what, path, fi.Mode().Perm())
	}
}

const passwdUsage = `usage: safekeeper passwd --users-file FILE --user NAME [--password-stdin] [--md5] [--delete]

Adds or replaces NAME's entry in FILE (atomically: temporary file, fsync,
rename; mode 0600). The password is taken from SAFEKEEPER_PASSWORD, from
standard input (--password-stdin, or when standard input is not a terminal),
or prompted for. A password that already is a SCRAM-SHA-256 or md5 verifier
(e.g. pg_authid.rolpassword from the primary) is stored as it is.
A running safekeeper picks the change up at the next connection.

`

// passwdMain is "safekeeper passwd": add, replace or delete a user in the
// users file. The password comes from SAFEKEEPER_PASSWORD, from standard
// input (--password-stdin, or when it is not a terminal), or is prompted for.
func passwdMain(args []string) int {
	fs := flag.NewFlagSet("safekeeper passwd", flag.ContinueOnError)
	usersFile := fs.String("users-file", "", "users file to update (created with mode 0600 if missing)")
	user := fs.String("user", "", "user name")
	fromStdin := fs.Bool("password-stdin", false, "read the password from standard input (one line)")
	md5 := fs.Bool("md5", false, "store an md5 verifier (for clients that cannot do SCRAM) instead of SCRAM-SHA-256")
	iterations := fs.Int("iterations", auth.DefaultIterations, "SCRAM-SHA-256 iteration count")
	del := fs.Bool("delete", false, "remove the user instead")
	if err := parseCommand(fs, passwdUsage, args, os.Stdout); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		usageError(os.Stderr, "passwd", err)
		return 2
	}
	if *usersFile == "" || *user == "" {
		fmt.Fprintln(os.Stderr, "safekeeper passwd: --users-file and --user are required")
		return 2
	}
	if err := auth.ValidUserName(*user); err != nil {
		fmt.Fprintln(os.Stderr, "safekeeper passwd:", err)
		return 2
	}
	if *del {
		found, err := auth.DeleteUser(*usersFile, *user)
		if err != nil {
			fmt.Fprintln(os.Stderr, "safekeeper passwd:", err)
			return 1
		}
		if !found {
			fmt.Fprintf(os.Stderr, "safekeeper passwd: user %q not found in %s\n", *user, *usersFile)
			return 1
		}
		fmt.Fprintf(os.Stderr, "safekeeper passwd: user %q removed from %s\n", *user, *usersFile)
		return 0
	}
	pw, err := readPassword(*fromStdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "safekeeper passwd:", err)
		return 1
	}
	var v auth.Verifier
	if pre, err := auth.ParseVerifier(pw); err == nil {
		v = pre
		fmt.Fprintln(os.Stderr, "safekeeper passwd: the password is a verifier already; storing it as it is")
	} else if *md5 {
		v = auth.Verifier{MD5: auth.NewMD5Verifier(*user, pw)}
	} else {
		s, err := auth.NewSCRAMVerifier(pw, *iterations)
		if err != nil {
			fmt.Fprintln(os.Stderr, "safekeeper passwd:", err)
			return 1
		}
		v = auth.Verifier{SCRAM: s}
	}
	if err := auth.SetUser(*usersFile, *user, v); err != nil {
		fmt.Fprintln(os.Stderr, "safekeeper passwd:", err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "safekeeper passwd: password of user %q set in %s\n", *user, *usersFile)
	return 0
}

func readPassword(fromStdin bool) (string, error) {
	if !fromStdin {
		if pw, ok := os.LookupEnv("SAFEKEEPER_PASSWORD"); ok {
			if pw == "" {
				return "", errors.New("SAFEKEEPER_PASSWORD is empty")
			}
			return pw, nil
		}
		if isTerminal(os.Stdin) {
			return promptPassword()
		}
	}
	b, err := io.ReadAll(io.LimitReader(os.Stdin, 1<<20))
	if err != nil {
		return "", fmt.Errorf("read password: %w", err)
	}
	pw := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
	switch {
	case pw == "":
		return "", errors.New("empty password on standard input")
	case strings.ContainsAny(pw, "\r\n"):
		return "", errors.New("the password on standard input has more than one line")
	}
	return pw, nil
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// promptPassword asks twice on the terminal with echo off.
func promptPassword() (string, error) {
	fd := int(os.Stdin.Fd())
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return "", err
	}
	noEcho := *old
	noEcho.Lflag &^= unix.ECHO
	noEcho.Lflag |= unix.ICANON | unix.ISIG
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &noEcho); err != nil {
		return "", err
	}
	defer unix.IoctlSetTermios(fd, unix.TCSETS, old)
	r := bufio.NewReader(os.Stdin)
	read := func(prompt string) (string, error) {
		fmt.Fprint(os.Stderr, prompt)
		line, err := r.ReadString('\n')
		fmt.Fprintln(os.Stderr)
		if err != nil && !(errors.Is(err, io.EOF) && line != "") {
			return "", err
		}
		return strings.TrimRight(line, "\r\n"), nil
	}
	pw, err := read("Enter new password: ")
	if err != nil {
		return "", err
	}
	again, err := read("Enter it again: ")
	if err != nil {
		return "", err
	}
	if pw != again {
		return "", errors.New("passwords didn't match")
	}
	if pw == "" {
		return "", errors.New("empty password")
	}
	return pw, nil
}

// httpTokens is the HTTP API's token verifier, nil (no check) without
// --http-auth-public-key.
func httpTokens(c securityConfig) httpapi.Tokens {
	if c.httpTokens == nil {
		return nil
	}
	return c.httpTokens
}
