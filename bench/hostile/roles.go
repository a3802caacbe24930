//go:build linux

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/diskless-boot/diskless/bench/harness"
	"github.com/diskless-boot/diskless/internal/testutil/output"
	"github.com/diskless-boot/diskless/internal/testutil/proc"
)

// roleProc is this program re-executed in a namespace as one role. It
// reads commands, one a line, on its standard input (an OS pipe, so that
// its exit never waits for us) and writes its result as JSON to a file.
type roleProc struct {
	p      *harness.Proc
	in     *os.File
	result string
}

// startRole starts `self -role ROLE args...` in namespace ns; c stops it.
func startRole(c *harness.Cleanup, self, name, ns, result string, args ...string) (*roleProc, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	argv := append([]string{self, "-result", result}, args...)
	p, err := harness.StartConfig(c, proc.Config{Name: name, Grace: 10 * time.Second, Stdin: r, MaxOutput: 4 << 20,
		SysProcAttr: &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}}, ns, argv...)
	r.Close()
	if err != nil {
		w.Close()
		return nil, err
	}
	c.Add(func() { w.Close() }) // runs before the stop: the role sees EOF first
	return &roleProc{p: p, in: w, result: result}, nil
}

// send writes one command line; a role that has exited makes it fail.
func (r *roleProc) send(format string, args ...any) error {
	_, err := fmt.Fprintf(r.in, format+"\n", args...)
	return err
}

// waitReady waits for the role's "ready" line and returns the rest of it.
func (r *roleProc) waitReady(ctx context.Context, timeout time.Duration) (string, error) {
	if err := waitCtx(ctx, r.p, timeout, "ready"); err != nil {
		return "", fmt.Errorf("%v\n%s", err, output.Tail(r.p.Output(), 2000))
	}
	out := r.p.Output()
	i := strings.Index(out, "ready")
	line, _, _ := strings.Cut(out[i+len("ready"):], "\n")
	return strings.TrimSpace(line), nil
}

// finish tells the role to stop, waits for it (at most timeout) and reads
// its result into v.
func (r *roleProc) finish(timeout time.Duration, v any) error {
	r.send("stop")
	r.in.Close()
	select {
	case <-r.p.Exited():
	case <-time.After(timeout):
		r.p.Kill()
		return fmt.Errorf("%s did not finish within %v of stop; killed\n%s", r.p.Name(), timeout, output.Tail(r.p.Output(), 2000))
	}
	if err := r.p.Wait(); err != nil {
		return fmt.Errorf("%s: %v\n%s", r.p.Name(), err, output.Tail(r.p.Output(), 2000))
	}
	b, err := os.ReadFile(r.result)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// waitCtx is p.WaitFor that also ends when ctx does.
func waitCtx(ctx context.Context, p *harness.Proc, timeout time.Duration, markers ...string) error {
	_, _, err := waitIndex(ctx, p, timeout, markers...)
	return err
}

// waitIndex is p.WaitFor (the index of the marker seen, the time since p
// started) that also ends when ctx does: then p is killed.
func waitIndex(ctx context.Context, p *harness.Proc, timeout time.Duration, markers ...string) (int, time.Duration, error) {
	stop := context.AfterFunc(ctx, p.Kill)
	defer stop()
	i, took, err := p.WaitFor(timeout, markers...)
	if ctx.Err() != nil {
		return -1, 0, ctx.Err()
	}
	return i, took, err
}
