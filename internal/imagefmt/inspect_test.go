package imagefmt

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Inspect names the format and virtual size without converting anything,
// and refuses what Open refuses.
func TestInspect(t *testing.T) {
	ctx := context.Background()
	raw := filepath.Join(t.TempDir(), "disk.raw")
	if err := os.Truncate(createEmpty(t, raw), 3<<20); err != nil {
		t.Fatal(err)
	}
	if in, err := Inspect(ctx, raw); err != nil || in.Format != Raw || in.Size != 3<<20 {
		t.Errorf("raw: %+v %v", in, err)
	}
	if in, err := Inspect(ctx, "testdata/pattern-v3.qcow2"); err != nil || in.Format != QCOW2 || in.Size <= 0 {
		t.Errorf("qcow2: %+v %v", in, err)
	}
	bin, err := exec.LookPath("qemu-img")
	if err != nil {
		t.Skip("qemu-img not installed (apt-get install qemu-utils)")
	}
	dir := t.TempDir()
	vmdk := filepath.Join(dir, "disk.vmdk")
	if out, err := exec.Command(bin, "create", "-f", "vmdk", vmdk, "5M").CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if in, err := Inspect(ctx, vmdk); err != nil || in.Format != VMDK || in.Size != 5<<20 {
		t.Errorf("vmdk: %+v %v", in, err)
	}
	backed := filepath.Join(dir, "backed.vmdk")
	if out, err := exec.Command(bin, "create", "-f", "vmdk", "-b", vmdk, "-F", "vmdk", backed).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if _, err := Inspect(ctx, backed); err == nil {
		t.Error("an image with a backing file was accepted")
	}
}

func createEmpty(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	return path
}
