package pxe

import (
	"net"
	"os"
	"testing"
	"time"

	"github.com/diskless-boot/diskless/internal/testutil/netns"
	"github.com/diskless-boot/diskless/internal/testutil/proc"
)

// testNet is the network of one test:
//
//	ns vm:   bridge br ── tap (QEMU)
//	           ├── veth ══ ns srv: srvIf 10.77.0.1/24 (diskless serve)
//	           └── veth ══ ns site: siteIf 10.77.0.2/24 (dnsmasq, proxy case)
type testNet struct {
	id                  string
	vmNS, srvNS, siteNS string
	bridge, tap         string
	srvIf, siteIf       string
	serverIP, siteIP    string
	subnetBits          string
}

func newTestNet(t *testing.T, withSite bool) *testNet {
	t.Helper()
	id := netns.ID()
	n := &testNet{
		id: id, vmNS: "dlpxe-v-" + id, srvNS: "dlpxe-s-" + id, siteNS: "dlpxe-d-" + id,
		bridge: "pb" + id, tap: "pt" + id, srvIf: "ps" + id, siteIf: "pd" + id,
		serverIP: "10.77.0.1", siteIP: "10.77.0.2", subnetBits: "24",
	}
	addNS(t, n.vmNS)
	steps := [][]string{ // ip arguments
		{"-n", n.vmNS, "link", "set", "lo", "up"},
		{"-n", n.vmNS, "link", "add", n.bridge, "type", "bridge", "forward_delay", "0"},
		{"-n", n.vmNS, "tuntap", "add", "dev", n.tap, "mode", "tap"},
		{"-n", n.vmNS, "link", "set", n.tap, "master", n.bridge, "up"},
		{"-n", n.vmNS, "link", "set", n.bridge, "up"},
	}
	for _, s := range steps {
		if err := netns.IP(s...); err != nil {
			t.Fatal(err)
		}
	}
	n.attach(t, n.srvNS, n.srvIf, n.serverIP)
	if withSite {
		n.attach(t, n.siteNS, n.siteIf, n.siteIP)
	}
	return n
}

// addNS creates namespace ns for the test's time.
func addNS(t *testing.T, ns string) {
	t.Helper()
	if err := netns.IP("netns", "add", ns); err != nil {
		t.Skipf("pxe: cannot create a network namespace: %v", err)
	}
	t.Cleanup(func() { netns.IP("netns", "del", ns) })
	// No duplicate address detection: link-local addresses (the RA's
	// source) are usable at once.
	netns.IP("netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0")
}

// attach creates namespace ns with interface ifName, address ip, on the
// test network's bridge (a machine of the network: a server, the site's
// DHCP server, the storage).
func (n *testNet) attach(t *testing.T, ns, ifName, ip string) {
	t.Helper()
	addNS(t, ns)
	for _, s := range [][]string{
		{"-n", n.vmNS, "link", "add", "v" + ifName, "type", "veth", "peer", "name", ifName, "netns", ns},
		{"-n", n.vmNS, "link", "set", "v" + ifName, "master", n.bridge, "up"},
		{"-n", ns, "link", "set", "lo", "up"},
		{"-n", ns, "addr", "add", ip + "/" + n.subnetBits, "dev", ifName},
		{"-n", ns, "link", "set", ifName, "up"},
	} {
		if err := netns.IP(s...); err != nil {
			t.Fatal(err)
		}
	}
}

// addTap adds another QEMU tap on the bridge (a second machine running
// at the same time as the first) and returns its name.
func (n *testNet) addTap(t *testing.T, name string) string {
	t.Helper()
	for _, s := range [][]string{
		{"-n", n.vmNS, "tuntap", "add", "dev", name, "mode", "tap"},
		{"-n", n.vmNS, "link", "set", name, "master", n.bridge, "up"},
	} {
		if err := netns.IP(s...); err != nil {
			t.Fatal(err)
		}
	}
	return name
}

// startDaemon runs args in namespace ns. At cleanup it gets SIGTERM (SIGKILL
// and a test error if it does not exit in 10 s), and a failed test logs the
// end of its output.
func startDaemon(t *testing.T, name, ns string, args ...string) *proc.Proc {
	t.Helper()
	return startDaemonWith(t, proc.Config{Name: name}, ns, args...)
}

// startDaemonWith is startDaemon with more of proc's configuration, e.g.
// sockets handed over by socket activation.
func startDaemonWith(t *testing.T, cfg proc.Config, ns string, args ...string) *proc.Proc {
	t.Helper()
	p, err := proc.Start(t, cfg, append([]string{"ip", "netns", "exec", ns}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// waitOutput waits until p's output shows s; it fails when p exits first.
func waitOutput(t *testing.T, p *proc.Proc, s string, timeout time.Duration) {
	t.Helper()
	if _, _, err := p.WaitFor(timeout, s); err != nil {
		t.Fatal(err)
	}
}

func tempDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "diskless-pxe-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// heldSocket opens a listening TCP socket on addr in namespace ns the way
// a service manager does for socket activation (systemd's diskless.socket):
// the test holds it, so it outlives every process it is handed to.
func heldSocket(t *testing.T, ns, addr string) *os.File {
	t.Helper()
	var f *os.File
	err := netns.Run(ns, func() error {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return err
		}
		defer l.Close() // f is a duplicate: the socket stays open
		f, err = l.(*net.TCPListener).File()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}
