package imagebuild

import (
	"fmt"
	"strings"
)

// file is one file the builder writes into the image.
type file struct {
	Path    string // in the image
	Mode    uint32
	Content string
}

// uuids are the file system UUIDs of the new disk.
type uuids struct {
	Root, ESP, Swap string
}

// fstab mounts everything by UUID (the HOWTO's advice): device names
// differ between the build machine's loop device and the host's iSCSI
// disk. _netdev is not needed for / (the initramfs mounts it) and would
// only delay the ESP.
func fstab(u uuids) string {
	var b strings.Builder
	b.WriteString("# Written by diskless image build: every file system by UUID.\n")
	fmt.Fprintf(&b, "UUID=%s / ext4 errors=remount-ro 0 1\n", u.Root)
	if u.ESP != "" {
		fmt.Fprintf(&b, "UUID=%s /boot/efi vfat umask=0077,nofail 0 2\n", u.ESP)
	}
	if u.Swap != "" {
		fmt.Fprintf(&b, "UUID=%s none swap sw,nofail 0 0\n", u.Swap)
	}
	return b.String()
}

// policyRC refuses every service start while apt runs in the chroot: an
// iscsid started there would log out the build machine's own sessions
// (the HOWTO's comments), and nothing of the image may run on it.
const policyRC = "/usr/sbin/policy-rc.d"

const policyRCContent = "#!/bin/sh\n# diskless image build: no daemon starts while the image is built.\nexit 101\n"

// nicModules are NIC drivers of PCs and VMs the initramfs must have to
// reach the root disk (MODULES=most has them too; the list makes sure).
var nicModules = []string{
	"virtio_net", "virtio_pci", "e1000", "e1000e", "igb", "igc", "ixgbe", "r8169", "tg3", "bnx2", "bnxt_en",
	"i40e", "ice", "atlantic", "vmxnet3", "hv_netvsc", "8139cp", "8139too", "pcnet32", "ne2k_pci",
}

// bootConsoleArgs puts the kernel's console on the serial port and the
// screen (the last one is /dev/console, where systemd's status goes).
const bootConsoleArgs = "console=tty0 console=ttyS0,115200n8"

// ibftScript runs at every boot before iscsid. See docs/images.md,
// "How the running system keeps the boot session".
const ibftScript = `#!/bin/sh
# Installed by diskless image build; run by diskless-ibft.service before
# iscsid at every boot. The initramfs logged in to the root disk from the
# iBFT iPXE published (ISCSI_AUTO=true in /etc/iscsi/iscsi.initramfs). Make
# the running system agree with that boot session, per host, from the same
# table: iscsid's initiator name, the host name, DNS. iscsid itself takes
# over the session with its CHAP from the kernel (sysfs) when it starts.
ibft=/sys/firmware/ibft
modprobe -q iscsi_ibft 2>/dev/null || true

if [ -r "$ibft/initiator/initiator-name" ]; then
	name=$(cat "$ibft/initiator/initiator-name")
	if [ -n "$name" ] && ! grep -qx "InitiatorName=$name" /etc/iscsi/initiatorname.iscsi 2>/dev/null; then
		(
			umask 077
			printf '## Written at boot by diskless-ibft.service from the iBFT.\nInitiatorName=%s\n' "$name" \
				>/etc/iscsi/initiatorname.iscsi.new &&
				mv /etc/iscsi/initiatorname.iscsi.new /etc/iscsi/initiatorname.iscsi
		)
		echo "diskless-ibft: initiator name $name"
	fi
fi

# The host name: DHCP option 12, which iPXE copies into the iBFT, else the
# initramfs's DHCP answer. /etc/hostname stays empty in a shared image.
if [ ! -s /etc/hostname ]; then
	h=""
	for f in "$ibft"/ethernet*/hostname; do
		[ -r "$f" ] && h=$(cat "$f") && [ -n "$h" ] && break
	done
	if [ -z "$h" ]; then
		for f in /run/net-*.conf; do
			[ -r "$f" ] && h=$(. "$f" && echo "$HOSTNAME") && [ -n "$h" ] && break
		done
	fi
	if [ -n "$h" ]; then
		hostname "${h%%.*}" && echo "diskless-ibft: host name ${h%%.*}"
	fi
fi

# DNS from the initramfs's DHCP answer: nothing else configures the boot
# NIC in the running system.
if [ ! -s /etc/resolv.conf ] || [ -L /etc/resolv.conf -a ! -e /etc/resolv.conf ]; then
	for f in /run/net-*.conf; do
		[ -r "$f" ] || continue
		(
			. "$f"
			[ -n "$DNSDOMAIN" ] && echo "search $DNSDOMAIN"
			for d in "$IPV4DNS0" "$IPV4DNS1"; do
				[ -n "$d" ] && [ "$d" != 0.0.0.0 ] && echo "nameserver $d"
			done
		) >/etc/resolv.conf
		break
	done
fi
exit 0
`

