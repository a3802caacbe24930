package interop

import (
	"testing"

	"github.com/diskless-boot/diskless/internal/testutil/qemu"
)

// startVM runs a headless QEMU PC with args (see qemu.Start); the console is
// kept in $DISKLESS_INTEROP_LOGDIR when that is set.
func startVM(t *testing.T, args ...string) *qemu.VM {
	t.Helper()
	return qemu.Start(t, qemu.Config{LogDirEnv: "DISKLESS_INTEROP_LOGDIR"}, args...)
}
