package interop

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/diskless-boot/diskless/internal/testutil/output"
	"github.com/diskless-boot/diskless/internal/testutil/ports"
	"github.com/diskless-boot/diskless/internal/testutil/proc"
)

// targetIQN is the name every test target gets.
const targetIQN = "iqn.2026-11.org.example:disk1"

// creds is a CHAP user name and secret.
type creds struct{ User, Secret string }

// arg is the USER:SECRET form of the diskless flags. (No String method: a
// secret must not end up in a log by accident.)
func (c creds) arg() string { return c.User + ":" + c.Secret }

// targetConfig is what a test asks of the target under test, in the terms of
// the diskless command line.
type targetConfig struct {
	LUNs       []lunConfig // LUNs[i] is LUN i
	CHAP       *creds      // --chap: what initiators must present
	MutualCHAP *creds      // --mutual-chap: what the target answers with
	Allow      []string    // --allow-initiator; empty allows any
}

type lunConfig struct {
	Path      string // image file (tgt with BSType: what its backing store opens)
	ReadOnly  bool
	Removable bool
	// BSType and BSOpts are tgt's --bstype and --bsopts (e.g. "rbd" and
	// "conf=FILE;id=USER", Debian's tgt-rbd); diskless ignores them.
	BSType, BSOpts string
}

// target is a running iSCSI target on 127.0.0.1.
type target struct {
	Port int
	IQN  string
	Pid  int // the server process (its CPU time, for benchmarks)
	// lunBase is added to a configured LUN number to get the LUN initiators
	// see: tgt reserves LUN 0 for its controller device, so it serves LUN i
	// as LUN i+1.
	lunBase int
	// logins returns diskless's "iscsi login" log lines so far (what each
	// session negotiated); nil for tgt, which does not log them.
	logins func() []string
}

// loginLines returns the target's login log lines, or skips the check
// when the target under test does not log them.
func (tg *target) loginLines(t *testing.T) []string {
	t.Helper()
	if tg.logins == nil {
		t.Logf("%s does not log its logins; negotiated values not checked", targetKind())
		return nil
	}
	return tg.logins()
}

// LUN is the LUN number initiators use for configured LUN i.
func (tg *target) LUN(i int) int { return i + tg.lunBase }

// URL is the libiscsi URL of configured LUN i, with CHAP credentials if c is
// not nil.
func (tg *target) URL(i int, c *creds) string {
	auth := ""
	if c != nil {
		auth = c.User + "%" + c.Secret + "@"
	}
	return fmt.Sprintf("iscsi://%s127.0.0.1:%d/%s/%d", auth, tg.Port, tg.IQN, tg.LUN(i))
}

// targetKind is the implementation under test: "diskless" (default) or "tgt"
// (env DISKLESS_INTEROP_TARGET=tgt), for developing the harness and for
// comparison.
func targetKind() string {
	if k := os.Getenv("DISKLESS_INTEROP_TARGET"); k != "" {
		return k
	}
	return "diskless"
}

// startTarget starts the target under test serving cfg on a free port and
// stops it when t ends.
func startTarget(t *testing.T, cfg targetConfig) *target {
	t.Helper()
	switch k := targetKind(); k {
	case "diskless":
		return startDiskless(t, cfg)
	case "tgt":
		return startTgt(t, cfg)
	default:
		t.Fatalf("DISKLESS_INTEROP_TARGET=%q: want diskless or tgt", k)
		return nil
	}
}

func startDiskless(t *testing.T, cfg targetConfig) *target {
	t.Helper()
	if disklessBin == "" {
		t.Fatalf("no diskless binary: %v", disklessBuild)
	}
	port := ports.FreeTCP(t)
	args := []string{"target",
		"--listen", fmt.Sprintf("127.0.0.1:%d", port),
		"--iqn", targetIQN,
		"--portal-group-tag", "1",
	}
	for i, l := range cfg.LUNs {
		var opts []string
		if l.ReadOnly {
			opts = append(opts, "ro")
		}
		if l.Removable {
			opts = append(opts, "removable")
		}
		spec := fmt.Sprintf("%d=%s", i, l.Path)
		if len(opts) > 0 {
			spec += ":" + strings.Join(opts, ",")
		}
		args = append(args, "--lun", spec)
	}
	if cfg.CHAP != nil {
		args = append(args, "--chap", cfg.CHAP.arg())
	}
	if cfg.MutualCHAP != nil {
		args = append(args, "--mutual-chap", cfg.MutualCHAP.arg())
	}
	for _, iqn := range cfg.Allow {
		args = append(args, "--allow-initiator", iqn)
	}
	// A -race build (see race_test.go) writes its reports to race.PID here.
	raceDir := t.TempDir()
	// proc's cleanup logs the output of a failed test after this one.
	d, err := proc.Start(t, proc.Config{Env: []string{"GORACE=log_path=" + filepath.Join(raceDir, "race")}, MaxOutput: 1 << 20},
		append([]string{disklessBin}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Stop first: the race reports are written at exit.
		if err := d.Stop(); err != nil {
			t.Error(err)
		}
		reports, _ := filepath.Glob(filepath.Join(raceDir, "race.*"))
		for _, r := range reports {
			b, _ := os.ReadFile(r)
			t.Errorf("diskless data race:\n%s", output.Tail(string(b), 8000))
		}
	})
	if err := waitTCP(fmt.Sprintf("127.0.0.1:%d", port), d.Exited(), 15*time.Second); err != nil {
		t.Fatalf("diskless %s: %v\n%s", strings.Join(args, " "), err, d.Output())
	}
	logins := func() []string {
		var lines []string
		for _, l := range strings.Split(d.Output(), "\n") {
			if strings.Contains(l, `msg="iscsi login"`) {
				lines = append(lines, l)
			}
		}
		return lines
	}
	return &target{Port: port, IQN: targetIQN, Pid: d.Pid(), logins: logins}
}

