//go:build linux

// Command boot is the boot-time benchmark (issue 3, item 4): a QEMU machine
// with no disk boots from power-on to the marker its iSCSI LUN prints, on
// the namespace network of test/pxe, served first by `diskless serve`, then
// by the reference stack - dnsmasq (DHCP or proxyDHCP, TFTP of the iPXE
// binaries and of the iPXE script) + tgt serving the same image - for
//
//   - bios-full:  SeaBIOS + iPXE NIC ROM, full DHCP;
//   - bios-proxy: the same with proxyDHCP beside a dnsmasq that hands out
//     addresses only (the "site" DHCP server, in its own namespace);
//   - uefi-full:  OVMF's own PXE stack chainloading snponly.efi.
//
// Every run builds a fresh network (namespaces, bridge, tap) and fresh
// servers; only power-on (QEMU start) to marker is timed. Stacks alternate
// run by run. The reference dnsmasq tags iPXE's requests by user class
// (dhcp-userclass=set:ipxe,iPXE) and gives iPXE the script instead of the
// binary, so neither stack chainloads twice. The stack reference-ra (not
// run by default) is the reference plus an IPv6 address fd77::1/64 and
// dnsmasq's router advertisements (--enable-ra, ra-only): without any RA,
// iPXE waits ~14 s for an IPv6 router; diskless answers router
// solicitations itself.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/diskless-boot/diskless/bench/harness"
	"github.com/diskless-boot/diskless/internal/testutil/bootdisk"
	"github.com/diskless-boot/diskless/internal/testutil/netns"
	"github.com/diskless-boot/diskless/internal/testutil/output"
)

const (
	ovmfCode  = "/usr/share/OVMF/OVMF_CODE_4M.fd"
	ovmfVars  = "/usr/share/OVMF/OVMF_VARS_4M.fd"
	ipxeROM   = "/usr/lib/ipxe/qemu/efi-e1000.rom"
	clientMAC = "52:54:00:12:34:56"
	serverIP  = "10.77.0.1"
	siteIP    = "10.77.0.2"
	poolRange = "10.77.0.100-10.77.0.200"
	iqn       = "iqn.2026-11.org.example:bench"
)

func main() {
	runs := flag.Int("runs", 3, "runs per case and stack")
	cases := flag.String("cases", "bios-full,bios-proxy,uefi-full", "cases, comma-separated")
	stacks := flag.String("stacks", "diskless,reference,reference-ra", "stacks, comma-separated: diskless, reference, reference-ra")
	bin := flag.String("diskless", "", "diskless binary")
	ipxeDir := flag.String("ipxe", "/usr/lib/ipxe", "iPXE binaries")
	logDir := flag.String("logdir", "", "keep every run's console and server logs here")
	flag.Parse()
	if err := harness.NeedRoot([]string{"ip", "qemu-system-x86_64", "dnsmasq", "tgtd", "tgtadm",
		"grub-mkstandalone", "mkfs.vfat", "mcopy"}, ipxeROM, ovmfCode, ovmfVars,
		filepath.Join(*ipxeDir, "undionly.kpxe"), filepath.Join(*ipxeDir, "snponly.efi")); err != nil {
		fmt.Println("boot: SKIP:", err)
		return
	}
	if *bin == "" {
		fmt.Fprintln(os.Stderr, "boot: -diskless BINARY is required")
		os.Exit(2)
	}
	work, err := os.MkdirTemp("", "diskless-bootbench-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "boot:", err)
		os.Exit(1)
	}
	defer os.RemoveAll(work)
	b := &bench{bin: *bin, ipxeDir: *ipxeDir, work: work, logDir: *logDir}
	type key struct{ c, s string }
	results := map[key][]time.Duration{}
	failures := map[key]int{}
	cs, ss := strings.Split(*cases, ","), strings.Split(*stacks, ",")
	for _, c := range cs {
		for r := range *runs {
			order := slices.Clone(ss)
			if r%2 == 1 {
				slices.Reverse(order)
			}
			for _, s := range order {
				d, err := b.run(c, s, r)
				if err != nil {
					fmt.Printf("run %-10s %-9s %d: FAILED: %v\n", c, s, r+1, err)
					failures[key{c, s}]++
					continue
				}
				fmt.Printf("run %-10s %-9s %d: power-on to marker %v\n", c, s, r+1, d.Round(10*time.Millisecond))
				results[key{c, s}] = append(results[key{c, s}], d)
			}
		}
	}
	fmt.Println()
	fmt.Println("| case | stack | runs ok | failed | median | min | max |")
	fmt.Println("|---|---|---|---|---|---|---|")
	for _, c := range cs {
		for _, s := range ss {
			d := results[key{c, s}]
			if len(d) == 0 {
				fmt.Printf("| %s | %s | 0 | %d | - | - | - |\n", c, s, failures[key{c, s}])
				continue
			}
			slices.Sort(d)
			fmt.Printf("| %s | %s | %d | %d | %.2f s | %.2f s | %.2f s |\n", c, s, len(d), failures[key{c, s}],
				median(d).Seconds(), d[0].Seconds(), d[len(d)-1].Seconds())
		}
	}
}

