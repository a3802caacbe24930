package pxe

import (
	"testing"

	"github.com/diskless-boot/diskless/internal/testutil/qemu"
)

// startVM runs a headless QEMU PC in namespace ns with args (see
// qemu.Start); the console is kept in $DISKLESS_PXE_LOGDIR when that is set.
func startVM(t *testing.T, ns string, args ...string) *qemu.VM {
	t.Helper()
	// ip netns exec execs QEMU: killing the process kills QEMU.
	return qemu.Start(t, qemu.Config{Prefix: []string{"ip", "netns", "exec", ns}, LogDirEnv: "DISKLESS_PXE_LOGDIR"}, args...)
}
