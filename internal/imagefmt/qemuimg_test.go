package imagefmt

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// requireQemuImg skips the test when qemu-img is missing; CI installs it
// (scripts/ci-deps.sh).
func requireQemuImg(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img is not installed (apt-get install qemu-utils): skipping the test against real images")
	}
}

// qemuImgRun runs qemu-img and fails the test on error.
func qemuImgRun(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("qemu-img", args...).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func dirEntries(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// TestImportRealImages converts the pattern disk to every format with
// qemu-img and imports it back with Open and Copy: byte for byte equal and
// sparse.
func TestImportRealImages(t *testing.T) {
	requireQemuImg(t)
	raw, want := patternDisk(t)
	tests := []struct {
		name   string
		format Format
		args   []string // qemu-img convert options
	}{
		{"qcow2", QCOW2, nil},
		{"qcow2 compressed", QCOW2, []string{"-c"}},
		{"qcow2 v2", QCOW2, []string{"-o", "compat=0.10"}},
		{"qcow2 2 MiB clusters", QCOW2, []string{"-o", "cluster_size=2M"}},
		{"vmdk", VMDK, nil},
		{"vmdk stream-optimized", VMDK, []string{"-o", "subformat=streamOptimized"}},
		{"vmdk flat descriptor", VMDK, []string{"-o", "subformat=monolithicFlat"}},
		{"vhdx", VHDX, nil},
		{"vdi", VDI, nil},
		{"vpc", VPC, nil},
		{"vpc fixed", VPC, []string{"-o", "subformat=fixed"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			img := filepath.Join(t.TempDir(), "image."+string(tt.format))
			args := append([]string{"convert", "-f", "raw", "-O", string(tt.format)}, tt.args...)
			qemuImgRun(t, append(args, raw, img)...)
			if got, err := Detect(img); err != nil || got != tt.format {
				t.Fatalf("Detect = %s, %v; want %s", got, err, tt.format)
			}
			tmp := t.TempDir()
			var converted, total int64
			dst, s := importTo(t, img, OpenOptions{TempDir: tmp, Progress: func(d, tot int64) { converted, total = d, tot }})
			if s.Format() != tt.format {
				t.Errorf("Format = %s, want %s", s.Format(), tt.format)
			}
			if tt.format != QCOW2 {
				if total != s.Size() || converted != total {
					t.Errorf("conversion progress ended at %d/%d, want %d/%d", converted, total, s.Size(), s.Size())
				}
				// The temporary raw file is unlinked while open.
				if left := dirEntries(t, tmp); len(left) != 0 {
					t.Errorf("temporary files left in TempDir: %v", left)
				}
			}
			checkImported(t, dst, want)
		})
	}
}

func TestRefusesBackingFiles(t *testing.T) {
	requireQemuImg(t)
	dir := t.TempDir()
	base, _ := patternDisk(t)
	for _, f := range []Format{QCOW2, VMDK} {
		t.Run(string(f), func(t *testing.T) {
			parent := filepath.Join(dir, "base."+string(f))
			qemuImgRun(t, "convert", "-f", "raw", "-O", string(f), base, parent)
			child := filepath.Join(dir, "child."+string(f))
			qemuImgRun(t, "create", "-f", string(f), "-b", parent, "-F", string(f), child)
			s, err := Open(context.Background(), child, OpenOptions{TempDir: t.TempDir()})
			if err == nil {
				s.Close()
				t.Fatal("opened an image with a backing file")
			}
			var ue *UnsupportedError
			if !errors.As(err, &ue) || !strings.Contains(err.Error(), "backing file") {
				t.Fatalf("error %v, want an UnsupportedError about the backing file", err)
			}
		})
	}
}

// A VMDK descriptor is a text file that names its extents: one naming a
// file outside its own directory must not be read into an image.
func TestRefusesVMDKExtentsElsewhere(t *testing.T) {
	requireQemuImg(t)
	secretDir := t.TempDir()
	secret := filepath.Join(secretDir, "secret")
	if err := os.WriteFile(secret, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	link := filepath.Join(dir, "link.raw")
	if err := os.Symlink(secret, link); err != nil {
		t.Fatal(err)
	}
	for name, extent := range map[string]string{
		"absolute path": secret,
		"relative path": "../" + filepath.Base(secretDir) + "/secret",
		"symlink":       "link.raw",
	} {
		t.Run(name, func(t *testing.T) {
			desc := filepath.Join(dir, "disk.vmdk")
			text := "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n" +
				"createType=\"monolithicFlat\"\n\nRW 2048 FLAT \"" + extent + "\" 0\n"
			if err := os.WriteFile(desc, []byte(text), 0o600); err != nil {
				t.Fatal(err)
			}
			s, err := Open(context.Background(), desc, OpenOptions{TempDir: t.TempDir()})
			if err == nil {
				s.Close()
				t.Fatal("opened a descriptor whose extent lies elsewhere")
			}
			var ue *UnsupportedError
			if !errors.As(err, &ue) || !strings.Contains(err.Error(), "extent") {
				t.Fatalf("error %v, want an UnsupportedError about the extent", err)
			}
		})
	}
}

func TestQemuImgMissing(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	for _, name := range []string{"head.vmdk", "head.vhdx", "head.vdi", "head.vpc"} {
		_, err := Open(context.Background(), filepath.Join("testdata", name), OpenOptions{})
		format := strings.TrimPrefix(filepath.Ext(name), ".")
		want := "qemu-img is not installed (apt-get install qemu-utils): needed to read " + format + " images"
		if !errors.Is(err, ErrNotInstalled) || !strings.Contains(err.Error(), want) {
			t.Errorf("Open(%s) = %v, want %q", name, err, want)
		}
	}
}

func TestCancelDuringConversion(t *testing.T) {
	requireQemuImg(t)
	raw, _ := patternDisk(t)
	img := filepath.Join(t.TempDir(), "image.vdi")
	qemuImgRun(t, "convert", "-f", "raw", "-O", "vdi", raw, img)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tmp := t.TempDir()
	// qemu-img reports 0% before it converts anything: cancel there.
	s, err := Open(ctx, img, OpenOptions{TempDir: tmp, Progress: func(int64, int64) { cancel() }})
	if err == nil {
		s.Close()
		t.Fatal("Open finished after being cancelled")
	}
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Open = %v, want context.Canceled", err)
	}
	if left := dirEntries(t, tmp); len(left) != 0 {
		t.Errorf("temporary files left after the cancel: %v", left)
	}
}

func TestParseProgress(t *testing.T) {
	for in, want := range map[string]float64{
		"    (0.00/100%)": 0, "    (45.67/100%)": 45.67, "(100.00/100%)": 100,
	} {
		if got, ok := parseProgress([]byte(in)); !ok || got != want {
			t.Errorf("parseProgress(%q) = %v, %v; want %v", in, got, ok, want)
		}
	}
	for _, in := range []string{"", "(/100%)", "(101.00/100%)", "(-1/100%)", "qemu-img: error", "(NaN/100%)"} {
		if got, ok := parseProgress([]byte(in)); ok {
			t.Errorf("parseProgress(%q) = %v, want no progress", in, got)
		}
	}
}

// An admin types a relative path to a descriptor in a subdirectory; its
// extent beside it must be accepted.
func TestImportVMDKDescriptorByRelativePath(t *testing.T) {
	requireQemuImg(t)
	raw, want := patternDisk(t)
	t.Chdir(t.TempDir())
	if err := os.Mkdir("sub", 0o700); err != nil {
		t.Fatal(err)
	}
	qemuImgRun(t, "convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=monolithicFlat", raw, "sub/disk.vmdk")
	dst, _ := importTo(t, "sub/disk.vmdk", OpenOptions{TempDir: t.TempDir()})
	checkImported(t, dst, want)
}
