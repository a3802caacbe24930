package dhcp

import (
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// BenchmarkHandleDORA measures one client's DISCOVER+REQUEST through the
// full-mode handler, with leases in memory and with the lease file.
func BenchmarkHandleDORA(b *testing.B) {
	for _, withFile := range []bool{false, true} {
		name := "memory"
		if withFile {
			name = "leasefile"
		}
		b.Run(name, func(b *testing.B) {
			cfg := fullConfig()
			cfg.Subnet = netip.MustParsePrefix("10.77.0.0/16")
			cfg.PoolStart, cfg.PoolEnd = netip.MustParseAddr("10.77.0.2"), netip.MustParseAddr("10.77.255.250")
			if withFile {
				cfg.LeaseFile = filepath.Join(b.TempDir(), "leases.json")
			}
			s, _ := newTestServer(b, cfg)
			s.now = time.Now
			src := netip.MustParseAddrPort("0.0.0.0:68")
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				mac := macN(i % 60000)
				disc := kindIPXEBIOS.build(mac, dhcpv4.MessageTypeDiscover, uint32(i)).ToBytes()
				r := s.handle(disc, src, false)
				off, err := dhcpv4.FromBytes(r.reply)
				if err != nil {
					b.Fatal(err)
				}
				req := kindIPXEBIOS.selecting(mac, uint32(i), testServerIP.AsSlice(), off.YourIPAddr).ToBytes()
				if r := s.handle(req, src, false); r.reply == nil {
					b.Fatal("no ack")
				}
			}
		})
	}
}
