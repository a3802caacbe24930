package dhcp

import (
	"slices"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

func TestClassifyArch(t *testing.T) {
	cases := []struct {
		name   string
		opt93  []byte
		vendor string
		arch   Arch
		code   int
	}{
		{"bios", []byte{0, 0}, "PXEClient:Arch:00000:UNDI:002001", ArchBIOS, 0},
		{"edk2 x64", []byte{0, 7}, "PXEClient:Arch:00007:UNDI:003000", ArchEFIx64, 7},
		{"rfc4578 x64", []byte{0, 9}, "PXEClient", ArchEFIx64, 9},
		{"ia32", []byte{0, 6}, "", ArchEFIIA32, 6},
		{"arm64", []byte{0, 11}, "", ArchEFIARM64, 11},
		{"http x64", []byte{0, 16}, "HTTPClient:Arch:00016:UNDI:003000", ArchEFIx64HTTP, 16},
		{"http arm64", []byte{0, 19}, "", ArchEFIARM64HTTP, 19},
		{"list: first wins", []byte{0, 7, 0, 0}, "", ArchEFIx64, 7},
		{"vendor fallback", nil, "PXEClient:Arch:00011:UNDI:003000", ArchEFIARM64, 11},
		{"vendor fallback http", nil, "HTTPClient:Arch:00016:UNDI:003000", ArchEFIx64HTTP, 16},
		{"odd option 93", []byte{0, 7, 1}, "PXEClient:Arch:00006:UNDI:003000", ArchEFIIA32, 6},
		{"pxe 2.0 without arch", nil, "PXEClient", ArchBIOS, -1},
		{"bad vendor digits", nil, "PXEClient:Arch:0x007:UNDI", ArchBIOS, -1},
		{"unassigned code", []byte{0, 31}, "", ArchUnknown, 31},
		{"plain client", nil, "", ArchUnknown, -1},
	}
	for _, c := range cases {
		d := kindLinux.build(macN(1), dhcpv4.MessageTypeDiscover, 1)
		if c.opt93 != nil {
			d.Options[93] = c.opt93
		}
		if c.vendor != "" {
			d.Options[60] = []byte(c.vendor)
		}
		ci := classify(d)
		if ci.Arch != c.arch || ci.ArchCode != c.code {
			t.Errorf("%s: arch %v code %d, want %v %d", c.name, ci.Arch, ci.ArchCode, c.arch, c.code)
		}
	}
	if !ArchEFIARM64.EFI() || ArchBIOS.EFI() || !ArchEFIx64HTTP.HTTP() || ArchEFIx64.HTTP() {
		t.Error("EFI/HTTP predicates wrong")
	}
}

func TestClassifyIPXE(t *testing.T) {
	base := func() *dhcpv4.DHCPv4 { return kindOVMFx64.build(macN(1), dhcpv4.MessageTypeDiscover, 1) }
	if ci := classify(base()); ci.IPXE || !ci.PXE || ci.HTTPClient || !ci.Netboot() {
		t.Errorf("EDK2 PXE: %+v", ci)
	}
	d := base()
	d.Options[77] = []byte("iPXE")
	if ci := classify(d); !ci.IPXE {
		t.Error("plain user class iPXE not recognised")
	}
	d = base()
	d.Options[77] = []byte{4, 'i', 'P', 'X', 'E'} // RFC 3004 form
	if ci := classify(d); !ci.IPXE {
		t.Error("RFC 3004 user class iPXE not recognised")
	}
	d = base()
	d.Options[77] = []byte("iPXE-custom")
	if ci := classify(d); ci.IPXE {
		t.Error("other user class taken for iPXE")
	}
	ci := classify(kindIPXEx64.build(macN(1), dhcpv4.MessageTypeDiscover, 1))
	want := []IPXEFeature{0x10, IPXEFeatureISCSI, IPXEFeatureHTTP, IPXEFeatureHTTPS, IPXEFeatureTFTP, IPXEFeatureDNS, 0x18, 0x22, IPXEFeaturePXE, IPXEFeatureEFI}
	if !ci.IPXE || !slices.Equal(ci.IPXEFeatures, want) || !ci.HasIPXEFeature(IPXEFeatureHTTP) {
		t.Errorf("iPXE features %x, want %x", ci.IPXEFeatures, want)
	}
	d = base()
	d.Options[175] = []byte{0x13, 1, 1, 0x11, 5} // truncated second feature
	if ci := classify(d); !ci.IPXE || !slices.Equal(ci.IPXEFeatures, []IPXEFeature{IPXEFeatureHTTP}) {
		t.Errorf("truncated option 175: %+v", ci.IPXEFeatures)
	}
	if ci := classify(base()); !slices.Equal(ci.GUID, testGUID) {
		t.Errorf("GUID %x", ci.GUID)
	}
	d = base()
	d.Options[97] = append([]byte{1}, testGUID...) // type 1 is not a UUID
	if ci := classify(d); ci.GUID != nil {
		t.Errorf("GUID of wrong type accepted")
	}
}
