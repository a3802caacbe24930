package pxe

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/diskless-boot/diskless/internal/imagebuild"
	"github.com/diskless-boot/diskless/internal/testutil/debimage"
	"github.com/diskless-boot/diskless/internal/testutil/output"
	"github.com/diskless-boot/diskless/internal/testutil/qemu"
)

// e2eScript runs once at every boot of the end-to-end image (a unit after
// the file systems are mounted): it prints what it booted from on the
// serial console, the lines of its earlier boots and the state of the
// loop's file, appends a line, syncs, and then does what QEMU's fw_cfg
// entry opt/diskless-e2e says: poweroff (the default), reboot (once:
// reboot, then power off at the next boot) or loop (append an fsync'd
// numbered line every 100 ms until killed, each acknowledged on the
// console with the number of kernel messages about failed I/O so far).
const e2eScript = `#!/bin/sh
say() { echo "$*" >/dev/ttyS0; }
modprobe qemu_fw_cfg 2>/dev/null
action=$(cat /sys/firmware/qemu_fw_cfg/by_name/opt/diskless-e2e/raw 2>/dev/null || echo poweroff)
dir=/var/lib/diskless-e2e
mkdir -p $dir
root=$(findmnt -n -o SOURCE /)
target=$(cat /sys/class/iscsi_session/session*/targetname 2>/dev/null | sort -u | tr '\n' ' ')
lines=$(cat $dir/boots 2>/dev/null | tr '\n' '|')
# The loop's file: how many lines from "line 1" on are in order, "+N" for
# N lines out of place.
loop=$(awk '$1 == "line" && $2 == n + 1 { n++; next } { bad++ } END { print n + 0 (bad ? "+" bad : "") }' $dir/loop 2>/dev/null)
say "DISKLESS-E2E-BOOT host=$(hostname) root=$root target=$target loop=${loop:-none} lines=$lines"
echo "boot of $(hostname) $(cat /proc/sys/kernel/random/boot_id)" >>$dir/boots
sync
case "$action" in
reboot)
	if [ ! -e $dir/rebooted ]; then
		touch $dir/rebooted; sync
		say "DISKLESS-E2E-REBOOTING"
		systemctl reboot
		exit 0
	fi
	rm -f $dir/rebooted; sync ;;
loop)
	i=0
	while :; do
		i=$((i + 1))
		echo "line $i" >>$dir/loop
		sync $dir/loop
		# What the kernel said about failed I/O so far.
		errors=$(dmesg | grep -c -i -E 'I/O error|EXT4-fs error|Remounting filesystem read-only|Aborting journal')
		say "DISKLESS-E2E-LOOP $i errors=$errors"
		sleep 0.1
	done ;;
esac
say "DISKLESS-E2E-DONE"
systemctl poweroff
`

const e2eUnit = `[Unit]
Description=diskless end-to-end test marker
After=local-fs.target iscsid.service open-iscsi.service
[Service]
Type=oneshot
ExecStart=/usr/local/sbin/diskless-e2e
[Install]
WantedBy=multi-user.target
`

// e2eRecipe is the image of the end-to-end test: the default build, plus
// the marker unit.
var e2eRecipe = imagebuild.Recipe{Suite: "bookworm", Size: 2 << 30, Firmware: imagebuild.Both,
	Files: []imagebuild.File{
		{Path: "/usr/local/sbin/diskless-e2e", Mode: 0o755, Content: e2eScript},
		{Path: "/etc/systemd/system/diskless-e2e.service", Content: e2eUnit},
	},
	Enable: []string{"diskless-e2e.service"}}

// Hosts of the end-to-end test, each its own machine (MAC).
const (
	macPC1  = "52:54:00:e2:e0:01"
	macPC2  = "52:54:00:e2:e0:02"
	macVol  = "52:54:00:e2:e0:03"
	macEFI  = "52:54:00:e2:e0:04"
	macKern = "52:54:00:e2:e0:05"
)

var (
	bootLine = regexp.MustCompile(`DISKLESS-E2E-BOOT host=(\S*) root=(\S*) target=(\S*)\s*loop=(\S*) lines=(.*)`)
	loopLine = regexp.MustCompile(`DISKLESS-E2E-LOOP (\d+) errors=(\d+)`)
)

// e2eBoot is what one boot printed.
type e2eBoot struct {
	host, root, target string
	loop               string   // the loop file's lines in order (+N out of place), "none"
	lines              []string // the boots before it, as the disk remembers them
	took               time.Duration
}

