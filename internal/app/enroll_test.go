package app

import (
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/diskless-boot/diskless/internal/api"
	"github.com/diskless-boot/diskless/internal/boot"
	"github.com/diskless-boot/diskless/internal/config"
	"github.com/diskless-boot/diskless/internal/inventory"
	"github.com/diskless-boot/diskless/internal/iscsi"
	"github.com/diskless-boot/diskless/internal/testutil/output"
)

// startEnrollSite runs a site in dhcp mode full on lo (pool
// 127.0.0.100-200) with image golden, an iPXE binary for BIOS PXE, and
// unknown_hosts.policy enroll as enroll says (image golden unless set).
// Every DHCP reply goes to replies.
func startEnrollSite(t *testing.T, enroll config.Enroll, replies chan<- *dhcpv4.DHCPv4) (*site, net.Addr) {
	t.Helper()
	data := t.TempDir()
	cfg, httpPort, iscsiPort := writeConfig(t, data, "images:\n  - {name: golden, size: 1M}\n")
	cfg.DHCP.Mode, cfg.DHCP.Range, cfg.DHCP.Netmask = "full", "127.0.0.100-127.0.0.200", "255.0.0.0"
	cfg.TFTP.Root = t.TempDir()
	if err := os.WriteFile(filepath.Join(cfg.TFTP.Root, "undionly.kpxe"), []byte("ipxe"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg.UnknownHosts.Policy = config.UnknownEnroll
	if enroll.Image == "" {
		enroll.Image = "golden"
	}
	cfg.UnknownHosts.Enroll = enroll
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	listen, server := loopbackDHCP(t)
	tapped := func(iface string, port int) (net.PacketConn, error) {
		c, err := listen(iface, port)
		if err != nil {
			return nil, err
		}
		return replyTap{c, replies}, nil
	}
	s := runSite(t, data, cfg, httpPort, iscsiPort, func(o *ServeOptions) { o.ListenDHCP = tapped })
	return s, server.Load().(net.Addr)
}

// pxeExchange sends a BIOS PXE firmware's DISCOVER from mac, then its
// REQUEST for the address offered, and returns the OFFER and the ACK (nil
// when the server sent none within wait).
func pxeExchange(t *testing.T, server net.Addr, replies <-chan *dhcpv4.DHCPv4, mac string, wait time.Duration) (offer, ack *dhcpv4.DHCPv4) {
	t.Helper()
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	hw, _ := net.ParseMAC(mac)
	pxe := dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00000:UNDI:002001"))
	reply := func(m *dhcpv4.DHCPv4) *dhcpv4.DHCPv4 {
		c.WriteTo(m.ToBytes(), server)
		timeout := time.After(wait)
		for {
			select {
			case rep := <-replies:
				if rep.TransactionID == m.TransactionID {
					return rep
				}
			case <-timeout:
				return nil
			}
		}
	}
	disc, _ := dhcpv4.New(dhcpv4.WithHwAddr(hw), dhcpv4.WithMessageType(dhcpv4.MessageTypeDiscover), pxe)
	if offer = reply(disc); offer == nil {
		return nil, nil
	}
	req, _ := dhcpv4.New(dhcpv4.WithHwAddr(hw), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest), pxe,
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(offer.YourIPAddr)),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IPv4(127, 0, 0, 1))))
	return offer, reply(req)
}

// hostsBySource lists the hosts of the site made by source.
func (s *site) hostsBySource(source string) []api.HostView {
	var hs, out []api.HostView
	s.call("GET", "/hosts", nil, &hs)
	for _, h := range hs {
		if h.Source == source {
			out = append(out, h)
		}
	}
	return out
}

