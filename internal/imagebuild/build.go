package imagebuild

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Options says where a build works and how it reports. The zero value
// works in os.TempDir with no cache and no output.
type Options struct {
	// WorkDir holds the build's temporary directory (disk, mount point);
	// best on the file system of data_dir. Default os.TempDir().
	WorkDir string
	// CacheDir keeps downloaded packages between builds: debootstrap's
	// and apt's, per suite. "": nothing is kept.
	CacheDir string
	// Progress is told each phase as it starts, with the time since the
	// build started. Optional.
	Progress func(phase string, elapsed time.Duration)
	// Log receives the commands run and their output. Optional.
	Log io.Writer
	// EtcApt is where the machine's apt sources are (default /etc/apt),
	// for the default mirror.
	EtcApt string

	run    runner                 // tests replace the commands
	exists func(path string) bool // and the device nodes
	fake   bool                   // no retries or waits for the kernel
}

// Result is a finished build: files in a directory the caller removes
// (Remove) once it has imported them.
type Result struct {
	Dir    string // the build's directory
	Disk   string // the raw disk
	Kernel string // the kernel (vmlinuz) from the disk's /boot
	Initrd string // its initramfs
	// Cmdline holds the kernel command line GRUB gives it (root=UUID=).
	Cmdline string
	// KernelVersion is the kernel's release, e.g. 6.1.0-37-amd64.
	KernelVersion string
	Mirror        string // the mirror the system came from
	Took          time.Duration
}

// Remove deletes the build's files.
func (r *Result) Remove() error { return os.RemoveAll(r.Dir) }

// runner runs one command; tests replace it.
type runner interface {
	run(ctx context.Context, c command) (string, error)
}

// command is one program to run.
type command struct {
	Name  string
	Args  []string
	Env   []string // added to a clean environment
	Stdin string
	// Quiet keeps its output out of the log (it is still in errors).
	Quiet bool
}

func (c command) String() string { return strings.Join(append([]string{c.Name}, c.Args...), " ") }

// execRunner runs commands as child processes in their own process group,
// so a cancelled build kills everything a command started (apt's dpkg,
// maintainer scripts), not only the command.
type execRunner struct{ log io.Writer }

func (e execRunner) run(ctx context.Context, c command) (string, error) {
	path, err := lookBuildPath(c.Name)
	if err != nil {
		return "", fmt.Errorf("%s: %w", c.Name, err)
	}
	cmd := exec.CommandContext(ctx, path, c.Args...)
	cmd.Env = append([]string{"PATH=" + buildPath, "LC_ALL=C.UTF-8", "HOME=/root"}, c.Env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	var out bytes.Buffer
	var w io.Writer = &out
	if e.log != nil && !c.Quiet {
		fmt.Fprintf(e.log, "+ %s\n", c)
		w = io.MultiWriter(&out, e.log)
	}
	cmd.Stdout, cmd.Stderr = w, w
	if c.Stdin != "" {
		cmd.Stdin = strings.NewReader(c.Stdin)
	}
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return out.String(), fmt.Errorf("%s: %w", c.Name, context.Cause(ctx))
		}
		return out.String(), fmt.Errorf("%s: %w\n%s", c, err, tail(out.String(), 2000))
	}
	return out.String(), nil
}

// tail is the end of s, for error messages.
func tail(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		s = "..." + s[len(s)-n:]
	}
	return s
}

// builder is one build in progress.
type builder struct {
	r     Recipe
	opt   Options
	run   runner
	start time.Time

	dir    string // work directory
	disk   string // raw disk file
	loop   string // /dev/loopN
	mnt    string // root file system mount point
	layout []Partition
	u      uuids

	kernelVersion string
	osID          string // os-release ID of the system (debian, ubuntu)
	cacheLocked   bool
	keep          bool           // the build succeeded: its directory stays
	uuidOf        map[int]string // Prepare: file system UUID by partition number
	units         []string       // Prepare: more units to enable

	// undo is the cleanup stack: run in reverse order on every path.
	undo []undoStep
}

