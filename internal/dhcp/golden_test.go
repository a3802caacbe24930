package dhcp

import (
	"bytes"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

var update = flag.Bool("update", false, "rewrite golden files")

var (
	testServerIP = netip.MustParseAddr("10.77.0.1")
	testClock    = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	testSrc      = netip.MustParseAddrPort("0.0.0.0:68")
)

// fakeClock is an injected clock for lease times.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

func fullConfig() Config {
	return Config{
		Mode:      ModeFull,
		Interface: "lo",
		ServerIP:  testServerIP,
		Subnet:    netip.MustParsePrefix("10.77.0.0/24"),
		PoolStart: netip.MustParseAddr("10.77.0.100"),
		PoolEnd:   netip.MustParseAddr("10.77.0.200"),
		Router:    netip.MustParseAddr("10.77.0.254"),
		DNS:       []netip.Addr{netip.MustParseAddr("10.77.0.53")},
		LeaseTime: time.Hour,
		Reservations: []Reservation{
			{MAC: mustMAC("52:54:00:aa:00:01"), IP: netip.MustParseAddr("10.77.0.10"), Hostname: "host-a"},
		},
		Boot: testPolicy,
	}
}

func proxyConfig() Config {
	return Config{Mode: ModeProxy, Interface: "lo", ServerIP: testServerIP, Boot: testPolicy}
}

func newTestServer(t testing.TB, cfg Config) (*Server, *fakeClock) {
	t.Helper()
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	clk := &fakeClock{t: testClock}
	s.now = clk.now
	return s, clk
}

// exchange is one request and what the server made of it.
type exchange struct {
	req *dhcpv4.DHCPv4
	pxe bool           // sent to the PXE port
	src netip.AddrPort // UDP source
	res result
	rep *dhcpv4.DHCPv4 // decoded reply, nil if none
}

func do(t testing.TB, s *Server, req *dhcpv4.DHCPv4, pxe bool, src netip.AddrPort) exchange {
	t.Helper()
	if !src.IsValid() {
		src = netip.MustParseAddrPort("0.0.0.0:68")
	}
	ex := exchange{req: req, pxe: pxe, src: src, res: s.handle(req.ToBytes(), src, pxe)}
	if ex.res.reply != nil {
		rep, err := dhcpv4.FromBytes(ex.res.reply)
		if err != nil {
			t.Fatalf("reply does not decode: %v", err)
		}
		ex.rep = rep
		checkReplyBasics(t, s, req, rep)
	}
	return ex
}

// checkReplyBasics holds for every reply (RFC 2131 table 3).
func checkReplyBasics(t testing.TB, s *Server, req, rep *dhcpv4.DHCPv4) {
	t.Helper()
	if rep.OpCode != dhcpv4.OpcodeBootReply || rep.TransactionID != req.TransactionID ||
		!bytes.Equal(rep.ClientHWAddr, req.ClientHWAddr) || !rep.GatewayIPAddr.Equal(req.GatewayIPAddr) {
		t.Errorf("reply header does not match request: %v", rep.Summary())
	}
	if got := addrOf(rep.ServerIdentifier()); got != s.cfg.ServerIP {
		t.Errorf("option 54 = %v, want %v", got, s.cfg.ServerIP)
	}
	for _, o := range []uint8{50, 55, 57, 93, 94} {
		if rep.Options.Has(dhcpv4.GenericOptionCode(o)) {
			t.Errorf("reply carries request-only option %d", o)
		}
	}
	if len(rep.ToBytes()) > 576 {
		t.Errorf("reply of %d bytes exceeds the 576 every client accepts", len(rep.ToBytes()))
	}
}

// render prints an exchange in a stable text form for golden files.
func render(ex exchange) string {
	var b strings.Builder
	fmt.Fprintf(&b, "request %s %s from %s", ex.req.MessageType(), portName(ex.pxe), ex.src)
	if ex.rep == nil {
		fmt.Fprintf(&b, "\n  no reply (%s)\n", outcomeNames[ex.res.out])
		return b.String()
	}
	d := ex.rep
	fmt.Fprintf(&b, "\n  reply %s to %s\n", d.MessageType(), ex.res.dst)
	fmt.Fprintf(&b, "  op %d htype %d hlen %d hops %d xid %x secs %d flags %04x\n",
		d.OpCode, d.HWType, len(d.ClientHWAddr), d.HopCount, d.TransactionID[:], d.NumSeconds, d.Flags)
	fmt.Fprintf(&b, "  ciaddr %v yiaddr %v siaddr %v giaddr %v chaddr %v\n",
		d.ClientIPAddr, d.YourIPAddr, d.ServerIPAddr, d.GatewayIPAddr, d.ClientHWAddr)
	fmt.Fprintf(&b, "  sname %q file %q\n", d.ServerHostName, d.BootFileName)
	codes := make([]int, 0, len(d.Options))
	for c := range d.Options {
		codes = append(codes, int(c))
	}
	slices.Sort(codes)
	for _, c := range codes {
		v := d.Options[uint8(c)]
		fmt.Fprintf(&b, "  option %3d %-20s %s\n", c, optionNames[c], renderValue(v))
	}
	return b.String()
}

var optionNames = map[int]string{
	1: "subnet-mask", 3: "router", 6: "dns", 12: "hostname", 43: "vendor-pxe", 51: "lease-time",
	53: "message-type", 54: "server-id", 56: "message", 58: "renewal-t1", 59: "rebinding-t2",
	60: "vendor-class", 61: "client-id", 66: "tftp-server", 67: "bootfile", 82: "relay-agent-info",
	97: "client-guid", 175: "ipxe-encap",
}

func portName(pxe bool) string {
	if pxe {
		return "to port 4011"
	}
	return "to port 67"
}

func renderValue(v []byte) string {
	printable := len(v) > 0
	for i, c := range v {
		if (c < 0x20 || c > 0x7e) && !(c == 0 && i == len(v)-1) {
			printable = false
		}
	}
	if printable {
		return fmt.Sprintf("%q", string(v))
	}
	return fmt.Sprintf("% x", v)
}

// dora runs DISCOVER and, if offered, the SELECTING REQUEST.
func dora(t testing.TB, s *Server, k clientKind, mac net.HardwareAddr, xid uint32, giaddr net.IP) []exchange {
	t.Helper()
	disc := k.build(mac, dhcpv4.MessageTypeDiscover, xid)
	if giaddr != nil {
		disc.GatewayIPAddr = giaddr
		disc.HopCount = 1
	}
	exs := []exchange{do(t, s, disc, false, netip.AddrPort{})}
	if exs[0].rep == nil || exs[0].rep.MessageType() != dhcpv4.MessageTypeOffer {
		return exs
	}
	req := k.selecting(mac, xid, s.cfg.ServerIP.AsSlice(), exs[0].rep.YourIPAddr)
	if giaddr != nil {
		req.GatewayIPAddr = giaddr
		req.HopCount = 1
	}
	return append(exs, do(t, s, req, false, netip.AddrPort{}))
}

func opt(d *dhcpv4.DHCPv4, code uint8) []byte { return d.Options[code] }

func TestGoldenReplies(t *testing.T) {
	mac := mustMAC("52:54:00:12:34:56")
	unknown := mustMAC("52:54:00:00:00:99")
	reserved := mustMAC("52:54:00:aa:00:01")
	clientIP := net.IPv4(10, 77, 0, 150)
	edk2Src := netip.MustParseAddrPort("10.77.0.150:4011")

	type tc struct {
		name  string
		run   func(t *testing.T) []exchange
		check func(t *testing.T, exs []exchange)
	}
	full := func(k clientKind, m net.HardwareAddr) func(t *testing.T) []exchange {
		return func(t *testing.T) []exchange {
			s, _ := newTestServer(t, fullConfig())
			return dora(t, s, k, m, 0x1000+uint32(len(k.name)), nil)
		}
	}
	proxy := func(k clientKind, m net.HardwareAddr, withBootServer bool) func(t *testing.T) []exchange {
		return func(t *testing.T) []exchange {
			s, _ := newTestServer(t, proxyConfig())
			xid := 0x2000 + uint32(len(k.name))
			exs := []exchange{do(t, s, k.build(m, dhcpv4.MessageTypeDiscover, xid), false, netip.AddrPort{})}
			// The client's REQUEST on port 67 goes to the site's server.
			exs = append(exs, do(t, s, k.selecting(m, xid, net.IPv4(10, 77, 0, 254), clientIP), false, netip.AddrPort{}))
			if withBootServer {
				exs = append(exs, do(t, s, k.bootServerRequest(m, xid+1, clientIP), true, edk2Src))
			}
			return exs
		}
	}
	// fullPXE: address, boot file, no option 60 for PXE firmware.
	fullPXE := func(file string) func(t *testing.T, exs []exchange) {
		return func(t *testing.T, exs []exchange) {
			if len(exs) != 2 || exs[1].rep == nil || exs[1].rep.MessageType() != dhcpv4.MessageTypeAck {
				t.Fatalf("no DORA: %d exchanges", len(exs))
			}
			for _, ex := range exs {
				r := ex.rep
				if !r.YourIPAddr.Equal(exs[0].rep.YourIPAddr) || r.YourIPAddr.Equal(net.IPv4zero) {
					t.Errorf("%s yiaddr %v", r.MessageType(), r.YourIPAddr)
				}
				if r.BootFileName != file || !r.ServerIPAddr.Equal(testServerIP.AsSlice()) {
					t.Errorf("%s file %q siaddr %v, want %q %v", r.MessageType(), r.BootFileName, r.ServerIPAddr, file, testServerIP)
				}
				if r.Options.Has(dhcpv4.OptionClassIdentifier) {
					t.Errorf("%s carries option 60: EDK2 would take it for a BINL offer", r.MessageType())
				}
				if len(opt(r, 51)) != 4 || len(opt(r, 1)) != 4 {
					t.Errorf("%s without lease time or netmask", r.MessageType())
				}
				if ex.res.dst != netip.MustParseAddrPort("255.255.255.255:68") {
					t.Errorf("%s to %v, want broadcast", r.MessageType(), ex.res.dst)
				}
			}
		}
	}
	// proxyOffer: no address, no lease, PXEClient, option 43 or not.
	proxyOffer := func(vc string, file string, want43 bool) func(t *testing.T, exs []exchange) {
		return func(t *testing.T, exs []exchange) {
			r := exs[0].rep
			if r == nil || r.MessageType() != dhcpv4.MessageTypeOffer {
				t.Fatal("no proxy offer")
			}
			if !r.YourIPAddr.Equal(net.IPv4zero) || r.Options.Has(dhcpv4.OptionIPAddressLeaseTime) {
				t.Errorf("proxy offer hands out an address or lease")
			}
			if string(opt(r, 60)) != vc {
				t.Errorf("option 60 = %q, want %q", opt(r, 60), vc)
			}
			if got := bytes.Equal(opt(r, 43), []byte{6, 1, 8, 255}); got != want43 {
				t.Errorf("option 43 = % x, want discovery control 8: %v", opt(r, 43), want43)
			}
			if r.BootFileName != file || !r.ServerIPAddr.Equal(testServerIP.AsSlice()) {
				t.Errorf("file %q siaddr %v", r.BootFileName, r.ServerIPAddr)
			}
			if !bytes.Equal(opt(r, 97), append([]byte{0}, testGUID...)) {
				t.Errorf("GUID not echoed")
			}
			if exs[1].rep != nil {
				t.Errorf("proxy answered the REQUEST meant for the site's server")
			}
		}
	}
	bootServerAck := func(file string) func(t *testing.T, exs []exchange) {
		return func(t *testing.T, exs []exchange) {
			ex := exs[2]
			if ex.rep == nil || ex.rep.MessageType() != dhcpv4.MessageTypeAck {
				t.Fatal("no ACK on port 4011")
			}
			if ex.rep.BootFileName != file || string(opt(ex.rep, 60)) != "PXEClient" || !ex.rep.YourIPAddr.Equal(net.IPv4zero) {
				t.Errorf("4011 ACK: file %q, option 60 %q, yiaddr %v", ex.rep.BootFileName, opt(ex.rep, 60), ex.rep.YourIPAddr)
			}
			if ex.res.dst != edk2Src {
				t.Errorf("4011 ACK to %v, want the sender %v", ex.res.dst, edk2Src)
			}
		}
	}

	cases := []tc{
		{"full-bios-pxe", full(kindBIOSPXE, mac), fullPXE("undionly.kpxe")},
		{"full-ovmf-x64", full(kindOVMFx64, mac), fullPXE("snponly.efi")},
		{"full-ovmf-ia32", full(kindOVMFia32, mac), fullPXE("ipxe-i386.efi")},
		{"full-aavmf-arm64", full(kindAAVMF, mac), fullPXE("snponly-arm64.efi")},
		{"full-http-x64", full(kindHTTPx64, mac), func(t *testing.T, exs []exchange) {
			for _, ex := range exs {
				if string(opt(ex.rep, 60)) != "HTTPClient" || ex.rep.BootFileName != "http://10.77.0.1/ipxe/ipxe.efi" {
					t.Errorf("%s: option 60 %q file %q", ex.rep.MessageType(), opt(ex.rep, 60), ex.rep.BootFileName)
				}
				if !bytes.Equal(opt(ex.rep, 67), []byte("http://10.77.0.1/ipxe/ipxe.efi\x00")) {
					t.Errorf("option 67 = %q", opt(ex.rep, 67))
				}
			}
		}},
		{"full-ipxe-bios", full(kindIPXEBIOS, mac), func(t *testing.T, exs []exchange) {
			for _, ex := range exs {
				if ex.rep.BootFileName != "http://10.77.0.1/boot.ipxe?mac=52:54:00:12:34:56" {
					t.Errorf("iPXE got %q, not its script (chainload loop)", ex.rep.BootFileName)
				}
				if !bytes.Equal(opt(ex.rep, 175), []byte{176, 1, 1}) {
					t.Errorf("option 175 = % x, want no-pxedhcp", opt(ex.rep, 175))
				}
			}
		}},
		{"full-ipxe-efi-x64", full(kindIPXEx64, mac), func(t *testing.T, exs []exchange) {
			if exs[1].rep.BootFileName != "http://10.77.0.1/boot.ipxe?mac=52:54:00:12:34:56" {
				t.Errorf("iPXE got %q", exs[1].rep.BootFileName)
			}
		}},
		{"full-linux", full(kindLinux, mac), func(t *testing.T, exs []exchange) {
			for _, ex := range exs {
				if ex.rep.BootFileName != "" || !ex.rep.ServerIPAddr.Equal(net.IPv4zero) {
					t.Errorf("plain client got boot information")
				}
			}
		}},
		{"full-unknown-host", full(kindOVMFx64, unknown), func(t *testing.T, exs []exchange) {
			if len(exs) != 2 || exs[1].rep.MessageType() != dhcpv4.MessageTypeAck || exs[1].rep.BootFileName != "" {
				t.Errorf("unknown host: want an address without boot file")
			}
		}},
		{"full-reserved", full(kindBIOSPXE, reserved), func(t *testing.T, exs []exchange) {
			for _, ex := range exs {
				if !ex.rep.YourIPAddr.Equal(net.IPv4(10, 77, 0, 10)) || string(opt(ex.rep, 12)) != "host-a" {
					t.Errorf("reservation: yiaddr %v hostname %q", ex.rep.YourIPAddr, opt(ex.rep, 12))
				}
			}
		}},
		{"full-relay", func(t *testing.T) []exchange {
			s, _ := newTestServer(t, fullConfig())
			return dora(t, s, kindBIOSPXE, mac, 0x3000, net.IPv4(10, 77, 0, 2))
		}, func(t *testing.T, exs []exchange) {
			for _, ex := range exs {
				if ex.res.dst != netip.MustParseAddrPort("10.77.0.2:67") {
					t.Errorf("relayed %s sent to %v, want the relay's port 67", ex.rep.MessageType(), ex.res.dst)
				}
			}
		}},
		{"proxy-bios-pxe", proxy(kindBIOSPXE, mac, false), proxyOffer("PXEClient", "undionly.kpxe", true)},
		{"proxy-ovmf-x64", proxy(kindOVMFx64, mac, true), func(t *testing.T, exs []exchange) {
			proxyOffer("PXEClient", "snponly.efi", false)(t, exs)
			bootServerAck("snponly.efi")(t, exs)
		}},
		{"proxy-ovmf-ia32", proxy(kindOVMFia32, mac, true), func(t *testing.T, exs []exchange) {
			proxyOffer("PXEClient", "ipxe-i386.efi", false)(t, exs)
			bootServerAck("ipxe-i386.efi")(t, exs)
		}},
		{"proxy-aavmf-arm64", proxy(kindAAVMF, mac, true), func(t *testing.T, exs []exchange) {
			proxyOffer("PXEClient", "snponly-arm64.efi", false)(t, exs)
			bootServerAck("snponly-arm64.efi")(t, exs)
		}},
		{"proxy-http-x64", proxy(kindHTTPx64, mac, false), proxyOffer("HTTPClient", "http://10.77.0.1/ipxe/ipxe.efi", false)},
		{"proxy-ipxe-bios", proxy(kindIPXEBIOS, mac, false), proxyOffer("PXEClient", "http://10.77.0.1/boot.ipxe?mac=52:54:00:12:34:56", true)},
		{"proxy-ipxe-efi-x64", proxy(kindIPXEx64, mac, false), proxyOffer("PXEClient", "http://10.77.0.1/boot.ipxe?mac=52:54:00:12:34:56", true)},
		{"proxy-linux", proxy(kindLinux, mac, false), func(t *testing.T, exs []exchange) {
			if exs[0].rep != nil || exs[0].res.out != outNotPXE {
				t.Errorf("proxy answered a client that is not PXE: %v", outcomeNames[exs[0].res.out])
			}
		}},
		{"proxy-unknown-host", proxy(kindBIOSPXE, unknown, false), func(t *testing.T, exs []exchange) {
			if exs[0].rep != nil {
				t.Errorf("proxy answered a host the policy refuses")
			}
		}},
		{"proxy-relay", func(t *testing.T) []exchange {
			s, _ := newTestServer(t, proxyConfig())
			d := kindOVMFx64.build(mac, dhcpv4.MessageTypeDiscover, 0x4000)
			d.GatewayIPAddr, d.HopCount = net.IPv4(192, 168, 5, 1), 1
			return []exchange{do(t, s, d, false, netip.MustParseAddrPort("192.168.5.1:67"))}
		}, func(t *testing.T, exs []exchange) {
			if exs[0].res.dst != netip.MustParseAddrPort("192.168.5.1:67") {
				t.Errorf("relayed proxy offer to %v", exs[0].res.dst)
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			exs := c.run(t)
			c.check(t, exs)
			var b strings.Builder
			for _, ex := range exs {
				b.WriteString(render(ex))
			}
			golden(t, c.name, b.String())
		})
	}
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", "golden", name+".golden")
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create)", err)
	}
	if string(want) != got {
		t.Errorf("reply differs from %s:\n--- got\n%s--- want\n%s", path, got, want)
	}
}