// A machine that PXE boots for the first time under policy enroll becomes
// a host in that very DHCP exchange: the OFFER and ACK it gets are a
// configured host's (the same boot file, and in the ACK the new host's
// name), and the script it fetches next is its own, with its secrets. The
// first free number is taken (pc-1 is a host added by hand), and
// max_hosts stops enrollment: the next machine is answered as an unknown
// one (policy local), is no host and stays in the unknown list.
func TestEnrollOnFirstPXEBoot(t *testing.T) {
	replies := make(chan *dhcpv4.DHCPv4, 64)
	s, server := startEnrollSite(t, config.Enroll{NamePattern: "pc-{n}", MaxHosts: 2, MaxPerMinute: 10}, replies)
	s.call("POST", "/hosts", api.AddHostRequest{Name: "pc-1", MACs: []string{"52:54:00:00:00:01"}, Image: "golden"}, nil, 201)
	known, knownAck := pxeExchange(t, server, replies, "52:54:00:00:00:01", 10*time.Second)
	if known == nil || knownAck == nil || known.BootFileName != "undionly.kpxe" {
		t.Fatalf("configured host's exchange: %v %v", known, knownAck)
	}

	const mac = "52:54:00:00:00:aa"
	start := time.Now()
	offer, ack := pxeExchange(t, server, replies, mac, 10*time.Second)
	t.Logf("DISCOVER to ACK of an enrolled machine: %v", time.Since(start))
	if offer == nil || ack == nil {
		t.Fatalf("no OFFER/ACK for the new machine:\n%s", output.Tail(s.logs.String(), 3000))
	}
	if offer.BootFileName != known.BootFileName || ack.BootFileName != knownAck.BootFileName ||
		string(offer.Options.Get(dhcpv4.OptionTFTPServerName)) != string(known.Options.Get(dhcpv4.OptionTFTPServerName)) {
		t.Errorf("boot answer of the new machine %q/%q, a host's %q/%q", offer.BootFileName, ack.BootFileName, known.BootFileName, knownAck.BootFileName)
	}
	if got := string(ack.Options.Get(dhcpv4.OptionHostName)); got != "pc-2" {
		t.Errorf("ACK host name %q, want pc-2 (the enrolled host's)", got)
	}
	enrolled := s.hostsBySource(inventory.SourceEnroll)
	if len(enrolled) != 1 || enrolled[0].Name != "pc-2" || len(enrolled[0].MACs) != 1 || enrolled[0].MACs[0] != mac ||
		enrolled[0].Disk.Base != "golden@v1" || enrolled[0].CHAP == nil || enrolled[0].CHAP.Secret != "" {
		t.Fatalf("enrolled hosts: %+v", enrolled)
	}
	if enrolled[0].Arch != inventory.ArchBIOS {
		// Learnt from the request, off the DHCP worker: wait a little.
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline) && enrolled[0].Arch == ""; time.Sleep(20 * time.Millisecond) {
			s.call("GET", "/hosts/pc-2", nil, &enrolled[0])
		}
		if enrolled[0].Arch != inventory.ArchBIOS || !enrolled[0].ArchLearnt {
			t.Errorf("arch of the enrolled host: %q learnt %v", enrolled[0].Arch, enrolled[0].ArchLearnt)
		}
	}
	if !strings.Contains(s.logs.String(), "msg=\"host enrolled\" host=pc-2 mac="+mac+" arch=bios") {
		t.Errorf("no log line for the enrollment:\n%s", output.Tail(s.logs.String(), 3000))
	}
	// iPXE then fetches its script: the host's, with its secrets, from
	// the address the ACK gave (the test's neighbour table says so).
	if code := s.script(mac, ack.YourIPAddr.String()); code != 200 {
		t.Fatalf("the enrolled machine's script: %d", code)
	}
	// Asking again changes nothing.
	if offer, _ := pxeExchange(t, server, replies, mac, 10*time.Second); offer == nil || len(s.hostsBySource(inventory.SourceEnroll)) != 1 {
		t.Errorf("a second boot of the enrolled machine: offer %v, enrolled %d", offer != nil, len(s.hostsBySource(inventory.SourceEnroll)))
	}

	if offer, _ := pxeExchange(t, server, replies, "52:54:00:00:00:bb", 10*time.Second); offer == nil {
		t.Fatal("no OFFER for the second new machine")
	}
	// max_hosts 2: the third is answered (local disk) but not enrolled.
	const third = "52:54:00:00:00:cc"
	offer, ack = pxeExchange(t, server, replies, third, 10*time.Second)
	if offer == nil || ack == nil || offer.BootFileName != known.BootFileName || len(ack.Options.Get(dhcpv4.OptionHostName)) != 0 {
		t.Errorf("a machine beyond max_hosts: offer %v ack %v", offer, ack)
	}
	if n := len(s.hostsBySource(inventory.SourceEnroll)); n != 2 {
		t.Errorf("%d enrolled hosts with max_hosts 2", n)
	}
	if !strings.Contains(s.logs.String(), "enrollment stopped: max_hosts enrolled hosts exist") {
		t.Errorf("no warning when max_hosts stops an enrollment")
	}
	if _, body := s.getAs(third, ack.YourIPAddr.String(), "/boot.ipxe?mac="+third); !strings.Contains(body, "sanboot --no-describe --drive 0x80") {
		t.Errorf("the machine not enrolled gets %q, want the local-disk script", body)
	}
	s.stop() // saves the unknown list
	site, err := OpenSite(t.Context(), s.cfg.DataDir, SiteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer site.Close()
	list, _ := site.Inv.UnknownHosts()
	if len(list) != 1 || list[0].MAC != third {
		t.Errorf("unknown list: %+v, want only %s", list, third)
	}
}

// Under policy enroll an image that is not in the store stops the start
// with the line that names it.
func TestEnrollImageMissingAtStart(t *testing.T) {
	data := t.TempDir()
	cfg, _, _ := writeConfig(t, data, "unknown_hosts: {enroll: {image: nothere}}\n")
	cfg.DHCP.Mode, cfg.UnknownHosts.Policy = "proxy", config.UnknownEnroll
	err := RunServe(t.Context(), ServeOptions{Config: cfg})
	if err == nil || !strings.Contains(err.Error(), "diskless.yaml:8: unknown_hosts.enroll.image: no image \"nothere\"") {
		t.Fatalf("got %v", err)
	}
}

