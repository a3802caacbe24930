package boot

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
	"time"
)

var update = flag.Bool("update", false, "rewrite golden files")

var (
	mac1   = net.HardwareAddr{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}
	mac2   = net.HardwareAddr{0x52, 0x54, 0x00, 0xab, 0xcd, 0xef}
	mac3   = net.HardwareAddr{0x52, 0x54, 0x00, 0xab, 0xcd, 0x01}
	mac4   = net.HardwareAddr{0x52, 0x54, 0x00, 0xab, 0xcd, 0x02}
	other  = net.HardwareAddr{0x52, 0x54, 0x00, 0x99, 0x99, 0x99}
	server = netip.MustParseAddr("10.77.0.1")
)

func host(mac net.HardwareAddr) Host {
	hex := strings.ReplaceAll(mac.String(), ":", "")
	return Host{
		MAC: mac, Name: "client1", Mode: Sanboot,
		InitiatorIQN: "iqn.2026-01.boot.diskless:0a1b2c3d.host." + hex,
		TargetIQN:    "iqn.2026-01.boot.diskless:0a1b2c3d.disk." + hex,
	}
}

func newBooter(t *testing.T, policy Policy, hosts ...Host) *Booter {
	t.Helper()
	b, err := New(Config{Hosts: hosts, Unknown: policy, HTTPPort: 8080, Binaries: debianIPXE})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// debianIPXE is what Debian's ipxe package puts in /usr/lib/ipxe.
var debianIPXE = fstest.MapFS{
	"undionly.kpxe": {Data: []byte("bios")},
	"snponly.efi":   {Data: []byte("snp")},
	"ipxe.efi":      {Data: []byte("ipxe")},
	"ipxe.lkrn":     {Data: []byte("lkrn")},
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := "testdata/" + name + ".ipxe"
	if *update {
		os.WriteFile(path, got, 0o644)
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Errorf("%s:\ngot:\n%s\nwant:\n%s", name, got, want)
	}
}

func TestScripts(t *testing.T) {
	chap := &Credentials{User: "client1", Secret: "Abcdefgh1234XYZ9"}
	mutual := &Credentials{User: "client1-target", Secret: "Zyxwvuts9876ABC1"}
	withCHAP := host(mac1)
	withCHAP.CHAP = chap
	withMutual := withCHAP
	withMutual.MutualCHAP = mutual
	kernel := withMutual
	kernel.Mode, kernel.Kernel, kernel.Initrd, kernel.Cmdline = Kernel, "/srv/vmlinuz", "/srv/initrd.img", "root=/dev/sda1 console=ttyS0,115200n8"
	kernelBare := host(mac1)
	kernelBare.Mode, kernelBare.Kernel = Kernel, "/srv/vmlinuz"

	for _, tc := range []struct {
		name   string
		h      Host
		server netip.Addr
		secret bool
	}{
		{"sanboot", host(mac1), server, false},
		{"sanboot-ipv6", host(mac1), netip.MustParseAddr("fd00::1"), false},
		{"sanboot-mapped", host(mac1), netip.MustParseAddr("::ffff:10.77.0.1"), false},
		{"chap", withCHAP, server, true},
		{"mutual", withMutual, server, true},
		{"kernel", kernel, server, true},
		{"kernel-bare", kernelBare, server, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBooter(t, PolicyLocal, tc.h)
			s, err := b.Script(ScriptRequest{MAC: mac1, Server: tc.server})
			if err != nil {
				t.Fatal(err)
			}
			if !s.Known || s.Host != "client1" || s.Secret != tc.secret {
				t.Errorf("known %v host %q secret %v", s.Known, s.Host, s.Secret)
			}
			golden(t, tc.name, s.Body)
			if len(b.Registry().List()) != 0 {
				t.Error("known host recorded as unknown")
			}
		})
	}
	if strings.Contains(fmt.Sprint(kernel), "Abcdefgh") || strings.Contains(fmt.Sprintf("%#v", *chap), "Abcdefgh") {
		t.Error("credentials print their secret")
	}
}

