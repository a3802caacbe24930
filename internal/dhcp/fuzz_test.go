package dhcp

import (
	"net"
	"net/netip"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// fuzzSeeds are whole requests as real clients send them (see
// clients_test.go): every client kind, every message type, relayed, to the
// boot server, with PXE boot items and relay agent options, so mutations
// start deep inside the options rather than at the header.
func fuzzSeeds() [][]byte {
	var seeds [][]byte
	kinds := []clientKind{kindBIOSPXE, kindOVMFx64, kindOVMFia32, kindAAVMF, kindHTTPx64, kindIPXEBIOS, kindIPXEx64, kindLinux}
	types := []dhcpv4.MessageType{dhcpv4.MessageTypeDiscover, dhcpv4.MessageTypeRequest, dhcpv4.MessageTypeDecline,
		dhcpv4.MessageTypeRelease, dhcpv4.MessageTypeInform}
	for i, k := range kinds {
		mac := macN(i)
		for _, mt := range types {
			d := k.build(mac, mt, uint32(i)<<8|uint32(mt))
			switch mt {
			case dhcpv4.MessageTypeRequest, dhcpv4.MessageTypeDecline:
				d.Options[50] = []byte{10, 77, 0, 100}
				d.Options[54] = testServerIP.AsSlice()
			case dhcpv4.MessageTypeRelease, dhcpv4.MessageTypeInform:
				d.ClientIPAddr = net.IPv4(10, 77, 0, 100)
			}
			seeds = append(seeds, d.ToBytes())
		}
		relayed := k.build(mac, dhcpv4.MessageTypeDiscover, 0x5000+uint32(i))
		relayed.GatewayIPAddr, relayed.HopCount = net.IPv4(10, 77, 0, 2), 1
		relayed.Options[82] = []byte{1, 6, 0, 4, 0, 1, 0, 0, 2, 6, 0, 0x1b, 0x21, 0x3c, 0x4d, 0x5e}
		seeds = append(seeds, relayed.ToBytes())
		bs := k.bootServerRequest(mac, 0x6000+uint32(i), net.IPv4(10, 77, 0, 150))
		bs.Options[43] = []byte{71, 4, 0x80, 0x00, 0x00, 0x00, 255}
		seeds = append(seeds, bs.ToBytes())
	}
	return seeds
}

// FuzzParse feeds arbitrary bytes to the decoder and to everything that
// reads client options: nothing may panic, and what classify reports must
// agree with itself.
func FuzzParse(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		ipxeFeatures(b)
		vendorClassArch(string(b))
		d, err := dhcpv4.FromBytes(b)
		if err != nil {
			return
		}
		ci := classify(d)
		bootItem(d)
		if ci.ArchCode >= 0 && ci.Arch != archFromCode(uint16(ci.ArchCode)) {
			t.Fatalf("arch %v does not match code %d", ci.Arch, ci.ArchCode)
		}
		if ci.ArchCode < 0 && ci.Arch != ArchUnknown && !(ci.PXE && ci.Arch == ArchBIOS) {
			t.Fatalf("arch %v without a code", ci.Arch)
		}
		if len(ci.GUID) != 0 && len(ci.GUID) != 16 {
			t.Fatalf("GUID of %d bytes", len(ci.GUID))
		}
	})
}

// FuzzHandle runs arbitrary datagrams through full and proxy servers on
// both ports: no panic, and every reply decodes, answers the request's
// transaction and fits an Ethernet frame.
func FuzzHandle(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s, false)
		f.Add(s, true)
	}
	full, _ := newTestServer(f, smallPool(8))
	proxy, _ := newTestServer(f, proxyConfig())
	src := netip.MustParseAddrPort("10.77.0.150:68")
	f.Fuzz(func(t *testing.T, b []byte, pxePort bool) {
		for _, s := range []*Server{full, proxy} {
			r := s.handle(b, src, pxePort)
			if r.reply == nil {
				if r.out == outAnswered {
					t.Fatal("answered without a reply")
				}
				continue
			}
			req, err := dhcpv4.FromBytes(b)
			if err != nil {
				t.Fatalf("replied to an undecodable request")
			}
			rep, err := dhcpv4.FromBytes(r.reply)
			if err != nil {
				t.Fatalf("reply does not decode: %v", err)
			}
			if rep.OpCode != dhcpv4.OpcodeBootReply || rep.TransactionID != req.TransactionID {
				t.Fatalf("reply does not answer the request")
			}
			if len(r.reply) > 1472 {
				t.Fatalf("reply of %d bytes", len(r.reply))
			}
			if !r.dst.IsValid() || r.dst.Port() == 0 {
				t.Fatalf("reply without destination")
			}
		}
	})
}