// newTestEnroller is an enroller on a served inventory (the supervisor is
// its Runtime, as in RunServe) without sockets, with a clock the test moves.
func newTestEnroller(t *testing.T, spec inventory.EnrollSpec, perMinute int) (*enroller, *boot.Booter, *time.Time, *output.Output) {
	t.Helper()
	site, err := OpenSite(t.Context(), t.TempDir(), SiteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { site.Close() })
	if _, err := site.Inv.CreateImage(t.Context(), inventory.NewImage{Name: "golden", Size: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	var logs output.Output
	log := slog.New(slog.NewTextHandler(&logs, nil))
	booter, err := boot.New(boot.Config{HTTPPort: 8080})
	if err != nil {
		t.Fatal(err)
	}
	sup := newSupervisor(site.Inv, iscsi.New(iscsi.Defaults()), booter, log)
	site.Inv.SetRuntime(sup)
	if err := sup.start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sup.stop)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	e := newEnroller(site.Inv, spec, perMinute, log)
	e.now = func() time.Time { return now }
	return e, booter, &now, &logs
}

func macN(i int) net.HardwareAddr { return net.HardwareAddr{0x52, 0x54, 0, 0, 1, byte(i)} }

// max_per_minute: a burst of as many, then one per 60/N seconds; a machine
// over the bound gets no answer (it asks again) and is no host, with one
// rate-limited warning.
func TestEnrollRateBound(t *testing.T) {
	e, booter, now, logs := newTestEnroller(t, inventory.EnrollSpec{Image: "golden", NamePattern: "pc-{n}", MaxHosts: 100}, 3)
	for i := range 3 {
		if h, ok, answer := e.hostFor(booter, macN(i), boot.ArchBIOS); !ok || !answer || h.Name == "" {
			t.Fatalf("enrollment %d within the burst: %v %v", i, ok, answer)
		}
	}
	for i := 3; i < 10; i++ {
		if _, ok, answer := e.hostFor(booter, macN(i), boot.ArchBIOS); ok || answer {
			t.Fatalf("enrollment %d beyond 3 a minute: known %v answered %v", i, ok, answer)
		}
	}
	if hs, _ := e.inv.Hosts(); len(hs) != 3 {
		t.Errorf("%d hosts after the rate bound, want 3", len(hs))
	}
	if n := strings.Count(logs.String(), "enrollment rate bound reached"); n < 1 || n > 3 {
		t.Errorf("%d warnings for 7 refused machines, want 1-3 (rate-limited)", n)
	}
	*now = now.Add(20 * time.Second) // one more token
	if _, ok, _ := e.hostFor(booter, macN(3), boot.ArchBIOS); !ok {
		t.Error("no enrollment 20 s later")
	}
	if _, ok, answer := e.hostFor(booter, macN(4), boot.ArchBIOS); ok || answer {
		t.Error("a second enrollment within the same 20 s")
	}
	// A host already enrolled needs no token.
	if h, ok, answer := e.hostFor(booter, macN(0), boot.ArchBIOS); !ok || !answer || h.Name != "pc-1" {
		t.Errorf("the first enrolled machine again: %q %v %v", h.Name, ok, answer)
	}
}

// One enrollment at a time: a request that would wait longer than the
// bound for another is not answered; after a refusal every machine would
// meet (max_hosts), requests get the fallback without store work until
// the pause ends.
func TestEnrollBusyAndPaused(t *testing.T) {
	e, booter, now, _ := newTestEnroller(t, inventory.EnrollSpec{Image: "golden", MaxHosts: 1}, 100)
	e.wait = 10 * time.Millisecond
	e.turn <- struct{}{} // another enrollment runs
	if _, ok, answer := e.hostFor(booter, macN(1), boot.ArchBIOS); ok || answer {
		t.Errorf("while another enrollment runs: known %v answered %v", ok, answer)
	}
	<-e.turn
	if _, ok, _ := e.hostFor(booter, macN(1), boot.ArchBIOS); !ok {
		t.Fatal("not enrolled once the other was done")
	}
	if _, ok, answer := e.hostFor(booter, macN(2), boot.ArchBIOS); ok || !answer {
		t.Fatalf("beyond max_hosts: known %v answered %v", ok, answer)
	}
	if err := e.inv.RemoveHost("host-525400000101", false); err != nil {
		t.Fatal(err)
	}
	if _, ok, answer := e.hostFor(booter, macN(2), boot.ArchBIOS); ok || !answer {
		t.Errorf("within the pause after max_hosts: known %v answered %v", ok, answer)
	}
	*now = now.Add(enrollPause)
	if h, ok, _ := e.hostFor(booter, macN(2), boot.ArchBIOS); !ok || h.Name != "host-525400000102" {
		t.Errorf("after the pause, with room again: %q %v", h.Name, ok)
	}
}
