package imagebuild

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	ok := Recipe{Suite: "bookworm", Size: 2 << 30}
	if err := ok.Validate(); err != nil || ok.Firmware != Both {
		t.Fatalf("%v, firmware %q (want both by default)", err, ok.Firmware)
	}
	for _, tc := range []struct {
		name string
		r    Recipe
		want string
	}{
		{"too small", Recipe{Suite: "bookworm", Size: 1 << 30}, "too small"},
		{"too small with swap", Recipe{Suite: "bookworm", Size: 2 << 30, Swap: 1 << 30}, "too small"},
		{"odd size", Recipe{Suite: "bookworm", Size: 2<<30 + 4096}, "MiB"},
		{"suite", Recipe{Suite: "Bookworm;rm", Size: 2 << 30}, "suite"},
		{"firmware", Recipe{Suite: "bookworm", Size: 2 << 30, Firmware: "coreboot"}, "firmware"},
		{"package", Recipe{Suite: "bookworm", Size: 2 << 30, Packages: []string{"vim", "-oFoo=1"}}, "package"},
		{"mirror", Recipe{Suite: "bookworm", Size: 2 << 30, Mirror: "ftp.debian.org"}, "mirror"},
		{"ssh key", Recipe{Suite: "bookworm", Size: 2 << 30, SSHKey: "-----BEGIN OPENSSH PRIVATE KEY-----\n"}, "ssh key"},
		{"password", Recipe{Suite: "bookworm", Size: 2 << 30, RootPassword: "a\nroot:b"}, "password"},
		{"relative file", Recipe{Suite: "bookworm", Size: 2 << 30, Files: []File{{Path: "etc/x"}}}, "absolute"},
		{"file out of the image", Recipe{Suite: "bookworm", Size: 2 << 30, Files: []File{{Path: "/etc/../proc/x"}}}, "clean"},
		{"file in /proc", Recipe{Suite: "bookworm", Size: 2 << 30, Files: []File{{Path: "/proc/sys/x"}}}, "not part"},
		{"unit", Recipe{Suite: "bookworm", Size: 2 << 30, Enable: []string{"--root=/ x.service"}}, "unit"},
	} {
		if err := tc.r.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error about %q", tc.name, err, tc.want)
		}
	}
}

// The layout per firmware: BIOS boot partition only where GRUB for BIOS
// goes, ESP only for UEFI, root last so that it can grow.
func TestLayout(t *testing.T) {
	for _, tc := range []struct {
		fw   Firmware
		swap int64
		want string
	}{
		{BIOS, 0, "1:bios-boot:EF02:1048576 2:root:8300:0"},
		{UEFI, 0, "1:esp:EF00:134217728 2:root:8300:0"},
		{Both, 512 << 20, "1:bios-boot:EF02:1048576 2:esp:EF00:134217728 3:swap:8200:536870912 4:root:8300:0"},
	} {
		r := Recipe{Suite: "bookworm", Size: 4 << 30, Firmware: tc.fw, Swap: tc.swap}
		var got []string
		for _, p := range r.Layout() {
			got = append(got, strings.Join([]string{strconv.Itoa(p.Number), p.Name, p.Type, strconv.FormatInt(p.Size, 10)}, ":"))
		}
		if s := strings.Join(got, " "); s != tc.want {
			t.Errorf("%s: %s, want %s", tc.fw, s, tc.want)
		}
	}
}

// The cache key changes with everything that changes the disk, not with
// the order of --packages, and never shows a secret.
func TestKey(t *testing.T) {
	base := Recipe{Suite: "bookworm", Size: 2 << 30, Firmware: Both, Packages: []string{"a", "b"}, RootPassword: "hunter2"}
	same := base
	same.Packages = []string{"b", "a"}
	if base.Key() != same.Key() {
		t.Error("package order changes the key")
	}
	if !strings.HasPrefix(base.Key(), "bookworm-both-") || strings.Contains(base.Key(), "hunter2") {
		t.Errorf("key %q", base.Key())
	}
	for _, change := range []func(*Recipe){
		func(r *Recipe) { r.Size = 4 << 30 },
		func(r *Recipe) { r.Firmware = BIOS },
		func(r *Recipe) { r.Packages = []string{"a"} },
		func(r *Recipe) { r.Swap = 1 << 20 },
		func(r *Recipe) { r.Mirror = "http://other/debian" },
		func(r *Recipe) { r.SSHKey = "ssh-ed25519 AAAA" },
		func(r *Recipe) { r.RootPassword = "other" },
		func(r *Recipe) { r.Suite = "trixie" },
		func(r *Recipe) { r.Files = []File{{Path: "/etc/x", Content: "1"}} },
		func(r *Recipe) { r.Enable = []string{"x.service"} },
	} {
		r := base
		r.Packages = append([]string(nil), base.Packages...)
		change(&r)
		if r.Key() == base.Key() {
			t.Errorf("%+v has the key of %+v", r, base)
		}
	}
}

