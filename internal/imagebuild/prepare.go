package imagebuild

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Prepare makes an installed Debian or Ubuntu system on a raw disk image
// boot from diskless the way Build's images do: the HOWTO's "transfer an
// existing installation" followed by its "iSCSI boot configuration". On
// disk it finds the root file system (ext4 holding
// /etc/os-release), the EFI system partition, the BIOS boot partition and
// swap; mounts every file system by UUID (device names of the machine it
// was installed on, /dev/sda2 or /dev/vda1, name nothing on a host's
// iSCSI disk); installs open-iscsi if missing; has the initramfs log in
// from the iBFT with the NIC drivers of any machine; stops ifupdown from
// reconfiguring the boot NIC; installs GRUB for BIOS and/or UEFI (what the
// disk and the system's GRUB packages allow); generalizes it and extracts
// kernel and initrd. disk is taken over: moved into the work directory
// (copied when it is on another file system), so the caller exports a
// version once, not twice. Like Build, it leaves nothing behind on error.
func Prepare(ctx context.Context, disk string, opt Options) (*Result, error) {
	if _, err := os.Stat(disk); err != nil {
		return nil, fmt.Errorf("imagebuild: %w", err)
	}
	b, err := newBuilder(Recipe{}, opt)
	if err != nil {
		return nil, err
	}
	return b.runSteps(ctx, []step{
		{"take the disk", func(ctx context.Context) error {
			b.disk = filepath.Join(b.dir, "disk.img")
			if os.Rename(disk, b.disk) == nil {
				return nil
			}
			// Another file system: a sparse copy.
			_, err := b.cmd(ctx, "cp", "--sparse=always", disk, b.disk)
			return err
		}},
		{"find the partitions", b.findPartitions},
		{"configure the system", b.configureInstalled},
		{"install open-iscsi, make the initramfs", b.installISCSI},
		{"install GRUB to the disk", b.installGRUB},
		{"generalize (one image for every host)", b.generalize},
		{"extract kernel and initrd", b.extractBoot},
	})
}

// GPT partition types Prepare recognizes.
const (
	gptESP      = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
	gptBIOSBoot = "21686148-6449-6e6f-744e-656564454649"
)

// diskPartition is one entry of sfdisk --json.
type diskPartition struct {
	Node  string `json:"node"`
	Start int64  `json:"start"`
	Size  int64  `json:"size"`
	Type  string `json:"type"`
}

