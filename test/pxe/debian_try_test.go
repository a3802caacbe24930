package pxe

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/diskless-boot/diskless/internal/imagebuild"
	"github.com/diskless-boot/diskless/internal/testutil/debimage"
	"github.com/diskless-boot/diskless/internal/testutil/output"
)

// A manual try (DISKLESS_DEBIAN_TRY=1, or =uefi for OVMF; DISKLESS_DEBIAN_TRY_DISK=FILE boots
// another built disk): the Debian image diskless image build makes boots from diskless on a BIOS PC to a login prompt on the
// serial console. Issue 9's end-to-end test replaces it.
func TestDebianTry(t *testing.T) {
	if os.Getenv("DISKLESS_DEBIAN_TRY") == "" {
		t.Skip("manual: DISKLESS_DEBIAN_TRY=1")
	}
	need(t, []string{"ip", "qemu-system-x86_64"}, map[string]string{ipxeROM: "ipxe-qemu"})
	disk := os.Getenv("DISKLESS_DEBIAN_TRY_DISK") // another built image, e.g. of --from-tar
	if disk == "" {
		disk = debimage.Get(t, imagebuild.Recipe{Suite: "bookworm", Size: 2 << 30, Firmware: imagebuild.Both, Swap: 256 << 20,
			SSHKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDisklessImageBuildTestKeyXXXXXXXXXXXXXXXXXX diskless-test\n"}).Disk
	}
	n := newTestNet(t, false)
	dir := tempDir(t)
	data := filepath.Join(dir, "state")
	cli := nsCLI(t, n, data)
	cli("image", "import", "deb12", disk)
	cli("host", "add", "pc1", "--image", "deb12", "--mac", clientMAC)
	srv := startServe(t, n, e2eServeArgs(n, data)...)
	// UEFI: OVMF's own PXE -> snponly.efi -> iPXE -> sanboot -> the ESP's
	// \EFI\BOOT\BOOTX64.EFI, on virtio-net.
	args := e2eVMArgs(t, n, dir, clientMAC, os.Getenv("DISKLESS_DEBIAN_TRY") == "uefi", "poweroff")
	v := startVM(t, n.vmNS, args...)
	stageWait := 4 * time.Minute
	if d, err := time.ParseDuration(os.Getenv("DISKLESS_DEBIAN_TRY_WAIT")); err == nil {
		stageWait = d // short, to look at a boot that fails early
	}
	for _, stage := range []string{"Linux version", "iSCSI Initiator over TCP/IP", "EXT4-fs (sda", "login:"} {
		i, took, err := v.WaitFor(stageWait, stage, "Kernel panic", "ALERT!", "Gave up waiting")
		if err != nil || i != 0 {
			t.Logf("server:\n%s", srv.Output())
			t.Fatalf("waiting for %q: %v (matched %d)", stage, err, i)
		}
		t.Logf("%-14s %v", stage, took.Round(100*time.Millisecond))
	}
	// The running system's iscsid took the boot session over: after a
	// server restart it logs in again, as the same initiator with CHAP.
	srv.Kill()
	time.Sleep(5 * time.Second)
	srv2 := startServe(t, n, e2eServeArgs(n, data)...)
	if _, took, err := srv2.WaitFor(3*time.Minute, `detail="login of `); err != nil {
		t.Errorf("no re-login after the restart: %v\n%s", err, srv2.Output())
	} else {
		t.Logf("re-login %v after the restart: %s", took.Round(100*time.Millisecond), lineWith(srv2.Output(), `detail="login of `))
	}
	time.Sleep(10 * time.Second)
	t.Logf("console after the restart:\n%s", output.Tail(v.Console(), 1500))
}
