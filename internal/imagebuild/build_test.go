package imagebuild

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeRunner plays the build machine's tools without root: it records
// every command, answers the ones whose output the builder reads, plays
// debootstrap by leaving a kernel in /boot, and fails (or cancels the
// build) at one chosen command.
type fakeRunner struct {
	mu     sync.Mutex
	cmds   []command
	failAt int             // 1-based index of the command that fails; 0: none
	onFail func() error    // what the failing command returns (default: an error)
	mnt    func() string   // the builder's mount point
	hook   func(c command) // called for every command
	ctxErr []error         // the state of each command's context when it ran
}

func (f *fakeRunner) run(ctx context.Context, c command) (string, error) {
	f.mu.Lock()
	f.cmds = append(f.cmds, c)
	f.ctxErr = append(f.ctxErr, ctx.Err())
	n := len(f.cmds)
	f.mu.Unlock()
	if f.hook != nil {
		f.hook(c)
	}
	if n == f.failAt {
		if f.onFail != nil {
			return "", f.onFail()
		}
		return "", fmt.Errorf("%s: injected failure", c.Name)
	}
	if err := ctx.Err(); err != nil {
		return "", err
	}
	switch c.Name {
	case "losetup":
		if slices.Contains(c.Args, "--find") {
			return "/dev/loop9\n", nil
		}
	case "blkid":
		dev := c.Args[len(c.Args)-1]
		return "uuid-of-" + filepath.Base(dev) + "\n", nil
	case "chroot":
		if c.Args[1] == "update-grub" {
			// What grub-mkconfig writes without udev: the root device.
			dev := ""
			for _, m := range f.cmds {
				if m.Name == "mount" && m.Args[len(m.Args)-1] == c.Args[0] {
					dev = m.Args[len(m.Args)-2]
				}
			}
			os.MkdirAll(filepath.Join(c.Args[0], "boot/grub"), 0o755)
			os.WriteFile(filepath.Join(c.Args[0], "boot/grub/grub.cfg"),
				[]byte("search --no-floppy --fs-uuid --set=root uuid-of-x\n\tlinux\t/boot/vmlinuz-6.1.0-99-amd64 root="+dev+" ro console=tty0\n"), 0o644)
		}
	case "debootstrap":
		root := c.Args[len(c.Args)-2]
		os.MkdirAll(filepath.Join(root, "boot"), 0o755)
		os.WriteFile(filepath.Join(root, "boot", "vmlinuz-6.1.0-99-amd64"), []byte("KERNEL"), 0o644)
		os.WriteFile(filepath.Join(root, "boot", "initrd.img-6.1.0-99-amd64"), []byte("INITRD"), 0o644)
		os.MkdirAll(filepath.Join(root, "etc", "ssh"), 0o755)
		os.WriteFile(filepath.Join(root, "etc", "ssh", "ssh_host_ed25519_key"), []byte("secret"), 0o600)
		os.WriteFile(filepath.Join(root, "etc", "machine-id"), []byte("0123456789abcdef\n"), 0o444)
		os.WriteFile(filepath.Join(root, "etc", "hostname"), []byte("buildhost\n"), 0o644)
	}
	return "", nil
}

func (f *fakeRunner) lines() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, c := range f.cmds {
		out = append(out, c.String())
	}
	return out
}

func testRecipe() Recipe {
	return Recipe{Suite: "bookworm", Size: 2 << 30, Firmware: Both, Mirror: "http://mirror.test/debian", Swap: 256 << 20,
		SSHKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForTests root@test\n", RootPassword: "hunter2",
		Packages: []string{"less"}}
}

func fakeOptions(t *testing.T, f *fakeRunner) Options {
	return Options{WorkDir: t.TempDir(), CacheDir: t.TempDir(), run: f, exists: func(string) bool { return true }, fake: true}
}

