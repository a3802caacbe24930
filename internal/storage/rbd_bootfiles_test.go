//go:build ceph

package storage

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/ceph/go-ceph/rados"

	"github.com/diskless-boot/diskless/internal/testutil/ceph"
)

const testPieceSize = 64 << 10

// twoServers is two backends of one site: the same pool namespace, each
// with its own data directory. a stores boot files in small pieces.
func twoServers(t *testing.T) (a, b *RBD) {
	c := ceph.Shared(t)
	a = newRBD(t, c, "", RBDOptions{})
	a.boot.pieceSize = testPieceSize
	b = newRBD(t, c, a.opts.Namespace, RBDOptions{})
	return a, b
}

// bootSources writes files of the given contents and names them as boot
// files.
func bootSources(t *testing.T, contents map[string][]byte) BootFiles {
	dir := t.TempDir()
	files := BootFiles{}
	for name, data := range contents {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		files[name] = p
	}
	return files
}

func randomBytes(seed uint64, n int) []byte {
	rng := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

func readBootFile(t *testing.T, b *RBD, ref VersionRef, name string) []byte {
	t.Helper()
	f, err := b.OpenBootFile(ref, name)
	if err != nil {
		t.Fatalf("open %s: %v", name, err)
	}
	defer f.Close()
	data, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// objectExists says whether the pool holds object obj in b's namespace.
func objectExists(t *testing.T, b *RBD, obj string) bool {
	t.Helper()
	_, err := b.ioctx.Stat(obj)
	if errors.Is(err, rados.ErrNotFound) {
		return false
	}
	if err != nil {
		t.Fatal(err)
	}
	return true
}

// A kernel-mode host may boot through any server of the site: a server
// that never saw the version's import serves the kernel and initrd the
// importing server stored, byte for byte, and fetches them from the pool
// once. Once the version is deleted its objects are gone and no server
// serves the old bytes, not even one keeping a local copy; a version
// made again under the same number (an image deleted and made again)
// serves its new bytes there.
func TestRBDBootFilesShared(t *testing.T) {
	a, b := twoServers(t)
	ref := VersionRef{Image: "deb", Version: 1}
	kernel := randomBytes(1, 3*testPieceSize+123) // four pieces
	initrd := randomBytes(2, 1000)
	if _, err := b.OpenBootFile(ref, BootKernel); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("before the write: %v, want not exist", err)
	}
	if err := a.WriteBootFiles(t.Context(), ref, bootSources(t, map[string][]byte{BootKernel: kernel, BootInitrd: initrd})); err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		if !objectExists(t, a, rbdBootPiece(ref, BootKernel, i)) {
			t.Errorf("kernel piece %d missing in the pool", i)
		}
	}
	if objectExists(t, a, rbdBootPiece(ref, BootKernel, 4)) {
		t.Error("kernel has a fifth piece")
	}

	if got := readBootFile(t, b, ref, BootKernel); !bytes.Equal(got, kernel) {
		t.Errorf("second server's kernel: %d bytes, differs from the %d written", len(got), len(kernel))
	}
	if got := readBootFile(t, b, ref, BootInitrd); !bytes.Equal(got, initrd) {
		t.Errorf("second server's initrd: %d bytes, differs from the %d written", len(got), len(initrd))
	}
	readBootFile(t, b, ref, BootKernel)
	if n := b.boot.fetches.Load(); n != 2 {
		t.Errorf("second server fetched %d times, want 2 (kernel and initrd, once each)", n)
	}
	if n := a.boot.fetches.Load(); n != 0 {
		t.Errorf("the writing server fetched its own files %d times", n)
	}
	if fi, err := os.Stat(b.files.bootPath(ref, BootKernel)); err != nil || fi.Mode().Perm() != 0o444 {
		t.Errorf("second server's local copy: %v %v, want read-only", fi, err)
	}

	if err := a.DeleteVersion(ref); err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		if objectExists(t, a, rbdBootPiece(ref, BootKernel, i)) {
			t.Errorf("kernel piece %d left after delete", i)
		}
	}
	for _, obj := range []string{rbdBootObject(ref, BootKernel), rbdBootObject(ref, BootInitrd), rbdBootPiece(ref, BootInitrd, 0)} {
		if objectExists(t, a, obj) {
			t.Errorf("%s left after delete", obj)
		}
	}
	if _, err := b.OpenBootFile(ref, BootKernel); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("deleted version's kernel on the second server: %v, want not exist", err)
	}

	kernel2 := randomBytes(3, 5000)
	if err := a.WriteBootFiles(t.Context(), ref, bootSources(t, map[string][]byte{BootKernel: kernel2})); err != nil {
		t.Fatal(err)
	}
	if got := readBootFile(t, b, ref, BootKernel); !bytes.Equal(got, kernel2) {
		t.Errorf("a version made again serves %d bytes, not its new kernel", len(got))
	}
}

