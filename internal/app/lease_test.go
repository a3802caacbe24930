package app

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"golang.org/x/sys/unix"

	"github.com/diskless-boot/diskless/internal/api"
)

// loopbackDHCP opens the DHCP server's sockets on 127.0.0.1 (any port,
// bound to lo as dhcp.Listen binds to the served interface) and records
// the first one's address: where the test's DHCP client sends. It skips
// the test where a socket cannot be bound to a device (no CAP_NET_RAW).
func loopbackDHCP(t *testing.T) (listen func(string, int) (net.PacketConn, error), server *atomic.Value) {
	t.Helper()
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_BROADCAST, 1); serr == nil {
				serr = unix.BindToDevice(int(fd), "lo")
			}
		}); err != nil {
			return err
		}
		return serr
	}}
	probe, err := lc.ListenPacket(context.Background(), "udp4", "127.0.0.1:0")
	if err != nil {
		t.Skipf("DHCP socket bound to lo: %v", err)
	}
	probe.Close()
	server = &atomic.Value{}
	return func(iface string, port int) (net.PacketConn, error) {
		c, err := lc.ListenPacket(context.Background(), "udp4", "127.0.0.1:0")
		if err == nil {
			server.CompareAndSwap(nil, c.LocalAddr())
		}
		return c, err
	}, server
}

// startDHCPSite runs a site with DHCP in mode on lo (pool
// 127.0.0.100-200) and two hosts with CHAP, pc1 and pc2. replies, when not
// nil, gets every reply the DHCP server sends.
func startDHCPSite(t *testing.T, mode string, replies chan<- *dhcpv4.DHCPv4) (*site, net.Addr) {
	t.Helper()
	data := t.TempDir()
	cfg, httpPort, iscsiPort := writeConfig(t, data, "images:\n  - {name: golden, size: 1M}\n")
	cfg.DHCP.Mode = mode
	if mode == "full" {
		cfg.DHCP.Range = "127.0.0.100-127.0.0.200"
		cfg.DHCP.Netmask = "255.0.0.0"
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	listen, server := loopbackDHCP(t)
	if replies != nil {
		lo := listen
		listen = func(iface string, port int) (net.PacketConn, error) {
			c, err := lo(iface, port)
			if err != nil {
				return nil, err
			}
			return replyTap{c, replies}, nil
		}
	}
	s := runSite(t, data, cfg, httpPort, iscsiPort, func(o *ServeOptions) { o.ListenDHCP = listen })
	s.call("POST", "/hosts", api.AddHostRequest{Name: "pc1", MACs: []string{"52:54:00:00:00:01"}, Image: "golden"}, nil, 201)
	s.call("POST", "/hosts", api.AddHostRequest{Name: "pc2", MACs: []string{"52:54:00:00:00:02"}, Image: "golden"}, nil, 201)
	return s, server.Load().(net.Addr)
}

// script fetches mac's script from the address from, the neighbour table
// resolving every loopback address to mac (a machine that copied it), and
// returns the status; a 200 must hold the host's CHAP secret, anything
// else must not.
func (s *site) script(mac, from string) int {
	s.t.Helper()
	code, body := s.getAs(mac, from, "/boot.ipxe?mac="+mac)
	if (code == 200) != strings.Contains(body, "set password ") {
		s.t.Fatalf("script for %s from %s: %d\n%s", mac, from, code, body)
	}
	return code
}

// getAs fetches path on the boot server from the address from, which the
// faked neighbour table resolves to mac meanwhile (the machine with that
// MAC asking), and returns status and body.
func (s *site) getAs(mac, from, path string) (int, string) {
	s.t.Helper()
	hw, _ := net.ParseMAC(mac)
	s.neighbour.Store(hw)
	defer s.neighbour.Store(net.HardwareAddr(nil))
	resp, err := clientFrom(from).Get(s.http + path)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// lease plays mac's DHCP client asking the server for ip (DISCOVER, then
// REQUEST naming the server) until the server says it holds that lease.
func (s *site) lease(server net.Addr, name, mac, ip string) {
	s.t.Helper()
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		s.t.Fatal(err)
	}
	defer c.Close()
	hw, _ := net.ParseMAC(mac)
	want := net.ParseIP(ip).To4()
	for deadline := time.Now().Add(20 * time.Second); ; {
		disc, _ := dhcpv4.New(dhcpv4.WithHwAddr(hw), dhcpv4.WithMessageType(dhcpv4.MessageTypeDiscover),
			dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(want)))
		req, _ := dhcpv4.New(dhcpv4.WithHwAddr(hw), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
			dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(want)),
			dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IPv4(127, 0, 0, 1))))
		c.WriteTo(disc.ToBytes(), server)
		time.Sleep(50 * time.Millisecond) // the OFFER before the REQUEST
		c.WriteTo(req.ToBytes(), server)
		var h api.HostView
		for range 10 {
			if s.call("GET", "/hosts/"+name, nil, &h); h.IP == ip {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("no lease of %s for %s (host shows %q)", ip, mac, h.IP)
		}
	}
}

