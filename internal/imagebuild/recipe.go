// Package imagebuild makes a bootable Debian disk image for diskless: the
// "Installation" and "iSCSI boot configuration" steps of the HOWTO
// (docs/images.md), automated. It partitions a sparse raw file (GPT: a
// BIOS boot partition for GRUB, an EFI system partition, swap, ext4
// root), installs Debian with debootstrap, and prepares the system to boot
// from an iSCSI disk on any host: open-iscsi in the initramfs logs in from
// the iBFT that iPXE publishes, so the image holds nothing per host.
//
// It owns the build only: the raw disk, kernel and initrd it leaves in a
// work directory become an image version through the caller (the same
// import path as diskless image import). It needs root and Debian tools
// (Check), runs them as child processes, and undoes every loop device,
// mount and temporary file on every path, cancellation included.
package imagebuild

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
)

// Firmware says which firmware the disk boots on.
type Firmware string

const (
	// BIOS: GRUB (grub-pc) in the MBR and the BIOS boot partition.
	BIOS Firmware = "bios"
	// UEFI: GRUB (grub-efi-amd64) at the removable path
	// \EFI\BOOT\BOOTX64.EFI of the EFI system partition, no NVRAM entry.
	UEFI Firmware = "uefi"
	// Both: one disk that boots either way (grub-pc, plus
	// grub-efi-amd64-bin installed to the removable path).
	Both Firmware = "both"
)

// ParseFirmware checks a firmware name.
func ParseFirmware(s string) (Firmware, error) {
	switch f := Firmware(s); f {
	case BIOS, UEFI, Both:
		return f, nil
	}
	return "", fmt.Errorf("firmware %q: want bios, uefi or both", s)
}

func (f Firmware) bios() bool { return f == BIOS || f == Both }
func (f Firmware) uefi() bool { return f == UEFI || f == Both }

// Recipe is what an image is made of. Two builds of the same recipe make
// the same system (up to the packages the mirror has at the time).
type Recipe struct {
	Suite    string   // Debian suite, e.g. bookworm
	Size     int64    // disk size in bytes
	Firmware Firmware // default Both
	Mirror   string   // default: the machine's own apt mirror (DefaultMirror)
	Packages []string // extra packages
	Swap     int64    // swap partition size in bytes, 0: none
	// SSHKey is an authorized key for root (openssh-server is added).
	SSHKey string
	// RootPassword is root's password; "": root cannot log in with one.
	RootPassword string
	// FromTar, when set, is a root file system tarball (podman/docker
	// export of a Debian or Ubuntu container) used instead of
	// debootstrap. Its own apt sources stay unless Mirror is given.
	FromTar string
	// Files are written into the root file system after the packages
	// (a site's configuration, a unit of its own); Enable names systemd
	// units to enable (systemctl enable in the image).
	Files  []File
	Enable []string
}

// File is one file a recipe adds to the image.
type File struct {
	Path    string // absolute, in the image
	Mode    uint32 // default 0644
	Content string
}

// Sizes of the fixed partitions.
const (
	biosBootSize = 1 << 20   // GRUB's core.img
	espSize      = 128 << 20 // FAT32 needs >= 33 MiB; GRUB needs a few
	minRootSize  = 1 << 30   // a minimal Debian with a kernel
	alignment    = 1 << 20   // partitions start on MiB boundaries
)

