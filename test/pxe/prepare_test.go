package pxe

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/diskless-boot/diskless/internal/testutil/debimage"
)

// TestImagePrepare is the HOWTO's "transfer an existing installation":
// a Debian installed on a local disk (the end-to-end image with its iSCSI
// boot preparation undone: no open-iscsi, fstab by /dev/vda names, DHCP
// on its NIC in /etc/network/interfaces) is imported, diskless image
// prepare makes it boot from diskless, and a host boots it to the unit.
func TestImagePrepare(t *testing.T) {
	need(t, []string{"ip", "qemu-system-x86_64", "chroot", "losetup"}, map[string]string{ipxeROM: "ipxe-qemu"})
	im := debimage.Get(t, e2eRecipe)
	dir := tempDir(t)
	plain := installedDisk(t, im.Disk, dir)
	data := filepath.Join(dir, "state")
	// Prepare runs in this namespace: apt reaches the mirror from here.
	local := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(disklessBin, append(args, "--data-dir", data)...).CombinedOutput()
		if err != nil {
			t.Fatalf("diskless %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	local("image", "import", "installed", plain)
	start := time.Now()
	out := local("image", "prepare", "installed")
	t.Logf("image prepare took %v:\n%s", time.Since(start).Round(time.Second), out)
	for _, want := range []string{"firmware both", "install open-iscsi", "imported"} {
		if !strings.Contains(out, want) {
			t.Errorf("prepare's output lacks %q", want)
		}
	}
	n := newTestNet(t, false)
	cli := nsCLI(t, n, data)
	cli("host", "add", "pc1", "--image", "installed", "--disk", "persistent", "--mac", macPC1)
	startServe(t, n, e2eServeArgs(n, data)...)
	v := startVM(t, n.vmNS, e2eVMArgs(t, n, dir, macPC1, false, "poweroff")...)
	b, _ := waitBoot(t, v, "pc1", 0)
	if b.root != "/dev/sda3" || !strings.Contains(b.target, ".disk.") {
		t.Errorf("the prepared image booted %+v, want root /dev/sda3 on an iSCSI session", b)
	}
	t.Logf("the prepared image: power-on to the unit %v", b.took.Round(100*time.Millisecond))
	v.Wait(3 * time.Minute)
}

// installedDisk copies a built image and undoes its iSCSI boot
// preparation, so that it looks like a Debian installed on a local disk
// of a VM: open-iscsi purged (the initramfs made again without it),
// diskless' files gone, fstab by /dev/vda names, DHCP on ens3.
func installedDisk(t *testing.T, built, dir string) string {
	t.Helper()
	disk := filepath.Join(dir, "installed.img")
	run := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	run("cp", "--sparse=always", built, disk)
	loop := run("losetup", "--find", "--show", "--partscan", disk)
	t.Cleanup(func() { exec.Command("losetup", "--detach", loop).Run() })
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	// Without udev the partition nodes may not appear: partx asks the
	// kernel again (as the builder does).
	if _, err := os.Stat(loop + "p3"); err != nil {
		exec.Command("partx", "--add", loop).Run()
	}
	for i := 0; ; i++ {
		if _, err := os.Stat(loop + "p3"); err == nil || i == 50 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	var mounted []string
	mount := func(args ...string) {
		run(append([]string{"mount"}, args...)...)
		mounted = append(mounted, args[len(args)-1])
	}
	unmount := func() {
		for i := len(mounted) - 1; i >= 0; i-- {
			exec.Command("umount", mounted[i]).Run()
		}
		mounted = nil
	}
	t.Cleanup(unmount)
	mount(loop+"p3", mnt)
	mount("-t", "proc", "proc", filepath.Join(mnt, "proc"))
	mount("-t", "sysfs", "sysfs", filepath.Join(mnt, "sys"))
	mount("--bind", "/dev", filepath.Join(mnt, "dev"))
	os.WriteFile(filepath.Join(mnt, "usr/sbin/policy-rc.d"), []byte("#!/bin/sh\nexit 101\n"), 0o755)
	run("chroot", mnt, "dpkg", "--purge", "open-iscsi")
	for _, f := range []string{"usr/sbin/policy-rc.d", "etc/iscsi/iscsi.initramfs", "usr/local/sbin/diskless-ibft",
		"etc/systemd/system/diskless-ibft.service", "etc/systemd/system/sysinit.target.wants/diskless-ibft.service",
		"etc/initramfs-tools/hooks/diskless-nics", "etc/initramfs-tools/conf.d/diskless", "etc/network/interfaces.d/diskless-boot-nic"} {
		os.Remove(filepath.Join(mnt, f))
	}
	os.WriteFile(filepath.Join(mnt, "etc/fstab"), []byte("# an installation on a VM's disk\n"+
		"/dev/vda3 / ext4 errors=remount-ro 0 1\n/dev/vda2 /boot/efi vfat umask=0077 0 1\n"), 0o644)
	ifaces, _ := os.ReadFile(filepath.Join(mnt, "etc/network/interfaces"))
	os.WriteFile(filepath.Join(mnt, "etc/network/interfaces"),
		append(ifaces, "\nallow-hotplug ens3\niface ens3 inet dhcp\n"...), 0o644)
	if out := run("chroot", mnt, "sh", "-c", "lsinitramfs /boot/initrd.img-* | grep -c iscsistart || true"); out != "0" {
		t.Fatalf("the installed disk's initramfs still has iscsistart (%s)", out)
	}
	unmount()
	run("losetup", "--detach", loop)
	return disk
}
