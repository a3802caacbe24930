package imagebuild

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
)

// tool is a program the build runs on the build machine, with the Debian
// package that has it.
type tool struct{ name, pkg string }

// tools are what a build of firmware f needs on this machine (GRUB and the
// kernel come from the image's own packages, not from the machine).
func tools(f Firmware) []tool {
	t := []tool{
		{"debootstrap", "debootstrap"},
		{"sgdisk", "gdisk"},
		{"mkfs.ext4", "e2fsprogs"},
		{"blkid", "util-linux"},
		{"losetup", "mount"},
		{"mount", "mount"},
		{"partx", "util-linux"},
		{"sfdisk", "fdisk"}, // image prepare reads partition tables
		{"mkswap", "util-linux"},
		{"chroot", "coreutils"},
		{"tar", "tar"},
	}
	if f.uefi() {
		t = append(t, tool{"mkfs.vfat", "dosfstools"}, tool{"mcopy", "mtools"}, tool{"mmd", "mtools"}, tool{"mdir", "mtools"})
	}
	return t
}

// ErrNotRoot: a build attaches loop devices and mounts file systems.
var ErrNotRoot = errors.New("imagebuild: building an image needs root (loop devices, mounts, chroot)")

// Check says what this machine lacks to build an image of firmware f:
// root, and which tools, with the exact apt-get command that installs
// them. euid is os.Geteuid(); lookPath finds a program (nil: in the PATH
// the build runs its commands with, sbin included).
func Check(f Firmware, euid int, lookPath func(string) (string, error)) error {
	return check(tools(f), euid, lookPath)
}

// CheckPrepare is Check for image prepare, which installs no system of its
// own (no debootstrap) and may meet an ESP.
func CheckPrepare(euid int, lookPath func(string) (string, error)) error {
	var t []tool
	for _, x := range tools(Both) {
		if x.name != "debootstrap" && x.name != "sgdisk" && !strings.HasPrefix(x.name, "mk") && x.name != "tar" {
			t = append(t, x)
		}
	}
	return check(append(t, tool{"cp", "coreutils"}), euid, lookPath)
}

func check(tools []tool, euid int, lookPath func(string) (string, error)) error {
	if lookPath == nil {
		lookPath = lookBuildPath
	}
	var missing, pkgs []string
	for _, t := range tools {
		if _, err := lookPath(t.name); err != nil {
			missing = append(missing, t.name)
			if !slices.Contains(pkgs, t.pkg) {
				pkgs = append(pkgs, t.pkg)
			}
		}
	}
	var errs []error
	if euid != 0 {
		errs = append(errs, ErrNotRoot)
	}
	if len(missing) > 0 {
		errs = append(errs, fmt.Errorf("imagebuild: missing %s; install with: apt-get install %s",
			strings.Join(missing, ", "), strings.Join(pkgs, " ")))
	}
	return errors.Join(errs...)
}

// buildPath is the PATH of the build's commands: a user's PATH often lacks
// sbin, where mkfs and losetup live.
const buildPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

func lookBuildPath(name string) (string, error) {
	for _, d := range strings.Split(buildPath, ":") {
		p := d + "/" + name
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", exec.ErrNotFound
}
