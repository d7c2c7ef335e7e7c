package testenv

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// ErrAddrInUse is what Process.Start returns (maybe wrapped) when the
// program's output says "address already in use": someone took a port
// between FreePort and the program binding it. Pick other ports and start
// again.
var ErrAddrInUse = errors.New("address already in use")

// FreePort returns a TCP port of 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// pauseTimeout bounds the wait for the threads of a paused process to stop.
const pauseTimeout = 10 * time.Second

// Process is a server program a test harness runs. Its output goes to a
// log file, appended over restarts. Stop kills it, as a crash would; Pause
// and Resume suspend and continue it (SIGSTOP/SIGCONT). Get one from
// NewProcess; its methods may be called from any goroutine.
type Process struct {
	Harness string // the test harness, prefixing messages: "etcdtest"
	Name    string // the program in messages: "etcd"
	Bin     string // the executable
	Dir     string // the program's working directory and $HOME
	LogPath string // the file receiving the program's output
	LogTail int    // at most this many bytes of the log's end go into messages

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{} // closed when cmd has been waited for
	waitErr error         // cmd.Wait's result, valid after exited is closed
}

// NewProcess returns a Process, not yet started, for the program bin,
// named name in messages of harness, with a new temporary directory of t
// as its Dir and <Dir>/<name>.log as its log, of which messages show the
// last 64 KiB. It registers a cleanup with t that stops the program and,
// if t failed, logs the tail of its log.
func NewProcess(t testing.TB, harness, name, bin string) *Process {
	dir := t.TempDir()
	p := &Process{
		Harness: harness, Name: name, Bin: bin,
		Dir: dir, LogPath: filepath.Join(dir, name+".log"), LogTail: 64 << 10,
	}
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("%s: %s log %s (tail):\n%s", p.Harness, p.Name, p.LogPath, p.readLog(0))
		}
	})
	return p
}

// Start runs Bin with args, in a clean environment (only $PATH, and $HOME
// set to Dir), and waits until ready, called every 25ms, returns nil. The
// program dies with the test binary even if that is killed before its
// cleanups run. Start fails if the program runs already, exits before it
// is ready or is not ready within timeout; then the program is killed and
// the error holds its output, or is ErrAddrInUse when the program could
// not bind its address.
func (p *Process) Start(args []string, timeout time.Duration, ready func() error) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		return fmt.Errorf("%s is already running", p.Name)
	}
	logf, err := os.OpenFile(p.LogPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close() // the child has its own descriptor
	logStart, _ := logf.Seek(0, io.SeekEnd)
	fmt.Fprintf(logf, "=== %s %s: %s %s\n", p.Harness, time.Now().Format(time.RFC3339Nano), p.Bin, strings.Join(args, " "))
	cmd := exec.Command(p.Bin, args...)
	cmd.Dir = p.Dir
	// A clean environment: programs take settings from variables (etcd
	// reads ETCD_* as flags), which the test's environment must not
	// change.
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + p.Dir}
	cmd.Stdout = logf
	cmd.Stderr = logf
	// Die with the test binary even if it is killed before cleanups run.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", p.Bin, err)
	}
	exited := make(chan struct{})
	go func() {
		err := cmd.Wait()
		p.waitErr = err
		close(exited)
	}()
	p.cmd, p.exited = cmd, exited

	if err := p.waitReady(exited, timeout, ready); err != nil {
		_ = cmd.Process.Kill()
		<-exited
		p.cmd = nil
		out := p.readLog(logStart)
		if strings.Contains(out, "address already in use") {
			return ErrAddrInUse
		}
		return fmt.Errorf("%v; its output:\n%s", err, out)
	}
	return nil
}

// waitReady calls ready until it returns nil, the process exits, or timeout
// passes.
func (p *Process) waitReady(exited <-chan struct{}, timeout time.Duration, ready func() error) error {
	deadline := time.Now().Add(timeout)
	var lastErr error
	for {
		select {
		case <-exited:
			return fmt.Errorf("%s exited before it was ready: %v", p.Name, p.waitErr)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready within %s: %v", p.Name, timeout, lastErr)
		}
		if lastErr = ready(); lastErr == nil {
			return nil
		}
		select {
		case <-exited:
		case <-time.After(25 * time.Millisecond):
		}
	}
}

// Stop kills the program (SIGKILL) and waits for it to exit; it works on a
// paused program too. Stopping a stopped program does nothing.
func (p *Process) Stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return
	}
	_ = p.cmd.Process.Kill()
	<-p.exited
	p.cmd = nil
}

// Pause suspends the program (SIGSTOP): the kernel still accepts
// connections on its ports, but nothing answers. It returns once every
// thread of the program is stopped.
func (p *Process) Pause() error {
	pid, err := p.Signal(syscall.SIGSTOP)
	if err != nil {
		return err
	}
	// kill(2) returns before the threads have stopped; a request sent
	// right away could still be served.
	return WaitStopped(pid, pauseTimeout)
}

// Resume continues a program suspended by Pause (SIGCONT).
func (p *Process) Resume() error {
	_, err := p.Signal(syscall.SIGCONT)
	return err
}

// Signal sends sig to the running program and returns its pid.
func (p *Process) Signal(sig syscall.Signal) (pid int, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return 0, fmt.Errorf("%v: %s is not running", sig, p.Name)
	}
	if err := p.cmd.Process.Signal(sig); err != nil {
		return 0, fmt.Errorf("%v: %v", sig, err)
	}
	return p.cmd.Process.Pid, nil
}

// readLog returns the log from offset from, at most LogTail bytes of its
// end.
func (p *Process) readLog(from int64) string {
	data, err := os.ReadFile(p.LogPath)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", p.LogPath, err)
	}
	if from > 0 && from <= int64(len(data)) {
		data = data[from:]
	}
	if len(data) > p.LogTail {
		data = append([]byte("...\n"), data[len(data)-p.LogTail:]...)
	}
	return string(data)
}

// WaitStopped polls /proc until every thread of pid is in the stopped
// state ('T'), or timeout passes.
func WaitStopped(pid int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		running, err := runningThreads(pid)
		if err == nil && running == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pid %d not stopped after %s (%d threads running, %v)", pid, timeout, running, err)
		}
		time.Sleep(time.Millisecond)
	}
}

// runningThreads counts the threads of pid not in the stopped state.
func runningThreads(pid int) (int, error) {
	taskDir := fmt.Sprintf("/proc/%d/task", pid)
	tasks, err := os.ReadDir(taskDir)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, task := range tasks {
		stat, err := os.ReadFile(filepath.Join(taskDir, task.Name(), "stat"))
		if err != nil {
			continue // the thread exited
		}
		// The state follows the command name, which is in parentheses
		// and may itself contain spaces or parentheses.
		i := strings.LastIndexByte(string(stat), ')')
		if i < 0 || i+2 >= len(stat) {
			return 0, fmt.Errorf("cannot parse %s/%s/stat", taskDir, task.Name())
		}
		if st := stat[i+2]; st != 'T' && st != 't' {
			n++
		}
	}
	return n, nil
}