var (
	suitePattern   = regexp.MustCompile(`^[a-z][a-z0-9.-]{1,31}$`)
	packagePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9+.-]+$`)
	unitPattern    = regexp.MustCompile(`^[A-Za-z0-9:_.@-]+\.(service|socket|timer|target|path|mount)$`)
	sshKeyPattern  = regexp.MustCompile(`^(ssh-|ecdsa-|sk-)[a-z0-9@.-]+ [A-Za-z0-9+/=]+( .*)?$`)
)

// Validate checks the recipe and fills in defaults (Firmware).
func (r *Recipe) Validate() error {
	if r.Firmware == "" {
		r.Firmware = Both
	}
	// The defaults go into a copy: the caller's Files (a test's recipe
	// shared by several builds) stay as they were, and so does its Key.
	r.Files = slices.Clone(r.Files)
	for i := range r.Files {
		f := &r.Files[i]
		if !filepath.IsAbs(f.Path) || filepath.Clean(f.Path) != f.Path || f.Path == "/" {
			return fmt.Errorf("imagebuild: file %q: want an absolute, clean path in the image", f.Path)
		}
		for _, top := range []string{"/proc", "/sys", "/dev", "/run", "/boot/efi"} {
			if f.Path == top || strings.HasPrefix(f.Path, top+"/") {
				return fmt.Errorf("imagebuild: file %q: %s is not part of the image", f.Path, top)
			}
		}
		if f.Mode == 0 {
			f.Mode = 0o644
		}
		if f.Mode&^0o7777 != 0 {
			return fmt.Errorf("imagebuild: file %q: mode %o", f.Path, f.Mode)
		}
	}
	for _, u := range r.Enable {
		if !unitPattern.MatchString(u) {
			return fmt.Errorf("imagebuild: unit %q: want a systemd unit name such as ssh.service", u)
		}
	}
	if _, err := ParseFirmware(string(r.Firmware)); err != nil {
		return err
	}
	if r.FromTar != "" && r.Suite == "" {
		// The suite is the tarball's (its os-release), learnt when unpacked.
	} else if !suitePattern.MatchString(r.Suite) {
		return fmt.Errorf("suite %q: want a Debian suite name such as bookworm", r.Suite)
	}
	if r.Size%alignment != 0 {
		return fmt.Errorf("size %d: want a whole number of MiB", r.Size)
	}
	if r.Swap < 0 || r.Swap%alignment != 0 {
		return fmt.Errorf("swap %d: want a whole number of MiB", r.Swap)
	}
	if root := r.Size - r.fixedSize(); root < minRootSize {
		return fmt.Errorf("size %d MiB: too small, the root file system needs at least %d MiB besides %d MiB of boot and swap partitions",
			r.Size>>20, minRootSize>>20, r.fixedSize()>>20)
	}
	for _, p := range r.Packages {
		if !packagePattern.MatchString(p) {
			return fmt.Errorf("package %q: not a Debian package name", p)
		}
	}
	if r.Mirror != "" && !strings.HasPrefix(r.Mirror, "http://") && !strings.HasPrefix(r.Mirror, "https://") && !strings.HasPrefix(r.Mirror, "file:/") {
		return fmt.Errorf("mirror %q: want an http://, https:// or file:/ URL", r.Mirror)
	}
	for _, line := range strings.Split(strings.TrimSpace(r.SSHKey), "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") && !sshKeyPattern.MatchString(line) {
			return fmt.Errorf("ssh key %.20q...: want a public key (ssh-ed25519 AAAA..., one a line)", line)
		}
	}
	if strings.ContainsAny(r.RootPassword, "\n:") {
		return fmt.Errorf("root password: must not contain a newline or ':'")
	}
	return nil
}

// fixedSize is everything but the root partition: alignment at the start,
// the boot partitions, swap and the backup GPT at the end.
func (r *Recipe) fixedSize() int64 {
	n := int64(alignment) + alignment // first partition at 1 MiB, 1 MiB kept at the end
	if r.Firmware.bios() {
		n += biosBootSize
	}
	if r.Firmware.uefi() {
		n += espSize
	}
	return n + r.Swap
}

// Key names the recipe for caches: equal for recipes that build the same
// system, different when anything that changes the disk changes. Secrets
// enter only hashed.
func (r Recipe) Key() string {
	h := sha256.New()
	pk := slices.Clone(r.Packages)
	slices.Sort(pk)
	fw := r.Firmware
	if fw == "" {
		fw = Both // the default: the same recipe
	}
	fmt.Fprintf(h, "v%d\n%s\n%d\n%s\n%s\n%s\n%d\n%s\n%s\n%s\n", keyVersion, r.Suite, r.Size, fw, r.Mirror,
		strings.Join(pk, ","), r.Swap, r.SSHKey, r.RootPassword, r.FromTar)
	for _, f := range r.Files {
		mode := f.Mode
		if mode == 0 {
			mode = 0o644 // the default: the same recipe
		}
		fmt.Fprintf(h, "file %q %o %d\n%s\n", f.Path, mode, len(f.Content), f.Content)
	}
	fmt.Fprintf(h, "enable %q\n", r.Enable)
	name := r.Suite
	if r.FromTar != "" {
		name = "tar"
	}
	return name + "-" + string(fw) + "-" + hex.EncodeToString(h.Sum(nil))[:12]
}

// keyVersion changes whenever the builder changes what it makes, so that
// cached images of an older builder are rebuilt.
const keyVersion = 1

// Partition is one partition of the disk layout.
type Partition struct {
	Number int
	Name   string // GPT partition name
	Type   string // sgdisk type code
	Size   int64  // bytes; 0: the rest of the disk
}

// Partition roles, by GPT name.
const (
	partBIOS = "bios-boot"
	partESP  = "esp"
	partSwap = "swap"
	partRoot = "root"
)

// Layout is the recipe's partition table, in disk order: the root file
// system last so that it can grow with the disk.
func (r *Recipe) Layout() []Partition {
	var ps []Partition
	add := func(name, typ string, size int64) {
		ps = append(ps, Partition{Number: len(ps) + 1, Name: name, Type: typ, Size: size})
	}
	if r.Firmware.bios() {
		add(partBIOS, "EF02", biosBootSize)
	}
	if r.Firmware.uefi() {
		add(partESP, "EF00", espSize)
	}
	if r.Swap > 0 {
		add(partSwap, "8200", r.Swap)
	}
	add(partRoot, "8300", 0)
	return ps
}

// sgdiskArgs is the sgdisk command line that writes the layout to disk.
func sgdiskArgs(layout []Partition, disk string) []string {
	args := []string{"--zap-all", "--set-alignment=2048"}
	for _, p := range layout {
		end := "0"
		if p.Size > 0 {
			end = fmt.Sprintf("+%dK", p.Size>>10)
		}
		args = append(args,
			fmt.Sprintf("--new=%d:0:%s", p.Number, end),
			fmt.Sprintf("--typecode=%d:%s", p.Number, p.Type),
			fmt.Sprintf("--change-name=%d:%s", p.Number, p.Name))
	}
	return append(args, disk)
}

// aptPackages is what apt installs into the debootstrapped (or unpacked)
// system of distribution osID (os-release ID), beyond what debootstrap's
// default variant brings: a container's root file system has no kernel,
// init or e2fsck.
func (r *Recipe) aptPackages(osID string) []string {
	kernel, busybox := "linux-image-amd64", "busybox"
	if osID == "ubuntu" {
		kernel, busybox = "linux-image-generic", "busybox-initramfs"
	}
	pk := []string{kernel, "initramfs-tools", "open-iscsi", busybox, "systemd-sysv"}
	if r.FromTar != "" {
		pk = append(pk, "e2fsprogs", "udev", "kmod")
	}
	switch r.Firmware {
	case BIOS:
		pk = append(pk, "grub-pc")
	case UEFI:
		// Not grub-efi-amd64: its maintainer scripts install GRUB to a
		// mounted ESP and NVRAM themselves; the builder puts GRUB on the
		// removable path (installEFI) and update-grub keeps grub.cfg.
		pk = append(pk, "grub-efi-amd64-bin", "grub2-common")
	case Both:
		// grub-pc and grub-efi-amd64 conflict; Debian's way to have
		// both is grub-pc plus the EFI modules (grub-efi-amd64-bin).
		pk = append(pk, "grub-pc", "grub-efi-amd64-bin")
	}
	if r.SSHKey != "" {
		pk = append(pk, "openssh-server")
	}
	for _, p := range r.Packages {
		if !slices.Contains(pk, p) {
			pk = append(pk, p)
		}
	}
	return pk
}

// DefaultMirror is the Debian mirror of this machine's apt sources (one
// that carries suite, else the first plain Debian one), read from
// etcApt (normally /etc/apt): deb822 .sources files and one-line
// sources.list entries. "" when there is none.
func DefaultMirror(etcApt, suite string) string {
	type entry struct{ uri, suites string }
	var entries []entry
	files, _ := filepath.Glob(filepath.Join(etcApt, "sources.list.d", "*.sources"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, stanza := range strings.Split(string(b), "\n\n") {
			fields := map[string]string{}
			for _, line := range strings.Split(stanza, "\n") {
				if k, v, ok := strings.Cut(line, ":"); ok && !strings.HasPrefix(line, "#") && !strings.HasPrefix(line, " ") {
					fields[strings.ToLower(strings.TrimSpace(k))] = strings.TrimSpace(v)
				}
			}
			if !strings.Contains(" "+fields["types"]+" ", " deb ") || fields["enabled"] == "no" {
				continue
			}
			for _, u := range strings.Fields(fields["uris"]) {
				entries = append(entries, entry{u, fields["suites"]})
			}
		}
	}
	lists, _ := filepath.Glob(filepath.Join(etcApt, "sources.list.d", "*.list"))
	for _, f := range append([]string{filepath.Join(etcApt, "sources.list")}, lists...) {
		fh, err := os.Open(f)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			fs := strings.Fields(sc.Text())
			if len(fs) < 3 || fs[0] != "deb" {
				continue
			}
			fs = fs[1:]
			if strings.HasPrefix(fs[0], "[") { // options: [arch=amd64 signed-by=...]
				for len(fs) > 0 && !strings.HasSuffix(fs[0], "]") {
					fs = fs[1:]
				}
				if len(fs) > 0 {
					fs = fs[1:]
				}
			}
			if len(fs) >= 2 {
				entries = append(entries, entry{fs[0], fs[1]})
			}
		}
		fh.Close()
	}
	debian := func(u string) bool { return strings.HasSuffix(strings.TrimRight(u, "/"), "/debian") }
	for _, e := range entries {
		if debian(e.uri) && slices.Contains(strings.Fields(e.suites), suite) {
			return strings.TrimRight(e.uri, "/")
		}
	}
	for _, e := range entries {
		if debian(e.uri) {
			return strings.TrimRight(e.uri, "/")
		}
	}
	return ""
}

// FallbackMirror is used when the machine has no Debian mirror configured.
const FallbackMirror = "http://deb.debian.org/debian"

// sourcesList is the image's /etc/apt/sources.list: the suite and its
// updates from the mirror, and security updates when the mirror is a
// plain Debian one (whose security archive lies beside it).
func sourcesList(mirror, suite string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "deb %s %s main\n", mirror, suite)
	fmt.Fprintf(&b, "deb %s %s-updates main\n", mirror, suite)
	if base, ok := strings.CutSuffix(strings.TrimRight(mirror, "/"), "/debian"); ok && suite != "sid" && suite != "unstable" {
		fmt.Fprintf(&b, "deb %s/debian-security %s-security main\n", base, suite)
	}
	return b.String()
}
