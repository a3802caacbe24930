// Package debimage gives tests a bootable Debian image made by
// internal/imagebuild, cached outside the repository so that CI builds it
// only when the recipe or the builder changes. It is for tests only;
// production code must not import it.
//
// The cache lives in $DISKLESS_TEST_CACHE (default /var/cache/diskless-test):
//
//	imagebuild/<suite>-amd64/   debootstrap's and apt's packages
//	images/<key>/               disk.img, kernel, initrd of one recipe
//
// where key is the recipe's key and a hash of the builder's source, so a
// change to internal/imagebuild rebuilds.
package debimage

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/diskless-boot/diskless/internal/imagebuild"
	"github.com/diskless-boot/diskless/internal/testutil/build"
)

// Image is a built image in the cache. Its files are shared: tests copy
// or import them, never change them.
type Image struct {
	Dir, Disk, Kernel, Initrd, Cmdline string
}

// CacheDir is the root of the test cache.
func CacheDir() string {
	if d := os.Getenv("DISKLESS_TEST_CACHE"); d != "" {
		return d
	}
	return "/var/cache/diskless-test"
}

// PackageCache is where builds of tests keep their packages.
func PackageCache() string { return filepath.Join(CacheDir(), "imagebuild") }

// Key names a recipe built by the builder as it is in this checkout.
func Key(r imagebuild.Recipe) (string, error) {
	src, err := sourceHash()
	if err != nil {
		return "", err
	}
	return r.Key() + "-" + src, nil
}

// sourceHash hashes the builder's non-test Go files.
func sourceHash() (string, error) {
	root, err := build.RepoRoot()
	if err != nil {
		return "", err
	}
	files, err := filepath.Glob(filepath.Join(root, "internal", "imagebuild", "*.go"))
	if err != nil {
		return "", err
	}
	sort.Strings(files)
	h := sha256.New()
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "%s %d\n", filepath.Base(f), len(b))
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil))[:12], nil
}

// Skip skips t unless this machine can build images (root, the tools).
func Skip(t testing.TB, fw imagebuild.Firmware) {
	t.Helper()
	if testing.Short() {
		t.Skip("builds a Debian image; not with -short")
	}
	if err := imagebuild.Check(fw, os.Geteuid(), nil); err != nil {
		t.Skipf("cannot build images here: %v (CI runs as root; scripts/ci-deps.sh installs the tools)", err)
	}
}

// Cached returns the cached image of r, if any.
func Cached(r imagebuild.Recipe) (Image, bool) {
	key, err := Key(r)
	if err != nil {
		return Image{}, false
	}
	im := imageAt(filepath.Join(CacheDir(), "images", key))
	for _, f := range []string{im.Disk, im.Kernel, im.Initrd, im.Cmdline} {
		if _, err := os.Stat(f); err != nil {
			return Image{}, false
		}
	}
	return im, true
}

func imageAt(dir string) Image {
	return Image{Dir: dir, Disk: filepath.Join(dir, "disk.img"), Kernel: filepath.Join(dir, "kernel"), Initrd: filepath.Join(dir, "initrd"),
		Cmdline: filepath.Join(dir, "cmdline")}
}

// Store copies a built image's files into the cache as r's (sparse, and
// atomically: a directory renamed into place).
func Store(r imagebuild.Recipe, res *imagebuild.Result) (Image, error) {
	key, err := Key(r)
	if err != nil {
		return Image{}, err
	}
	parent := filepath.Join(CacheDir(), "images")
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return Image{}, err
	}
	tmp, err := os.MkdirTemp(parent, ".partial-")
	if err != nil {
		return Image{}, err
	}
	defer os.RemoveAll(tmp)
	im := imageAt(tmp)
	if out, err := exec.Command("cp", "--sparse=always", res.Disk, im.Disk).CombinedOutput(); err != nil {
		return Image{}, fmt.Errorf("cp: %v: %s", err, out)
	}
	for src, dst := range map[string]string{res.Kernel: im.Kernel, res.Initrd: im.Initrd, res.Cmdline: im.Cmdline} {
		if err := copyFile(src, dst); err != nil {
			return Image{}, err
		}
	}
	final := filepath.Join(parent, key)
	os.RemoveAll(final)
	if err := os.Rename(tmp, final); err != nil {
		return Image{}, err
	}
	// The same recipe built by older builders: no test asks for them
	// again, and each holds a disk.
	old, _ := filepath.Glob(filepath.Join(parent, r.Key()+"-*"))
	for _, o := range old {
		if o != final {
			os.RemoveAll(o)
		}
	}
	return imageAt(final), nil
}

// Get returns r's image from the cache, building it when missing. Tests
// that need an image (not the builder) use it.
func Get(t testing.TB, r imagebuild.Recipe) Image {
	t.Helper()
	Skip(t, r.Firmware)
	if im, ok := Cached(r); ok {
		return im
	}
	start := time.Now()
	logPath := filepath.Join(t.TempDir(), "build.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	res, err := imagebuild.Build(t.Context(), r, imagebuild.Options{WorkDir: CacheDir(), CacheDir: PackageCache(), Log: logf,
		Progress: func(phase string, d time.Duration) { t.Logf("[%6s] %s", d.Round(time.Second), phase) }})
	if err != nil {
		b, _ := os.ReadFile(logPath)
		if len(b) > 6000 {
			b = b[len(b)-6000:]
		}
		t.Fatalf("%v\nlog:\n%s", err, b)
	}
	defer res.Remove()
	im, err := Store(r, res)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("built image %s in %s", filepath.Base(im.Dir), time.Since(start).Round(time.Second))
	return im
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
