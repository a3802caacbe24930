package interop

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// vm is a QEMU process whose serial console (COM1 on QEMU's stdout) the test
// reads. It is killed when the test ends.
type vm struct {
	cmd    *exec.Cmd
	out    consoleBuffer
	exited chan struct{}
	err    error // from Wait, valid once exited is closed
}

// startVM runs qemu-system-x86_64 with args plus a headless console setup:
// no display, no monitor, COM1 on stdout, no reboot.
func startVM(t *testing.T, args ...string) *vm {
	t.Helper()
	base := []string{"-display", "none", "-monitor", "none", "-serial", "stdio", "-no-reboot"}
	v := &vm{exited: make(chan struct{})}
	v.out.changed = make(chan struct{})
	v.cmd = exec.Command("qemu-system-x86_64", append(base, args...)...)
	v.cmd.Stdout = &v.out
	v.cmd.Stderr = &v.out
	if err := v.cmd.Start(); err != nil {
		t.Fatalf("start qemu: %v", err)
	}
	start := time.Now()
	go func() {
		v.err = v.cmd.Wait()
		close(v.exited)
	}()
	t.Cleanup(func() {
		v.cmd.Process.Kill()
		<-v.exited
		// Keep the whole console for a look after a failure.
		log := filepath.Join(t.TempDir(), "console.log")
		if dir := os.Getenv("DISKLESS_INTEROP_LOGDIR"); dir != "" {
			log = filepath.Join(dir, strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())+".console.log")
		}
		os.WriteFile(log, []byte(v.out.String()), 0o644)
		if t.Failed() {
			t.Logf("QEMU ran %v; console (full copy in %s), last part:\n%s",
				time.Since(start).Round(time.Second), log, tail(v.console(), 6000))
		}
	})
	return v
}

// waitFor waits until the console shows one of markers and returns its index.
// It fails when QEMU exits first or timeout passes.
func (v *vm) waitFor(timeout time.Duration, markers ...string) (int, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	find := func() int {
		s := v.out.String()
		for i, m := range markers {
			if strings.Contains(s, m) {
				return i
			}
		}
		return -1
	}
	for {
		changed := v.out.changes()
		if i := find(); i >= 0 {
			return i, nil
		}
		select {
		case <-changed:
		case <-v.exited:
			if i := find(); i >= 0 {
				return i, nil
			}
			return -1, fmt.Errorf("QEMU exited (%v) before the console showed any of %q", v.err, markers)
		case <-deadline.C:
			return -1, fmt.Errorf("console showed none of %q within %v", markers, timeout)
		}
	}
}

// wait waits for QEMU to exit by itself, at most timeout.
func (v *vm) wait(timeout time.Duration) error {
	select {
	case <-v.exited:
		return v.err
	case <-time.After(timeout):
		return fmt.Errorf("QEMU still running after %v", timeout)
	}
}

var ansiEscape = regexp.MustCompile(`\x1b(\[[0-9;?]*[A-Za-z]|c)`)

// console is the output so far without the ANSI escapes of SeaBIOS' serial
// console.
func (v *vm) console() string {
	return ansiEscape.ReplaceAllString(v.out.String(), "")
}

// consoleBuffer collects output and wakes waiters on every write.
type consoleBuffer struct {
	mu      sync.Mutex
	b       strings.Builder
	changed chan struct{} // closed and replaced on every write
}

func (c *consoleBuffer) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.b.Write(p)
	close(c.changed)
	c.changed = make(chan struct{})
	return len(p), nil
}

func (c *consoleBuffer) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.b.String()
}

// changes returns a channel closed at the next write.
func (c *consoleBuffer) changes() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.changed
}
