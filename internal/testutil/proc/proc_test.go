package proc

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The test binary is its own child: with PROC_HELPER set, TestMain runs
// the named behaviour instead of the tests.
func TestMain(m *testing.M) {
	switch os.Getenv("PROC_HELPER") {
	case "":
		os.Exit(m.Run())
	case "serve": // a daemon: ready, then stop on SIGTERM
		term := make(chan os.Signal, 1)
		signal.Notify(term, syscall.SIGTERM)
		fmt.Fprintln(os.Stderr, "starting", os.Getenv("PROC_GREETING"))
		fmt.Println("msg=ready")
		<-term
		fmt.Println("bye")
		os.Exit(0)
	case "stubborn": // ignores SIGTERM
		signal.Ignore(syscall.SIGTERM)
		fmt.Println("msg=ready")
		for {
			// Not select{}: with no other goroutine the runtime
			// reports a deadlock and exits.
			time.Sleep(time.Hour)
		}
	case "echo": // prints its first line of input
		var line string
		fmt.Scanln(&line)
		fmt.Println("got", line)
		os.Exit(0)
	case "fail":
		fmt.Println("cannot start")
		os.Exit(3)
	case "chatty":
		for i := range 1000 {
			fmt.Printf("line %04d %s\n", i, strings.Repeat("x", 100))
		}
		os.Exit(0)
	}
	os.Exit(2)
}

func helper(mode string) (Config, []string) {
	// A -race binary waits a second at exit unless told not to.
	return Config{Name: mode, Env: []string{"PROC_HELPER=" + mode, "GORACE=atexit_sleep_ms=0"}}, []string{os.Args[0]}
}

func TestWaitForAndStop(t *testing.T) {
	cfg, argv := helper("serve")
	cfg.Env = append(cfg.Env, "PROC_GREETING=hello")
	p, err := Start(t, cfg, argv...)
	if err != nil {
		t.Fatal(err)
	}
	i, took, err := p.WaitFor(10*time.Second, "never printed", "msg=ready")
	if err != nil || i != 1 || took <= 0 {
		t.Fatalf("WaitFor: %d %v %v", i, took, err)
	}
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := p.Wait(); err != nil {
		t.Errorf("exit after SIGTERM: %v", err)
	}
	if out := p.Output(); !strings.Contains(out, "starting hello") || !strings.Contains(out, "bye") {
		t.Errorf("output (stdout and stderr, environment added) %q", out)
	}
	if err := p.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

func TestStopKillsAfterGrace(t *testing.T) {
	cfg, argv := helper("stubborn")
	cfg.Grace = 100 * time.Millisecond
	p, err := Start(nil, cfg, argv...)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := p.WaitFor(10*time.Second, "msg=ready"); err != nil {
		t.Fatal(err)
	}
	if err := p.Stop(); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("Stop of a process ignoring SIGTERM: %v", err)
	}
	var ee *exec.ExitError
	if err := p.Wait(); !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Errorf("exit: %v, want killed", err)
	}
}

func TestKill(t *testing.T) {
	cfg, argv := helper("stubborn")
	p, err := Start(t, cfg, argv...)
	if err != nil {
		t.Fatal(err)
	}
	if p.Pid() <= 0 || p.Name() != "stubborn" {
		t.Errorf("pid %d name %q", p.Pid(), p.Name())
	}
	p.Kill()
	select {
	case <-p.Exited():
	default:
		t.Fatal("Kill returned before the process exited")
	}
	if err := p.Stop(); err != nil {
		t.Errorf("Stop after Kill: %v", err)
	}
}

func TestWaitForFailures(t *testing.T) {
	cfg, argv := helper("fail")
	p, err := Start(t, cfg, argv...)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := p.WaitFor(10*time.Second, "msg=ready"); err == nil || !strings.Contains(err.Error(), "exit status 3") {
		t.Errorf("WaitFor on a process that exits: %v", err)
	}
	cfg, argv = helper("stubborn")
	cfg.StopSignal = syscall.SIGKILL
	p, err = Start(t, cfg, argv...)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := p.WaitFor(50*time.Millisecond, "never printed"); err == nil || !strings.Contains(err.Error(), "within") {
		t.Errorf("WaitFor past its timeout: %v", err)
	}
	if _, err := Start(t, Config{}, "/nonexistent/program"); err == nil {
		t.Error("Start of a missing program succeeded")
	}
}

func TestMaxOutput(t *testing.T) {
	cfg, argv := helper("chatty")
	cfg.MaxOutput = 10 << 10
	p, err := Start(t, cfg, argv...)
	if err != nil {
		t.Fatal(err)
	}
	p.Wait()
	out := p.Output()
	// The bound is MaxOutput plus one write (io.Copy's 32 KiB at most).
	if len(out) > cfg.MaxOutput+32<<10 || !strings.Contains(out, "line 0999") || strings.Contains(out, "line 0000") {
		t.Errorf("kept %d bytes; last line there: %v", len(out), strings.Contains(out, "line 0999"))
	}
}

// recorder is a testing.TB whose cleanups, errors and logs the test sees.
type recorder struct {
	testing.TB
	cleanups []func()
	failed   bool
	errors   []string
	logs     []string
}

func (r *recorder) Helper()          {}
func (r *recorder) Cleanup(f func()) { r.cleanups = append(r.cleanups, f) }
func (r *recorder) Failed() bool     { return r.failed }
func (r *recorder) Error(args ...any) {
	r.errors = append(r.errors, fmt.Sprint(args...))
	r.failed = true
}
func (r *recorder) Logf(f string, a ...any) { r.logs = append(r.logs, fmt.Sprintf(f, a...)) }
func (r *recorder) runCleanups() {
	for i := len(r.cleanups) - 1; i >= 0; i-- {
		r.cleanups[i]()
	}
}

func TestCleanupStopsAndReports(t *testing.T) {
	r := &recorder{TB: t}
	cfg, argv := helper("stubborn")
	cfg.Grace = 50 * time.Millisecond
	cfg.LogTail = 100
	p, err := Start(r, cfg, argv...)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := p.WaitFor(10*time.Second, "msg=ready"); err != nil {
		t.Fatal(err)
	}
	r.runCleanups()
	select {
	case <-p.Exited():
	default:
		t.Fatal("cleanup left the process running")
	}
	if len(r.errors) != 1 || !strings.Contains(r.errors[0], "killed") {
		t.Errorf("cleanup errors %q, want one saying the process was killed", r.errors)
	}
	if len(r.logs) != 1 || !strings.Contains(r.logs[0], "msg=ready") {
		t.Errorf("cleanup of a failed test logged %q, want the output", r.logs)
	}

	// A passing test gets no output in its log.
	r = &recorder{TB: t}
	cfg, argv = helper("serve")
	if p, err = Start(r, cfg, argv...); err != nil {
		t.Fatal(err)
	}
	if _, _, err := p.WaitFor(10*time.Second, "msg=ready"); err != nil {
		t.Fatal(err)
	}
	r.runCleanups()
	if err := p.Wait(); err != nil || len(r.errors) != 0 || len(r.logs) != 0 {
		t.Errorf("clean stop: exit %v, errors %q, logs %q", err, r.errors, r.logs)
	}
}

func TestStdin(t *testing.T) {
	cfg, argv := helper("echo")
	cfg.Stdin = strings.NewReader("hello\n")
	p, err := Start(t, cfg, argv...)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := p.WaitFor(10*time.Second, "got hello"); err != nil {
		t.Fatal(err)
	}
}
