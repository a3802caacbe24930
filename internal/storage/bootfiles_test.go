package storage

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// A version's kernel and initrd are kept read-only next to it and go
// when the version is deleted: a later version never serves a stale one.
func TestBootFiles(t *testing.T) {
	l, ref, _ := fixture(t)
	dir := t.TempDir()
	k, i := filepath.Join(dir, "vmlinuz"), filepath.Join(dir, "initrd.img")
	os.WriteFile(k, []byte("kernel bytes"), 0o644)
	os.WriteFile(i, []byte("initrd bytes"), 0o644)
	if _, err := l.OpenBootFile(ref, BootKernel); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("before: %v, want not exist", err)
	}
	if err := l.WriteBootFiles(context.Background(), ref, BootFiles{BootKernel: k, BootInitrd: i}); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{BootKernel: "kernel bytes", BootInitrd: "initrd bytes"} {
		f, err := l.OpenBootFile(ref, name)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(f)
		st, _ := f.Stat()
		f.Close()
		if string(b) != want || st.Mode().Perm() != 0o444 {
			t.Errorf("%s: %q mode %v, want %q 0444", name, b, st.Mode().Perm(), want)
		}
	}
	if err := l.WriteBootFiles(context.Background(), ref, BootFiles{"grub": k}); err == nil {
		t.Error("a boot file of an unknown kind was accepted")
	}
	if err := l.DeleteVersion(ref); err != nil {
		t.Fatal(err)
	}
	if _, err := l.OpenBootFile(ref, BootInitrd); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after delete: %v, want not exist", err)
	}
	if ents, _ := os.ReadDir(filepath.Join(l.root, "images", ref.Image)); len(ents) != 0 {
		t.Errorf("left behind: %v", ents)
	}
}

// A missing source file fails the write and leaves no boot file.
func TestBootFilesMissingSource(t *testing.T) {
	l, ref, _ := fixture(t)
	k := filepath.Join(t.TempDir(), "vmlinuz")
	os.WriteFile(k, []byte("k"), 0o644)
	err := l.WriteBootFiles(context.Background(), ref, BootFiles{BootKernel: k, BootInitrd: "/nonexistent/initrd"})
	if err == nil {
		t.Fatal("missing initrd accepted")
	}
	if _, err := l.OpenBootFile(ref, BootKernel); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("kernel kept after a failed write: %v", err)
	}
}
