package auth

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func TestParseUsers(t *testing.T) {
	s, _ := NewSCRAMVerifier("pw", 4096)
	m := NewMD5Verifier("bob", "pw")
	in := "# comment\n\n  # indented comment\nalice:" + s.String() + "\r\nbob: " + string(m) + "\n"
	u, err := ParseUsers(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(u) != 2 || u["alice"].SCRAM == nil || u["alice"].SCRAM.String() != s.String() || u["bob"].MD5 != m {
		t.Fatalf("parsed %+v", u)
	}

	bad := map[string]string{
		"plaintext":   "alice:hunter2\n",
		"no colon":    "alice\n",
		"empty name":  ":" + s.String() + "\n",
		"duplicate":   "alice:" + s.String() + "\nalice:" + string(m) + "\n",
		"spaced name": " alice:" + s.String() + "\n",
		"bad scram":   "alice:SCRAM-SHA-256$4096:xx$yy:zz\n",
	}
	for name, in := range bad {
		if _, err := ParseUsers(strings.NewReader(in)); err == nil || !strings.Contains(err.Error(), "line ") {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestSetUserAtomicUpdate(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "users")
	v1, _ := NewSCRAMVerifier("one", 4096)
	v2, _ := NewSCRAMVerifier("two", 4096)
	if err := SetUser(path, "alice", Verifier{SCRAM: v1}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", fi.Mode().Perm())
	}

	// Comments and other users are kept in place; the entry is replaced.
	head := "# managed by safekeeper passwd\n"
	old, _ := os.ReadFile(path)
	os.WriteFile(path, append([]byte(head), old...), 0o644)
	bob := NewMD5Verifier("bob", "x")
	if err := SetUser(path, "bob", Verifier{MD5: bob}); err != nil {
		t.Fatal(err)
	}
	if err := SetUser(path, "alice", Verifier{SCRAM: v2}); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(path)
	want := head + "alice:" + v2.String() + "\nbob:" + string(bob) + "\n"
	if string(got) != want {
		t.Fatalf("file:\n%s\nwant:\n%s", got, want)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode after update %v, want 0600", fi.Mode().Perm())
	}

	found, err := DeleteUser(path, "alice")
	if err != nil || !found {
		t.Fatalf("delete: %v %v", found, err)
	}
	if found, _ := DeleteUser(path, "alice"); found {
		t.Fatal("deleted twice")
	}
	got, _ = os.ReadFile(path)
	if string(got) != head+"bob:"+string(bob)+"\n" {
		t.Fatalf("after delete:\n%s", got)
	}

	// A line naming the user with a broken verifier is repaired; another
	// broken line makes the update fail without writing.
	os.WriteFile(path, []byte("alice:plaintext\n"), 0o600)
	if err := SetUser(path, "alice", Verifier{SCRAM: v1}); err != nil {
		t.Fatalf("repair: %v", err)
	}
	os.WriteFile(path, []byte("carol:plaintext\n"), 0o600)
	if err := SetUser(path, "alice", Verifier{SCRAM: v1}); err == nil {
		t.Fatal("update of a broken file succeeded")
	}
	if got, _ := os.ReadFile(path); string(got) != "carol:plaintext\n" {
		t.Fatalf("broken file rewritten: %q", got)
	}

	// No temporary files are left behind.
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if e.Name() != "users" {
			t.Errorf("left behind: %s", e.Name())
		}
	}

	if err := SetUser(path, "a:b", Verifier{SCRAM: v1}); err == nil {
		t.Error("user name with ':' accepted")
	}
}

// Concurrent updates (several passwd runs) lose nothing.
func TestSetUserConcurrent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users")
	v, _ := NewSCRAMVerifier("pw", 4096)
	var wg sync.WaitGroup
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := SetUser(path, fmt.Sprintf("user%d", i), Verifier{SCRAM: v}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	u, err := LoadUsers(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(u) != 16 {
		t.Fatalf("%d users, want 16", len(u))
	}
}

func TestLoadOrCreateSecret(t *testing.T) {
	path := filepath.Join(t.TempDir(), "secret")
	a, err := LoadOrCreateSecret(path)
	if err != nil || len(a) != 32 {
		t.Fatalf("%x %v", a, err)
	}
	b, err := LoadOrCreateSecret(path)
	if err != nil || string(a) != string(b) {
		t.Fatal("secret not stable")
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", fi.Mode().Perm())
	}
	os.WriteFile(path, []byte("zz\n"), 0o600)
	if _, err := LoadOrCreateSecret(path); err == nil {
		t.Fatal("bad secret accepted")
	}
}