type undoStep struct {
	what string
	fn   func(ctx context.Context) error
}

func (b *builder) defer_(what string, fn func(ctx context.Context) error) {
	b.undo = append(b.undo, undoStep{what, fn})
}

// cleanup undoes everything, newest first, with a context of its own: a
// cancelled build still unmounts and detaches. It returns every failure.
func (b *builder) cleanup() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var errs []error
	if b.mnt != "" {
		// What a cancelled or failed command left running in the chroot
		// (dpkg, a maintainer script) holds the mounts: it goes first.
		if err := killProcessesIn(ctx, b.mnt); err != nil {
			errs = append(errs, fmt.Errorf("cleanup: %w", err))
		}
	}
	for i := len(b.undo) - 1; i >= 0; i-- {
		if b.opt.Log != nil {
			fmt.Fprintf(b.opt.Log, "== cleanup: %s\n", b.undo[i].what)
		}
		if err := b.undo[i].fn(ctx); err != nil {
			errs = append(errs, fmt.Errorf("cleanup: %s: %w", b.undo[i].what, err))
		}
	}
	b.undo = nil
	return errors.Join(errs...)
}

func (b *builder) phase(name string) {
	if b.opt.Progress != nil {
		b.opt.Progress(name, time.Since(b.start))
	}
	if b.opt.Log != nil {
		fmt.Fprintf(b.opt.Log, "== %s (%s)\n", name, time.Since(b.start).Round(time.Second))
	}
}

func (b *builder) cmd(ctx context.Context, name string, args ...string) (string, error) {
	return b.run.run(ctx, command{Name: name, Args: args})
}

// chroot runs a command inside the image, with apt and debconf made
// non-interactive.
func (b *builder) chroot(ctx context.Context, stdin string, args ...string) (string, error) {
	return b.run.run(ctx, command{Name: "chroot", Args: append([]string{b.mnt}, args...), Stdin: stdin,
		Env: []string{"DEBIAN_FRONTEND=noninteractive", "DEBCONF_NONINTERACTIVE_SEEN=true", "LANG=C.UTF-8"}})
}

// Build makes the disk of recipe r. On error or cancellation nothing is
// left behind: no loop device, no mount, no file.
func Build(ctx context.Context, r Recipe, opt Options) (res *Result, err error) {
	if err := r.Validate(); err != nil {
		return nil, err
	}
	if opt.EtcApt == "" {
		opt.EtcApt = "/etc/apt"
	}
	if r.Mirror == "" && r.FromTar == "" {
		if r.Mirror = DefaultMirror(opt.EtcApt, r.Suite); r.Mirror == "" {
			r.Mirror = FallbackMirror
		}
	}
	b, err := newBuilder(r, opt)
	if err != nil {
		return nil, err
	}
	b.layout = r.Layout()
	install := step{"debootstrap " + r.Suite + " from " + r.Mirror, b.debootstrap}
	if r.FromTar != "" {
		install = step{"unpack " + filepath.Base(r.FromTar), b.unpack}
	}
	return b.runSteps(ctx, []step{
		{"partition the disk", b.partition},
		{"make file systems", b.makeFileSystems},
		install,
		{"configure the system", b.configure},
		{"install kernel, open-iscsi and GRUB", b.installPackages},
		{"install GRUB to the disk", b.installGRUB},
		{"add the recipe's files and units", b.addFiles},
		{"generalize (one image for every host)", b.generalize},
		{"extract kernel and initrd", b.extractBoot},
	})
}

// step is one phase of a build.
type step struct {
	phase string
	fn    func(context.Context) error
}

