package pxe

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/diskless-boot/diskless/internal/iotrace"
)

// TestRecordBootTrace records the I/O trace of one real boot (issue 11,
// item 5) for bench/replay: the end-to-end Debian image, a volatile host
// (every boot a first boot, as in a storm of freshly reset machines),
// SeaBIOS + iPXE ROM, sanboot, GRUB, the kernel and initramfs logging in
// from the iBFT, up to the end-to-end unit's line. The trace is cut at the
// moment the test saw that line (what the machine did after it -
// poweroff - is not part of a boot) and written to
// $DISKLESS_RECORD_TRACE/debian-boot.trace. Opt-in: it rewrites a file
// of the repository, bench/replay/testdata/README.md says how.
func TestRecordBootTrace(t *testing.T) {
	out := os.Getenv("DISKLESS_RECORD_TRACE")
	if out == "" {
		t.Skip("set DISKLESS_RECORD_TRACE=DIR to record a boot's I/O trace into DIR/debian-boot.trace")
	}
	n, dir, data, cli := e2eSite(t)
	cli("host", "add", "pc1", "--image", "debian", "--disk", "volatile", "--mac", macPC1)
	traces := filepath.Join(dir, "traces")
	if err := os.Mkdir(traces, 0o755); err != nil {
		t.Fatal(err)
	}
	srv := startServe(t, n, append(e2eServeArgs(n, data), "--trace-io", traces)...)
	v := startVM(t, n.vmNS, e2eVMArgs(t, n, dir, macPC1, false, "poweroff")...)
	b, _ := waitBoot(t, v, "pc1", 0)
	lineAt := time.Now()
	t.Logf("pc1: power-on to the unit's line %v", b.took.Round(100*time.Millisecond))
	if err := v.Wait(3 * time.Minute); err != nil {
		t.Logf("qemu: %v", err)
	}
	// Stopping the server ends the sessions, which closes the trace.
	if err := srv.Stop(); err != nil {
		t.Logf("diskless serve: %v", err)
	}
	files, _ := filepath.Glob(filepath.Join(traces, "*.trace"))
	if len(files) != 1 {
		t.Fatalf("%d trace files, want 1: %v\n%s", len(files), files, srv.Output())
	}
	raw, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	tr, err := iotrace.Read(bytes.NewReader(raw), 0)
	if err != nil {
		t.Fatal(err)
	}
	cut := lineAt.Sub(tr.Started)
	var buf bytes.Buffer
	w := iotrace.NewWriter(&buf, tr.Header, 0)
	for _, s := range tr.Sessions {
		if s.At <= cut {
			w.Login(s.At, s.ISID, s.TSIH, s.Initiator)
		}
	}
	kept := 0
	for _, r := range tr.IOs {
		if r.At <= cut {
			w.IO(r)
			kept++
		}
	}
	for _, s := range tr.Sessions {
		if s.End > 0 && s.End <= cut {
			w.Logout(s.End, s.Index)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(out, "debian-boot.trace")
	if err := os.WriteFile(dst, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	st := tr.Stats()
	t.Logf("%s: %d of %d records up to the unit's line (%v after the first login); whole trace %+v",
		dst, kept, len(tr.IOs), cut.Round(time.Millisecond), st)
}
