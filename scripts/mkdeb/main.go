// Command mkdeb packs a built diskless binary, its systemd units, the
// default configuration, the maintainer scripts and the docs into a .deb,
// with nfpm as a library (no nfpm binary to install, its version pinned in
// this directory's go.mod). scripts/build-deb.sh builds the binary and
// runs it; the layout of the package is here, in one place.
//
// It is a module of its own: nfpm brings ~40 modules (go-git, crypto,
// rpm/apk/msix writers) the server never links, and the main module's
// go.mod stays the server's dependency list.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/goreleaser/nfpm/v2"
	"github.com/goreleaser/nfpm/v2/deb"
	"github.com/goreleaser/nfpm/v2/files"
)

func main() {
	var (
		repo    = flag.String("repo", ".", "root of the diskless repository")
		binary  = flag.String("binary", "", "the built diskless binary (required)")
		version = flag.String("version", "", "Debian version, e.g. 1.2.3 or 0.0.0~git20261205.ab12cd3 (required)")
		arch    = flag.String("arch", "amd64", "Debian architecture of the binary")
		mtime   = flag.Int64("mtime", 0, "modification time of every file, Unix seconds (default: now; pass the commit's for reproducible packages)")
		out     = flag.String("out", ".", "directory the .deb is written to")
	)
	flag.Parse()
	if *binary == "" || *version == "" {
		fmt.Fprintln(os.Stderr, "mkdeb: --binary and --version are required")
		os.Exit(2)
	}
	t := time.Now()
	if *mtime != 0 {
		t = time.Unix(*mtime, 0)
	}
	path, err := build(*repo, *binary, *version, *arch, t, *out)
	if err != nil {
		fmt.Fprintln(os.Stderr, "mkdeb:", err)
		os.Exit(1)
	}
	fmt.Println(path)
}

// Where things go. /lib/systemd/system is Debian 12's unit directory
// (the same as /usr/lib/systemd/system under merged /usr).
const (
	unitDir = "/lib/systemd/system"
	docDir  = "/usr/share/doc/diskless"
)

// docs are the pages installed in docDir, the service's
// Documentation= among them.
var docs = []string{"README.md", "docs/service.md", "docs/config.md", "docs/security.md", "docs/api.md", "docs/images.md", "docs/howto.md"}

func build(repo, binary, version, arch string, mtime time.Time, out string) (string, error) {
	src := func(p string) string { return filepath.Join(repo, p) }
	file := func(from, to string, mode os.FileMode) *files.Content {
		return &files.Content{Source: from, Destination: to, FileInfo: &files.ContentFileInfo{Mode: mode}}
	}
	contents := files.Contents{
		file(binary, "/usr/bin/diskless", 0o755),
		file(src("contrib/systemd/diskless.service"), unitDir+"/diskless.service", 0o644),
		file(src("contrib/systemd/diskless.socket"), unitDir+"/diskless.socket", 0o644),
		// A conffile: an upgrade never overwrites the admin's file
		// (dpkg asks, or keeps it); readable by root only, it may
		// hold CHAP secrets.
		{Source: src("contrib/deb/diskless.yaml"), Destination: "/etc/diskless/diskless.yaml", Type: files.TypeConfigNoReplace,
			FileInfo: &files.ContentFileInfo{Mode: 0o600}},
		// The state directory exists before the first start, for the
		// CLI's direct mode; StateDirectory= makes it too. dpkg removes
		// it on purge only if empty: host disks are never deleted by a
		// package operation.
		{Destination: "/var/lib/diskless", Type: files.TypeDir, FileInfo: &files.ContentFileInfo{Mode: 0o700}},
	}
	for _, d := range docs {
		contents = append(contents, file(src(d), docDir+"/"+filepath.Base(d), 0o644))
	}
	info := &nfpm.Info{
		Name:          "diskless",
		Arch:          arch,
		Platform:      "linux",
		Version:       version,
		VersionSchema: "none", // build-deb.sh makes a Debian version already
		Section:       "net",
		Priority:      "optional",
		Maintainer:    "diskless developers <diskless@localhost>",
		Description: "network boot server for diskless machines\n" +
			"One static binary serving everything a machine with an empty disk\n" +
			"needs to boot from an image: DHCP or proxyDHCP, TFTP, iPXE scripts over\n" +
			"HTTP and an iSCSI target with one copy-on-write disk per host, managed\n" +
			"with a CLI and a REST API.",
		MTime: mtime,
		Overridables: nfpm.Overridables{
			// Static (CGO_ENABLED=0): no library dependency. The iPXE
			// binaries TFTP serves, and qemu-img for images in formats
			// diskless does not read itself.
			Recommends: []string{"ipxe"},
			Suggests:   []string{"qemu-utils"},
			Contents:   contents,
			Scripts: nfpm.Scripts{
				PostInstall: src("contrib/deb/postinst"),
				PreRemove:   src("contrib/deb/prerm"),
				PostRemove:  src("contrib/deb/postrm"),
			},
		},
	}
	info = nfpm.WithDefaults(info)
	if err := nfpm.PrepareForPackager(info, "deb"); err != nil {
		return "", err
	}
	pkg := deb.Default
	name := filepath.Join(out, pkg.ConventionalFileName(info))
	f, err := os.Create(name)
	if err != nil {
		return "", err
	}
	if err := pkg.Package(info, f); err != nil {
		f.Close()
		os.Remove(name)
		return "", err
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	return name, nil
}