// dhcp full: a script holding secrets goes only to the address the
// server's own DHCP leased to the host's MAC, even where the neighbour
// table names that MAC for other addresses too (a machine that copied it).
// (A reservation is a lease like any other here: the inventory refuses
// loopback addresses for it, so it is not played on lo.)
func TestScriptBoundToLease(t *testing.T) {
	s, server := startDHCPSite(t, "full", nil)
	const pc1, pc2 = "52:54:00:00:00:01", "52:54:00:00:00:02"
	if code := s.script(pc1, "127.0.0.120"); code != http.StatusForbidden {
		t.Fatalf("pc1 before it has a lease: %d", code)
	}
	s.lease(server, "pc1", pc1, "127.0.0.120")
	if code := s.script(pc1, "127.0.0.120"); code != 200 {
		t.Fatalf("pc1 from its leased address: %d\n%s", code, s.logs)
	}
	if code := s.script(pc1, "127.0.0.121"); code != http.StatusForbidden {
		t.Fatalf("pc1's MAC from another address: %d", code)
	}
	s.lease(server, "pc2", pc2, "127.0.0.130")
	if code := s.script(pc2, "127.0.0.120"); code != http.StatusForbidden {
		t.Fatalf("pc2's MAC from pc1's leased address: %d", code)
	}
	if code := s.script(pc2, "127.0.0.130"); code != 200 {
		t.Fatalf("pc2 from its leased address: %d\n%s", code, s.logs)
	}
	if !strings.Contains(s.logs.String(), "not the address this server's DHCP leased to the mac") {
		t.Errorf("the refusal does not say why:\n%s", s.logs)
	}
}

// dhcp proxy: the site's DHCP server hands out the addresses, so the
// neighbour table decides alone.
func TestScriptProxyModeNeighboursAlone(t *testing.T) {
	s, _ := startDHCPSite(t, "proxy", nil)
	if code := s.script("52:54:00:00:00:01", "127.0.0.121"); code != 200 {
		t.Fatalf("proxy mode, the neighbour table names the host: %d\n%s", code, s.logs)
	}
}

// dhcp full: every host the server knows gets its name as DHCP option 12,
// with a pool address too (a generalized image takes its hostname from
// DHCP), as hosts come and go while the server runs.
func TestDHCPHostnamesFollowHosts(t *testing.T) {
	offers := make(chan *dhcpv4.DHCPv4, 16)
	s, server := startDHCPSite(t, "full", offers)
	// hostname sends a DISCOVER from mac and returns option 12 of the OFFER.
	hostname := func(mac string) string {
		t.Helper()
		c, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		hw, _ := net.ParseMAC(mac)
		disc, _ := dhcpv4.New(dhcpv4.WithHwAddr(hw), dhcpv4.WithMessageType(dhcpv4.MessageTypeDiscover))
		c.WriteTo(disc.ToBytes(), server)
		for {
			select {
			case rep := <-offers:
				if rep.TransactionID == disc.TransactionID {
					return string(rep.Options.Get(dhcpv4.OptionHostName))
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("no OFFER for %s", mac)
			}
		}
	}
	if got := hostname("52:54:00:00:00:01"); got != "pc1" {
		t.Errorf("pc1's OFFER: host name %q", got)
	}
	s.call("POST", "/hosts", api.AddHostRequest{Name: "lab_3", MACs: []string{"52:54:00:00:00:03"}, Image: "golden"}, nil, 201)
	if got := hostname("52:54:00:00:00:03"); got != "lab-3" {
		t.Errorf("a host added while serving: host name %q, want lab-3", got)
	}
	s.call("DELETE", "/hosts/pc1", nil, nil, 204)
	if got := hostname("52:54:00:00:00:01"); got != "" {
		t.Errorf("a removed host's MAC still gets host name %q", got)
	}
}

// replyTap passes a DHCP socket through and hands the test every reply the
// server sends on it. It is still the socket (SyscallConn): the server
// checks which device it is bound to.
type replyTap struct {
	net.PacketConn
	replies chan<- *dhcpv4.DHCPv4
}

func (c replyTap) SyscallConn() (syscall.RawConn, error) {
	return c.PacketConn.(syscall.Conn).SyscallConn()
}

func (c replyTap) WriteTo(b []byte, to net.Addr) (int, error) {
	if rep, err := dhcpv4.FromBytes(b); err == nil {
		select {
		case c.replies <- rep:
		default:
		}
	}
	return c.PacketConn.WriteTo(b, to)
}
