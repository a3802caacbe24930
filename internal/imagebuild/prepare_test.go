package imagebuild

import (
	"errors"
	"strings"
	"testing"
)

func TestFstabByUUID(t *testing.T) {
	in := `# /etc/fstab: static file system information.
/dev/vda2 /         ext4 errors=remount-ro 0 1
/dev/sda1	/boot/efi vfat umask=0077 0 1
/dev/nvme0n1p3 none swap sw 0 0
/dev/disk/by-id/ata-QEMU_HARDDISK_QM00001-part4 /home ext4 defaults 0 2
UUID=1111 /data ext4 defaults 0 2
/dev/sr0 /media/cdrom0 udf,iso9660 user,noauto 0 0
tmpfs /tmp tmpfs defaults 0 0
`
	got, err := fstabByUUID(in, map[int]string{1: "aaaa", 2: "bbbb", 3: "cccc", 4: "dddd"})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"UUID=bbbb /         ext4", "UUID=aaaa\t/boot/efi", "UUID=cccc none swap",
		"UUID=dddd /home", "UUID=1111 /data", "/dev/sr0 /media/cdrom0", "tmpfs /tmp", "# /etc/fstab"} {
		if !strings.Contains(got, want) {
			t.Errorf("fstab lacks %q:\n%s", want, got)
		}
	}
	if _, err := fstabByUUID("/dev/sda7 /x ext4 defaults 0 2\n", map[int]string{1: "a"}); err == nil {
		t.Error("an fstab naming a partition the disk does not have passed")
	}
}

func TestBootNICUnconfigured(t *testing.T) {
	in := `source /etc/network/interfaces.d/*
auto lo
iface lo inet loopback

allow-hotplug ens3
iface ens3 inet dhcp
	dns-nameservers 10.0.0.1

auto eth1
iface eth1 inet static
	address 10.1.0.5/24
`
	got := bootNICUnconfigured(in)
	for _, want := range []string{"\nauto lo\n", "\niface lo inet loopback\n", "#allow-hotplug ens3", "#iface ens3 inet dhcp",
		"#\tdns-nameservers", "#auto eth1", "#iface eth1 inet static", "#\taddress 10.1.0.5/24", "\nsource /etc/network"} {
		if !strings.Contains(got, want) {
			t.Errorf("interfaces lacks %q:\n%s", want, got)
		}
	}
	if lo := "auto lo\niface lo inet loopback\n"; bootNICUnconfigured(lo) != lo {
		t.Error("an interfaces file with lo alone was changed")
	}
}

func TestPartitionNumber(t *testing.T) {
	for node, want := range map[string]int{"/x/disk.img1": 1, "disk.img12": 12, "/dev/nvme0n1p3": 3, "disk": 0} {
		if got := partitionNumber(node); got != want {
			t.Errorf("partitionNumber(%q) = %d, want %d", node, got, want)
		}
	}
}

// prepare needs no debootstrap, sgdisk or mkfs, but sfdisk and mtools.
func TestCheckPrepare(t *testing.T) {
	none := func(string) (string, error) { return "", errors.New("no") }
	err := CheckPrepare(0, none)
	if err == nil {
		t.Fatal("nothing present passed")
	}
	for _, want := range []string{"sfdisk", "blkid", "losetup", "chroot", "mcopy", "mdir", " cp"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q not named: %v", want, err)
		}
	}
	for _, not := range []string{"debootstrap", "sgdisk", "mkfs", "tar"} {
		if strings.Contains(err.Error(), not) {
			t.Errorf("%q is not needed: %v", not, err)
		}
	}
	if err := CheckPrepare(1000, func(n string) (string, error) { return "/usr/bin/" + n, nil }); !errors.Is(err, ErrNotRoot) {
		t.Errorf("not root: %v", err)
	}
}
