package pxe

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/diskless-boot/diskless/internal/testutil/bootdisk"
	"github.com/diskless-boot/diskless/internal/testutil/iscsiclient"
	"github.com/diskless-boot/diskless/internal/testutil/netns"
	"github.com/diskless-boot/diskless/internal/testutil/proc"
	"github.com/diskless-boot/diskless/internal/testutil/qemu"
)

const (
	ovmfCode = "/usr/share/OVMF/OVMF_CODE_4M.fd"
	ovmfVars = "/usr/share/OVMF/OVMF_VARS_4M.fd"
	ipxeROM  = "/usr/lib/ipxe/qemu/efi-e1000.rom" // what QEMU loads for -device e1000
)

// Fixed by the test network (10.77.0.0/24, diskless at .1, dnsmasq at .2).
const (
	clientMAC = "52:54:00:12:34:56"
	poolRange = "10.77.0.100-10.77.0.200"
)

// TestPXEBoot boots a QEMU machine with no local disk from power-on to the
// marker its iSCSI LUN prints, through `diskless serve` on a test network.
func TestPXEBoot(t *testing.T) {
	t.Run("bios-full", func(t *testing.T) {
		need(t, []string{"ip", "qemu-system-x86_64"}, map[string]string{ipxeROM: "ipxe-qemu"})
		n := newTestNet(t, false)
		dir := tempDir(t)
		img := filepath.Join(dir, "disk.img")
		marker := markerDisk(t, img)
		srv := startServe(t, n, "--interface", n.srvIf, "--dhcp", "full", "--dhcp-range", poolRange,
			"--host", clientMAC+"="+img, "--data-dir", filepath.Join(dir, "state"))
		// CHAP and mutual CHAP by default: generated, never printed.
		waitOutput(t, srv, "CHAP credentials generated", time.Second)
		if strings.Contains(srv.Output(), "secret=") {
			t.Errorf("a secret in the server's output")
		}
		v := startVM(t, n.vmNS, biosArgs(n)...)
		took := expectMarker(t, v, marker, 120*time.Second)
		t.Logf("BIOS, dhcp full: power-on to marker %v", took.Round(100*time.Millisecond))
		expectStages(t, srv, "dhcp: ", "iPXE script", "boot: san-login")
	})

	// A host of the state store on a volatile copy-on-write disk over an
	// image version: the whole chain from the store (no --host), and the
	// architecture learnt from its DHCP request.
	t.Run("bios-overlay", func(t *testing.T) {
		need(t, []string{"ip", "qemu-system-x86_64"}, map[string]string{ipxeROM: "ipxe-qemu"})
		n, data, marker, cli := markerSite(t)
		cli("host", "add", "pc1", "--image", "golden", "--disk", "volatile", "--mac", clientMAC)
		srv := startServe(t, n, "--interface", n.srvIf, "--dhcp", "full", "--dhcp-range", poolRange, "--data-dir", data)
		v := startVM(t, n.vmNS, biosArgs(n)...)
		took := expectMarker(t, v, marker, 120*time.Second)
		t.Logf("BIOS, volatile overlay host from the store: power-on to marker %v", took.Round(100*time.Millisecond))
		expectStages(t, srv, "dhcp: ", "iPXE script", "boot: san-login")
		var h struct {
			Arch       string `json:"arch"`
			ArchLearnt bool   `json:"arch_learnt"`
			Online     bool   `json:"online"`
			IP         string `json:"ip"`
		}
		if err := json.Unmarshal([]byte(cli("host", "show", "pc1", "--json")), &h); err != nil {
			t.Fatal(err)
		}
		if h.Arch != "bios" || !h.ArchLearnt || !h.Online || h.IP != "10.77.0.100" {
			t.Errorf("host after its boot: %+v", h)
		}
	})

	// A host with chap_rotation boot boots twice, with a server restart
	// in between: each boot's script carries new secrets, the target takes
	// them before iPXE logs in, and iPXE really logs in with them (the
	// marker is on the LUN); the secrets are never in the server's output.
	// A boot that fails: iPXE's sanboot of a disk without a boot sector.
	// The script reports the step and iPXE's error number before it asks
	// again; the admin sees why in the host's state and timeline, in
	// /metrics and in the log.
	t.Run("bios-failure-report", func(t *testing.T) {
		need(t, []string{"ip", "qemu-system-x86_64"}, map[string]string{ipxeROM: "ipxe-qemu"})
		n, data, _, cli := markerSite(t)
		cli("image", "create", "blank", "--size", "64M")
		cli("host", "add", "pc1", "--image", "blank", "--disk", "volatile", "--mac", clientMAC)
		srv := startServe(t, n, "--interface", n.srvIf, "--dhcp", "full", "--dhcp-range", poolRange, "--data-dir", data)
		_, _, apiGet := adminPlane(t, n, data)
		startVM(t, n.vmNS, biosArgs(n)...)
		_, took, err := srv.WaitFor(2*time.Minute, `msg="boot: failed"`)
		if err != nil {
			t.Fatalf("no failure reported: %v\n%s", err, srv.Output())
		}
		t.Logf("failure reported %v after power-on: %s", took.Round(100*time.Millisecond), lineWith(srv.Output(), `msg="boot: failed"`))
		var h struct {
			State    struct{ State, Stage, Failure string }
			LastBoot struct {
				Result string
				Events []struct{ Stage, Error string }
			} `json:"last_boot"`
		}
		if err := json.Unmarshal(apiGet("/api/v1/hosts/pc1"), &h); err != nil {
			t.Fatal(err)
		}
		// iPXE's words and code. For a disk without a boot signature
		// ipxe-qemu (git 36a4c85) says "Input/output error
		// (https://ipxe.org/1d852039)": int13_boot tries the MBR
		// (ENOEXEC), then El Torito, whose INT 13 read of a hard disk's
		// boot catalogue fails (EIO), and reports that last error.
		why := regexp.MustCompile(`^sanboot failed: [A-Z][a-z/ ]+ \(https://ipxe\.org/[0-9a-f]{8}\)$`)
		if h.State.State != "failed" || h.State.Stage != "san-login" || !why.MatchString(h.State.Failure) {
			t.Errorf("pc1's state %+v, want failed at san-login: sanboot failed: <iPXE's error> (https://ipxe.org/<code>)", h.State)
		}
		var stages []string
		for _, e := range h.LastBoot.Events {
			stages = append(stages, e.Stage)
		}
		if !inOrder(stages, "ipxe-dhcp", "script", "san-login", "failed") {
			t.Errorf("timeline %v", stages)
		}
		if m := string(apiGet("/metrics")); !strings.Contains(m, `diskless_boots_failed_total{reason="reported",stage="san-login"} 1`) {
			t.Errorf("/metrics does not count the failure:\n%s", lineWith(m, "diskless_boots_failed_total"))
		}
	})

	t.Run("bios-rotate", func(t *testing.T) {
		need(t, []string{"ip", "qemu-system-x86_64"}, map[string]string{ipxeROM: "ipxe-qemu"})
		n := newTestNet(t, false)
		dir := tempDir(t)
		img := filepath.Join(dir, "golden.img")
		marker := markerDisk(t, img)
		data := filepath.Join(dir, "state")
		cfg := filepath.Join(dir, "diskless.yaml")
		os.WriteFile(cfg, []byte(fmt.Sprintf(`interface: %s
data_dir: %s
dhcp: {mode: full, range: %s}
images:
  - {name: golden, import: %s}
hosts:
  - {mac: "%s", name: pc1, image: golden, chap_rotation: boot}
`, n.srvIf, data, poolRange, img, clientMAC)), 0o644)
		cli := nsCLI(t, n, data)
		type creds struct{ User, Secret string }
		secrets := func() [2]creds {
			t.Helper()
			var hc struct {
				CHAP       creds `json:"chap"`
				MutualCHAP creds `json:"mutual_chap"`
			}
			if err := json.Unmarshal([]byte(cli("host", "show", "pc1", "--secrets", "--json")), &hc); err != nil {
				t.Fatal(err)
			}
			return [2]creds{hc.CHAP, hc.MutualCHAP}
		}
		var names struct {
			InitiatorIQN string `json:"initiator_iqn"`
			TargetIQN    string `json:"target_iqn"`
		}
		// loginAs logs into pc1's target as pc1 with c, from the server's
		// namespace, checking the target's mutual CHAP answer too.
		loginAs := func(c [2]creds) error {
			return netns.Run(n.srvNS, func() error {
				ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
				defer cancel()
				sess, err := iscsiclient.Dial(ctx, iscsiclient.Config{Addr: n.serverIP + ":3260", Initiator: names.InitiatorIQN,
					Target: names.TargetIQN, CHAPUser: c[0].User, CHAPSecret: c[0].Secret, MutualUser: c[1].User, MutualSecret: c[1].Secret})
				if err == nil {
					sess.Close()
				}
				return err
			})
		}
		// bootOnce boots the VM to its marker and waits for QEMU to exit
		// (the boot sector ends it). The server must have changed the
		// secrets for this boot before iPXE logged in, and its target
		// takes the new ones and refuses those of the boot before: so
		// iPXE logged in with the new ones.
		bootOnce := func(srv *proc.Proc, nth string, before [2]creds) [2]creds {
			t.Helper()
			v := startVM(t, n.vmNS, biosArgs(n)...)
			took := expectMarker(t, v, marker, 120*time.Second)
			if err := v.Wait(30 * time.Second); err != nil && strings.Contains(err.Error(), "still running") {
				t.Fatal(err)
			}
			out := srv.Output()
			rotated := strings.Index(out, "boot: new CHAP secrets for this boot")
			login := strings.LastIndex(out, "boot: san-login")
			if rotated < 0 || login < rotated {
				t.Fatalf("%s boot: no rotation logged before the iSCSI login", nth)
			}
			now := secrets()
			if now[0] == before[0] || now[1] == before[1] {
				t.Fatalf("%s boot: the secrets were not rotated", nth)
			}
			if err := loginAs(now); err != nil {
				t.Fatalf("%s boot: the target does not take the boot's secrets: %v", nth, err)
			}
			if err := loginAs(before); err == nil {
				t.Fatalf("%s boot: the target still takes the previous secrets", nth)
			}
			t.Logf("%s boot with rotated secrets: power-on to marker %v", nth, took.Round(100*time.Millisecond))
			return now
		}

		srv := startServe(t, n, "--config", cfg)
		if err := json.Unmarshal([]byte(cli("host", "show", "pc1", "--json")), &names); err != nil {
			t.Fatal(err)
		}
		s0 := secrets()
		s1 := bootOnce(srv, "first", s0)
		if err := srv.Stop(); err != nil {
			t.Fatal(err)
		}
		srv2 := startServe(t, n, "--config", cfg)
		if again := secrets(); again != s1 {
			t.Fatal("a restart changed the secrets of the last boot")
		}
		if err := loginAs(s1); err != nil {
			t.Fatalf("after a restart the target does not take the secrets of the last boot: %v", err)
		}
		s2 := bootOnce(srv2, "second", s1)
		for _, s := range [][2]creds{s0, s1, s2} {
			if s[0].User != "pc1" || s[1].User != "pc1-target" || len(s[0].Secret) != 16 || len(s[1].Secret) != 16 {
				t.Fatalf("credentials %s/%s", s[0].User, s[1].User)
			}
		}
		if s2[0] == s0[0] || s2[1] == s0[1] {
			t.Fatal("the second boot's secrets are the first's again")
		}
		for _, out := range []string{srv.Output(), srv2.Output()} {
			for _, s := range [][2]creds{s0, s1, s2} {
				if strings.Contains(out, s[0].Secret) || strings.Contains(out, s[1].Secret) {
					t.Fatal("a CHAP secret in the server's output")
				}
			}
		}
	})

	// A client holding another mutual CHAP secret than the server (the
	// HOWTO's hand-written iPXE commands, typed into iPXE's shell) stops
	// with a clear message on its console, and the server's log says why.
	t.Run("bios-wrong-mutual-chap", func(t *testing.T) {
		need(t, []string{"ip", "qemu-system-x86_64"}, map[string]string{ipxeROM: "ipxe-qemu"})
		n, data, marker, cli := markerSite(t)
		cli("host", "add", "pc1", "--image", "golden", "--mac", clientMAC)
		var h struct {
			InitiatorIQN string `json:"initiator_iqn"`
			TargetIQN    string `json:"target_iqn"`
			CHAP         struct{ User, Secret string }
			MutualCHAP   struct{ User, Secret string } `json:"mutual_chap"`
		}
		for _, args := range [][]string{{"--json"}, {"--secrets", "--json"}} {
			if err := json.Unmarshal([]byte(cli(append([]string{"host", "show", "pc1"}, args...)...)), &h); err != nil {
				t.Fatal(err)
			}
		}
		srv := startServe(t, n, "--interface", n.srvIf, "--dhcp", "full", "--dhcp-range", poolRange, "--data-dir", data)
		keys, typist, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { keys.Close(); typist.Close() })
		v := qemu.Start(t, qemu.Config{Prefix: []string{"ip", "netns", "exec", n.vmNS}, LogDirEnv: "DISKLESS_PXE_LOGDIR", Keys: keys},
			biosArgs(n)...)
		// Into iPXE's shell before its own DHCP boots the host's script.
		_, _, at, err := v.WaitForFrom(0, time.Minute, "Press Ctrl-B")
		for i := 0; err == nil; i++ {
			typist.Write([]byte{0x02})
			var e error
			if _, _, at, e = v.WaitForFrom(at, 100*time.Millisecond, "iPXE>"); e == nil {
				break
			}
			if i == 50 {
				err = e
			}
		}
		if err != nil {
			t.Fatalf("no iPXE shell: %v", err)
		}
		// One key at a time, each once iPXE echoed the one before:
		// SeaBIOS moves the serial port's input into the BIOS keyboard
		// buffer (15 keys), which drops what overflows while iPXE is busy.
		typeLine := func(line string) {
			for _, k := range []byte(line) {
				typist.Write([]byte{k})
				if _, _, at, err = v.WaitForFrom(at, 10*time.Second, string(k)); err != nil {
					t.Fatalf("typing %q: no echo of %q: %v", line, k, err)
				}
			}
			typist.Write([]byte("\r"))
		}
		for _, c := range []string{"dhcp", "set initiator-iqn " + h.InitiatorIQN,
			"set username " + h.CHAP.User, "set password " + h.CHAP.Secret,
			"set reverse-username " + h.MutualCHAP.User, "set reverse-password not-the-servers-secret",
		} {
			typeLine(c)
			if _, _, at, err = v.WaitForFrom(at, 30*time.Second, "iPXE>"); err != nil {
				t.Fatalf("%q: %v", c, err)
			}
		}
		typeLine("sanboot iscsi:" + n.serverIP + "::::" + h.TargetIQN)
		i, _, _, err := v.WaitForFrom(at, time.Minute, "Permission denied", marker)
		if err != nil || i != 0 {
			t.Fatalf("sanboot with another mutual secret: want iPXE's Permission denied (matched %d): %v", i, err)
		}
		t.Logf("the client says: %s", lineWith(v.Console()[strings.LastIndex(v.Console(), "sanboot"):], "Permission denied"))
		if _, _, err := srv.WaitFor(10*time.Second, "holds another target secret (mutual CHAP)"); err != nil {
			t.Errorf("the server's log does not say why: %v", err)
		} else {
			t.Logf("the server says: %s", lineWith(srv.Output(), "holds another target secret"))
		}
	})

	// A machine the server has never seen, under unknown_hosts.policy
	// enroll: its first PXE boot makes it a host (pc-1, on a volatile
	// overlay of golden) and it boots to its marker in that same boot,
	// through its own script and CHAP login.
	t.Run("bios-enroll", func(t *testing.T) {
		need(t, []string{"ip", "qemu-system-x86_64"}, map[string]string{ipxeROM: "ipxe-qemu"})
		n, data, marker, cli := markerSite(t)
		cfg := filepath.Join(filepath.Dir(data), "diskless.yaml")
		os.WriteFile(cfg, []byte(fmt.Sprintf(`interface: %s
data_dir: %s
dhcp: {mode: full, range: %s}
unknown_hosts:
  policy: enroll
  enroll: {image: golden, disk: volatile, name_pattern: "pc-{n}", max_hosts: 4}
`, n.srvIf, data, poolRange)), 0o644)
		srv := startServe(t, n, "--config", cfg)
		v := startVM(t, n.vmNS, biosArgs(n)...)
		took := expectMarker(t, v, marker, 120*time.Second)
		t.Logf("BIOS, unknown machine enrolled at its first boot: power-on to marker %v", took.Round(100*time.Millisecond))
		expectStages(t, srv, "host enrolled", "dhcp: ", "iPXE script", "boot: san-login")
		if l := lineWith(srv.Output(), "boot: san-login"); !strings.Contains(l, "host=pc-1") {
			t.Errorf("the iSCSI login is not the enrolled host's: %s", l)
		}
		var h struct {
			Name, Source, Arch string
			MACs               []string
			Disk               struct{ Mode, Base string }
		}
		if err := json.Unmarshal([]byte(cli("host", "show", "pc-1", "--json")), &h); err != nil {
			t.Fatal(err)
		}
		if h.Source != "enroll" || len(h.MACs) != 1 || h.MACs[0] != clientMAC || h.Disk.Mode != "volatile" || h.Arch != "bios" {
			t.Errorf("enrolled host: %+v", h)
		}
	})

	t.Run("bios-proxy", func(t *testing.T) {
		need(t, []string{"ip", "qemu-system-x86_64", "dnsmasq"}, map[string]string{ipxeROM: "ipxe-qemu"})
		n := newTestNet(t, true)
		dir := tempDir(t)
		img := filepath.Join(dir, "disk.img")
		marker := markerDisk(t, img)
		// The site's DHCP server: addresses only, no boot options, no DNS.
		startDaemon(t, "dnsmasq", n.siteNS, "dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--port=0",
			"--interface="+n.siteIf, "--bind-interfaces", "--dhcp-range=10.77.0.100,10.77.0.200,1h",
			"--dhcp-leasefile="+filepath.Join(dir, "dnsmasq.leases"), "--pid-file="+filepath.Join(dir, "dnsmasq.pid"),
			"--log-dhcp")
		srv := startServe(t, n, "--interface", n.srvIf, "--dhcp", "proxy",
			"--host", clientMAC+"="+img, "--data-dir", filepath.Join(dir, "state"))
		v := startVM(t, n.vmNS, biosArgs(n)...)
		took := expectMarker(t, v, marker, 120*time.Second)
		t.Logf("BIOS, proxyDHCP beside dnsmasq: power-on to marker %v", took.Round(100*time.Millisecond))
		expectStages(t, srv, "dhcp: ", "iPXE script", "boot: san-login")
	})

	t.Run("uefi-full", func(t *testing.T) {
		need(t, []string{"ip", "qemu-system-x86_64", "grub-mkstandalone", "mkfs.vfat", "mcopy"}, map[string]string{
			ovmfCode: "ovmf", ovmfVars: "ovmf", "/usr/lib/ipxe/snponly.efi": "ipxe",
			"/usr/lib/grub/x86_64-efi/normal.mod": "grub-efi-amd64-bin",
		})
		n := newTestNet(t, false)
		dir := tempDir(t)
		marker := bootdisk.Marker(t, "DISKLESS-PXE-")
		img := filepath.Join(dir, "disk.img")
		uefiDisk(t, dir, img, marker)
		vars := ovmfVarsCopy(t, filepath.Join(dir, "OVMF_VARS.fd"))
		// The YAML form of the configuration.
		cfg := filepath.Join(dir, "diskless.yaml")
		os.WriteFile(cfg, []byte(fmt.Sprintf(`interface: %s
data_dir: %s
dhcp:
  mode: full
  range: %s
hosts:
  - mac: %s
    name: uefi-client
    image: %s
    chap: true
`, n.srvIf, filepath.Join(dir, "state"), poolRange, clientMAC, img)), 0o644)
		srv := startServe(t, n, "--config", cfg)
		v := startVM(t, n.vmNS, "-m", "256", "-machine", "q35",
			"-drive", "if=pflash,format=raw,unit=0,readonly=on,file="+ovmfCode,
			"-drive", "if=pflash,format=raw,unit=1,file="+vars,
			"-netdev", "tap,id=n0,ifname="+n.tap+",script=no,downscript=no",
			// romfile= (empty): OVMF's own PXE stack, not iPXE's ROM.
			"-device", "virtio-net-pci,netdev=n0,mac="+clientMAC+",romfile=,bootindex=1")
		took := expectMarker(t, v, marker, 240*time.Second)
		t.Logf("UEFI (OVMF PXE, snponly.efi), dhcp full: power-on to marker %v", took.Round(100*time.Millisecond))
		expectStages(t, srv, "dhcp: ", "boot: tftp", "iPXE script", "boot: san-login")
	})
}