const ibftUnit = `[Unit]
Description=diskless: take initiator name, host name and DNS from the iBFT
Documentation=https://github.com/diskless-boot/diskless/blob/main/docs/images.md
DefaultDependencies=no
After=systemd-remount-fs.service systemd-modules-load.service
Before=iscsid.service iscsid.socket open-iscsi.service systemd-hostnamed.service network-pre.target sysinit.target
Wants=network-pre.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/diskless-ibft

[Install]
WantedBy=sysinit.target
`

// sshKeysUnit makes a host's own SSH host keys at its first boot: the
// image ships none, so hosts on one image do not share them.
const sshKeysUnit = `[Unit]
Description=diskless: generate this host's SSH host keys
DefaultDependencies=no
After=systemd-remount-fs.service
Before=ssh.service sysinit.target
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=sysinit.target
`

// grubDefaults is the image's /etc/default/grub.d/diskless.cfg: kernel and
// GRUB on the serial console and the screen, boot messages visible.
const grubDefaults = `# diskless image build: boot visible on the screen and the serial port.
GRUB_TIMEOUT=2
GRUB_CMDLINE_LINUX_DEFAULT=""
GRUB_CMDLINE_LINUX="` + bootConsoleArgs + `"
GRUB_TERMINAL="console serial"
GRUB_SERIAL_COMMAND="serial --speed=115200 --unit=0 --word=8 --parity=no --stop=1"
GRUB_DISABLE_OS_PROBER=true
`

// nicHook adds the NIC drivers to every initramfs the image makes (also
// after a kernel update on the running host).
func nicHook() string {
	return `#!/bin/sh
# diskless image build: the NIC drivers a PC or VM needs to reach its
# iSCSI root disk, whatever machine the image boots on.
PREREQ=""
prereqs() { echo "$PREREQ"; }
case "$1" in prereqs) prereqs; exit 0 ;; esac
. /usr/share/initramfs-tools/hook-functions
for m in ` + strings.Join(nicModules, " ") + `; do
	manual_add_modules "$m"
done
`
}

// debconf answers the questions the packages would ask: GRUB is installed
// by the builder itself (to the loop device, then the image is moved), so
// the packages must not install it anywhere nor touch NVRAM.
const debconfSelections = `grub-pc grub-pc/install_devices multiselect
grub-pc grub-pc/install_devices_empty boolean true
grub-pc grub2/update_nvram boolean false
grub-efi-amd64 grub2/update_nvram boolean false
grub-efi-amd64 grub2/force_efi_extra_removable boolean true
locales locales/default_environment_locale select C.UTF-8
`

// imageFiles is every file written before the packages are installed
// (so the kernel's one initramfs build already includes them).
func imageFiles(r *Recipe, u uuids) []file {
	fs := []file{
		{policyRC, 0o755, policyRCContent},
		{"/etc/fstab", 0o644, fstab(u)},
		{"/etc/default/grub.d/diskless.cfg", 0o644, grubDefaults},
		{"/etc/initramfs-tools/conf.d/diskless", 0o644, "# diskless image build: drivers for any machine.\nMODULES=most\n"},
		{"/etc/initramfs-tools/hooks/diskless-nics", 0o755, nicHook()},
		// open-iscsi's initramfs logs in from the iBFT: no per-host value
		// in the image or on the kernel command line.
		{"/etc/iscsi/iscsi.initramfs", 0o600, "# diskless image build: log in to the root disk from the iBFT iPXE publishes.\nISCSI_AUTO=true\n"},
		{"/usr/local/sbin/diskless-ibft", 0o755, ibftScript},
		{"/etc/systemd/system/diskless-ibft.service", 0o644, ibftUnit},
		{"/etc/network/interfaces.d/diskless-boot-nic", 0o644,
			"# diskless image build: the boot NIC is configured by the initramfs and\n" +
				"# carries the root disk; nothing may reconfigure it (no ifupdown stanza).\n"},
	}
	if r.Mirror != "" {
		// debootstrap's, or the admin's for a tarball (else the
		// tarball's own sources stay).
		fs = append(fs, file{"/etc/apt/sources.list", 0o644, sourcesList(r.Mirror, r.Suite)})
	}
	if r.SSHKey != "" {
		fs = append(fs,
			file{"/root/.ssh/authorized_keys", 0o600, strings.TrimSpace(r.SSHKey) + "\n"},
			file{"/etc/systemd/system/diskless-ssh-keys.service", 0o644, sshKeysUnit})
	}
	return fs
}

// efiConfig is the first config of the standalone EFI GRUB: find the root
// file system by UUID and read its grub.cfg (modules stay in the image).
func efiConfig(rootUUID string) string {
	return "search --no-floppy --fs-uuid --set=root " + rootUUID + "\n" +
		"configfile ($root)/boot/grub/grub.cfg\n"
}
