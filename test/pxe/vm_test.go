package pxe

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

// vm is a QEMU process in a network namespace whose serial console (COM1
// on QEMU's stdout) the test reads. It is killed when the test ends.
type vm struct {
	cmd     *exec.Cmd
	out     consoleBuffer
	started time.Time // power-on
	exited  chan struct{}
	err     error // from Wait, valid once exited is closed
}

// startVM runs qemu-system-x86_64 in namespace ns with args plus a headless
// console: no display, no monitor, COM1 on stdout, no reboot.
func startVM(t *testing.T, ns string, args ...string) *vm {
	t.Helper()
	base := []string{"netns", "exec", ns, "qemu-system-x86_64",
		"-display", "none", "-monitor", "none", "-serial", "stdio", "-no-reboot"}
	v := &vm{exited: make(chan struct{})}
	v.out.changed = make(chan struct{})
	// ip netns exec execs QEMU: killing the process kills QEMU.
	v.cmd = exec.Command("ip", append(base, args...)...)
	v.cmd.Stdout = &v.out
	v.cmd.Stderr = &v.out
	if err := v.cmd.Start(); err != nil {
		t.Fatalf("start qemu: %v", err)
	}
	v.started = time.Now()
	go func() {
		v.err = v.cmd.Wait()
		close(v.exited)
	}()
	t.Cleanup(func() {
		v.cmd.Process.Kill()
		<-v.exited
		log := filepath.Join(t.TempDir(), "console.log")
		if dir := os.Getenv("DISKLESS_PXE_LOGDIR"); dir != "" {
			log = filepath.Join(dir, strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())+".console.log")
		}
		os.WriteFile(log, []byte(v.out.String()), 0o644)
		if t.Failed() {
			t.Logf("QEMU ran %v; console (full copy in %s), last part:\n%s",
				time.Since(v.started).Round(time.Second), log, tail(v.console(), 6000))
		}
	})
	return v
}

// waitFor waits until the console shows one of markers and returns its index
// and the time since power-on. It fails when QEMU exits first or timeout
// passes.
func (v *vm) waitFor(timeout time.Duration, markers ...string) (int, time.Duration, error) {
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
			return i, time.Since(v.started), nil
		}
		select {
		case <-changed:
		case <-v.exited:
			if i := find(); i >= 0 {
				return i, time.Since(v.started), nil
			}
			return -1, 0, fmt.Errorf("QEMU exited (%v) before the console showed any of %q", v.err, markers)
		case <-deadline.C:
			return -1, 0, fmt.Errorf("console showed none of %q within %v", markers, timeout)
		}
	}
}

var ansiEscape = regexp.MustCompile(`\x1b(\[[0-9;?]*[A-Za-z]|c)`)

// console is the output so far without ANSI escapes.
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

func (c *consoleBuffer) changes() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.changed
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}
