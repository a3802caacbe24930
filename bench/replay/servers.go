//go:build linux

package main

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/diskless-boot/diskless/internal/testutil/iscsiclient"
	"github.com/diskless-boot/diskless/internal/testutil/output"
	"github.com/diskless-boot/diskless/internal/testutil/proc"
)

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func startProc(name string, stop syscall.Signal, argv ...string) (*proc.Proc, error) {
	return proc.Start(nil, proc.Config{Name: name, StopSignal: stop, Grace: 10 * time.Second, MaxOutput: 1 << 20,
		SysProcAttr: &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}}, argv...)
}

// startDiskless runs `diskless serve` on loopback with n hosts h0..h(n-1),
// each on a volatile overlay of the image "golden" (golden imported as its
// version 1), with CHAP and mutual CHAP, and returns their sessions.
func startDiskless(bin, dir, golden string, n int) (*proc.Proc, []iscsiclient.Config, error) {
	iport, err := freePort()
	if err != nil {
		return nil, nil, err
	}
	hport, err := freePort()
	if err != nil {
		return nil, nil, err
	}
	var b strings.Builder
	fmt.Fprintf(&b, `interface: lo
server_ip: 127.0.0.1
data_dir: %s
dhcp: {mode: "off"}
tftp: {enabled: false}
http: {listen: "127.0.0.1:%d"}
iscsi: {listen: "127.0.0.1:%d"}
images:
  - {name: golden, import: %q}
hosts:
`, filepath.Join(dir, "data"), hport, iport, golden)
	sessions := make([]iscsiclient.Config, n)
	for i := range n {
		h := fmt.Sprintf("h%d", i)
		c := iscsiclient.Config{
			Addr:      fmt.Sprintf("127.0.0.1:%d", iport),
			Initiator: iqnBase + ".host." + h, Target: iqnBase + ".disk." + h,
			CHAPUser: h, CHAPSecret: h + chapSuf, MutualUser: h + "-target", MutualSecret: h + mutualSuf,
		}
		fmt.Fprintf(&b, "  - {name: %s, mac: \"02:00:00:00:%02x:%02x\", image: golden, disk: volatile, initiator_iqn: %s, target_iqn: %s, chap: {user: %s, secret: %q}, mutual_chap: {user: %s, secret: %q}}\n",
			h, i>>8, i&0xff, c.Initiator, c.Target, c.CHAPUser, c.CHAPSecret, c.MutualUser, c.MutualSecret)
		sessions[i] = c
	}
	cfg := filepath.Join(dir, "diskless.yaml")
	if err := os.WriteFile(cfg, []byte(b.String()), 0o600); err != nil {
		return nil, nil, err
	}
	p, err := startProc("diskless serve", syscall.SIGTERM, bin, "serve", "--config", cfg)
	if err != nil {
		return nil, nil, err
	}
	if i, _, err := p.WaitFor(5*time.Minute, "msg=serving", "level=ERROR"); err != nil || i != 0 {
		p.Stop()
		return nil, nil, fmt.Errorf("diskless serve did not start: %v\n%s", err, output.Tail(p.Output(), 3000))
	}
	return p, sessions, nil
}

// startTgt runs tgtd on loopback with one target whose LUNs 1..n all serve
// golden, no CHAP, and returns n sessions, one per LUN. tgtd ignores
// SIGTERM: stop takes the target and the daemon down with tgtadm, then
// kills it.
func startTgt(dir, golden string, n int) (*proc.Proc, []iscsiclient.Config, func(), error) {
	port, err := freePort()
	if err != nil {
		return nil, nil, nil, err
	}
	ctl := strconv.Itoa(1000 + rand.IntN(30000))
	p, err := startProc("tgtd", syscall.SIGKILL, "tgtd", "-f", "-C", ctl, "--iscsi", fmt.Sprintf("portal=127.0.0.1:%d", port))
	if err != nil {
		return nil, nil, nil, err
	}
	adm := func(args ...string) error {
		out, err := exec.Command("tgtadm", append([]string{"-C", ctl}, args...)...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("tgtadm %s: %v: %s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	stop := func() {
		adm("--lld", "iscsi", "--op", "delete", "--mode", "target", "--tid", "1", "--force")
		adm("--op", "delete", "--mode", "system")
		select {
		case <-p.Exited():
		case <-time.After(2 * time.Second):
		}
		p.Stop()
		os.Remove("/var/run/tgtd/socket." + ctl)
		os.Remove("/var/run/tgtd/socket." + ctl + ".lock")
	}
	fail := func(err error) (*proc.Proc, []iscsiclient.Config, func(), error) {
		stop()
		return nil, nil, nil, fmt.Errorf("%w\n%s", err, output.Tail(p.Output(), 2000))
	}
	for i := 0; ; i++ {
		if adm("--op", "show", "--mode", "target") == nil {
			break
		}
		if i == 100 {
			return fail(fmt.Errorf("tgtd did not start"))
		}
		time.Sleep(100 * time.Millisecond)
	}
	target := iqnBase + ":tgt"
	if err := adm("--lld", "iscsi", "--op", "new", "--mode", "target", "--tid", "1", "-T", target); err != nil {
		return fail(err)
	}
	sessions := make([]iscsiclient.Config, n)
	for i := range n {
		if err := adm("--lld", "iscsi", "--op", "new", "--mode", "logicalunit", "--tid", "1", "--lun", strconv.Itoa(i+1), "-b", golden); err != nil {
			return fail(err)
		}
		sessions[i] = iscsiclient.Config{Addr: fmt.Sprintf("127.0.0.1:%d", port),
			Initiator: fmt.Sprintf("%s.host.h%d", iqnBase, i), Target: target, LUN: uint64(i + 1)}
	}
	if err := adm("--lld", "iscsi", "--op", "bind", "--mode", "target", "--tid", "1", "-I", "ALL"); err != nil {
		return fail(err)
	}
	return p, sessions, stop, nil
}