func TestUnknownPolicies(t *testing.T) {
	for _, p := range []Policy{PolicyLocal, PolicyMenu} {
		t.Run(string(p), func(t *testing.T) {
			b := newBooter(t, p, host(mac1))
			s, err := b.Script(ScriptRequest{MAC: other, Server: server, ClientIP: netip.MustParseAddr("10.77.0.123"), Arch: "x86_64 efi"})
			if err != nil {
				t.Fatal(err)
			}
			if s.Known || s.Secret {
				t.Errorf("unknown host script: %+v", s)
			}
			golden(t, "unknown-"+string(p), s.Body)
			list := b.Registry().List()
			if len(list) != 1 || list[0].MAC.String() != other.String() || list[0].IP.String() != "10.77.0.123" || list[0].Arch != "x86_64 efi" {
				t.Errorf("registry: %+v", list)
			}
		})
	}
	b := newBooter(t, PolicyRefuse, host(mac1))
	if _, err := b.Script(ScriptRequest{MAC: other, Server: server}); !errors.Is(err, ErrRefused) {
		t.Errorf("refuse policy: %v", err)
	}
	if _, ok := b.DHCPBoot(other, ArchBIOS, false, false, server); ok {
		t.Error("refuse policy: unknown host offered a boot file")
	}
	if _, ok := b.DHCPBoot(mac1, ArchBIOS, false, false, server); !ok {
		t.Error("refuse policy: known host refused")
	}
	if l := b.Registry().List(); len(l) != 1 || l[0].Count != 2 || l[0].Arch != "bios" {
		t.Errorf("refused host not recorded: %+v", l)
	}
}

// Nothing a configuration holds can add an iPXE command to a script.
func TestInjectionRejected(t *testing.T) {
	bad := []struct {
		name string
		mod  func(*Host)
	}{
		{"name newline", func(h *Host) { h.Name = "x\nshell" }},
		{"name space", func(h *Host) { h.Name = "a b" }},
		{"iqn newline", func(h *Host) { h.TargetIQN += "\nshell" }},
		{"iqn expansion", func(h *Host) { h.InitiatorIQN = "iqn.2026-01.x:${password}" }},
		{"iqn uppercase", func(h *Host) { h.InitiatorIQN = "iqn.2026-01.X:y" }},
		{"user operator", func(h *Host) { h.CHAP = &Credentials{User: "u||shell", Secret: "abcdefghijkl"} }},
		{"secret space", func(h *Host) { h.CHAP = &Credentials{User: "u", Secret: "abcdef ghijkl"} }},
		{"secret expansion", func(h *Host) { h.CHAP = &Credentials{User: "u", Secret: "abc${net0/ip}defg"} }},
		{"secret quote", func(h *Host) { h.CHAP = &Credentials{User: "u", Secret: `abcdefghijk"`} }},
		{"secret short", func(h *Host) { h.CHAP = &Credentials{User: "u", Secret: "short"} }},
		{"mutual without chap", func(h *Host) { h.MutualCHAP = &Credentials{User: "u", Secret: "abcdefghijkl"} }},
		{"cmdline newline", func(h *Host) { h.Mode, h.Kernel, h.Cmdline = Kernel, "/k", "quiet\nshell" }},
		{"cmdline and", func(h *Host) { h.Mode, h.Kernel, h.Cmdline = Kernel, "/k", "quiet && shell" }},
		{"cmdline expansion", func(h *Host) { h.Mode, h.Kernel, h.Cmdline = Kernel, "/k", "x=${password}" }},
		{"cmdline glob", func(h *Host) { h.Mode, h.Kernel, h.Cmdline = Kernel, "/k", "x=*" }},
		{"kernel mode without kernel", func(h *Host) { h.Mode = Kernel }},
		{"bad mode", func(h *Host) { h.Mode = "pxe" }},
		{"short mac", func(h *Host) { h.MAC = h.MAC[:5] }},
	}
	for _, tc := range bad {
		h := host(mac1)
		tc.mod(&h)
		_, err := New(Config{Hosts: []Host{h}, HTTPPort: 8080})
		if err == nil {
			t.Errorf("%s: accepted", tc.name)
			continue
		}
		if strings.Contains(err.Error(), "abcdef") {
			t.Errorf("%s: error shows the secret: %v", tc.name, err)
		}
	}
	// The second wall: a value that got past New (here changed behind its
	// back) fails rendering instead of producing a script.
	b := newBooter(t, PolicyLocal, host(mac1))
	(*b.hosts.Load())[mac1.String()].InitiatorIQN = "iqn.2026-01.x:y\nshell"
	if s, err := b.Script(ScriptRequest{MAC: mac1, Server: server}); err == nil {
		t.Errorf("rendered:\n%s", s.Body)
	}
	if _, err := New(Config{Hosts: []Host{host(mac1), host(mac1)}, HTTPPort: 8080}); err == nil {
		t.Error("duplicate MAC accepted")
	}
}

