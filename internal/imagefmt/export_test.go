package imagefmt

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// readerOnly hides every method but ReadAt, as a caller's own device would.
type readerOnly struct{ r *bytes.Reader }

func (r readerOnly) ReadAt(p []byte, off int64) (int, error) { return r.r.ReadAt(p, off) }

func TestExportRaw(t *testing.T) {
	raw, want := patternDisk(t)
	src, err := Open(context.Background(), raw, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	for name, r := range map[string]interface {
		ReadAt([]byte, int64) (int, error)
	}{
		"from a Source": src,
		// Without Extents every byte is read; zero blocks must
		// still become holes.
		"from a plain ReaderAt": readerOnly{bytes.NewReader(want)},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			dst := filepath.Join(dir, "export.raw")
			// An older export of another size is replaced whole.
			if err := os.WriteFile(dst, bytes.Repeat([]byte{1}, patternSize+8192), 0o600); err != nil {
				t.Fatal(err)
			}
			var done, total int64
			err := Export(context.Background(), r, patternSize, dst, Raw,
				ExportOptions{Progress: func(d, tot int64) { done, total = d, tot }})
			if err != nil {
				t.Fatal(err)
			}
			if done != patternSize || total != patternSize {
				t.Errorf("progress ended at %d/%d, want %d/%d", done, total, patternSize, patternSize)
			}
			checkImported(t, dst, want)
			if left := dirEntries(t, dir); len(left) != 1 {
				t.Errorf("files beside the export: %v, want only it", left)
			}
		})
	}
}

func TestExportQCOW2RoundTrip(t *testing.T) {
	requireQemuImg(t)
	raw, want := patternDisk(t)
	src, err := Open(context.Background(), raw, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	tests := []struct {
		name      string
		opts      ExportOptions
		wantTotal int64
	}{
		{"from the source file", ExportOptions{SourcePath: raw}, patternSize},
		{"through a temporary raw copy", ExportOptions{TempDir: t.TempDir()}, 2 * patternSize},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			dst := filepath.Join(dir, "export.qcow2")
			var done, total int64
			tt.opts.Progress = func(d, tot int64) {
				if d < done {
					t.Errorf("progress went back from %d to %d", done, d)
				}
				done, total = d, tot
			}
			if err := Export(context.Background(), src, patternSize, dst, QCOW2, tt.opts); err != nil {
				t.Fatal(err)
			}
			if done != tt.wantTotal || total != tt.wantTotal {
				t.Errorf("progress ended at %d/%d, want %d/%d", done, total, tt.wantTotal, tt.wantTotal)
			}
			if f, err := Detect(dst); err != nil || f != QCOW2 {
				t.Fatalf("Detect(export) = %s, %v; want qcow2", f, err)
			}
			// qemu-img's own opinion, then ours.
			if out, err := exec.Command("qemu-img", "compare", "-f", "raw", "-F", "qcow2", raw, dst).CombinedOutput(); err != nil {
				t.Fatalf("qemu-img compare: %v\n%s", err, out)
			}
			imported, _ := importTo(t, dst, OpenOptions{})
			checkImported(t, imported, want)
			if a := allocated(t, dst); a > 8<<20 {
				t.Errorf("qcow2 export allocates %d bytes for 3.1 MiB of data", a)
			}
			if left := dirEntries(t, dir); len(left) != 1 {
				t.Errorf("files beside the export: %v, want only it", left)
			}
			if tt.opts.TempDir != "" {
				if left := dirEntries(t, tt.opts.TempDir); len(left) != 0 {
					t.Errorf("temporary files left: %v", left)
				}
			}
		})
	}
}

func TestExportQCOW2WithoutQemuImg(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	dst := filepath.Join(t.TempDir(), "export.qcow2")
	err := Export(context.Background(), bytes.NewReader(make([]byte, 4096)), 4096, dst, QCOW2, ExportOptions{})
	want := "qemu-img is not installed (apt-get install qemu-utils): needed to write qcow2 images"
	if !errors.Is(err, ErrNotInstalled) || !strings.Contains(err.Error(), want) {
		t.Errorf("Export = %v, want %q", err, want)
	}
	if _, err := os.Stat(dst); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("failed export left %s: %v", dst, err)
	}
}

func TestExportCancelLeavesNothing(t *testing.T) {
	requireQemuImg(t)
	raw, want := patternDisk(t)
	tests := []struct {
		name   string
		format Format
		source string // SourcePath
	}{
		{"raw", Raw, ""},
		{"qcow2 while copying to a temporary raw file", QCOW2, ""},
		{"qcow2 while qemu-img converts", QCOW2, raw},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			dir := t.TempDir()
			dst := filepath.Join(dir, "export")
			err := Export(ctx, bytes.NewReader(want), patternSize, dst, tt.format, ExportOptions{
				SourcePath: tt.source,
				Progress: func(done, _ int64) {
					// Mid-copy, or at qemu-img's first "(0.00/100%)".
					if done > 0 || tt.source != "" {
						cancel()
					}
				}})
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("Export = %v, want context.Canceled", err)
			}
			if left := dirEntries(t, dir); len(left) != 0 {
				t.Errorf("a cancelled export left %v", left)
			}
		})
	}
}

func TestExportRefuses(t *testing.T) {
	dir := t.TempDir()
	src := bytes.NewReader(make([]byte, 4096))
	if err := Export(context.Background(), src, 4096, filepath.Join(dir, "x.vmdk"), VMDK, ExportOptions{}); err == nil {
		t.Error("exported vmdk, which Export does not write")
	}
	// Renaming over a directory or a device node would destroy it.
	if err := Export(context.Background(), src, 4096, dir, Raw, ExportOptions{}); err == nil {
		t.Error("exported over a directory")
	}
	if err := Export(context.Background(), src, 4096, os.DevNull, Raw, ExportOptions{}); err == nil {
		t.Error("exported over /dev/null")
	}
	requireQemuImg(t)
	short := filepath.Join(dir, "short.raw")
	if err := os.WriteFile(short, make([]byte, 512), 0o600); err != nil {
		t.Fatal(err)
	}
	err := Export(context.Background(), src, 4096, filepath.Join(dir, "x.qcow2"), QCOW2, ExportOptions{SourcePath: short})
	if err == nil || !strings.Contains(err.Error(), "not 4096") {
		t.Errorf("Export from a SourcePath of the wrong size = %v, want an error", err)
	}
}
