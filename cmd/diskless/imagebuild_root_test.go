package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/diskless-boot/diskless/internal/imagebuild"
	"github.com/diskless-boot/diskless/internal/testutil/debimage"
)

// testKey is an SSH public key for the image (no one has its private half).
const testKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDisklessImageBuildTestKeyXXXXXXXXXXXXXXXXXX diskless-test\n"

// The recipe of the root test; debimage caches its result by recipe and
// builder source.
func rootTestRecipe() imagebuild.Recipe {
	return imagebuild.Recipe{Suite: "bookworm", Size: 2 << 30, Firmware: imagebuild.Both, Swap: 256 << 20, SSHKey: testKey}
}

// diskless image build really builds a small image that boots either way
// and imports it as the image's first version with its kernel and initrd;
// the disk is what the HOWTO and issue 9 ask for, and nothing of the build
// stays mounted or attached. When the builder has not changed since the
// cached image of this recipe was built, the cached image is checked
// instead of building again (CI time).
func TestImageBuildRoot(t *testing.T) {
	debimage.Skip(t, imagebuild.Both)
	r := rootTestRecipe()
	if im, ok := debimage.Cached(r); ok {
		t.Logf("builder unchanged since %s was built: checking it instead of building", im.Dir)
		verifyImage(t, im.Disk, im.Kernel, im.Initrd)
		return
	}
	dir := t.TempDir()
	key := filepath.Join(dir, "key.pub")
	os.WriteFile(key, []byte(testKey), 0o644)
	start := time.Now()
	out, err := cli(t, "image", "build", "deb12", "--data-dir", dir, "--size", "2G", "--swap", "256M", "--firmware", "both",
		"--ssh-key", key, "--cache-dir", debimage.PackageCache())
	if err != nil {
		t.Fatalf("%v\n%s\nlog:\n%s", err, out, tailFile(filepath.Join(dir, "build", "deb12.log")))
	}
	t.Logf("built and imported in %s", time.Since(start).Round(time.Second))
	if !strings.Contains(out, "image deb12 version 1 imported") {
		t.Errorf("output: %s", out)
	}
	noLeftovers(t, dir)
	v := filepath.Join(dir, "images", "deb12", "v1")
	verifyImage(t, v+".img", v+".kernel", v+".initrd")
	if ents, _ := os.ReadDir(filepath.Join(dir, "build")); len(ents) != 1 || ents[0].Name() != "deb12.log" {
		t.Errorf("build dir holds more than the log after the import: %v", ents)
	}
	if t.Failed() {
		return // a bad image is not cached
	}
	if b, err := os.ReadFile(v + ".cmdline"); err != nil || !strings.HasPrefix(string(b), "root=UUID=") {
		t.Errorf("the version's kernel command line: %q %v", b, err)
	}
	if _, err := debimage.Store(r, &imagebuild.Result{Disk: v + ".img", Kernel: v + ".kernel", Initrd: v + ".initrd", Cmdline: v + ".cmdline"}); err != nil {
		t.Logf("not cached: %v", err)
	}
}

// noLeftovers fails when a loop device or a mount of the build under dir
// remains.
func noLeftovers(t *testing.T, dir string) {
	t.Helper()
	files, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, f := range files {
		if b, _ := os.ReadFile(f); strings.HasPrefix(string(b), dir) {
			t.Errorf("loop device left: %s -> %s", f, b)
		}
	}
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	for _, l := range strings.Split(string(mi), "\n") {
		if strings.Contains(l, " "+dir) {
			t.Errorf("mount left: %s", l)
		}
	}
}

func tailFile(p string) string {
	b, _ := os.ReadFile(p)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return string(out)
}