// TestDebianEndToEnd is issue 9's end-to-end test: the HOWTO's whole
// scenario with a Debian image diskless image build made (cached between
// runs), real firmware and a real initramfs, on a namespace network with
// diskless serve in dhcp full mode, CHAP and mutual CHAP on every host.
//
//  1. pc1 (SeaBIOS + iPXE ROM) boots: DHCP, iPXE script, sanboot, GRUB,
//     kernel, the initramfs logs in from the iBFT, root is the iSCSI disk;
//     a unit in the image prints root device and session target, appends
//     a line to a file, syncs and powers off.
//  2. pc1 again finds its line (persistence), pc2 on the same image does
//     not (isolation), a volatile host finds nothing of its first boot.
//     pc2 has chap_rotation boot: its boot's new secrets reach the
//     initramfs through the iBFT only.
//  3. A UEFI host (OVMF's own PXE, snponly.efi, iPXE, sanboot) starts the
//     ESP's GRUB and boots the same image.
//  4. A boot: kernel host boots the version's kernel and initrd over HTTP,
//     no GRUB, no secret on the command line.
//  6. diskless serve is killed (SIGKILL) and started again 5 s later while
//     pc1 appends an fsync'd line every 100 ms: the loop goes on, the
//     guest's kernel logs no failed I/O, and after a power cut every
//     acknowledged line is on the disk.
//  5. pc1 reboots itself (systemctl reboot) with root on iSCSI and comes
//     back: shutdown does not hang.
//
// 7, a client with another mutual CHAP secret, is TestPXEBoot's
// bios-wrong-mutual-chap: it needs no image.
func TestDebianEndToEnd(t *testing.T) {
	n, dir, data, cli := e2eSite(t)
	for _, h := range []struct{ name, mac, mode string }{
		{"pc1", macPC1, "persistent"}, {"vol", macVol, "volatile"},
	} {
		cli("host", "add", h.name, "--image", "debian", "--disk", h.mode, "--mac", h.mac)
	}
	// pc2 gets new CHAP secrets at every boot: its initramfs logs in with
	// the ones iPXE put in the iBFT, nothing in the image knows them.
	cli("host", "add", "pc2", "--image", "debian", "--disk", "persistent", "--mac", macPC2, "--chap-rotation", "boot")
	secretsOf := func(host string) string {
		var sec struct {
			CHAP       struct{ Secret string } `json:"chap"`
			MutualCHAP struct{ Secret string } `json:"mutual_chap"`
		}
		if err := json.Unmarshal([]byte(cli("host", "show", host, "--secrets", "--json")), &sec); err != nil {
			t.Fatal(err)
		}
		return sec.CHAP.Secret + "/" + sec.MutualCHAP.Secret
	}
	pc2Added := secretsOf("pc2")
	cli("host", "add", "kern", "--image", "debian", "--disk", "persistent", "--mac", macKern, "--boot", "kernel")
	cli("host", "add", "efi", "--image", "debian", "--disk", "persistent", "--mac", macEFI)
	serveArgs := e2eServeArgs(n, data)
	srv := startServe(t, n, serveArgs...)
	target := func(host string) string {
		var h struct {
			TargetIQN string `json:"target_iqn"`
		}
		if err := json.Unmarshal([]byte(cli("host", "show", host, "--json")), &h); err != nil {
			t.Fatal(err)
		}
		return h.TargetIQN
	}

	// boot powers a machine on and returns what its unit printed; QEMU
	// exits when the guest powers off.
	boot := func(name, mac string, uefi bool, action string) e2eBoot {
		t.Helper()
		args := e2eVMArgs(t, n, dir, mac, uefi, action)
		v := startVM(t, n.vmNS, args...)
		b, _ := waitBoot(t, v, name, 0)
		if b.host != name || b.root != "/dev/sda3" || strings.TrimSpace(b.target) != target(name) {
			t.Errorf("%s booted %+v, want host %s, root /dev/sda3 (no swap), target %s", name, b, name, target(name))
		}
		if err := v.Wait(3 * time.Minute); err != nil && strings.Contains(err.Error(), "still running") {
			t.Fatalf("%s did not power off: %v\n%s", name, err, output.Tail(v.Console(), 3000))
		}
		return b
	}

	// 1, 2: persistence and isolation.
	first := boot("pc1", macPC1, false, "poweroff")
	t.Logf("1. pc1, BIOS, sanboot: power-on to the unit %v", first.took.Round(100*time.Millisecond))
	if len(first.lines) != 0 {
		t.Errorf("pc1's first boot found lines %q", first.lines)
	}
	again := boot("pc1", macPC1, false, "poweroff")
	if len(again.lines) != 1 || !strings.HasPrefix(again.lines[0], "boot of pc1 ") {
		t.Errorf("2. pc1's second boot found %q, want its first boot's line", again.lines)
	}
	other := boot("pc2", macPC2, false, "poweroff")
	if len(other.lines) != 0 {
		t.Errorf("2. pc2 on the same image found %q: not isolated", other.lines)
	}
	if secretsOf("pc2") == pc2Added || !strings.Contains(srv.Output(), "new CHAP secrets for this boot") {
		t.Errorf("2. pc2 (chap_rotation boot) booted without new secrets")
	}
	boot("vol", macVol, false, "poweroff")
	if v := boot("vol", macVol, false, "poweroff"); len(v.lines) != 0 {
		t.Errorf("2. the volatile host found %q from its previous boot", v.lines)
	}
	t.Logf("2. pc1 again %v, pc2 %v", again.took.Round(100*time.Millisecond), other.took.Round(100*time.Millisecond))

	// 3: UEFI, from OVMF's own PXE on: its GRUB, a 9.4 MiB standalone
	// image, is one READ of iPXE's (above 8 MiB, the target's limit
	// once).
	if _, err := os.Stat(ovmfCode); err != nil {
		t.Errorf("3. no UEFI firmware (%s, Debian package ovmf)", ovmfCode)
	} else {
		u := boot("efi", macEFI, true, "poweroff")
		t.Logf("3. efi, UEFI (OVMF PXE, snponly.efi, sanboot): power-on to the unit %v", u.took.Round(100*time.Millisecond))
	}

	// 4: kernel and initrd over HTTP.
	k := boot("kern", macKern, false, "poweroff")
	t.Logf("4. kern, kernel + initrd over HTTP: power-on to the unit %v", k.took.Round(100*time.Millisecond))

	// 6: diskless serve killed and 5 s down under pc1's fsync'd append
	// loop; then the power is cut, and the boot of step 5 counts the
	// lines on the disk.
	lv := startVM(t, n.vmNS, e2eVMArgs(t, n, dir, macPC1, false, "loop")...)
	_, at := waitBoot(t, lv, "pc1", 0)
	r := restartUnderLoop(t, startLoop(t, lv, at, 10), serverRestart(t, n, &srv, nil, serveArgs), 5*time.Second, 30)
	if !r.survived {
		t.Errorf("6. pc1 did not survive a restart of diskless serve: %s", r.why)
	}
	t.Logf("6. kill -9, 5 s down: the loop stalled %v (server up in %v, the guest's login %v after)",
		r.stall.Round(100*time.Millisecond), r.startup.Round(time.Millisecond), r.reloginAfter.Round(time.Millisecond))
	lv.PowerCut()

	// 5: a reboot from the running system.
	v := qemu.Start(t, qemu.Config{Prefix: []string{"ip", "netns", "exec", n.vmNS}, LogDirEnv: "DISKLESS_PXE_LOGDIR", Reboot: true},
		e2eVMArgs(t, n, dir, macPC1, false, "reboot")...)
	b1, at := waitBoot(t, v, "pc1", 0)
	// Every line the loop acknowledged before the power cut is on the
	// disk, in order (it may have written a few more).
	if kept, err := strconv.Atoi(b1.loop); err != nil || kept < r.ackedAfter {
		t.Errorf("6. after the power cut pc1's loop file holds %q lines in order, want %d acknowledged ones", b1.loop, r.ackedAfter)
	} else {
		t.Logf("6. all %d acknowledged lines on the disk after the power cut (%d in all)", r.ackedAfter, kept)
	}
	_, began, at, err := v.WaitForFrom(at, 3*time.Minute, "DISKLESS-E2E-REBOOTING")
	if err != nil {
		t.Fatalf("5. %v", err)
	}
	b2, _ := waitBoot(t, v, "pc1", at)
	t.Logf("5. pc1 rebooted itself: back at the unit %v after the reboot began", (b2.took - began).Round(100*time.Millisecond))
	if len(b2.lines) != len(b1.lines)+1 {
		t.Errorf("5. after the reboot pc1 found %d lines, want %d", len(b2.lines), len(b1.lines)+1)
	}
	if err := v.Wait(3 * time.Minute); err != nil && strings.Contains(err.Error(), "still running") {
		t.Fatalf("5. pc1 did not power off after its reboot: %v", err)
	}

	// Every boot logged in with CHAP both ways, and no secret reached
	// the server's log.
	for _, host := range []string{"pc1", "pc2"} {
		user, mutual, _ := strings.Cut(secretsOf(host), "/")
		if out := srv.Output(); user == "" || mutual == "" || strings.Contains(out, user) || strings.Contains(out, mutual) {
			t.Errorf("%s without CHAP both ways, or a secret in the server's log", host)
		}
	}
}