// findPartitions reads the disk's partition table, attaches it, tells the
// partitions' roles from their types and file systems, mounts the root
// file system and decides the firmware the disk can boot with.
func (b *builder) findPartitions(ctx context.Context) error {
	out, err := b.cmd(ctx, "sfdisk", "--json", b.disk)
	if err != nil {
		return fmt.Errorf("no partition table: %w", err)
	}
	var pt struct {
		Table struct {
			Label      string          `json:"label"`
			Partitions []diskPartition `json:"partitions"`
		} `json:"partitiontable"`
	}
	if err := json.Unmarshal([]byte(out), &pt); err != nil {
		return fmt.Errorf("sfdisk: %w", err)
	}
	if len(pt.Table.Partitions) == 0 {
		return errors.New("the disk has no partitions: want an installed system (a whole-disk file system cannot hold GRUB)")
	}
	numbered := map[int]diskPartition{}
	last := 0
	for _, p := range pt.Table.Partitions {
		n := partitionNumber(p.Node)
		if n <= 0 {
			return fmt.Errorf("sfdisk: partition %q", p.Node)
		}
		numbered[n] = p
		last = max(last, n)
	}
	if err := b.attach(ctx, last); err != nil {
		return err
	}
	numbers := make([]int, 0, len(numbered))
	for n := range numbered {
		numbers = append(numbers, n)
	}
	sort.Ints(numbers)
	b.uuidOf = map[int]string{}
	var root diskPartition
	rootN := 0
	for _, n := range numbers {
		p := numbered[n]
		fs, uuid := b.probe(ctx, b.part(n))
		if uuid != "" {
			b.uuidOf[n] = uuid
		}
		typ := strings.ToLower(p.Type)
		role := ""
		switch {
		case typ == gptBIOSBoot:
			role = partBIOS
		case typ == gptESP || (pt.Table.Label == "dos" && typ == "ef"):
			role, b.u.ESP = partESP, uuid
		case fs == "swap":
			role, b.u.Swap = partSwap, uuid
		case fs == "ext4" || fs == "ext3" || fs == "ext2":
			// The largest is the root candidate.
			if p.Size > root.Size {
				root, rootN = p, n
			}
			continue
		default:
			continue
		}
		b.layout = append(b.layout, Partition{Number: n, Name: role, Type: p.Type})
	}
	if rootN == 0 {
		return errors.New("no ext4 file system on the disk: want an installed Debian or Ubuntu with an ext4 root")
	}
	b.layout = append(b.layout, Partition{Number: rootN, Name: partRoot, Type: root.Type})
	b.u.Root = b.uuidOf[rootN]
	b.mnt = filepath.Join(b.dir, "root")
	if err := os.Mkdir(b.mnt, 0o755); err != nil {
		return err
	}
	if err := b.mount(ctx, b.part(rootN), b.mnt); err != nil {
		return err
	}
	if id, _ := osRelease(b.mnt); id == "" {
		return fmt.Errorf("partition %d (the largest ext4) holds no /etc/os-release: not a system's root", rootN)
	}
	// Firmware: what the partition table allows and the system's GRUB
	// packages can do.
	hasGRUB := func(platform string) bool {
		_, err := os.Stat(filepath.Join(b.mnt, "usr/lib/grub", platform))
		return err == nil
	}
	bios := (pt.Table.Label == "dos" || b.partOf(partBIOS) != "") && hasGRUB("i386-pc")
	uefi := b.partOf(partESP) != "" && hasGRUB("x86_64-efi")
	switch {
	case bios && uefi:
		b.r.Firmware = Both
	case bios:
		b.r.Firmware = BIOS
	case uefi:
		b.r.Firmware = UEFI
	default:
		return errors.New("the disk cannot boot: want a BIOS boot partition (GPT) or an MBR with grub-pc in the system, " +
			"or an EFI system partition with grub-efi-amd64-bin in it")
	}
	b.phase(fmt.Sprintf("root on partition %d, firmware %s", rootN, b.r.Firmware))
	return nil
}

// partitionNumber is the number at the end of an sfdisk node name
// (disk.img3 -> 3).
func partitionNumber(node string) int {
	i := len(node)
	for i > 0 && node[i-1] >= '0' && node[i-1] <= '9' {
		i--
	}
	n, _ := strconv.Atoi(node[i:])
	return n
}

// probe returns the file system type and UUID of a partition ("" when it
// has none).
func (b *builder) probe(ctx context.Context, dev string) (fs, uuid string) {
	out, _ := b.cmd(ctx, "blkid", "-p", "-o", "export", dev)
	for _, l := range strings.Split(out, "\n") {
		k, v, _ := strings.Cut(strings.TrimSpace(l), "=")
		switch k {
		case "TYPE":
			fs = v
		case "UUID":
			uuid = v
		}
	}
	return fs, uuid
}

// configureInstalled is configure for an installed system: its fstab by
// UUID, its boot NIC left alone, diskless' files, the chroot's mounts.
func (b *builder) configureInstalled(ctx context.Context) error {
	var codename string
	b.osID, codename = osRelease(b.mnt)
	if !suitePattern.MatchString(codename) {
		codename = "unknown"
	}
	b.r.Suite = codename // names the package cache
	if err := b.hostDNS(); err != nil {
		return err
	}
	fstabPath := filepath.Join(b.mnt, "etc/fstab")
	old, err := os.ReadFile(fstabPath)
	if err != nil {
		return err
	}
	fixed, err := fstabByUUID(string(old), b.uuidOf)
	if err != nil {
		return err
	}
	if err := os.WriteFile(fstabPath, []byte(fixed), 0o644); err != nil {
		return err
	}
	ifaces := filepath.Join(b.mnt, "etc/network/interfaces")
	if cfg, err := os.ReadFile(ifaces); err == nil {
		if err := os.WriteFile(ifaces, []byte(bootNICUnconfigured(string(cfg))), 0o644); err != nil {
			return err
		}
	}
	for _, f := range imageFiles(&Recipe{}, b.u) {
		if f.Path == "/etc/fstab" {
			continue
		}
		if err := b.writeFile(f); err != nil {
			return err
		}
	}
	if _, err := os.Stat(filepath.Join(b.mnt, "usr/sbin/sshd")); err == nil {
		// generalize removes the host keys: each host makes its own.
		if err := b.writeFile(file{"/etc/systemd/system/diskless-ssh-keys.service", 0o644, sshKeysUnit}); err != nil {
			return err
		}
		b.units = append(b.units, "diskless-ssh-keys.service")
	}
	return b.mountChroot(ctx)
}

