package pxe

import (
	"os"
	"testing"

	"github.com/diskless-boot/diskless/internal/testutil/bootdisk"
)

// uefiDisk writes the UEFI test disk (bootdisk.UEFI) or fails the test.
func uefiDisk(t *testing.T, dir, path, marker string) {
	t.Helper()
	if err := bootdisk.UEFI(dir, path, marker); err != nil {
		t.Fatal(err)
	}
}

// markerDisk writes a BIOS boot disk (bootdisk.MBR) printing a new marker
// to path and returns the marker.
func markerDisk(t *testing.T, path string) string {
	t.Helper()
	marker := bootdisk.Marker(t, "DISKLESS-PXE-")
	if err := os.WriteFile(path, bootdisk.MBR(4<<20, marker), 0o644); err != nil {
		t.Fatal(err)
	}
	return marker
}

// ovmfVarsCopy copies OVMF's variable store template to path (a machine's
// own, writable) and returns path.
func ovmfVarsCopy(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(ovmfVars)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}
