package auth

import (
	"errors"
	"fmt"
	"os"
	"sync"
)

// Config configures an Authenticator.
type Config struct {
	// UsersFile is the users file; "" means no user has a password.
	UsersFile string
	// RulesFile is the rules file; "" means DefaultRules (SCRAM-SHA-256
	// for everyone) with a users file, DefaultTokenRules (a JWT from
	// everyone) with Tokens alone. With both a users file and Tokens it is
	// required: it says which connections use which.
	RulesFile string
	// Tokens verifies the JWTs of jwt rules; nil means no rule may ask
	// for one.
	Tokens *TokenVerifier
	// MockSecret seeds the salts shown for users without an entry. Keep it
	// stable across restarts (see LoadOrCreateSecret) so that a restart does
	// not reveal which users exist.
	MockSecret []byte
}

// Authenticator decides, per connection, which rule applies and runs the
// password exchange. The users and rules files are re-read when they change
// (checked at each connection); a changed file that does not parse is
// ignored with an error in the log and the previous contents stay in force.
type Authenticator struct {
	secret       []byte
	users        *watchedFile[Users]
	rules        *watchedFile[Rules]
	tokens       *TokenVerifier
	defaultRules Rules // in force without a rules file
}

// New loads the files named in cfg; at least one of UsersFile, RulesFile
// and Tokens must be given.
func New(cfg Config) (*Authenticator, error) {
	if cfg.UsersFile == "" && cfg.RulesFile == "" && cfg.Tokens == nil {
		return nil, errors.New("auth: neither a users file, a rules file nor token keys given")
	}
	if cfg.UsersFile != "" && cfg.Tokens != nil && cfg.RulesFile == "" {
		return nil, errors.New("auth: with both a users file and token keys, a rules file must say which connections use scram-sha-256 or md5 and which jwt")
	}
	if len(cfg.MockSecret) < 16 {
		return nil, errors.New("auth: mock secret must be at least 16 bytes")
	}
	a := &Authenticator{secret: append([]byte(nil), cfg.MockSecret...), tokens: cfg.Tokens, defaultRules: DefaultRules}
	if cfg.UsersFile == "" && cfg.Tokens != nil {
		a.defaultRules = DefaultTokenRules
	}
	if cfg.UsersFile != "" {
		w, err := newWatchedFile(cfg.UsersFile, LoadUsers)
		if err != nil {
			return nil, err
		}
		a.users = w
	}
	if cfg.RulesFile != "" {
		// A changed rules file asking for jwt without keys is refused like
		// one that does not parse: the version before stays in force.
		load := func(path string) (Rules, error) {
			rs, err := LoadRules(path)
			if err == nil && a.tokens == nil && rs.usesTokens() {
				err = fmt.Errorf("%s asks for jwt but no token public key is configured", path)
			}
			return rs, err
		}
		w, err := newWatchedFile(cfg.RulesFile, load)
		if err != nil {
			return nil, err
		}
		if a.users == nil && w.value.usesPasswords() {
			return nil, fmt.Errorf("%s asks for scram-sha-256 or md5 but no users file is configured", cfg.RulesFile)
		}
		a.rules = w
	}
	return a, nil
}

// current returns the users and rules in force, reloading changed files.
// reloadErrs lists files that changed but could not be loaded.
func (a *Authenticator) current() (Users, Rules, []error) {
	var errs []error
	users := Users{}
	if a.users != nil {
		var err error
		if users, err = a.users.get(); err != nil {
			errs = append(errs, err)
		}
	}
	rules := a.defaultRules
	if a.rules != nil {
		var err error
		if rules, err = a.rules.get(); err != nil {
			errs = append(errs, err)
		}
	}
	return users, rules, errs
}

// watchedFile holds a parsed file and reloads it when the file changes.
type watchedFile[T any] struct {
	path string
	load func(string) (T, error)

	mu     sync.Mutex
	fi     os.FileInfo
	value  T
	badFi  os.FileInfo // the last version that failed to load
	badErr error
}

func newWatchedFile[T any](path string, load func(string) (T, error)) (*watchedFile[T], error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	v, err := load(path)
	if err != nil {
		return nil, err
	}
	return &watchedFile[T]{path: path, load: load, fi: fi, value: v}, nil
}

func sameVersion(a, b os.FileInfo) bool {
	return a != nil && b != nil && os.SameFile(a, b) && a.ModTime().Equal(b.ModTime()) && a.Size() == b.Size()
}

// get returns the current value; err reports a changed file that could not
// be loaded (the previous value is returned with it).
func (w *watchedFile[T]) get() (T, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	fi, err := os.Stat(w.path)
	if err != nil {
		return w.value, fmt.Errorf("%s: %w (keeping the version loaded before)", w.path, err)
	}
	if sameVersion(fi, w.fi) {
		return w.value, nil
	}
	if sameVersion(fi, w.badFi) {
		return w.value, w.badErr
	}
	v, err := w.load(w.path)
	if err != nil {
		w.badFi = fi
		w.badErr = fmt.Errorf("%w (keeping the version loaded before)", err)
		return w.value, w.badErr
	}
	w.fi, w.value, w.badFi, w.badErr = fi, v, nil, nil
	return v, nil
}