// newBuilder makes a builder with its work directory, removed by its
// cleanup unless the build succeeds.
func newBuilder(r Recipe, opt Options) (*builder, error) {
	if opt.WorkDir == "" {
		opt.WorkDir = os.TempDir()
	}
	b := &builder{r: r, opt: opt, run: opt.run, start: time.Now()}
	if b.run == nil {
		b.run = execRunner{log: opt.Log}
	}
	if b.opt.exists == nil {
		b.opt.exists = func(p string) bool { _, err := os.Stat(p); return err == nil }
	}
	if err := os.MkdirAll(opt.WorkDir, 0o700); err != nil {
		return nil, fmt.Errorf("imagebuild: %w", err)
	}
	var err error
	if b.dir, err = os.MkdirTemp(opt.WorkDir, "build-"); err != nil {
		return nil, fmt.Errorf("imagebuild: %w", err)
	}
	b.defer_("remove "+b.dir, func(context.Context) error {
		if b.keep {
			return nil
		}
		return os.RemoveAll(b.dir)
	})
	return b, nil
}

// runSteps runs the steps of a build and returns its result; on every
// path the cleanup undoes mounts and loop devices (and removes the work
// directory, but for a result).
func (b *builder) runSteps(ctx context.Context, steps []step) (res *Result, err error) {
	defer func() {
		if cerr := b.cleanup(); cerr != nil {
			if err == nil {
				// A mount or loop device still held: the build's
				// result is fine, but the admin must know.
				res.Remove()
				res = nil
			}
			err = errors.Join(err, cerr)
		}
		if err != nil && ctx.Err() != nil {
			err = fmt.Errorf("imagebuild: cancelled: %w", err)
		}
	}()
	for _, s := range steps {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		b.phase(s.phase)
		if err := s.fn(ctx); err != nil {
			return nil, fmt.Errorf("imagebuild: %s: %w", s.phase, err)
		}
	}
	b.phase("unmount and detach")
	res = &Result{Dir: b.dir, Disk: b.disk, Kernel: filepath.Join(b.dir, "kernel"), Initrd: filepath.Join(b.dir, "initrd"),
		Cmdline:       filepath.Join(b.dir, "cmdline"),
		KernelVersion: b.kernelVersion, Mirror: b.r.Mirror}
	b.keep = true
	if err := b.cleanup(); err != nil {
		res.Remove()
		return nil, err
	}
	res.Took = time.Since(b.start)
	return res, nil
}

