package auth

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// Users maps user names to their stored verifiers.
type Users map[string]Verifier

// maxUsersFileLine bounds one line of the users file.
const maxUsersFileLine = 64 << 10

// ParseUsers reads a users file: one "username:verifier" per line, where
// verifier is a SCRAM-SHA-256 or md5 verifier in PostgreSQL's format. Blank
// lines and lines starting with '#' are ignored. A user listed twice is an
// error.
func ParseUsers(r io.Reader) (Users, error) {
	users := Users{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), maxUsersFileLine)
	for n := 1; sc.Scan(); n++ {
		user, v, skip, err := parseUsersLine(sc.Text())
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		if skip {
			continue
		}
		if _, dup := users[user]; dup {
			return nil, fmt.Errorf("line %d: user %q is listed twice", n, user)
		}
		users[user] = v
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return users, nil
}

func parseUsersLine(line string) (user string, v Verifier, skip bool, err error) {
	line = strings.TrimRight(line, "\r")
	t := strings.TrimSpace(line)
	if t == "" || t[0] == '#' {
		return "", Verifier{}, true, nil
	}
	user, rest, ok := strings.Cut(line, ":")
	if !ok {
		return "", Verifier{}, false, errors.New(`expected "username:verifier"`)
	}
	if err := ValidUserName(user); err != nil {
		return "", Verifier{}, false, err
	}
	v, err = ParseVerifier(strings.TrimSpace(rest))
	if err != nil {
		return "", Verifier{}, false, fmt.Errorf("user %q: %w", user, err)
	}
	return user, v, false, nil
}

// ValidUserName checks that name can be stored in a users file line.
func ValidUserName(name string) error {
	switch {
	case name == "":
		return errors.New("empty user name")
	case strings.ContainsAny(name, ":\n\r\x00"):
		return fmt.Errorf("user name %q contains ':', a line break or NUL", name)
	case strings.TrimSpace(name) != name || name[0] == '#':
		return fmt.Errorf("user name %q starts with '#' or has surrounding white space", name)
	}
	return nil
}

// LoadUsers reads and parses the users file at path.
func LoadUsers(path string) (Users, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	u, err := ParseUsers(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return u, nil
}

// SetUser adds user with verifier v to the users file at path, or replaces
// the user's entry, keeping every other line (comments included) as it is.
// The file is created if missing.
func SetUser(path, user string, v Verifier) error {
	if err := ValidUserName(user); err != nil {
		return err
	}
	if v.SCRAM == nil && v.MD5 == "" {
		return errors.New("empty verifier")
	}
	return updateUsersFile(path, user, user+":"+v.String())
}

// DeleteUser removes user's entry from the users file at path. It reports
// whether there was one.
func DeleteUser(path, user string) (bool, error) {
	found := false
	err := updateUsersFileFunc(path, func(lines []string) ([]string, error) {
		out := lines[:0:0]
		for _, l := range lines {
			if u, _, skip, err := parseUsersLine(l); err == nil && !skip && u == user {
				found = true
				continue
			}
			out = append(out, l)
		}
		return out, nil
	})
	return found, err
}

func updateUsersFile(path, user, newLine string) error {
	return updateUsersFileFunc(path, func(lines []string) ([]string, error) {
		out := lines[:0:0]
		replaced := false
		for _, l := range lines {
			// A line naming the user is replaced even when its verifier is
			// invalid: that is how an operator repairs it.
			if u, _, ok := strings.Cut(l, ":"); ok && u == user && !strings.HasPrefix(strings.TrimSpace(l), "#") {
				if !replaced {
					out = append(out, newLine)
					replaced = true
				}
				continue
			}
			out = append(out, l)
		}
		if !replaced {
			out = append(out, newLine)
		}
		return out, nil
	})
}

// updateUsersFileFunc rewrites the users file under an exclusive lock on
// its directory (the file itself is replaced, so it cannot carry the lock):
// read, edit, check that the result parses, write a temporary file (mode
// 0600) in the same directory, fsync it, rename it over path and fsync the
// directory.
func updateUsersFileFunc(path string, edit func([]string) ([]string, error)) error {
	dir := filepath.Dir(path)
	lock, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("lock %s: %w", dir, err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)

	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	var lines []string
	if len(old) > 0 {
		lines = strings.Split(strings.TrimSuffix(string(old), "\n"), "\n")
	}
	lines, err = edit(lines)
	if err != nil {
		return err
	}
	content := ""
	if len(lines) > 0 {
		content = strings.Join(lines, "\n") + "\n"
	}
	if _, err := ParseUsers(strings.NewReader(content)); err != nil {
		return fmt.Errorf("%s: %w (not written)", path, err)
	}
	return writeFileAtomic(path, []byte(content), 0o600)
}

// writeFileAtomic replaces path with data: temporary file in the same
// directory, fsync, rename, fsync of the directory.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := f.Chmod(mode); err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	ok = true
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
