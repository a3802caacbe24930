package dhcp

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

func TestBootPolicyAnswersChecked(t *testing.T) {
	long := "http://10.77.0.1/boot.ipxe?" + strings.Repeat("x", 150)
	cases := []struct {
		name   string
		kind   clientKind
		boot   Boot
		usable bool
	}{
		{"tftp path for HTTP boot", kindHTTPx64, Boot{Filename: "ipxe.efi"}, false},
		{"empty", kindBIOSPXE, Boot{}, false},
		{"too long", kindIPXEBIOS, Boot{Filename: "http://x/" + strings.Repeat("y", 250)}, false},
		{"NUL", kindBIOSPXE, Boot{Filename: "a\x00b"}, false},
		{"ipv6 next server", kindBIOSPXE, Boot{Filename: "a", NextServer: netip.MustParseAddr("fe80::1")}, false},
		{"long URL", kindIPXEBIOS, Boot{Filename: long}, true},
		{"other next server", kindBIOSPXE, Boot{Filename: "pxelinux.0", NextServer: netip.MustParseAddr("10.77.0.9")}, true},
	}
	for _, c := range cases {
		for _, mode := range []Mode{ModeFull, ModeProxy} {
			cfg := fullConfig()
			if mode == ModeProxy {
				cfg = proxyConfig()
			}
			cfg.Boot = func(ClientInfo) (Boot, bool) { return c.boot, true }
			s, _ := newTestServer(t, cfg)
			ex := do(t, s, c.kind.build(macN(1), dhcpv4.MessageTypeDiscover, 1), false, testSrc)
			switch {
			case !c.usable && mode == ModeProxy:
				if ex.rep != nil {
					t.Errorf("%s, proxy: answered with an unusable boot file", c.name)
				}
			case !c.usable:
				if ex.rep == nil || ex.rep.BootFileName != "" || ex.rep.Options.Has(dhcpv4.OptionBootfileName) {
					t.Errorf("%s, full: want an address without boot file", c.name)
				}
			default:
				if ex.rep == nil {
					t.Fatalf("%s, %s: no reply", c.name, mode)
				}
				file := string(ex.rep.Options[67])
				if file != c.boot.Filename+"\x00" {
					t.Errorf("%s, %s: option 67 %q", c.name, mode, file)
				}
				if len(c.boot.Filename) > 127 && ex.rep.BootFileName != "" {
					t.Errorf("%s: %d-byte name put in the 128-byte file field", c.name, len(c.boot.Filename))
				}
				if c.boot.NextServer.IsValid() && addrOf(ex.rep.ServerIPAddr) != c.boot.NextServer {
					t.Errorf("%s: siaddr %v", c.name, ex.rep.ServerIPAddr)
				}
			}
		}
	}
}