// installISCSI installs what the iSCSI boot needs and the system lacks,
// enables the units and makes the initramfs again.
func (b *builder) installISCSI(ctx context.Context) error {
	busybox := "busybox"
	if b.osID == "ubuntu" {
		busybox = "busybox-initramfs" // as Build installs it
	}
	var missing []string
	for _, p := range []string{"open-iscsi", "initramfs-tools", busybox} {
		out, err := b.chroot(ctx, "", "dpkg-query", "-W", "-f=${Status}", p)
		if err != nil || !strings.Contains(out, "install ok installed") {
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 {
		b.phase("install " + strings.Join(missing, ", ") + " from the system's own apt sources")
		if _, err := b.chroot(ctx, "", "apt-get", "update"); err != nil {
			return err
		}
		args := append([]string{"apt-get", "install", "--yes", "--no-install-recommends",
			"-o", "Dpkg::Options::=--force-confdef", "-o", "Dpkg::Options::=--force-confold"}, missing...)
		if _, err := b.chroot(ctx, "", args...); err != nil {
			return err
		}
	}
	units := append([]string{"diskless-ibft.service", "iscsid.service", "open-iscsi.service", "serial-getty@ttyS0.service"}, b.units...)
	if _, err := b.chroot(ctx, "", append([]string{"systemctl", "enable"}, units...)...); err != nil {
		return err
	}
	_, err := b.chroot(ctx, "", "update-initramfs", "-u", "-k", "all")
	return err
}

// localDisk matches the device names of a local disk's partitions in an
// fstab: /dev/sda2, /dev/vda1, /dev/xvdb3, /dev/nvme0n1p2, /dev/mmcblk0p1,
// and by-id/by-path links ending in -partN.
var localDisk = regexp.MustCompile(`^/dev/(?:(?:sd|vd|hd|xvd)[a-z]+(\d+)|(?:nvme\d+n\d+|mmcblk\d+)p(\d+)|disk/by-(?:id|path)/\S+-part(\d+))$`)

// fstabByUUID rewrites the fstab entries that name a partition of a local
// disk by device to UUID=, from its partition number. UUID=, LABEL= and
// PARTUUID= entries stay (the copy keeps them valid).
func fstabByUUID(fstab string, uuidOf map[int]string) (string, error) {
	lines := strings.Split(fstab, "\n")
	for i, l := range lines {
		f := strings.Fields(l)
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		m := localDisk.FindStringSubmatch(f[0])
		if m == nil {
			continue
		}
		n, _ := strconv.Atoi(m[1] + m[2] + m[3])
		uuid := uuidOf[n]
		if uuid == "" {
			return "", fmt.Errorf("fstab mounts %s on %s: the disk has no partition %d with a UUID", f[0], f[1], n)
		}
		lines[i] = strings.Replace(l, f[0], "UUID="+uuid, 1)
	}
	return strings.Join(lines, "\n"), nil
}

// bootNICUnconfigured comments out the ifupdown stanzas of every interface
// but lo: the initramfs configured the boot NIC and the root disk runs
// over it; an ifup (dhcp, or a static address) would take it down.
func bootNICUnconfigured(cfg string) string {
	lines := strings.Split(cfg, "\n")
	in := false // inside an iface stanza being commented out
	changed := false
	for i, l := range lines {
		f := strings.Fields(l)
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		switch f[0] {
		case "auto", "allow-hotplug", "allow-auto":
			if len(f) > 1 && f[1] != "lo" {
				lines[i], changed = "#"+l, true
			}
			in = false
			continue
		case "iface":
			in = len(f) > 1 && f[1] != "lo"
		case "mapping", "source", "source-directory":
			in = false
		}
		if in {
			lines[i], changed = "#"+l, true
		}
	}
	if !changed {
		return cfg
	}
	return "# diskless image prepare: the initramfs configures the boot NIC, which carries the\n" +
		"# root disk; the stanzas below (#) would reconfigure it and are left out.\n" + strings.Join(lines, "\n")
}