// Hosts booting at once through one server fetch a boot file once.
func TestRBDBootFileFetchedOnce(t *testing.T) {
	a, b := twoServers(t)
	ref := VersionRef{Image: "deb", Version: 1}
	initrd := randomBytes(4, 40*testPieceSize)
	if err := a.WriteBootFiles(t.Context(), ref, bootSources(t, map[string][]byte{BootInitrd: initrd})); err != nil {
		t.Fatal(err)
	}
	start := make(chan struct{})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			<-start
			f, err := b.OpenBootFile(ref, BootInitrd)
			if err != nil {
				t.Error(err)
				return
			}
			defer f.Close()
			if got, _ := io.ReadAll(f); !bytes.Equal(got, initrd) {
				t.Error("concurrent open read other bytes")
			}
		})
	}
	close(start)
	wg.Wait()
	if n := b.boot.fetches.Load(); n != 1 {
		t.Errorf("8 concurrent opens fetched %d times, want 1", n)
	}
}

// A damaged piece in the pool is refused, naming the object, and leaves
// no file in the server's data directory.
func TestRBDBootFileDamaged(t *testing.T) {
	a, b := twoServers(t)
	ref := VersionRef{Image: "deb", Version: 1}
	kernel := randomBytes(5, 2*testPieceSize+7)
	if err := a.WriteBootFiles(t.Context(), ref, bootSources(t, map[string][]byte{BootKernel: kernel})); err != nil {
		t.Fatal(err)
	}
	piece := rbdBootPiece(ref, BootKernel, 1)
	if err := a.ioctx.Write(piece, []byte{^kernel[testPieceSize+100]}, 100); err != nil {
		t.Fatal(err)
	}
	_, err := b.OpenBootFile(ref, BootKernel)
	if err == nil || errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), piece) || !strings.Contains(err.Error(), "damaged") {
		t.Fatalf("open of a damaged kernel: %v, want an error naming %s as damaged", err, piece)
	}
	t.Logf("refused: %v", err)
	if ents, _ := os.ReadDir(filepath.Dir(b.files.bootPath(ref, BootKernel))); len(ents) != 0 {
		t.Errorf("left in the data directory: %v", ents)
	}
}

// A write cancelled half way leaves no object in the pool and no local
// copy: no server serves half a kernel.
func TestRBDBootFilesCancelled(t *testing.T) {
	a, b := twoServers(t)
	ref := VersionRef{Image: "deb", Version: 1}
	ctx, cancel := context.WithCancel(t.Context())
	a.boot.afterPiece = func(string) { cancel() }
	files := bootSources(t, map[string][]byte{BootKernel: randomBytes(6, 3*testPieceSize)})
	if err := a.WriteBootFiles(ctx, ref, files); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled write: %v, want context.Canceled", err)
	}
	for _, obj := range []string{rbdBootObject(ref, BootKernel), rbdBootPiece(ref, BootKernel, 0)} {
		if objectExists(t, a, obj) {
			t.Errorf("%s left by a cancelled write", obj)
		}
	}
	for _, s := range []*RBD{a, b} {
		if _, err := s.OpenBootFile(ref, BootKernel); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("kernel of a cancelled write: %v, want not exist", err)
		}
	}
	if ents, _ := os.ReadDir(filepath.Dir(a.files.bootPath(ref, BootKernel))); len(ents) != 0 {
		t.Errorf("left in the data directory: %v", ents)
	}
}