// A build runs the HOWTO's steps in order against the loop device, writes
// what makes the image boot on any host, and undoes every mount and the
// loop device, newest first.
func TestBuildSteps(t *testing.T) {
	f := &fakeRunner{}
	opt := fakeOptions(t, f)
	var phases []string
	opt.Progress = func(p string, _ time.Duration) { phases = append(phases, p) }
	var mnt string
	f.hook = func(c command) {
		if c.Name == "debootstrap" {
			mnt = c.Args[len(c.Args)-2]
		}
		if c.Name == "umount" && c.Args[0] == mnt {
			// The last moment the image's files are there to look at.
			checkImageFiles(t, mnt)
		}
	}
	res, err := Build(context.Background(), testRecipe(), opt)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(phases, "debootstrap bookworm from http://mirror.test/debian") || phases[len(phases)-1] != "unmount and detach" {
		t.Errorf("phases: %q", phases)
	}
	lines := f.lines()
	want := []string{
		"sgdisk --zap-all --set-alignment=2048 --new=1:0:+1024K --typecode=1:EF02 --change-name=1:bios-boot --new=2:0:+131072K --typecode=2:EF00 --change-name=2:esp --new=3:0:+262144K --typecode=3:8200 --change-name=3:swap --new=4:0:0 --typecode=4:8300 --change-name=4:root " + res.Disk,
		"losetup --find --show --partscan " + res.Disk,
		"mkfs.ext4 -q -F -L root /dev/loop9p4",
		"mkfs.vfat -F 32 -n ESP /dev/loop9p2",
		"mkswap -L swap /dev/loop9p3",
		"mount /dev/loop9p4 " + mnt,
		"debootstrap --arch=amd64 --variant=- --cache-dir=" + filepath.Join(opt.CacheDir, "bookworm-amd64", "debootstrap") + " bookworm " + mnt + " http://mirror.test/debian",
		"chroot " + mnt + " debconf-set-selections",
		"chroot " + mnt + " apt-get update",
		"chroot " + mnt + " apt-get install --yes --no-install-recommends -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold linux-image-amd64 initramfs-tools open-iscsi busybox systemd-sysv grub-pc grub-efi-amd64-bin openssh-server less",
		"chroot " + mnt + " systemctl enable diskless-ibft.service iscsid.service open-iscsi.service serial-getty@ttyS0.service diskless-ssh-keys.service",
		"chroot " + mnt + " chpasswd",
		"chroot " + mnt + " grub-install --target=i386-pc /dev/loop9",
		"chroot " + mnt + " update-grub",
		"mcopy -D o -i /dev/loop9p2 " + mnt + "/tmp/BOOTX64.EFI ::/EFI/BOOT/BOOTX64.EFI",
		"umount " + filepath.Join(mnt, "var/cache/apt/archives"),
		"umount " + filepath.Join(mnt, "proc"),
		"umount " + mnt,
		"losetup --detach /dev/loop9",
	}
	at := 0
	for _, w := range want {
		i := slices.Index(lines[at:], w)
		if i < 0 {
			t.Fatalf("missing or out of order: %q\nran:\n%s", w, strings.Join(lines, "\n"))
		}
		at += i + 1
	}
	if c := f.cmds[slices.Index(lines, "chroot "+mnt+" chpasswd")]; c.Stdin != "root:hunter2\n" || !c.Quiet {
		t.Errorf("chpasswd: stdin %q quiet %v: the password goes on stdin only, never in the log", c.Stdin, c.Quiet)
	}
	for _, l := range lines {
		if strings.Contains(l, "hunter2") {
			t.Errorf("the password is on a command line: %s", l)
		}
	}
	if res.KernelVersion != "6.1.0-99-amd64" {
		t.Errorf("kernel version %q", res.KernelVersion)
	}
	for p, want := range map[string]string{res.Kernel: "KERNEL", res.Initrd: "INITRD"} {
		if b, err := os.ReadFile(p); err != nil || string(b) != want {
			t.Errorf("%s: %q, %v", p, b, err)
		}
	}
	if st, err := os.Stat(res.Disk); err != nil || st.Size() != 2<<30 {
		t.Errorf("disk: %v %v", st, err)
	}
	checkBalanced(t, f)
	if err := res.Remove(); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(opt.WorkDir); len(ents) != 0 {
		t.Errorf("work dir not empty after Remove: %v", ents)
	}
}