// e2eSite is the start of a test with the end-to-end image: the image
// (built or from the cache), a test network, a temporary directory and a
// data directory where the image is imported as "debian" with its kernel,
// initrd and command line, and the CLI on it.
func e2eSite(t *testing.T) (n *testNet, dir, data string, cli func(args ...string) string) {
	t.Helper()
	need(t, []string{"ip", "qemu-system-x86_64"}, map[string]string{ipxeROM: "ipxe-qemu"})
	im := debimage.Get(t, e2eRecipe)
	n = newTestNet(t, false)
	dir = tempDir(t)
	data = filepath.Join(dir, "state")
	cli = nsCLI(t, n, data)
	cli("image", "import", "debian", im.Disk, "--kernel", im.Kernel, "--initrd", im.Initrd, "--cmdline", im.Cmdline)
	return n, dir, data, cli
}

// e2eServeArgs are the arguments of diskless serve in the end-to-end
// tests: DHCP and everything on the test network, the state in data.
func e2eServeArgs(n *testNet, data string) []string {
	return []string{"--interface", n.srvIf, "--dhcp", "full", "--dhcp-range", poolRange, "--data-dir", data}
}

// e2eVMArgs are QEMU's arguments for a machine of the end-to-end test:
// SeaBIOS with iPXE's ROM, or OVMF's own PXE on q35; the unit's action
// comes in QEMU's fw_cfg.
func e2eVMArgs(t *testing.T, n *testNet, dir, mac string, uefi bool, action string) []string {
	args := []string{"-m", "1024", "-machine", "graphics=off", "-fw_cfg", "name=opt/diskless-e2e,string=" + action,
		"-netdev", "tap,id=n0,ifname=" + n.tap + ",script=no,downscript=no"}
	if !uefi {
		return append(args, "-device", "e1000,netdev=n0,mac="+mac, "-boot", "n")
	}
	vars := ovmfVarsCopy(t, filepath.Join(dir, "OVMF_VARS-"+strings.ReplaceAll(mac, ":", "")+".fd"))
	args[3] = "q35"
	return append(args, "-drive", "if=pflash,format=raw,unit=0,readonly=on,file="+ovmfCode,
		"-drive", "if=pflash,format=raw,unit=1,file="+vars,
		"-device", "virtio-net-pci,netdev=n0,mac="+mac+",romfile=,bootindex=1")
}