// Validate fills in defaults without touching the caller's files, so a
// recipe keeps its key across builds (a test's cache found it no more).
func TestValidateKeepsKey(t *testing.T) {
	r := Recipe{Suite: "bookworm", Size: 2 << 30, Files: []File{{Path: "/etc/x", Content: "1"}}}
	before := r.Key()
	v := r
	if err := v.Validate(); err != nil {
		t.Fatal(err)
	}
	if r.Files[0].Mode != 0 || v.Files[0].Mode != 0o644 {
		t.Errorf("modes: caller's %o, validated %o", r.Files[0].Mode, v.Files[0].Mode)
	}
	if r.Key() != before || v.Key() != before {
		t.Errorf("keys %s, %s after Validate, want %s", r.Key(), v.Key(), before)
	}
}

// The default mirror is the machine's own, from deb822 or one-line
// sources, preferring the entry that carries the suite.
func TestDefaultMirror(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "sources.list.d"), 0o755)
	os.WriteFile(filepath.Join(dir, "sources.list.d", "debian.sources"), []byte(`Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.example.org/debian/
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.example.org/debian-security
Suites: bookworm-security
Components: main
`), 0o644)
	os.WriteFile(filepath.Join(dir, "sources.list.d", "other.list"), []byte("deb https://packages.example.com/apt cloud main\n"), 0o644)
	if got := DefaultMirror(dir, "bookworm"); got != "http://deb.example.org/debian" {
		t.Errorf("deb822: %q", got)
	}
	os.WriteFile(filepath.Join(dir, "sources.list"), []byte("# comment\ndeb [arch=amd64 signed-by=/k.gpg] http://mirror.local/debian trixie main\n"), 0o644)
	if got := DefaultMirror(dir, "trixie"); got != "http://mirror.local/debian" {
		t.Errorf("one-line with options: %q", got)
	}
	if got := DefaultMirror(t.TempDir(), "bookworm"); got != "" {
		t.Errorf("no sources: %q", got)
	}
}

func TestSourcesList(t *testing.T) {
	got := sourcesList("http://deb.debian.org/debian", "bookworm")
	want := "deb http://deb.debian.org/debian bookworm main\ndeb http://deb.debian.org/debian bookworm-updates main\ndeb http://deb.debian.org/debian-security bookworm-security main\n"
	if got != want {
		t.Errorf("got\n%s", got)
	}
	if got := sourcesList("http://apt.local/mirror", "bookworm"); strings.Contains(got, "security") {
		t.Errorf("a mirror that is not plain Debian has no known security archive:\n%s", got)
	}
}

// Check names what is missing and the exact apt-get line.
func TestCheck(t *testing.T) {
	none := func(string) (string, error) { return "", exec.ErrNotFound }
	all := func(n string) (string, error) { return "/usr/sbin/" + n, nil }
	if err := Check(Both, 0, all); err != nil {
		t.Errorf("all present as root: %v", err)
	}
	if err := Check(BIOS, 1000, all); !errors.Is(err, ErrNotRoot) {
		t.Errorf("not root: %v", err)
	}
	err := Check(Both, 0, none)
	if err == nil || !strings.Contains(err.Error(), "apt-get install debootstrap gdisk e2fsprogs util-linux mount fdisk coreutils tar dosfstools mtools") {
		t.Errorf("all missing: %v", err)
	}
	err = Check(BIOS, 0, func(n string) (string, error) {
		if n == "sgdisk" {
			return "", exec.ErrNotFound
		}
		return n, nil
	})
	if err == nil || !strings.HasSuffix(err.Error(), "missing sgdisk; install with: apt-get install gdisk") {
		t.Errorf("sgdisk missing: %v", err)
	}
}
