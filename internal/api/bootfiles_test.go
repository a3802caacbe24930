package api

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/diskless-boot/diskless/internal/storage"
)

type osSource struct{ *os.File }

func (f osSource) Size() int64 { st, _ := f.Stat(); return st.Size() }

// An import that names a kernel and an initrd (what diskless image build
// sends) keeps them with the new version, on both ways of importing; a
// deleted version takes them along.
func TestImportKeepsBootFiles(t *testing.T) {
	a := newTestAPI(t)
	a.h.cfg.Import = func(_ context.Context, path string) (storage.Source, string, func() error, error) {
		f, err := os.Open(path)
		if err != nil {
			return nil, "", nil, err
		}
		return osSource{f}, "import " + path, f.Close, nil
	}
	dir := t.TempDir()
	disk, kernel, initrd := filepath.Join(dir, "disk.img"), filepath.Join(dir, "vmlinuz"), filepath.Join(dir, "initrd.img")
	os.WriteFile(disk, make([]byte, 1<<20), 0o644)
	os.WriteFile(kernel, []byte("kernel"), 0o644)
	os.WriteFile(initrd, []byte("initrd"), 0o644)
	body := `{"name": "deb", "import": "` + disk + `", "kernel": "` + kernel + `", "initrd": "` + initrd + `"}`
	for i, req := range []struct{ path, body string }{
		{"/images", body},
		{"/images/deb/versions", `{"source": "` + disk + `", "kernel": "` + kernel + `", "initrd": "` + initrd + `"}`},
	} {
		var acc Accepted
		if code, e := a.call(t, "POST", req.path, req.body, &acc); code != 202 {
			t.Fatalf("%s: %d %v", req.path, code, e)
		}
		a.h.WaitJob(context.Background(), acc.Job.ID)
		if j, _ := a.h.jobs.get(acc.Job.ID); j.State != JobDone {
			t.Fatalf("job %+v", j)
		}
		ref := storage.VersionRef{Image: "deb", Version: i + 1}
		for name, want := range map[string]string{storage.BootKernel: "kernel", storage.BootInitrd: "initrd"} {
			f, err := a.h.inv.Backend().OpenBootFile(ref, name)
			if err != nil {
				t.Fatalf("%s %s: %v", ref, name, err)
			}
			b, _ := io.ReadAll(f)
			f.Close()
			if string(b) != want {
				t.Errorf("%s %s: %q", ref, name, b)
			}
		}
	}
	if code, e := a.call(t, "DELETE", "/images/deb/versions/1", "", nil); code != 204 {
		t.Fatalf("delete: %d %v", code, e)
	}
	if _, err := a.h.inv.Backend().OpenBootFile(storage.VersionRef{Image: "deb", Version: 1}, storage.BootKernel); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("kernel of a deleted version: %v", err)
	}
}
