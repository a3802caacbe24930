//go:build linux

package ra

import (
	"encoding/hex"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/diskless-boot/diskless/internal/testutil/netns"
	"golang.org/x/net/ipv6"
)

// TestNetnsAnswersOnlyServedLink runs the server on a real raw socket in a
// namespace of its own, bound to one veth (served) while a second veth
// (unserved) joins the same two namespaces. A solicitation on the served
// link gets an RA from a link-local address with hop limit 255, no prefix
// and lifetime 0; one on the other link gets nothing.
func TestNetnsAnswersOnlyServedLink(t *testing.T) {
	netns.Need(t, "ip netns add, raw sockets")
	id := netns.ID()
	srv, cli := "dlsra-s-"+id, "dlsra-c-"+id
	srvIf, cliIf, srvIf2, cliIf2 := "rs"+id, "rc"+id, "rt"+id, "ru"+id
	netns.Add(t, srv, cli)
	for _, s := range [][]string{
		{"-n", srv, "link", "add", srvIf, "type", "veth", "peer", "name", cliIf, "netns", cli},
		{"-n", srv, "link", "add", srvIf2, "type", "veth", "peer", "name", cliIf2, "netns", cli},
	} {
		if err := netns.IP(s...); err != nil {
			t.Fatal(err)
		}
	}
	// No duplicate address detection: link-local addresses are usable at
	// once instead of after a second.
	for _, ns := range []string{srv, cli} {
		if err := netns.Run(ns, func() error {
			for _, f := range []string{"all", "default", srvIf, srvIf2, cliIf, cliIf2} {
				os.WriteFile("/proc/sys/net/ipv6/conf/"+f+"/accept_dad", []byte("0"), 0)
				// Only the test solicits: the kernel's own RS on link-up
				// would be answered before the test's.
				os.WriteFile("/proc/sys/net/ipv6/conf/"+f+"/router_solicitations", []byte("0"), 0)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range [][]string{
		{"-n", srv, "link", "set", srvIf, "up"}, {"-n", srv, "link", "set", srvIf2, "up"},
		{"-n", cli, "link", "set", cliIf, "up"}, {"-n", cli, "link", "set", cliIf2, "up"},
	} {
		if err := netns.IP(s...); err != nil {
			t.Fatal(err)
		}
	}

	// veth carrier and link-local addresses come up within about a second.
	for _, l := range [][2]string{{srv, srvIf}, {srv, srvIf2}, {cli, cliIf}, {cli, cliIf2}} {
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			out, _ := exec.Command("ip", "-n", l[0], "-6", "addr", "show", "dev", l[1], "scope", "link").CombinedOutput()
			if strings.Contains(string(out), "fe80::") && !strings.Contains(string(out), "tentative") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s has no link-local address: %s", l[1], out)
			}
		}
	}

	var s *Server
	var conn *ipv6.PacketConn
	if err := netns.Run(srv, func() (err error) {
		if s, err = New(Config{Interface: srvIf, MinInterval: 10 * time.Millisecond}); err != nil {
			return err
		}
		conn, err = Listen(srvIf)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(t.Context(), conn) }()
	t.Cleanup(func() {
		s.Shutdown(t.Context())
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})

	// solicit sends a solicitation out of iface in the client namespace
	// every 200 ms and returns the first RA heard there within wait.
	solicit := func(iface string, wait time.Duration) (b []byte, cm *ipv6.ControlMessage, src net.Addr) {
		t.Helper()
		var c *ipv6.PacketConn
		var ifi *net.Interface
		if err := netns.Run(cli, func() error {
			var err error
			if ifi, err = net.InterfaceByName(iface); err != nil {
				return err
			}
			pc, err := listenRaw(iface)
			if err != nil {
				return err
			}
			c = ipv6.NewPacketConn(pc)
			var f ipv6.ICMPFilter
			f.SetAll(true)
			f.Accept(ipv6.ICMPTypeRouterAdvertisement)
			c.SetICMPFilter(&f)
			c.SetControlMessage(ipv6.FlagHopLimit, true)
			c.SetMulticastHopLimit(255)
			c.SetMulticastInterface(ifi)
			return c.JoinGroup(ifi, &net.IPAddr{IP: net.ParseIP("ff02::1")})
		}); err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		rs, _ := hex.DecodeString("8500000000000000" + "0101" + hex.EncodeToString(ifi.HardwareAddr))
		buf := make([]byte, 1500)
		sent := 0
		defer func() {
			if sent == 0 {
				t.Fatalf("no solicitation could be sent on %s", iface)
			}
		}()
		deadline := time.Now().Add(wait)
		for time.Now().Before(deadline) {
			// Fails while the link-local address is being set up.
			if _, err := c.WriteTo(rs, nil, &net.IPAddr{IP: net.ParseIP("ff02::2"), Zone: iface}); err == nil {
				sent++
			}
			c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			if n, cm, src, err := c.ReadFrom(buf); err == nil {
				return buf[:n], cm, src
			}
		}
		return nil, nil, nil
	}

	b, cm, src := solicit(cliIf, 5*time.Second)
	if b == nil {
		t.Fatalf("no RA on the served link (stats %+v)", s.Stats())
	}
	if other, _, _ := solicit(cliIf2, time.Second); other != nil {
		t.Errorf("RA on the unserved link: %x", other)
	}
	if cm == nil || cm.HopLimit != 255 {
		t.Errorf("RA hop limit: %+v, want 255", cm)
	}
	if a, ok := src.(*net.IPAddr); !ok || !a.IP.IsLinkLocalUnicast() {
		t.Errorf("RA from %v, want a link-local address (RFC 4861 6.1.2)", src)
	}
	if len(b) < 16 || b[0] != TypeRouterAdvertisement || b[5] != 0 || b[6] != 0 || b[7] != 0 {
		t.Fatalf("RA %x: want type 134, no flags, lifetime 0", b)
	}
	for opts := b[16:]; len(opts) >= 2 && opts[1] > 0 && int(opts[1])*8 <= len(opts); opts = opts[int(opts[1])*8:] {
		if opts[0] == 3 {
			t.Errorf("RA carries a prefix option: %x", b)
		}
	}
}