// partition makes the sparse disk file, writes the GPT and attaches it to
// a loop device with its partitions.
func (b *builder) partition(ctx context.Context) error {
	b.disk = filepath.Join(b.dir, "disk.img")
	f, err := os.OpenFile(b.disk, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	err = f.Truncate(b.r.Size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if _, err := b.cmd(ctx, "sgdisk", sgdiskArgs(b.layout, b.disk)...); err != nil {
		return err
	}
	return b.attach(ctx, len(b.layout))
}

// attach attaches the disk to a loop device with its partitions (the
// last one numbered last) and registers the detach.
func (b *builder) attach(ctx context.Context, last int) error {
	out, err := b.cmd(ctx, "losetup", "--find", "--show", "--partscan", b.disk)
	if err != nil {
		return err
	}
	loop := strings.TrimSpace(out)
	if !strings.HasPrefix(loop, "/dev/loop") {
		return fmt.Errorf("losetup: unexpected answer %q", loop)
	}
	b.loop = loop
	b.defer_("detach "+loop, func(ctx context.Context) error {
		if _, err := b.cmd(ctx, "losetup", "--detach", loop); err != nil {
			return err
		}
		// A loop device still open (a lazy unmount not yet finished)
		// only goes when its last user does: wait for it. Once it went,
		// another build may attach the same device to its own file.
		backing := "/sys/block/" + filepath.Base(loop) + "/loop/backing_file"
		err := b.waitUntil(ctx, 2*time.Minute, backing+" names "+b.disk, func() bool {
			cur, err := os.ReadFile(backing)
			return err != nil || strings.TrimSuffix(strings.TrimSpace(string(cur)), " (deleted)") != b.disk
		})
		if err != nil {
			err = fmt.Errorf("%w (held by: %s)", err, loopUsers(loop))
		}
		return err
	})
	// Without udev (containers) the partition nodes may not appear:
	// partx asks the kernel again and devtmpfs makes the nodes.
	if !b.opt.exists(b.part(last)) {
		if _, err := b.cmd(ctx, "partx", "--add", loop); err != nil {
			if _, err := b.cmd(ctx, "partx", "--update", loop); err != nil {
				return err
			}
		}
	}
	return b.waitFor(ctx, b.part(last), 10*time.Second)
}

// waitFor waits for a device node to appear.
func (b *builder) waitFor(ctx context.Context, path string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		if b.opt.exists(path) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not appear", path)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// waitUntil waits for done, at most d.
func (b *builder) waitUntil(ctx context.Context, d time.Duration, what string, done func() bool) error {
	deadline := time.Now().Add(d)
	for !b.opt.fake && !done() {
		if time.Now().After(deadline) {
			return fmt.Errorf("%s still after %s", what, d)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil
}

// loopUsers says what still holds a loop device: mounts of it or its
// partitions, and processes with it open.
func loopUsers(loop string) string {
	var users []string
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	for _, l := range strings.Split(string(mi), "\n") {
		if strings.Contains(l, " "+loop) {
			users = append(users, "mount: "+l)
		}
	}
	fds, _ := filepath.Glob("/proc/[0-9]*/fd/*")
	for _, fd := range fds {
		if t, err := os.Readlink(fd); err == nil && strings.HasPrefix(t, loop) {
			comm, _ := os.ReadFile(filepath.Join(filepath.Dir(filepath.Dir(fd)), "comm"))
			users = append(users, fmt.Sprintf("%s (%s) has %s open", fd, strings.TrimSpace(string(comm)), t))
		}
	}
	if len(users) == 0 {
		return "nothing visible (the kernel is still releasing it)"
	}
	return strings.Join(users, "; ")
}

// killProcessesIn kills every process whose root directory is dir or
// below it and waits until they are gone.
func killProcessesIn(ctx context.Context, dir string) error {
	for {
		pids := processesIn(dir)
		if len(pids) == 0 {
			return nil
		}
		for _, p := range pids {
			syscall.Kill(p, syscall.SIGKILL)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("processes %v in %s do not end", pids, dir)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// processesIn lists the processes whose root is dir or below it.
func processesIn(dir string) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		root, err := os.Readlink("/proc/" + e.Name() + "/root")
		if err == nil && (root == dir || strings.HasPrefix(root, dir+"/")) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// part is the device of partition n.
func (b *builder) part(n int) string { return fmt.Sprintf("%sp%d", b.loop, n) }

// partOf is the device of the named partition, "" when the layout has
// none.
func (b *builder) partOf(name string) string {
	for _, p := range b.layout {
		if p.Name == name {
			return b.part(p.Number)
		}
	}
	return ""
}

func (b *builder) makeFileSystems(ctx context.Context) error {
	if _, err := b.cmd(ctx, "mkfs.ext4", "-q", "-F", "-L", "root", b.partOf(partRoot)); err != nil {
		return err
	}
	var err error
	if b.u.Root, err = b.uuid(ctx, b.partOf(partRoot)); err != nil {
		return err
	}
	if esp := b.partOf(partESP); esp != "" {
		if _, err := b.cmd(ctx, "mkfs.vfat", "-F", "32", "-n", "ESP", esp); err != nil {
			return err
		}
		if b.u.ESP, err = b.uuid(ctx, esp); err != nil {
			return err
		}
	}
	if swap := b.partOf(partSwap); swap != "" {
		if _, err := b.cmd(ctx, "mkswap", "-L", "swap", swap); err != nil {
			return err
		}
		if b.u.Swap, err = b.uuid(ctx, swap); err != nil {
			return err
		}
	}
	b.mnt = filepath.Join(b.dir, "root")
	if err := os.Mkdir(b.mnt, 0o755); err != nil {
		return err
	}
	if err := b.mount(ctx, b.partOf(partRoot), b.mnt); err != nil {
		return err
	}
	// The ESP is not mounted: build kernels (containers) often lack vfat,
	// and mtools writes the one file it holds (installGRUB).
	return os.MkdirAll(filepath.Join(b.mnt, "boot", "efi"), 0o755)
}

func (b *builder) uuid(ctx context.Context, dev string) (string, error) {
	out, err := b.cmd(ctx, "blkid", "-p", "-s", "UUID", "-o", "value", dev)
	u := strings.TrimSpace(out)
	if err == nil && u == "" {
		err = fmt.Errorf("blkid: %s has no UUID", dev)
	}
	return u, err
}

// mount mounts src on dir (extra: mount options such as --bind) and
// registers its unmount.
func (b *builder) mount(ctx context.Context, src, dir string, extra ...string) error {
	args := append(append([]string{}, extra...), src, dir)
	if _, err := b.cmd(ctx, "mount", args...); err != nil {
		return err
	}
	b.defer_("unmount "+dir, func(ctx context.Context) error {
		_, err := b.cmd(ctx, "umount", dir)
		for try := 0; err != nil && try < 3 && !b.opt.fake; try++ {
			time.Sleep(300 * time.Millisecond) // a killed process's files close
			_, err = b.cmd(ctx, "umount", dir)
		}
		if err != nil {
			// Something still holds it (a process a killed command
			// left): detach it lazily so the loop device can go.
			_, lerr := b.cmd(ctx, "umount", "--lazy", dir)
			if lerr != nil {
				return errors.Join(err, lerr)
			}
		}
		return nil
	})
	return nil
}

// suiteCache is the package cache of the recipe's suite; "" without
// CacheDir. The same suite shares one cache whatever else the recipe says.
//
// Builds that share a suite's cache take turns (a lock file held for the
// rest of the build): two apt runs on one archives directory, or two
// debootstraps filling one cache, would fail or corrupt it.
func (b *builder) suiteCache(ctx context.Context, kind string) (string, error) {
	if b.opt.CacheDir == "" {
		return "", nil
	}
	suiteDir, err := filepath.Abs(filepath.Join(b.opt.CacheDir, b.r.Suite+"-amd64"))
	if err != nil {
		return "", err
	}
	dir := filepath.Join(suiteDir, kind)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	if !b.cacheLocked {
		if err := b.lockCache(ctx, filepath.Join(suiteDir, ".lock")); err != nil {
			return "", err
		}
		b.cacheLocked = true
	}
	return dir, nil
}

// lockCache takes the cache's lock file, waiting (and saying so) while
// another build holds it; the lock goes with the build's cleanup.
func (b *builder) lockCache(ctx context.Context, path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	said := false
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return fmt.Errorf("lock %s: %w", path, err)
		}
		if !said {
			b.phase("wait for another build using the package cache " + filepath.Dir(path))
			said = true
		}
		select {
		case <-ctx.Done():
			f.Close()
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	b.defer_("unlock "+path, func(context.Context) error { return f.Close() })
	return nil
}

// debootstrapVariant is debootstrap's default set (Priority: important):
// the HOWTO's system, with ifupdown, apt and systemd.
const debootstrapVariant = "-"

func (b *builder) debootstrap(ctx context.Context) error {
	args := []string{"--arch=amd64", "--variant=" + debootstrapVariant}
	cache, err := b.suiteCache(ctx, "debootstrap")
	if err != nil {
		return err
	}
	if cache != "" {
		args = append(args, "--cache-dir="+cache)
	}
	args = append(args, b.r.Suite, b.mnt, b.r.Mirror)
	_, err = b.cmd(ctx, "debootstrap", args...)
	return err
}

// unpack fills the root file system from a tarball (a container's
// export) instead of debootstrap, and learns its distribution.
func (b *builder) unpack(ctx context.Context) error {
	if _, err := b.cmd(ctx, "tar", "--extract", "--file="+b.r.FromTar, "--directory="+b.mnt,
		"--numeric-owner", "--preserve-permissions", "--xattrs", "--xattrs-include=*"); err != nil {
		return err
	}
	// Traces of the container runtime.
	for _, p := range []string{".dockerenv", "run/.containerenv"} {
		os.Remove(filepath.Join(b.mnt, p))
	}
	return nil
}

// osRelease reads ID and VERSION_CODENAME of the image's os-release.
func osRelease(root string) (id, codename string) {
	for _, p := range []string{"etc/os-release", "usr/lib/os-release"} {
		data, err := os.ReadFile(filepath.Join(root, p))
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(data), "\n") {
			k, v, _ := strings.Cut(l, "=")
			v = strings.Trim(v, `"'`)
			switch k {
			case "ID":
				id = v
			case "VERSION_CODENAME":
				codename = v
			}
		}
		return id, codename
	}
	return "", ""
}

// configure writes the image's files and mounts what apt and GRUB need in
// the chroot.
func (b *builder) configure(ctx context.Context) error {
	var codename string
	b.osID, codename = osRelease(b.mnt)
	if b.r.Suite == "" {
		if !suitePattern.MatchString(codename) {
			codename = "unknown"
		}
		b.r.Suite = codename // names the package cache
	}
	if err := b.hostDNS(); err != nil {
		return err
	}
	for _, f := range imageFiles(&b.r, b.u) {
		if err := b.writeFile(f); err != nil {
			return err
		}
	}
	return b.mountChroot(ctx)
}

// hostDNS gives the chroot the build machine's DNS: apt in it resolves the
// mirror with it (debootstrap copies it; a tarball has a container's, an
// installed system its own). generalize empties it again.
func (b *builder) hostDNS() error {
	hostConf, err := os.ReadFile("/etc/resolv.conf")
	if err != nil || b.opt.fake {
		return nil
	}
	os.Remove(filepath.Join(b.mnt, "etc/resolv.conf"))
	return b.writeFile(file{"/etc/resolv.conf", 0o644, string(hostConf)})
}

// mountChroot mounts what apt, the initramfs and GRUB need in the chroot,
// and the package cache.
func (b *builder) mountChroot(ctx context.Context) error {
	for _, m := range []struct{ src, dir, typ string }{
		{"proc", "proc", "proc"},
		{"sysfs", "sys", "sysfs"},
		{"/dev", "dev", ""},
		{"/dev/pts", "dev/pts", ""},
		{"tmpfs", "run", "tmpfs"},
	} {
		dir := filepath.Join(b.mnt, m.dir)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		opts := []string{"--bind"}
		if m.typ != "" {
			opts = []string{"-t", m.typ}
		}
		if err := b.mount(ctx, m.src, dir, opts...); err != nil {
			return err
		}
	}
	cache, err := b.suiteCache(ctx, "apt")
	if err != nil {
		return err
	}
	// debootstrap leaves the packages it installed here (they are in its
	// own cache): out of the image, and not hidden under the bind mount.
	debs, _ := filepath.Glob(filepath.Join(b.mnt, "var/cache/apt/archives/*.deb"))
	for _, d := range debs {
		if err := os.Remove(d); err != nil {
			return err
		}
	}
	if cache != "" {
		if err := b.mount(ctx, cache, filepath.Join(b.mnt, "var/cache/apt/archives"), "--bind"); err != nil {
			return err
		}
		// apt wants its partial directory in the archives.
		if err := os.MkdirAll(filepath.Join(cache, "partial"), 0o755); err != nil {
			return err
		}
	}
	_, err = b.chroot(ctx, debconfSelections, "debconf-set-selections")
	return err
}

// writeFile writes f into the image, creating its directory.
func (b *builder) writeFile(f file) error {
	p := filepath.Join(b.mnt, f.Path)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(p, []byte(f.Content), os.FileMode(f.Mode)); err != nil {
		return err
	}
	return os.Chmod(p, os.FileMode(f.Mode))
}

func (b *builder) installPackages(ctx context.Context) error {
	if _, err := b.chroot(ctx, "", "apt-get", "update"); err != nil {
		return err
	}
	args := append([]string{"apt-get", "install", "--yes", "--no-install-recommends",
		"-o", "Dpkg::Options::=--force-confdef", "-o", "Dpkg::Options::=--force-confold"}, b.r.aptPackages(b.osID)...)
	if _, err := b.chroot(ctx, "", args...); err != nil {
		return err
	}
	units := []string{"diskless-ibft.service", "iscsid.service", "open-iscsi.service", "serial-getty@ttyS0.service"}
	if b.r.SSHKey != "" {
		units = append(units, "diskless-ssh-keys.service")
	}
	if _, err := b.chroot(ctx, "", append([]string{"systemctl", "enable"}, units...)...); err != nil {
		return err
	}
	if b.r.RootPassword != "" {
		if _, err := b.run.run(ctx, command{Name: "chroot", Args: []string{b.mnt, "chpasswd"},
			Stdin: "root:" + b.r.RootPassword + "\n", Quiet: true}); err != nil {
			// The password went on stdin: neither the command line
			// nor the error holds it.
			return fmt.Errorf("setting root's password: %w", err)
		}
	}
	return nil
}

func (b *builder) installGRUB(ctx context.Context) error {
	if b.r.Firmware.bios() {
		// GRUB's core goes to the BIOS boot partition; the loop device is
		// the whole disk, as the host's iSCSI disk will be.
		if _, err := b.chroot(ctx, "", "grub-install", "--target=i386-pc", b.loop); err != nil {
			return err
		}
	}
	// grub-install makes /boot/grub for BIOS; UEFI alone has none yet.
	if err := os.MkdirAll(filepath.Join(b.mnt, "boot/grub"), 0o755); err != nil {
		return err
	}
	if _, err := b.chroot(ctx, "", "update-grub"); err != nil {
		return err
	}
	if err := b.fixGrubRoot(); err != nil {
		return err
	}
	if b.r.Firmware.uefi() {
		return b.installEFI(ctx)
	}
	return nil
}

// fixGrubRoot makes grub.cfg name the root file system by UUID.
// grub-mkconfig uses root=UUID= only when /dev/disk/by-uuid has the file
// system, which needs udev: on a build machine without it (a container)
// the kernel line says root=/dev/loop0p3, which no host has. On a host,
// update-grub (a kernel update) finds the UUID again.
func (b *builder) fixGrubRoot() error {
	p := filepath.Join(b.mnt, "boot/grub/grub.cfg")
	cfg, err := os.ReadFile(p)
	if err != nil {
		return err
	}
	fixed := rootByUUID(string(cfg), b.partOf(partRoot), b.u.Root)
	if strings.Contains(fixed, b.loop) {
		return fmt.Errorf("grub.cfg still names the build's loop device %s", b.loop)
	}
	return os.WriteFile(p, []byte(fixed), 0o444)
}

// rootByUUID replaces the kernel argument root=dev by root=UUID=uuid.
func rootByUUID(cfg, dev, uuid string) string {
	return strings.ReplaceAll(cfg, "root="+dev+" ", "root=UUID="+uuid+" ")
}

// installEFI puts GRUB at the removable path \EFI\BOOT\BOOTX64.EFI of the
// ESP, which firmware boots without an NVRAM entry, on any machine. It is
// a standalone GRUB (its modules inside) that finds the root file system
// by UUID and reads the same /boot/grub/grub.cfg as BIOS GRUB, so
// update-grub on a host keeps both in step. grub-install cannot do this
// here: it wants the ESP mounted, and build machines (containers) often
// have no vfat in their kernel; mtools writes the file instead.
func (b *builder) installEFI(ctx context.Context) error {
	if err := b.writeFile(file{"/tmp/diskless-efi.cfg", 0o644, efiConfig(b.u.Root)}); err != nil {
		return err
	}
	defer os.Remove(filepath.Join(b.mnt, "tmp/diskless-efi.cfg"))
	defer os.Remove(filepath.Join(b.mnt, "tmp/BOOTX64.EFI"))
	if _, err := b.chroot(ctx, "", "grub-mkstandalone", "--format=x86_64-efi", "--output=/tmp/BOOTX64.EFI",
		"--modules=part_gpt part_msdos ext2 search search_fs_uuid serial",
		"boot/grub/grub.cfg=/tmp/diskless-efi.cfg"); err != nil {
		return err
	}
	esp := b.partOf(partESP)
	mtools := []string{"MTOOLS_SKIP_CHECK=1"}
	// An installed system's ESP (image prepare) may have them already.
	for _, d := range []string{"::/EFI", "::/EFI/BOOT"} {
		if _, err := b.run.run(ctx, command{Name: "mdir", Args: []string{"-i", esp, "-b", d}, Env: mtools, Quiet: true}); err == nil {
			continue
		}
		if _, err := b.run.run(ctx, command{Name: "mmd", Args: []string{"-i", esp, d}, Env: mtools}); err != nil {
			return err
		}
	}
	_, err := b.run.run(ctx, command{Name: "mcopy", Args: []string{"-D", "o", "-i", esp, filepath.Join(b.mnt, "tmp/BOOTX64.EFI"), "::/EFI/BOOT/BOOTX64.EFI"}, Env: mtools})
	return err
}

// generalize removes what makes the image one machine: the hosts on it
// each make their own at boot.
func (b *builder) generalize(context.Context) error {
	// Empty, not absent: systemd makes the host's id at its first boot.
	for _, f := range []file{{"/etc/machine-id", 0o444, ""}, {"/etc/hostname", 0o644, ""}, {"/etc/resolv.conf", 0o644, ""}} {
		if err := os.Remove(filepath.Join(b.mnt, f.Path)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		if err := b.writeFile(f); err != nil {
			return err
		}
	}
	hosts := "127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\nff02::1\t\tip6-allnodes\nff02::2\t\tip6-allrouters\n"
	if err := b.writeFile(file{"/etc/hosts", 0o644, hosts}); err != nil {
		return err
	}
	var rm []string
	keys, _ := filepath.Glob(filepath.Join(b.mnt, "etc/ssh/ssh_host_*"))
	rm = append(rm, keys...)
	rm = append(rm, filepath.Join(b.mnt, "var/lib/dbus/machine-id"), filepath.Join(b.mnt, policyRC))
	for _, p := range rm {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	// The package lists stay (apt works at once on a host); the
	// downloaded packages are in the cache, bind-mounted, not in the
	// image (apt-get clean would empty the cache).
	return nil
}

// addFiles writes the recipe's own files and enables its units.
func (b *builder) addFiles(ctx context.Context) error {
	for _, f := range b.r.Files {
		if err := b.writeFile(file{f.Path, f.Mode, f.Content}); err != nil {
			return err
		}
	}
	if len(b.r.Enable) > 0 {
		if _, err := b.chroot(ctx, "", append([]string{"systemctl", "enable"}, b.r.Enable...)...); err != nil {
			return err
		}
	}
	return nil
}

func (b *builder) extractBoot(ctx context.Context) error {
	kernels, _ := filepath.Glob(filepath.Join(b.mnt, "boot", "vmlinuz-*"))
	if len(kernels) == 0 {
		return errors.New("no kernel in /boot")
	}
	sort.Strings(kernels)
	k := kernels[len(kernels)-1]
	b.kernelVersion = strings.TrimPrefix(filepath.Base(k), "vmlinuz-")
	initrd := filepath.Join(b.mnt, "boot", "initrd.img-"+b.kernelVersion)
	for src, dst := range map[string]string{k: "kernel", initrd: "initrd"} {
		if err := copyFile(src, filepath.Join(b.dir, dst)); err != nil {
			return err
		}
	}
	// What GRUB's menu entry gives the kernel, for hosts that boot it
	// without GRUB.
	return os.WriteFile(filepath.Join(b.dir, "cmdline"), []byte(kernelCmdline(b.u.Root)+"\n"), 0o644)
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// kernelCmdline is the command line of the image's kernel: root by UUID,
// read-only until the boot remounts it, and the consoles of grubDefaults.
func kernelCmdline(rootUUID string) string {
	return "root=UUID=" + rootUUID + " ro " + bootConsoleArgs
}