// startTgt runs a private tgtd (own control port, portal on 127.0.0.1 only)
// configured like diskless would be for cfg.
func startTgt(t *testing.T, cfg targetConfig) *target {
	t.Helper()
	needPeers(t, "tgtd", "tgtadm")
	port := ports.FreeTCP(t)
	// The control "port" names tgtd's management socket; it must differ
	// between tgtd instances and tgtadm takes at most 32767.
	ctl := strconv.Itoa(1 + port%32767)
	// tgtd ignores SIGTERM.
	d, err := proc.Start(t, proc.Config{StopSignal: syscall.SIGKILL, MaxOutput: 1 << 20, LogTail: 4000},
		"tgtd", "-f", "-C", ctl, "--iscsi", fmt.Sprintf("portal=127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// SIGKILL after taking the system down (tgtd ignores SIGTERM), so
		// backing stores close first (tgt-rbd's librbd releases its lock).
		exec.Command("tgtadm", "-C", ctl, "--op", "delete", "--mode", "system").Run()
		d.Stop()
		os.Remove("/var/run/tgtd/socket." + ctl)
		os.Remove("/var/run/tgtd/socket." + ctl + ".lock")
	})
	tgtadm := func(args ...string) error {
		out, err := exec.Command("tgtadm", append([]string{"-C", ctl, "--lld", "iscsi"}, args...)...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("tgtadm %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	// The management socket appears shortly after start.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		err := tgtadm("--op", "show", "--mode", "target")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("tgtd not ready: %v\n%s", err, d.Output())
		}
	}
	var cmds [][]string
	add := func(args ...string) { cmds = append(cmds, args) }
	add("--op", "new", "--mode", "target", "--tid", "1", "-T", targetIQN)
	for i, l := range cfg.LUNs {
		lun := strconv.Itoa(i + 1)
		lu := []string{"--op", "new", "--mode", "logicalunit", "--tid", "1", "--lun", lun, "-b", l.Path}
		if l.BSType != "" {
			lu = append(lu, "--bstype", l.BSType)
		}
		if l.BSOpts != "" {
			lu = append(lu, "--bsopts", l.BSOpts)
		}
		add(lu...)
		if l.ReadOnly {
			add("--op", "update", "--mode", "logicalunit", "--tid", "1", "--lun", lun, "--params", "readonly=1")
		}
		if l.Removable {
			add("--op", "update", "--mode", "logicalunit", "--tid", "1", "--lun", lun, "--params", "removable=1")
		}
	}
	if len(cfg.Allow) == 0 {
		add("--op", "bind", "--mode", "target", "--tid", "1", "-I", "ALL")
	}
	for _, iqn := range cfg.Allow {
		add("--op", "bind", "--mode", "target", "--tid", "1", "--initiator-name", iqn)
	}
	if c := cfg.CHAP; c != nil {
		add("--op", "new", "--mode", "account", "--user", c.User, "--password", c.Secret)
		add("--op", "bind", "--mode", "account", "--tid", "1", "--user", c.User)
	}
	if c := cfg.MutualCHAP; c != nil {
		add("--op", "new", "--mode", "account", "--user", c.User, "--password", c.Secret)
		add("--op", "bind", "--mode", "account", "--tid", "1", "--user", c.User, "--outgoing")
	}
	for _, c := range cmds {
		if err := tgtadm(c...); err != nil {
			t.Fatal(err)
		}
	}
	if err := waitTCP(fmt.Sprintf("127.0.0.1:%d", port), d.Exited(), 10*time.Second); err != nil {
		t.Fatalf("tgtd: %v\n%s", err, d.Output())
	}
	return &target{Port: port, IQN: targetIQN, Pid: d.Pid(), lunBase: 1}
}