func TestDHCPBoot(t *testing.T) {
	b := newBooter(t, PolicyLocal, host(mac1))
	v6 := netip.MustParseAddr("fd00::1")
	for _, tc := range []struct {
		arch       uint16
		ipxe, http bool
		server     netip.Addr
		want       string
		ok         bool
	}{
		{arch: ArchBIOS, want: "undionly.kpxe", ok: true},
		{arch: ArchEFIx64BC, want: "snponly.efi", ok: true},
		{arch: ArchEFIx64, want: "snponly.efi", ok: true},
		{arch: ArchEFIx64HTTP, http: true, want: "http://10.77.0.1:8080/ipxe/snponly.efi", ok: true},
		{arch: ArchEFIx64HTTP, http: true, server: v6, want: "http://[fd00::1]:8080/ipxe/snponly.efi", ok: true},
		{arch: ArchBIOS, ipxe: true, want: "http://10.77.0.1:8080/boot.ipxe?mac=${netX/mac}", ok: true},
		{arch: ArchEFIx64, ipxe: true, want: "http://10.77.0.1:8080/boot.ipxe?mac=${netX/mac}", ok: true},
		{arch: ArchEFIIA32, ok: false},       // Debian ships no IA32 EFI build
		{arch: ArchEFIARM64, ok: false},      // nor an arm64 one
		{arch: ArchEFIARM64HTTP, http: true}, // so no HTTP boot either
		{arch: ArchEFIARM32, ok: false},
		{arch: 0x1234, ok: false},
	} {
		srv := server
		if tc.server.IsValid() {
			srv = tc.server
		}
		got, ok := b.DHCPBoot(mac1, tc.arch, tc.ipxe, tc.http, srv)
		if got != tc.want || ok != tc.ok {
			t.Errorf("arch %d ipxe %v http %v: got %q %v, want %q %v", tc.arch, tc.ipxe, tc.http, got, ok, tc.want, tc.ok)
		}
	}
	// Fallbacks: ipxe.efi without snponly.efi; arm64 and IA32 builds when
	// they are put in place.
	fsys := fstest.MapFS{
		"ipxe.efi":              {Data: []byte("x")},
		"arm64-efi/snponly.efi": {Data: []byte("x")},
		"i386-efi/ipxe.efi":     {Data: []byte("x")},
	}
	b2, err := New(Config{Hosts: []Host{host(mac1)}, HTTPPort: 8080, Binaries: fsys})
	if err != nil {
		t.Fatal(err)
	}
	for arch, want := range map[uint16]string{ArchEFIx64: "ipxe.efi", ArchEFIARM64: "arm64-efi/snponly.efi", ArchEFIIA32: "i386-efi/ipxe.efi"} {
		if got, ok := b2.DHCPBoot(mac1, arch, false, false, server); !ok || got != want {
			t.Errorf("arch %d: got %q %v want %q", arch, got, ok, want)
		}
	}
	if _, ok := b2.DHCPBoot(mac1, ArchBIOS, false, false, server); ok {
		t.Error("offered undionly.kpxe that is not there")
	}
	if f, err := b2.OpenBinary("arm64-efi/snponly.efi"); err != nil {
		t.Error(err)
	} else {
		f.Close()
	}
	for _, name := range []string{"undionly.kpxe", "../etc/passwd", "ipxe.lkrn"} {
		if _, err := b.OpenBinary(name); name != "undionly.kpxe" && err == nil {
			t.Errorf("OpenBinary(%q) served a file that is not an offered binary", name)
		}
	}
}

func TestHostFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	own := host(mac1)
	own.Mode, own.Kernel, own.Initrd = Kernel, write("k", "own kernel"), write("i", "own initrd")
	// mac2 boots its image version's files; mac3's version has no initrd.
	versionFile := map[string]string{"kernel": write("vk", "version kernel"), "initrd": write("vi", "version initrd")}
	fromVersion := host(mac2)
	fromVersion.Mode = Kernel
	fromVersion.Files = &VersionFiles{Open: func(name string) (*os.File, error) { return os.Open(versionFile[name]) }}
	noInitrd := host(mac3)
	noInitrd.Mode = Kernel
	noInitrd.Files = &VersionFiles{Open: func(name string) (*os.File, error) {
		return nil, fmt.Errorf("%s of golden@v1: %w", name, os.ErrNotExist)
	}}
	b := newBooter(t, PolicyLocal, own, fromVersion, noInitrd, host(mac4))
	read := func(mac net.HardwareAddr, name string) (string, error) {
		f, err := b.OpenHostFile(mac, name)
		if err != nil {
			return "", err
		}
		defer f.Close()
		c, err := io.ReadAll(f)
		return string(c), err
	}
	for _, c := range []struct {
		mac        net.HardwareAddr
		name, want string
	}{{mac1, "kernel", "own kernel"}, {mac1, "initrd", "own initrd"}, {mac2, "kernel", "version kernel"}, {mac2, "initrd", "version initrd"}} {
		if got, err := read(c.mac, c.name); err != nil || got != c.want {
			t.Errorf("%s %s: %q %v, want %q", c.mac, c.name, got, err, c.want)
		}
	}
	for _, c := range []struct {
		mac  net.HardwareAddr
		name string
	}{{mac1, "image"}, {mac3, "initrd"}, {mac4, "kernel"}, {other, "kernel"}} {
		if got, err := read(c.mac, c.name); !errors.Is(err, ErrNoHostFile) {
			t.Errorf("%s %s: %q %v, want ErrNoHostFile", c.mac, c.name, got, err)
		}
	}
	// A file the host should have and that is gone is not "no such file":
	// the server must say so.
	if _, err := read(mac3, "kernel"); err == nil || errors.Is(err, ErrNoHostFile) || !strings.Contains(err.Error(), "golden@v1") {
		t.Errorf("a version's missing kernel: %v", err)
	}
	if HostFilePath(mac1, "kernel") != "/hosts/52-54-00-12-34-56/kernel" {
		t.Error(HostFilePath(mac1, "kernel"))
	}
	// The script asks for the version's initrd only when it has one.
	for _, c := range []struct {
		mac    net.HardwareAddr
		initrd bool
	}{{mac2, true}, {mac3, false}} {
		s, err := b.Script(ScriptRequest{MAC: c.mac, Server: netip.MustParseAddr("10.77.0.1")})
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Contains(string(s.Body), "initrd --name initrd"); got != c.initrd {
			t.Errorf("%s: script fetches an initrd: %v, want %v\n%s", c.mac, got, c.initrd, s.Body)
		}
	}
}

func TestRegistry(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	r := NewRegistry(2, func() time.Time { now = now.Add(time.Second); return now })
	a, b, c := net.HardwareAddr{2, 0, 0, 0, 0, 1}, net.HardwareAddr{2, 0, 0, 0, 0, 2}, net.HardwareAddr{2, 0, 0, 0, 0, 3}
	r.Observe(a, netip.Addr{}, "bios")
	r.Observe(b, netip.MustParseAddr("10.0.0.2"), "")
	r.Observe(a, netip.MustParseAddr("10.0.0.1"), "") // keeps arch, adds IP
	r.Observe(c, netip.Addr{}, "efi-x64")             // evicts b, the least recently seen
	l := r.List()
	if len(l) != 2 || l[0].MAC.String() != c.String() || l[1].MAC.String() != a.String() {
		t.Fatalf("list: %+v", l)
	}
	if got := l[1]; got.Arch != "bios" || got.IP.String() != "10.0.0.1" || got.Count != 2 || !got.LastSeen.After(got.FirstSeen) {
		t.Errorf("sighting: %+v", got)
	}
}

// A machine that becomes a host (enrolled, adopted, added) leaves the
// registry, and so the saved unknown list.
func TestRegistryForgetsHosts(t *testing.T) {
	reg := NewRegistry(10, nil)
	a, b := net.HardwareAddr{2, 0, 0, 0, 0, 1}, net.HardwareAddr{2, 0, 0, 0, 0, 2}
	reg.Observe(a, netip.Addr{}, "bios")
	reg.Observe(b, netip.Addr{}, "bios")
	bt, err := New(Config{HTTPPort: 8080, Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	gen := reg.Gen()
	h := Host{MAC: a, Name: "pc-1", Mode: Sanboot, InitiatorIQN: "iqn.2026-01.x:h", TargetIQN: "iqn.2026-01.x:d"}
	if err := bt.SetHosts([]Host{h}); err != nil {
		t.Fatal(err)
	}
	if l := reg.List(); len(l) != 1 || l[0].MAC.String() != b.String() || reg.Gen() == gen {
		t.Errorf("registry after a's host was set: %+v (gen %d, was %d)", l, reg.Gen(), gen)
	}
}
