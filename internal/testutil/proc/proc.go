// Package proc runs a child process for a test or a benchmark: its combined
// output is collected, a test can wait for a marker in it, and it is
// stopped (a signal, then SIGKILL after a grace time) or killed on demand
// and, for a test, at cleanup. It is for tests and benchmarks only;
// production code must not import it.
package proc

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/diskless-boot/diskless/internal/testutil/output"
	"golang.org/x/sys/unix"
)

// Config says how to run and stop a process. The zero value is usable.
type Config struct {
	// Name names the process in errors and logs (default: the base name
	// of argv[0]).
	Name string
	// Env is added to the environment of the test (default: nothing).
	Env []string
	// Dir is the working directory (default: the test's).
	Dir string
	// MaxOutput bounds the output kept in bytes: past it the oldest part
	// is dropped (default: everything is kept).
	MaxOutput int
	// StopSignal is what Stop sends first (default SIGTERM). tgtd, for
	// one, ignores SIGTERM.
	StopSignal syscall.Signal
	// Grace is how long Stop waits after StopSignal before SIGKILL
	// (default 10 s).
	Grace time.Duration
	// LogTail is how many bytes of the output the cleanup of a failed
	// test logs (default 8000; negative: none).
	LogTail int
	// Stdin is the process's standard input (default: none, /dev/null).
	Stdin io.Reader
	// ListenFDs are listening sockets handed over the way systemd's
	// socket activation does (sd_listen_fds(3)): from descriptor 3 on,
	// with LISTEN_FDS and LISTEN_PID set. argv must exec its way to the
	// program that takes them (e.g. ip netns exec NS PROGRAM), so that it
	// keeps the pid (default: none).
	ListenFDs []*os.File
	// SysProcAttr is passed to exec.Cmd, e.g. Pdeathsig so that the
	// process never outlives a benchmark killed with SIGKILL (default
	// nil).
	SysProcAttr *syscall.SysProcAttr
}

// Proc is a running (or exited) child process. Its methods are safe for
// concurrent use.
type Proc struct {
	cfg     Config
	cmd     *exec.Cmd
	out     output.Output
	started time.Time
	exited  chan struct{}
	err     error // from cmd.Wait, valid once exited is closed
}

// Start runs argv. When tb is not nil, tb's cleanup stops the process
// (Stop; an error if it had to be killed) and, when the test failed, logs
// the end of its output; without tb the caller stops it.
func Start(tb testing.TB, cfg Config, argv ...string) (*Proc, error) {
	if len(argv) == 0 {
		return nil, errors.New("proc: no command")
	}
	if cfg.Name == "" {
		cfg.Name = filepath.Base(argv[0])
	}
	if cfg.StopSignal == 0 {
		cfg.StopSignal = syscall.SIGTERM
	}
	if cfg.Grace <= 0 {
		cfg.Grace = 10 * time.Second
	}
	if cfg.LogTail == 0 {
		cfg.LogTail = 8000
	}
	p := &Proc{cfg: cfg, exited: make(chan struct{})}
	p.out.Max = cfg.MaxOutput
	if len(cfg.ListenFDs) > 0 {
		// LISTEN_PID is the pid of the shell, which every exec keeps.
		argv = append([]string{"sh", "-c", `LISTEN_PID=$$ LISTEN_FDS=` + strconv.Itoa(len(cfg.ListenFDs)) + ` exec "$0" "$@"`}, argv...)
	}
	p.cmd = exec.Command(argv[0], argv[1:]...)
	p.cmd.ExtraFiles = cfg.ListenFDs
	p.cmd.Dir = cfg.Dir
	if len(cfg.Env) > 0 {
		p.cmd.Env = append(os.Environ(), cfg.Env...)
	}
	p.cmd.Stdin = cfg.Stdin
	p.cmd.SysProcAttr = cfg.SysProcAttr
	p.cmd.Stdout = &p.out
	p.cmd.Stderr = &p.out
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", cfg.Name, err)
	}
	p.started = time.Now()
	go func() {
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	if tb != nil {
		tb.Cleanup(func() {
			if err := p.Stop(); err != nil {
				tb.Error(err)
			}
			if tb.Failed() && cfg.LogTail > 0 {
				tb.Logf("%s output (last part):\n%s", cfg.Name, output.Tail(p.Output(), cfg.LogTail))
			}
		})
	}
	return p, nil
}

// Name is Config.Name.
func (p *Proc) Name() string { return p.cfg.Name }

// Pid is the process ID.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Started is when the process was started.
func (p *Proc) Started() time.Time { return p.started }

// Output returns the output kept so far, stdout and stderr interleaved.
func (p *Proc) Output() string { return p.out.String() }

// Exited is closed when the process has exited and its output is complete.
func (p *Proc) Exited() <-chan struct{} { return p.exited }

// Wait waits for the process to exit and returns what exec.Cmd.Wait
// returned.
func (p *Proc) Wait() error {
	<-p.exited
	return p.err
}

// Signal sends sig to the process.
func (p *Proc) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// WaitFor waits until the output shows one of markers and returns the
// index of the first one found and the time since the start. It fails when
// the process exits first or timeout passes.
func (p *Proc) WaitFor(timeout time.Duration, markers ...string) (int, time.Duration, error) {
	i, took, _, err := p.WaitForFrom(0, timeout, markers...)
	return i, took, err
}

// WaitForFrom is WaitFor on the output from byte offset from on (what a
// process prints again, e.g. after a reboot); it also returns the offset
// just after the marker found, where the next wait can start.
func (p *Proc) WaitForFrom(from int, timeout time.Duration, markers ...string) (int, time.Duration, int, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	find := func() (int, int) {
		s := p.out.String()
		if from > len(s) {
			from = len(s)
		}
		// The marker that shows first wins.
		best, at := -1, 0
		for i, m := range markers {
			if j := strings.Index(s[from:], m); j >= 0 && (best < 0 || j < at) {
				best, at = i, j
			}
		}
		if best < 0 {
			return -1, 0
		}
		return best, from + at + len(markers[best])
	}
	for {
		changed := p.out.Changes()
		if i, end := find(); i >= 0 {
			return i, time.Since(p.started), end, nil
		}
		select {
		case <-changed:
		case <-p.exited:
			if i, end := find(); i >= 0 {
				return i, time.Since(p.started), end, nil
			}
			return -1, 0, from, fmt.Errorf("%s exited (%v) before printing any of %q", p.cfg.Name, p.err, markers)
		case <-deadline.C:
			return -1, 0, from, fmt.Errorf("%s printed none of %q within %v", p.cfg.Name, markers, timeout)
		}
	}
}

// Stop sends Config.StopSignal and waits up to Config.Grace for the
// process to exit, then kills it. The error says it had to be killed; a
// process that has already exited is not an error (Wait tells how it
// ended).
func (p *Proc) Stop() error {
	select {
	case <-p.exited:
		return nil
	default:
	}
	p.cmd.Process.Signal(p.cfg.StopSignal)
	if p.cfg.StopSignal == syscall.SIGKILL {
		<-p.exited
		return nil
	}
	t := time.NewTimer(p.cfg.Grace)
	defer t.Stop()
	select {
	case <-p.exited:
		return nil
	case <-t.C:
		p.Kill()
		return fmt.Errorf("%s did not exit within %v of %s; killed", p.cfg.Name, p.cfg.Grace, unix.SignalName(p.cfg.StopSignal))
	}
}

// Kill sends SIGKILL and waits for the process to exit.
func (p *Proc) Kill() {
	p.cmd.Process.Kill()
	<-p.exited
}
