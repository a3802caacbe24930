// Package qemu runs a headless QEMU PC for a test and reads its serial
// console. It is for tests and benchmarks only (test/interop, test/pxe,
// bench); production code
// must not import it.
package qemu

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/diskless-boot/diskless/internal/testutil/output"
	"github.com/diskless-boot/diskless/internal/testutil/proc"
)

// Config says how to start QEMU.
type Config struct {
	// Prefix is prepended to the qemu-system-x86_64 command line, e.g.
	// "ip netns exec NS". It must exec QEMU, so that killing the process
	// kills QEMU. Default: none.
	Prefix []string
	// LogDirEnv names an environment variable: when it is set, the whole
	// console is kept in that directory as <test name>.console.log instead
	// of in the test's temporary directory. Default: none.
	LogDirEnv string
	// Reboot lets the guest reboot (QEMU resets the machine); by default
	// QEMU exits instead (-no-reboot).
	Reboot bool
	// Keys, when set, is what is typed on the serial console (QEMU's
	// stdin), e.g. Ctrl-B and commands for iPXE's shell. Default: none.
	Keys io.Reader
}

// VM is a QEMU process whose serial console (COM1 on QEMU's stdout) the
// test reads. It is killed when the test ends. Its methods are safe for
// concurrent use.
type VM struct {
	p *proc.Proc
}

// Start runs qemu-system-x86_64 with args plus a headless console setup: no
// display, no monitor, COM1 on stdout, no reboot. On cleanup it kills QEMU,
// keeps the console in a file and, when t failed, logs its last part.
func Start(t *testing.T, c Config, args ...string) *VM {
	t.Helper()
	argv := append(append([]string(nil), c.Prefix...), "qemu-system-x86_64",
		"-display", "none", "-monitor", "none", "-serial", "stdio")
	if !c.Reboot {
		argv = append(argv, "-no-reboot")
	}
	argv = append(argv, args...)
	// proc's cleanup only makes sure QEMU is gone; the console is kept
	// and reported by the cleanup below, which runs first.
	p, err := proc.Start(t, proc.Config{Name: "QEMU", StopSignal: syscall.SIGKILL, LogTail: -1, Stdin: c.Keys}, argv...)
	if err != nil {
		t.Fatalf("start qemu: %v", err)
	}
	v := &VM{p: p}
	t.Cleanup(func() {
		p.Kill()
		// Keep the whole console for a look after a failure.
		log := filepath.Join(t.TempDir(), "console.log")
		if dir := os.Getenv(c.LogDirEnv); dir != "" {
			log = filepath.Join(dir, strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())+".console.log")
		}
		os.WriteFile(log, []byte(p.Output()), 0o644)
		if t.Failed() {
			t.Logf("QEMU ran %v; console (full copy in %s), last part:\n%s",
				time.Since(p.Started()).Round(time.Second), log, output.Tail(v.Console(), 6000))
		}
	})
	return v
}

// WaitFor waits until the console shows one of markers and returns its
// index and the time since power-on. It fails when QEMU exits first or
// timeout passes.
func (v *VM) WaitFor(timeout time.Duration, markers ...string) (int, time.Duration, error) {
	return v.p.WaitFor(timeout, markers...)
}

// WaitForFrom is WaitFor on the console from byte offset from on (a boot
// after a reboot prints the same again); it also returns the offset just
// after the marker, where the next wait can start.
func (v *VM) WaitForFrom(from int, timeout time.Duration, markers ...string) (int, time.Duration, int, error) {
	return v.p.WaitForFrom(from, timeout, markers...)
}

// RawConsole is the console output as QEMU wrote it, escapes included:
// the text WaitForFrom's offsets count in.
func (v *VM) RawConsole() string { return v.p.Output() }

// Wait waits for QEMU to exit by itself, at most timeout.
func (v *VM) Wait(timeout time.Duration) error {
	select {
	case <-v.p.Exited():
		return v.p.Wait()
	case <-time.After(timeout):
		return fmt.Errorf("QEMU still running after %v", timeout)
	}
}

// PowerCut kills QEMU: the machine loses power with no shutdown, what it
// has not written to its disks is lost.
func (v *VM) PowerCut() { v.p.Kill() }

var ansiEscape = regexp.MustCompile(`\x1b(\[[0-9;?]*[A-Za-z]|c)`)

// Console is the output so far without the ANSI escapes of SeaBIOS' serial
// console.
func (v *VM) Console() string {
	return ansiEscape.ReplaceAllString(v.p.Output(), "")
}
