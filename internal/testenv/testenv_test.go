package testenv

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestRepoRootAndMakefileVar(t *testing.T) {
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "internal", "testenv")); err != nil {
		t.Fatalf("RepoRoot %s: %v", root, err)
	}
	if got := MakefileVar(t, "GO"); got != "go" {
		t.Errorf("MakefileVar(GO) = %q", got)
	}
}

func TestModulePath(t *testing.T) {
	for gomod, want := range map[string]string{
		"module example.com/a\n\ngo 1.22\n": "example.com/a",
		"// x\nmodule \"example.com/b\"\n":  "example.com/b",
		"go 1.22\n":                         "",
	} {
		if got := ModulePath([]byte(gomod)); got != want {
			t.Errorf("ModulePath(%q) = %q, want %q", gomod, got, want)
		}
	}
}

func TestLastLines(t *testing.T) {
	if got := lastLines([]byte("a\nb\nc\n"), 2); got != "...\nb\nc" {
		t.Errorf("lastLines = %q", got)
	}
	if got := lastLines([]byte("a\nb"), 2); got != "a\nb" {
		t.Errorf("lastLines = %q", got)
	}
}

func TestExplicitPath(t *testing.T) {
	tl := &Tool{Name: "x", Env: "SAFEKEEPER_TESTENV_X"}
	if _, err := tl.explicitPath(filepath.Join(t.TempDir(), "absent")); err == nil || !strings.Contains(err.Error(), "SAFEKEEPER_TESTENV_X=") {
		t.Errorf("absent file: %v", err)
	}
	sh, err := exec.LookPath("sh")
	if err != nil {
		Unavailable(t, "testenv", err.Error(), "install a POSIX sh")
	}
	if p, err := tl.explicitPath(sh); err != nil || !filepath.IsAbs(p) {
		t.Errorf("explicitPath(%s) = %q, %v", sh, p, err)
	}
}

func shProcess(t *testing.T) *Process {
	sh, err := exec.LookPath("sh")
	if err != nil {
		Unavailable(t, "testenv", err.Error(), "install a POSIX sh")
	}
	return NewProcess(t, "testenv", "sh", sh)
}

func ready() error { return nil }

func TestProcessPauseResumeStop(t *testing.T) {
	p := shProcess(t)
	if err := p.Start([]string{"-c", "echo started; exec sleep 60"}, 5*time.Second, ready); err != nil {
		t.Fatal(err)
	}
	if err := p.Start(nil, time.Second, ready); err == nil {
		t.Fatal("second Start succeeded")
	}
	if err := p.Pause(); err != nil {
		t.Fatal(err)
	}
	pid, err := p.Signal(0)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := runningThreads(pid); err != nil || n != 0 {
		t.Fatalf("after Pause: %d threads running, %v", n, err)
	}
	if err := p.Resume(); err != nil {
		t.Fatal(err)
	}
	if err := WaitStopped(pid, 50*time.Millisecond); err == nil {
		t.Fatal("WaitStopped succeeded on a resumed process")
	}
	p.Stop() // works on a paused process too
	p.Stop()
	if _, err := p.Signal(syscall.SIGCONT); err == nil || !strings.Contains(err.Error(), "sh is not running") {
		t.Fatalf("Signal after Stop: %v", err)
	}
	log, err := os.ReadFile(p.LogPath)
	if err != nil || !strings.Contains(string(log), "=== testenv ") || !strings.Contains(string(log), "started") {
		t.Fatalf("log %q, %v", log, err)
	}
}

func TestProcessStartFails(t *testing.T) {
	p := shProcess(t)
	notReady := func() error { return errors.New("not yet") }
	err := p.Start([]string{"-c", "echo boom; exit 3"}, 5*time.Second, notReady)
	if err == nil || !strings.Contains(err.Error(), "sh exited before it was ready") || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("exiting program: %v", err)
	}
	err = p.Start([]string{"-c", "echo 'bind: address already in use'; exit 1"}, 5*time.Second, notReady)
	if !errors.Is(err, ErrAddrInUse) {
		t.Fatalf("address in use: %v", err)
	}
	err = p.Start([]string{"-c", "exec sleep 60"}, 100*time.Millisecond, notReady)
	if err == nil || !strings.Contains(err.Error(), "sh not ready within 100ms: not yet") {
		t.Fatalf("never ready: %v", err)
	}
	// The failed starts left nothing running.
	if _, err := p.Signal(0); err == nil {
		t.Fatal("a failed Start left the program running")
	}
}

func TestFreePort(t *testing.T) {
	port, err := FreePort()
	if err != nil || port <= 0 {
		t.Fatalf("FreePort = %d, %v", port, err)
	}
}