// verifyImage checks a built disk from outside: its partition table, and,
// mounted read-only, what makes it boot on any host.
func verifyImage(t *testing.T, disk, kernel, initrd string) {
	t.Helper()
	table := run(t, "sgdisk", "-p", disk)
	for _, w := range []string{"EF02  bios-boot", "EF00  esp", "8200  swap", "8300  root"} {
		if !regexp.MustCompile(`(?m)^\s+\d+\s+\d+\s+\d+\s+.*` + w + `$`).MatchString(table) {
			t.Errorf("partition table lacks %q:\n%s", w, table)
		}
	}
	loop := strings.TrimSpace(run(t, "losetup", "--find", "--show", "--partscan", "--read-only", disk))
	t.Cleanup(func() { exec.Command("losetup", "--detach", loop).Run() })
	if _, err := os.Stat(loop + "p4"); err != nil {
		run(t, "partx", "--add", loop)
	}
	mnt := t.TempDir()
	run(t, "mount", "-o", "ro,noload", loop+"p4", mnt)
	defer func() {
		if err := exec.Command("umount", mnt).Run(); err != nil {
			t.Errorf("umount %s: %v", mnt, err)
		}
	}()
	uuid := func(dev string) string {
		return strings.TrimSpace(run(t, "blkid", "-p", "-s", "UUID", "-o", "value", dev))
	}
	read := func(p string) string {
		b, err := os.ReadFile(filepath.Join(mnt, p))
		if err != nil {
			t.Error(err)
		}
		return string(b)
	}
	fstab := read("etc/fstab")
	root := uuid(loop + "p4")
	for _, w := range []string{"UUID=" + root + " / ext4 ", "UUID=" + uuid(loop+"p2") + " /boot/efi vfat ", "UUID=" + uuid(loop+"p3") + " none swap "} {
		if !strings.Contains(fstab, w) {
			t.Errorf("fstab lacks %q:\n%s", w, fstab)
		}
	}
	if cfg := read("boot/grub/grub.cfg"); !strings.Contains(cfg, "root=UUID="+root+" ro console=tty0 console=ttyS0,115200n8") || strings.Contains(cfg, "/dev/loop") {
		t.Errorf("grub.cfg does not boot root by UUID with the serial console:\n%s", grepLines(cfg, "linux"))
	}
	if s := read("etc/iscsi/iscsi.initramfs"); !strings.Contains(s, "\nISCSI_AUTO=true\n") {
		t.Errorf("iscsi.initramfs: %q", s)
	}
	kernels, _ := filepath.Glob(filepath.Join(mnt, "boot", "vmlinuz-*"))
	if len(kernels) != 1 {
		t.Fatalf("kernels in /boot: %v", kernels)
	}
	kver := strings.TrimPrefix(filepath.Base(kernels[0]), "vmlinuz-")
	list := run(t, "chroot", mnt, "lsinitramfs", "/boot/initrd.img-"+kver)
	for _, w := range []string{"/iscsi_tcp.ko", "/iscsi_ibft.ko", "scripts/local-top/iscsi", "usr/sbin/iscsistart", "etc/iscsi.initramfs",
		"/virtio_net.ko", "/e1000.ko", "/e1000e.ko", "/r8169.ko", "/igb.ko"} {
		if !strings.Contains(list, w) {
			t.Errorf("initramfs lacks %s", w)
		}
	}
	for img, extracted := range map[string]string{"boot/vmlinuz-" + kver: kernel, "boot/initrd.img-" + kver: initrd} {
		a, _ := os.ReadFile(filepath.Join(mnt, img))
		b, err := os.ReadFile(extracted)
		if err != nil || len(a) == 0 || !bytes.Equal(a, b) {
			t.Errorf("extracted %s differs from the image's %s (%v)", extracted, img, err)
		}
	}
	// GRUB for BIOS: boot.img in the MBR, core.img in the BIOS boot
	// partition. For UEFI: the removable path on the ESP.
	if mbr := run(t, "dd", "if="+disk, "bs=512", "count=1", "status=none"); !strings.Contains(mbr, "GRUB") {
		t.Error("no GRUB in the MBR")
	}
	if core := run(t, "dd", "if="+loop+"p1", "bs=512", "count=1", "status=none"); strings.Trim(core, "\x00") == "" {
		t.Error("BIOS boot partition is empty: no GRUB core")
	}
	efi := exec.Command("mtype", "-i", loop+"p2", "::/EFI/BOOT/BOOTX64.EFI")
	efi.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1")
	if b, err := efi.Output(); err != nil || !bytes.HasPrefix(b, []byte("MZ")) || len(b) < 1<<20 {
		t.Errorf("\\EFI\\BOOT\\BOOTX64.EFI: %d bytes, %v", len(b), err)
	}
	for _, p := range []string{"etc/machine-id", "etc/hostname"} {
		if s := read(p); s != "" {
			t.Errorf("%s = %q, want empty", p, s)
		}
	}
	if _, err := os.Stat(filepath.Join(mnt, "usr/sbin/policy-rc.d")); err == nil {
		t.Error("policy-rc.d left in the image")
	}
	if keys, _ := filepath.Glob(filepath.Join(mnt, "etc/ssh/ssh_host_*")); len(keys) > 0 {
		t.Errorf("SSH host keys in the image: %v", keys)
	}
	if s := read("root/.ssh/authorized_keys"); s != testKey {
		t.Errorf("authorized_keys %q", s)
	}
	for _, u := range []string{"sysinit.target.wants/diskless-ibft.service", "sysinit.target.wants/iscsid.service",
		"sysinit.target.wants/diskless-ssh-keys.service", "getty.target.wants/serial-getty@ttyS0.service"} {
		if _, err := os.Lstat(filepath.Join(mnt, "etc/systemd/system", u)); err != nil {
			t.Errorf("not enabled: %v", err)
		}
	}
	if archives, _ := filepath.Glob(filepath.Join(mnt, "var/cache/apt/archives/*.deb")); len(archives) > 0 {
		t.Errorf("%d packages left in the image's apt cache", len(archives))
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