// waitBoot waits, from console offset from on, for the stages of a boot
// up to the unit's line, logs the time of each from power-on, and returns
// what the unit printed and the offset after its line.
func waitBoot(t *testing.T, v *qemu.VM, name string, from int) (e2eBoot, int) {
	t.Helper()
	var stages []string
	var took time.Duration
	for _, s := range []string{"iPXE initialising", "boot.ipxe", "Linux version", "iscsistart: Connection", "Welcome to", "DISKLESS-E2E-BOOT"} {
		markers := []string{s, "Kernel panic", "ALERT!", "Gave up waiting", "emergency mode"}
		if s == "iscsistart: Connection" {
			// iscsistart writes its line to the console while the kernel
			// prints there too, and a kernel message can land inside it
			// (seen once in CI: the server logged the initramfs' login,
			// the console lacked the line). Reaching "Welcome to" means
			// root was mounted over iSCSI all the same.
			markers = append(markers, "Welcome to")
		}
		i, d, end, err := v.WaitForFrom(from, 8*time.Minute, markers...)
		if err == nil && markers[i] == "Welcome to" && s != "Welcome to" {
			stages = append(stages, s+" (line cut by kernel output)")
			continue
		}
		if err != nil || i != 0 {
			t.Fatalf("%s: waiting for %q: %v (matched %d)\n%s", name, s, err, i, output.Tail(v.Console(), 4000))
		}
		stages = append(stages, fmt.Sprintf("%s %v", s, d.Round(100*time.Millisecond)))
		from, took = end, d
	}
	t.Logf("%s: %s", name, strings.Join(stages, ", "))
	// The rest of the unit's line.
	if _, _, end, err := v.WaitForFrom(from, time.Minute, "\n"); err == nil {
		rest := v.RawConsole()[from:end]
		from = end
		if m := bootLine.FindStringSubmatch("DISKLESS-E2E-BOOT" + strings.TrimRight(rest, "\r\n")); m != nil {
			b := e2eBoot{host: m[1], root: m[2], target: m[3], loop: m[4], took: took}
			for _, l := range strings.Split(strings.TrimSpace(m[5]), "|") {
				if l = strings.TrimSpace(l); l != "" {
					b.lines = append(b.lines, l)
				}
			}
			return b, from
		}
	}
	t.Fatalf("%s: no unit line\n%s", name, output.Tail(v.Console(), 2000))
	return e2eBoot{}, from
}