// checkImageFiles looks at the image's files just before it is unmounted.
func checkImageFiles(t *testing.T, mnt string) {
	t.Helper()
	read := func(p string) string {
		b, err := os.ReadFile(filepath.Join(mnt, p))
		if err != nil {
			t.Errorf("image: %v", err)
		}
		return string(b)
	}
	fstab := read("etc/fstab")
	for _, w := range []string{"UUID=uuid-of-loop9p4 / ext4", "UUID=uuid-of-loop9p2 /boot/efi vfat", "UUID=uuid-of-loop9p3 none swap"} {
		if !strings.Contains(fstab, w) {
			t.Errorf("fstab lacks %q:\n%s", w, fstab)
		}
	}
	if s := read("boot/grub/grub.cfg"); !strings.Contains(s, " root=UUID=uuid-of-loop9p4 ro ") || strings.Contains(s, "/dev/loop") {
		t.Errorf("grub.cfg does not boot the root by UUID:\n%s", s)
	}
	if s := read("etc/iscsi/iscsi.initramfs"); !strings.Contains(s, "\nISCSI_AUTO=true\n") {
		t.Errorf("iscsi.initramfs: %q", s)
	}
	if s := read("etc/default/grub.d/diskless.cfg"); !strings.Contains(s, `GRUB_CMDLINE_LINUX="console=tty0 console=ttyS0,115200n8"`) ||
		!strings.Contains(s, `GRUB_TERMINAL="console serial"`) {
		t.Errorf("grub defaults: %s", s)
	}
	if s := read("etc/initramfs-tools/hooks/diskless-nics"); !strings.Contains(s, "virtio_net") || !strings.Contains(s, "e1000e") || !strings.Contains(s, "r8169") {
		t.Errorf("NIC hook: %s", s)
	}
	for _, p := range []string{"etc/machine-id", "etc/hostname"} {
		if s := read(p); s != "" {
			t.Errorf("%s = %q, want empty (one image, many hosts)", p, s)
		}
	}
	for _, p := range []string{policyRC, "etc/ssh/ssh_host_ed25519_key"} {
		if _, err := os.Stat(filepath.Join(mnt, p)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left in the image: %v", p, err)
		}
	}
	if s := read("root/.ssh/authorized_keys"); !strings.HasPrefix(s, "ssh-ed25519 ") {
		t.Errorf("authorized_keys: %q", s)
	}
	if s := read("etc/apt/sources.list"); !strings.Contains(s, "deb http://mirror.test/debian bookworm main\n") ||
		!strings.Contains(s, "deb http://mirror.test/debian-security bookworm-security main\n") {
		t.Errorf("sources.list: %s", s)
	}
}

// checkBalanced: every mount was unmounted and the loop device detached,
// after the last step that used them, with a context of its own.
func checkBalanced(t *testing.T, f *fakeRunner) {
	t.Helper()
	mounted := map[string]bool{}
	attached := false
	for i, c := range f.cmds {
		switch {
		case c.Name == "mount":
			mounted[c.Args[len(c.Args)-1]] = true
		case c.Name == "umount":
			dir := c.Args[len(c.Args)-1]
			if !mounted[dir] {
				t.Errorf("umount %s: not mounted", dir)
			}
			delete(mounted, dir)
			if f.ctxErr[i] != nil {
				t.Errorf("umount %s ran with a cancelled context", dir)
			}
		case c.Name == "losetup" && slices.Contains(c.Args, "--find"):
			attached = true
		case c.Name == "losetup" && c.Args[0] == "--detach":
			if len(mounted) > 0 {
				t.Errorf("loop device detached with %v still mounted", mounted)
			}
			attached = false
		}
	}
	if len(mounted) > 0 || attached {
		t.Errorf("left behind: mounts %v, loop attached %v\nran:\n%s", mounted, attached, strings.Join(f.lines(), "\n"))
	}
}