// markerSite is a test network and a data directory whose image "golden"
// is a marker disk, with the CLI on it.
func markerSite(t *testing.T) (n *testNet, data, marker string, cli func(args ...string) string) {
	t.Helper()
	n = newTestNet(t, false)
	dir := tempDir(t)
	img := filepath.Join(dir, "golden.img")
	marker = markerDisk(t, img)
	data = filepath.Join(dir, "state")
	cli = nsCLI(t, n, data)
	cli("image", "import", "golden", img)
	return n, data, marker, cli
}

// nsCLI returns a runner of diskless commands on data in the server's
// namespace: with the server running, the CLI talks to its API there.
func nsCLI(t *testing.T, n *testNet, data string) func(args ...string) string {
	return cliIn(t, n.srvNS, data)
}

// cliIn runs the diskless CLI in namespace ns on data_dir data (a
// running server's API, when its server file is there).
func cliIn(t *testing.T, ns, data string) func(args ...string) string {
	return func(args ...string) string {
		t.Helper()
		argv := append([]string{"netns", "exec", ns, disklessBin}, append(args, "--data-dir", data)...)
		out, err := exec.Command("ip", argv...).CombinedOutput()
		if err != nil {
			t.Fatalf("diskless %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
}

func biosArgs(n *testNet) []string {
	return []string{"-m", "128", "-machine", "graphics=off",
		"-netdev", "tap,id=n0,ifname=" + n.tap + ",script=no,downscript=no",
		"-device", "e1000,netdev=n0,mac=" + clientMAC,
		"-boot", "n",
		// The boot sector ends with OUT 0xf4: QEMU exits at once.
		"-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"}
}

// startServe runs `diskless serve` in the server namespace and waits until
// it serves.
func startServe(t *testing.T, n *testNet, args ...string) *proc.Proc {
	t.Helper()
	return startServeWith(t, n, nil, args...)
}

// startServeWith is startServe handing over the listening sockets (socket
// activation).
func startServeWith(t *testing.T, n *testNet, sockets []*os.File, args ...string) *proc.Proc {
	t.Helper()
	d := startDaemonWith(t, proc.Config{Name: "diskless serve", ListenFDs: sockets}, n.srvNS,
		append([]string{disklessBin, "serve"}, args...)...)
	waitOutput(t, d, "msg=serving", 30*time.Second)
	return d
}

// expectMarker waits for the marker and returns the time from power-on.
func expectMarker(t *testing.T, v *qemu.VM, marker string, timeout time.Duration) time.Duration {
	t.Helper()
	i, took, err := v.WaitFor(timeout, marker, bootdisk.ReadError, "Could not boot")
	if err != nil {
		t.Fatal(err)
	}
	if i != 0 {
		t.Fatalf("boot failed before the marker")
	}
	return took
}

// expectStages checks that the server logged each boot stage for the
// client's MAC.
func expectStages(t *testing.T, d *proc.Proc, stages ...string) {
	t.Helper()
	out := d.Output()
	if l := lineWith(out, "ra: router solicitation"); l == "" && !strings.Contains(out, "ra: answering") {
		t.Errorf("the IPv6 router solicitation answerer did not start")
	}
	for _, s := range stages {
		found := false
		for _, l := range strings.Split(out, "\n") {
			if strings.Contains(l, s) && strings.Contains(l, "mac="+clientMAC) {
				t.Logf("server: %s", l)
				found = true
				break
			}
		}
		if !found {
			t.Errorf("no log line %q with mac=%s", s, clientMAC)
		}
	}
}

func lineWith(s, sub string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			return l
		}
	}
	return ""
}
