package imagebuild_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/diskless-boot/diskless/internal/imagebuild"
	"github.com/diskless-boot/diskless/internal/testutil/debimage"
)

// Ctrl-C while apt installs the kernel in the chroot (processes running
// inside it, every mount in place): Build returns a cancellation and
// leaves no loop device, no mount and no file. Real tools, as root; run
// once per builder source (a marker in the test cache), as it costs a
// debootstrap.
func TestBuildCancelledRoot(t *testing.T) {
	debimage.Skip(t, imagebuild.BIOS)
	r := imagebuild.Recipe{Suite: "bookworm", Size: 2 << 30, Firmware: imagebuild.BIOS}
	key, err := debimage.Key(r)
	if err != nil {
		t.Fatal(err)
	}
	marker := filepath.Join(debimage.CacheDir(), "images", key+".cancel-ok")
	if _, err := os.Stat(marker); err == nil {
		t.Skipf("passed for this builder source already (%s)", marker)
	}
	work := t.TempDir()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	start := time.Now()
	_, err = imagebuild.Build(ctx, r, imagebuild.Options{WorkDir: work, CacheDir: debimage.PackageCache(),
		Progress: func(phase string, d time.Duration) {
			t.Logf("[%6s] %s", d.Round(time.Second), phase)
			if strings.HasPrefix(phase, "install kernel") {
				time.AfterFunc(5*time.Second, cancel)
			}
		}})
	t.Logf("returned %s after the start: %v", time.Since(start).Round(time.Second), err)
	if err == nil || !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "cancelled") {
		t.Fatalf("err %v, want a cancellation", err)
	}
	files, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, f := range files {
		if b, _ := os.ReadFile(f); strings.HasPrefix(string(b), work) {
			t.Errorf("loop device left: %s -> %s", f, b)
		}
	}
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	for _, l := range strings.Split(string(mi), "\n") {
		if strings.Contains(l, " "+work) {
			t.Errorf("mount left: %s", l)
		}
	}
	if ents, _ := os.ReadDir(work); len(ents) != 0 {
		t.Errorf("left in the work dir: %v", ents)
	}
	if !t.Failed() {
		os.MkdirAll(filepath.Dir(marker), 0o755)
		os.WriteFile(marker, []byte(time.Now().UTC().Format(time.RFC3339)+"\n"), 0o644)
	}
}
