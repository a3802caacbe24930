//go:build linux

// Package harness is the shared plumbing of the benchmark programs under
// bench/: network namespaces, daemons started inside them (internal/testutil/proc),
// a simulated PXE client's DHCP and TFTP (dhcp.go, tftp.go), a process's
// memory and CPU time from /proc, and small statistics. It never touches
// the host's own interfaces: everything it creates lives in namespaces it
// names itself and removes, and the client code runs in processes started
// inside them.
package harness

import (
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/diskless-boot/diskless/internal/testutil/proc"
)

// Sh runs a command and returns its combined output in the error.
func Sh(args ...string) error {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

// Cleanup is a stack of undo steps, run in reverse order.
type Cleanup struct {
	mu    sync.Mutex
	steps []func()
}

// Add pushes f.
func (c *Cleanup) Add(f func()) {
	c.mu.Lock()
	c.steps = append(c.steps, f)
	c.mu.Unlock()
}

// Run runs and forgets every step, last added first.
func (c *Cleanup) Run() {
	c.mu.Lock()
	steps := c.steps
	c.steps = nil
	c.mu.Unlock()
	for i := len(steps) - 1; i >= 0; i-- {
		steps[i]()
	}
}

// AddNS creates namespace ns (lo up, no IPv6 DAD) and registers its removal.
func AddNS(c *Cleanup, ns string) error {
	if err := Sh("ip", "netns", "add", ns); err != nil {
		return err
	}
	c.Add(func() { Sh("ip", "netns", "del", ns) })
	Sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0")
	return Sh("ip", "-n", ns, "link", "set", "lo", "up")
}

// Steps runs each command, stopping at the first error.
func Steps(steps ...[]string) error {
	for _, s := range steps {
		if err := Sh(s...); err != nil {
			return err
		}
	}
	return nil
}

// Proc is a process started in a namespace with Start.
type Proc = proc.Proc

// Start runs args in namespace ns with `ip netns exec` (which execs it, so
// signals reach the program itself) and registers its stop with c
// (SIGTERM, SIGKILL after 5 s).
func Start(c *Cleanup, name, ns string, args ...string) (*Proc, error) {
	return StartConfig(c, proc.Config{Name: name, Grace: 5 * time.Second}, ns, args...)
}

// StartConfig is Start with the rest of proc.Config (standard input, a
// bound on the output kept). Unless cfg says otherwise the process gets
// SIGKILL when the benchmark dies (Pdeathsig), so that a benchmark killed
// outright leaves no daemon behind.
func StartConfig(c *Cleanup, cfg proc.Config, ns string, args ...string) (*Proc, error) {
	if cfg.SysProcAttr == nil {
		cfg.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	}
	p, err := proc.Start(nil, cfg, append([]string{"ip", "netns", "exec", ns}, args...)...)
	if err != nil {
		return nil, err
	}
	c.Add(func() { p.Stop() })
	return p, nil
}

// NeedRoot returns an error naming what is missing: root, programs, files.
func NeedRoot(programs []string, files ...string) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("needs root (network namespaces, tap devices)")
	}
	for _, p := range programs {
		if _, err := exec.LookPath(p); err != nil {
			return fmt.Errorf("%s not in PATH (scripts/ci-deps.sh installs it)", p)
		}
	}
	for _, f := range files {
		if _, err := os.Stat(f); err != nil {
			return fmt.Errorf("%s missing (scripts/ci-deps.sh installs it)", f)
		}
	}
	return nil
}

// Percentile is the p-th percentile (0-100, nearest rank) of d; 0 when empty.
func Percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(float64(len(s))*p/100+0.999999) - 1
	return s[max(0, min(i, len(s)-1))]
}