// median of d, which is sorted.
func median(s []time.Duration) time.Duration {
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

type bench struct {
	bin, ipxeDir, work, logDir string
}

// network is one run's test network, as in test/pxe:
//
//	ns vm:   bridge ── tap (QEMU)
//	           ├── veth ══ ns srv:  10.77.0.1/24 (diskless, or dnsmasq + tgtd)
//	           └── veth ══ ns site: 10.77.0.2/24 (dnsmasq addresses only, proxy case)
type network struct {
	vmNS, srvNS, siteNS string
	tap, srvIf, siteIf  string
}

func newNetwork(c *harness.Cleanup, withSite bool) (*network, error) {
	id := netns.ID()
	n := &network{vmNS: "dlboot-v-" + id, srvNS: "dlboot-s-" + id, siteNS: "dlboot-d-" + id,
		tap: "bt" + id, srvIf: "bs" + id, siteIf: "bd" + id}
	br := "bb" + id
	nss := []string{n.vmNS, n.srvNS}
	if withSite {
		nss = append(nss, n.siteNS)
	}
	for _, ns := range nss {
		if err := harness.AddNS(c, ns); err != nil {
			return nil, err
		}
	}
	steps := [][]string{
		{"ip", "-n", n.vmNS, "link", "add", br, "type", "bridge", "forward_delay", "0"},
		{"ip", "-n", n.vmNS, "tuntap", "add", "dev", n.tap, "mode", "tap"},
		{"ip", "-n", n.vmNS, "link", "set", n.tap, "master", br, "up"},
		{"ip", "-n", n.vmNS, "link", "add", "v" + n.srvIf, "type", "veth", "peer", "name", n.srvIf, "netns", n.srvNS},
		{"ip", "-n", n.vmNS, "link", "set", "v" + n.srvIf, "master", br, "up"},
		{"ip", "-n", n.vmNS, "link", "set", br, "up"},
		{"ip", "-n", n.srvNS, "addr", "add", serverIP + "/24", "dev", n.srvIf},
		{"ip", "-n", n.srvNS, "link", "set", n.srvIf, "up"},
	}
	if withSite {
		steps = append(steps,
			[]string{"ip", "-n", n.vmNS, "link", "add", "v" + n.siteIf, "type", "veth", "peer", "name", n.siteIf, "netns", n.siteNS},
			[]string{"ip", "-n", n.vmNS, "link", "set", "v" + n.siteIf, "master", br, "up"},
			[]string{"ip", "-n", n.siteNS, "addr", "add", siteIP + "/24", "dev", n.siteIf},
			[]string{"ip", "-n", n.siteNS, "link", "set", n.siteIf, "up"},
		)
	}
	return n, harness.Steps(steps...)
}

func (b *bench) run(kase, stack string, round int) (took time.Duration, err error) {
	var c harness.Cleanup
	defer c.Run()
	dir, err := os.MkdirTemp(b.work, kase+"-"+stack+"-")
	if err != nil {
		return 0, err
	}
	marker := "DISKLESS-BENCH-" + netns.ID() + netns.ID()
	img := filepath.Join(dir, "disk.img")
	uefi := kase == "uefi-full"
	if uefi {
		err = bootdisk.UEFI(dir, img, marker)
	} else {
		err = os.WriteFile(img, bootdisk.MBR(4<<20, marker), 0o644)
	}
	if err != nil {
		return 0, err
	}
	proxy := kase == "bios-proxy"
	n, err := newNetwork(&c, proxy)
	if err != nil {
		return 0, err
	}
	var procs []*harness.Proc
	defer func() {
		if b.logDir != "" {
			for _, p := range procs {
				name := fmt.Sprintf("%s-%s-%d-%s.log", kase, stack, round+1, strings.ReplaceAll(p.Name(), " ", "_"))
				os.WriteFile(filepath.Join(b.logDir, name), []byte(p.Output()), 0o644)
			}
		}
	}()
	start := func(name, ns string, ready string, args ...string) error {
		p, err := harness.Start(&c, name, ns, args...)
		if err != nil {
			return err
		}
		procs = append(procs, p)
		if ready != "" {
			if _, _, err := p.WaitFor(30*time.Second, ready); err != nil {
				return fmt.Errorf("%v\n%s", err, output.Tail(p.Output(), 2000))
			}
		}
		return nil
	}
	if proxy {
		// The site's DHCP server: addresses only.
		if err := start("site-dnsmasq", n.siteNS, "DHCP, IP range", "dnsmasq", "--no-daemon", "--conf-file=/dev/null",
			"--port=0", "--interface="+n.siteIf, "--bind-interfaces", "--dhcp-range=10.77.0.100,10.77.0.200,1h",
			"--dhcp-leasefile="+filepath.Join(dir, "site.leases"), "--pid-file="+filepath.Join(dir, "site.pid"),
			"--log-facility=-", "--log-dhcp"); err != nil {
			return 0, err
		}
	}
	switch stack {
	case "diskless":
		mode := "full"
		args := []string{b.bin, "serve", "--interface", n.srvIf, "--host", clientMAC + "=" + img,
			"--data-dir", filepath.Join(dir, "state")}
		if proxy {
			mode = "proxy"
		} else {
			args = append(args, "--dhcp-range", poolRange)
		}
		args = append(args, "--dhcp", mode)
		if err := start("diskless", n.srvNS, "msg=serving", args...); err != nil {
			return 0, err
		}
	case "reference", "reference-ra":
		ra := stack == "reference-ra"
		if ra {
			if err := harness.Sh("ip", "-n", n.srvNS, "addr", "add", "fd77::1/64", "dev", n.srvIf, "nodad"); err != nil {
				return 0, err
			}
		}
		if err := b.startTgt(&c, n, dir, img, start); err != nil {
			return 0, err
		}
		if err := b.startRefDnsmasq(n, dir, proxy, ra, start); err != nil {
			return 0, err
		}
	default:
		return 0, fmt.Errorf("unknown stack %q", stack)
	}

	qemu := []string{"qemu-system-x86_64", "-display", "none", "-monitor", "none", "-serial", "stdio", "-no-reboot"}
	timeout := 120 * time.Second
	if uefi {
		vars := filepath.Join(dir, "OVMF_VARS.fd")
		data, err := os.ReadFile(ovmfVars)
		if err != nil {
			return 0, err
		}
		os.WriteFile(vars, data, 0o644)
		qemu = append(qemu, "-m", "256", "-machine", "q35",
			"-drive", "if=pflash,format=raw,unit=0,readonly=on,file="+ovmfCode,
			"-drive", "if=pflash,format=raw,unit=1,file="+vars,
			"-netdev", "tap,id=n0,ifname="+n.tap+",script=no,downscript=no",
			"-device", "virtio-net-pci,netdev=n0,mac="+clientMAC+",romfile=,bootindex=1")
		timeout = 240 * time.Second
	} else {
		qemu = append(qemu, "-m", "128", "-machine", "graphics=off",
			"-netdev", "tap,id=n0,ifname="+n.tap+",script=no,downscript=no",
			"-device", "e1000,netdev=n0,mac="+clientMAC, "-boot", "n",
			"-device", "isa-debug-exit,iobase=0xf4,iosize=0x04")
	}
	vm, err := harness.Start(&c, "qemu", n.vmNS, qemu...)
	if err != nil {
		return 0, err
	}
	procs = append(procs, vm)
	defer vm.Kill()
	i, took, err := vm.WaitFor(timeout, marker, bootdisk.ReadError, "Could not boot")
	if err != nil {
		return 0, err
	}
	if i != 0 {
		return 0, fmt.Errorf("boot failed before the marker:\n%s", output.Tail(vm.Output(), 1500))
	}
	return took, nil
}

// startTgt runs tgtd in the server namespace on 10.77.0.1:3260 with its own
// control port, serving img as LUN 1 of iqn. tgtd ignores SIGTERM: cleanup
// deletes the system through tgtadm, then kills it.
func (b *bench) startTgt(c *harness.Cleanup, n *network, dir, img string,
	start func(name, ns, ready string, args ...string) error) error {
	ctl := strconv.Itoa(20000 + os.Getpid()%10000 + int(time.Now().UnixNano()%1000))
	p, err := harness.Start(c, "tgtd", n.srvNS, "tgtd", "-f", "-C", ctl, "--iscsi", "portal="+serverIP+":3260")
	if err != nil {
		return err
	}
	c.Add(func() {
		harness.Sh("tgtadm", "-C", ctl, "--op", "delete", "--mode", "system")
		select {
		case <-p.Exited():
		case <-time.After(2 * time.Second):
		}
		p.Kill()
		os.Remove("/var/run/tgtd/socket." + ctl)
		os.Remove("/var/run/tgtd/socket." + ctl + ".lock")
	})
	var up bool
	for range 100 {
		if harness.Sh("tgtadm", "-C", ctl, "--op", "show", "--mode", "target") == nil {
			up = true
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !up {
		return fmt.Errorf("tgtd did not come up:\n%s", p.Output())
	}
	return harness.Steps(
		[]string{"tgtadm", "-C", ctl, "--lld", "iscsi", "--op", "new", "--mode", "target", "--tid", "1", "-T", iqn},
		[]string{"tgtadm", "-C", ctl, "--lld", "iscsi", "--op", "new", "--mode", "logicalunit", "--tid", "1", "--lun", "1", "-b", img},
		[]string{"tgtadm", "-C", ctl, "--lld", "iscsi", "--op", "bind", "--mode", "target", "--tid", "1", "-I", "ALL"},
	)
}

// startRefDnsmasq runs the reference DHCP/proxyDHCP + TFTP server, with
// IPv6 router advertisements for the reference-ra stack. Its TFTP
// root holds copies of the iPXE binaries and the script, fetched by TFTP.
func (b *bench) startRefDnsmasq(n *network, dir string, proxy, ra bool,
	start func(name, ns, ready string, args ...string) error) error {
	root := filepath.Join(dir, "tftp")
	if err := os.Mkdir(root, 0o755); err != nil {
		return err
	}
	for _, f := range []string{"undionly.kpxe", "snponly.efi"} {
		data, err := os.ReadFile(filepath.Join(b.ipxeDir, f))
		if err != nil {
			return err
		}
		os.WriteFile(filepath.Join(root, f), data, 0o644)
	}
	script := "#!ipxe\nsanboot iscsi:" + serverIP + "::3260:1:" + iqn + "\n"
	os.WriteFile(filepath.Join(root, "boot.ipxe"), []byte(script), 0o644)
	args := []string{"dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--port=0",
		"--interface=" + n.srvIf, "--bind-interfaces", "--log-facility=-", "--log-dhcp",
		"--dhcp-leasefile=" + filepath.Join(dir, "ref.leases"), "--pid-file=" + filepath.Join(dir, "ref.pid"),
		"--enable-tftp", "--tftp-root=" + root,
		"--dhcp-userclass=set:ipxe,iPXE"}
	if ra {
		// Router advertisements (SLAAC prefix fd77::/64, no DHCPv6): iPXE
		// stops waiting for an IPv6 router.
		args = append(args, "--enable-ra", "--dhcp-range=fd77::,ra-only")
	}
	if proxy {
		args = append(args, "--dhcp-range=10.77.0.0,proxy,255.255.255.0",
			"--pxe-service=tag:!ipxe,x86PC,undionly,undionly.kpxe",
			"--pxe-service=tag:ipxe,x86PC,script,boot.ipxe")
	} else {
		args = append(args, "--dhcp-range=10.77.0.100,10.77.0.200,1h",
			"--dhcp-match=set:efi64,option:client-arch,7",
			"--dhcp-boot=tag:!ipxe,tag:efi64,snponly.efi,,"+serverIP,
			"--dhcp-boot=tag:!ipxe,tag:!efi64,undionly.kpxe,,"+serverIP,
			"--dhcp-boot=tag:ipxe,boot.ipxe,,"+serverIP)
	}
	return start("ref-dnsmasq", n.srvNS, "TFTP root", args...)
}