// Whichever command fails, the build returns its error and leaves no
// mount, no loop device and no file.
func TestBuildFailureCleansUp(t *testing.T) {
	total := func() int {
		f := &fakeRunner{}
		if _, err := Build(context.Background(), testRecipe(), fakeOptions(t, f)); err != nil {
			t.Fatal(err)
		}
		return len(f.cmds)
	}()
	for k := 1; k <= total; k++ {
		f := &fakeRunner{failAt: k}
		opt := fakeOptions(t, f)
		res, err := Build(context.Background(), testRecipe(), opt)
		cmd := "?"
		if k <= len(f.cmds) {
			cmd = f.cmds[k-1].String()
		}
		switch c := f.cmds[k-1]; {
		case c.Name == "umount":
			// A mount something still holds is detached lazily, so the
			// loop device can go: the build succeeds.
			if err != nil || !slices.Contains(f.lines(), "umount --lazy "+c.Args[0]) {
				t.Errorf("failing %q: err %v, want success after a lazy umount", cmd, err)
			}
			if res != nil {
				res.Remove()
			}
		case c.Name == "mdir":
			// A probe: the ESP lacks the directory, the build makes
			// it and goes on.
			if err != nil {
				t.Errorf("failing %q: err %v, want success", cmd, err)
			}
			if res != nil {
				res.Remove()
			}
		case c.Name == "losetup" && c.Args[0] == "--detach":
			// A loop device that stays is reported, the result withheld.
			if err == nil || res != nil {
				t.Errorf("failing %q: err %v res %v, want the cleanup's error", cmd, err, res)
			}
		default:
			if err == nil || !strings.Contains(err.Error(), "injected failure") {
				t.Errorf("failing %q: err %v", cmd, err)
			}
		}
		checkBalancedOrLazy(t, f, cmd)
		if ents, _ := os.ReadDir(opt.WorkDir); len(ents) != 0 {
			t.Errorf("failing %q: left %v in the work dir", cmd, ents)
		}
	}
}

// checkBalancedOrLazy is checkBalanced without the failed command (a
// failed mount mounted nothing; a failed umount is retried lazily).
func checkBalancedOrLazy(t *testing.T, f *fakeRunner, what string) {
	t.Helper()
	var cmds []command
	for i, c := range f.cmds {
		if i+1 == f.failAt {
			continue // the failed command did nothing
		}
		cmds = append(cmds, c)
	}
	g := &fakeRunner{cmds: cmds}
	g.ctxErr = make([]error, len(cmds))
	if f.failAt > 0 && f.cmds[f.failAt-1].Name == "losetup" && f.cmds[f.failAt-1].Args[0] == "--detach" {
		return // nothing else can undo a loop device that will not detach
	}
	t.Run(strings.ReplaceAll(what, "/", "_"), func(t *testing.T) { checkBalanced(t, g) })
}

// Ctrl-C in the middle of debootstrap: the build stops, says it was
// cancelled, and still unmounts and detaches (with a live context).
func TestBuildCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f := &fakeRunner{}
	f.hook = func(c command) {
		if c.Name == "debootstrap" {
			cancel()
		}
	}
	f.failAt = -1
	opt := fakeOptions(t, f)
	_, err := Build(ctx, testRecipe(), opt)
	if err == nil || !strings.Contains(err.Error(), "cancelled") || !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v, want cancelled", err)
	}
	checkBalanced(t, f)
	if ents, _ := os.ReadDir(opt.WorkDir); len(ents) != 0 {
		t.Errorf("left %v in the work dir", ents)
	}
}

