package pxe

import (
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