// --from-tar: the tarball replaces debootstrap, its distribution picks the
// kernel package, its apt sources stay (no --mirror), and it gets what a
// container lacks to boot.
func TestBuildFromTar(t *testing.T) {
	f := &fakeRunner{}
	var mnt string
	f.hook = func(c command) {
		if c.Name == "tar" {
			mnt = strings.TrimPrefix(c.Args[2], "--directory=")
			os.MkdirAll(filepath.Join(mnt, "etc/apt"), 0o755)
			os.WriteFile(filepath.Join(mnt, "etc/os-release"), []byte("NAME=\"Ubuntu\"\nID=ubuntu\nVERSION_CODENAME=noble\n"), 0o644)
			os.WriteFile(filepath.Join(mnt, "etc/apt/sources.list"), []byte("deb http://archive.ubuntu.com/ubuntu noble main\n"), 0o644)
			os.WriteFile(filepath.Join(mnt, ".dockerenv"), nil, 0o644)
			os.MkdirAll(filepath.Join(mnt, "boot"), 0o755)
			os.WriteFile(filepath.Join(mnt, "boot", "vmlinuz-6.8.0-1-generic"), []byte("K"), 0o644)
			os.WriteFile(filepath.Join(mnt, "boot", "initrd.img-6.8.0-1-generic"), []byte("I"), 0o644)
		}
		if c.Name == "umount" && c.Args[0] == mnt {
			if b, _ := os.ReadFile(filepath.Join(mnt, "etc/apt/sources.list")); !strings.Contains(string(b), "archive.ubuntu.com") {
				t.Errorf("the tarball's sources were replaced: %s", b)
			}
			if _, err := os.Stat(filepath.Join(mnt, ".dockerenv")); err == nil {
				t.Error(".dockerenv left")
			}
		}
	}
	r := Recipe{Size: 2 << 30, Firmware: BIOS, FromTar: "/srv/rootfs.tar"}
	opt := fakeOptions(t, f)
	res, err := Build(context.Background(), r, opt)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Remove()
	lines := strings.Join(f.lines(), "\n")
	for _, w := range []string{
		"tar --extract --file=/srv/rootfs.tar --directory=" + mnt + " --numeric-owner",
		"apt-get install --yes --no-install-recommends -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold linux-image-generic initramfs-tools open-iscsi busybox-initramfs systemd-sysv e2fsprogs udev kmod grub-pc",
		"mount --bind " + filepath.Join(opt.CacheDir, "noble-amd64", "apt"),
	} {
		if !strings.Contains(lines, w) {
			t.Errorf("missing %q in:\n%s", w, lines)
		}
	}
	if strings.Contains(lines, "debootstrap") {
		t.Error("debootstrap ran for a tarball")
	}
	checkBalanced(t, f)
}

// Two builds on one package cache take turns: the second waits (and says
// so) until the first is done, and a cancelled wait leaves nothing.
func TestBuildsShareCacheInTurn(t *testing.T) {
	cache := t.TempDir()
	release, holding := make(chan struct{}), make(chan struct{})
	first := &fakeRunner{hook: func(c command) {
		if c.Name == "debootstrap" { // the cache is locked by now
			close(holding)
			<-release
		}
	}}
	opt1 := fakeOptions(t, first)
	opt1.CacheDir = cache
	done := make(chan error)
	go func() {
		res, err := Build(context.Background(), testRecipe(), opt1)
		if err == nil {
			res.Remove()
		}
		done <- err
	}()
	// The second build waits for the lock; cancel it there.
	second := &fakeRunner{}
	opt2 := fakeOptions(t, second)
	opt2.CacheDir = cache
	ctx, cancel := context.WithCancel(context.Background())
	waiting := make(chan struct{})
	opt2.Progress = func(p string, _ time.Duration) {
		if strings.HasPrefix(p, "wait for another build") {
			close(waiting)
		}
	}
	go func() { <-waiting; cancel() }()
	<-holding
	_, err := Build(ctx, testRecipe(), opt2)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("second build: %v, want cancelled while waiting", err)
	}
	for _, l := range second.lines() {
		if strings.HasPrefix(l, "debootstrap") {
			t.Errorf("second build ran debootstrap while the first held the cache")
		}
	}
	checkBalanced(t, second)
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// Now free: a third build goes through.
	third := &fakeRunner{}
	opt3 := fakeOptions(t, third)
	opt3.CacheDir = cache
	res, err := Build(context.Background(), testRecipe(), opt3)
	if err != nil {
		t.Fatal(err)
	}
	res.Remove()
}
