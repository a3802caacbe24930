package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/diskless-boot/diskless/internal/api"
	"github.com/diskless-boot/diskless/internal/imagebuild"
	"github.com/diskless-boot/diskless/internal/inventory"
)

// newImageBuildCommand is diskless image build. The build runs in this
// process on the server's machine (it needs root, loop devices and the
// data directory's file system, like the file an import reads), and the
// finished disk becomes the next version through the same API request as
// diskless image import - with or without a running server.
func newImageBuildCommand() *cobra.Command {
	var (
		suite, size, firmware, mirror, swap string
		packages                            []string
		sshKeyFile, passwordFile, cacheDir  string
		fromTar                             string
		desc                                string
		verbose                             bool
	)
	cmd := &cobra.Command{
		Use:   "build NAME --suite bookworm --size 8G [--from-tar FILE]",
		Short: "Build a bootable Debian disk (debootstrap, GRUB, open-iscsi from the iBFT) as the image's next version",
		Long: `Build a Debian system that boots from diskless on any host and import it as the
next version of image NAME (created when it does not exist).

The disk has a GPT with a BIOS boot partition and/or an EFI system partition
(--firmware), optional swap and an ext4 root, all mounted by UUID. Its
initramfs logs in to the root disk from the iBFT that iPXE publishes at
sanboot, so one image serves every host with no per-host file. With
--from-tar, a container's root file system gets the same preparation instead
of debootstrap. See docs/images.md.

Runs on the server's machine as root; needs debootstrap, gdisk, e2fsprogs,
dosfstools. Downloaded packages are kept in --cache-dir for the next build.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			r := imagebuild.Recipe{Suite: suite, Mirror: mirror, Packages: packages}
			var err error
			if fromTar != "" {
				if r.FromTar, err = filepath.Abs(fromTar); err != nil {
					return err
				}
				if _, err := os.Stat(r.FromTar); err != nil {
					return fmt.Errorf("--from-tar: %w", err)
				}
				if !cmd.Flags().Changed("suite") {
					r.Suite = "" // the tarball's own
				}
			}
			if r.Size, err = inventory.ParseSize(size); err != nil {
				return err
			}
			if swap != "" {
				if r.Swap, err = inventory.ParseSize(swap); err != nil {
					return fmt.Errorf("--swap: %w", err)
				}
			}
			if r.Firmware, err = imagebuild.ParseFirmware(firmware); err != nil {
				return err
			}
			if sshKeyFile != "" {
				b, err := os.ReadFile(sshKeyFile)
				if err != nil {
					return fmt.Errorf("--ssh-key: %w", err)
				}
				r.SSHKey = string(b)
			}
			if passwordFile != "" {
				b, err := os.ReadFile(passwordFile)
				if err != nil {
					return fmt.Errorf("--root-password-file: %w", err)
				}
				r.RootPassword = strings.TrimRight(string(b), "\r\n")
			}
			if err := r.Validate(); err != nil {
				return err
			}
			if err := imagebuild.Check(r.Firmware, os.Geteuid(), nil); err != nil {
				return err
			}
			ws, err := openWorkspace(cmd, name+".log", cacheDir, verbose)
			if err != nil {
				return err
			}
			defer ws.close()
			logPath := ws.logPath
			stderr := cmd.ErrOrStderr()
			from := r.Suite
			if r.FromTar != "" {
				from = r.FromTar
			}
			fmt.Fprintf(stderr, "building image %s (%s, %s, %s); log in %s\n", name, from, firmware, humanBytes(r.Size), logPath)
			res, err := imagebuild.Build(cmd.Context(), r, ws.options(stderr))
			if err != nil {
				return fmt.Errorf("%w (log: %s)", err, logPath)
			}
			defer res.Remove()
			fmt.Fprintf(stderr, "[%6s] built: kernel %s\n", res.Took.Round(time.Second), res.KernelVersion)
			c, err := newClient(cmd)
			if err != nil {
				return err
			}
			defer c.Close()
			if desc == "" {
				desc = fmt.Sprintf("Debian %s, %s, built by diskless image build", r.Suite, r.Firmware)
				if r.FromTar != "" {
					desc = fmt.Sprintf("%s, %s, built by diskless image build", filepath.Base(r.FromTar), r.Firmware)
				}
			}
			return importVersion(cmd, c, name, desc, api.ImportRequest{Source: res.Disk, Kernel: res.Kernel, Initrd: res.Initrd, Cmdline: res.Cmdline})
		},
	}
	f := cmd.Flags()
	f.StringVar(&suite, "suite", "bookworm", "Debian suite")
	f.StringVar(&size, "size", "", "disk size, e.g. 8G (required)")
	f.StringVar(&firmware, "firmware", "both", "bios, uefi or both (one disk that boots either way)")
	f.StringSliceVar(&packages, "packages", nil, "extra packages, comma separated")
	f.StringVar(&sshKeyFile, "ssh-key", "", "public key file authorized for root (adds openssh-server)")
	f.StringVar(&passwordFile, "root-password-file", "", "file holding root's password (default: no password login)")
	f.StringVar(&mirror, "mirror", "", "Debian mirror URL (default: the one in this machine's apt sources)")
	f.StringVar(&swap, "swap", "", "size of a swap partition, e.g. 512M (default: none)")
	f.StringVar(&cacheDir, "cache-dir", "", "where downloaded packages are kept between builds (default: data-dir/cache/imagebuild)")
	f.StringVar(&desc, "description", "", "description, when the image is created")
	f.StringVar(&fromTar, "from-tar", "", "a root file system tarball (podman/docker export of a Debian or Ubuntu container) instead of debootstrap")
	f.BoolVarP(&verbose, "verbose", "v", false, "show every command and its output")
	cmd.MarkFlagRequired("size")
	return cmd
}

// newImagePrepareCommand is diskless image prepare: an image version that
// holds an installed system (imported with diskless image import) is made
// to boot from diskless, as the next version.
func newImagePrepareCommand() *cobra.Command {
	var version, cacheDir string
	var verbose bool
	cmd := &cobra.Command{
		Use:   "prepare NAME",
		Short: "Make an imported installed Debian/Ubuntu disk boot from diskless (open-iscsi, iBFT login, fstab/GRUB by UUID) as the next version",
		Long: `Make the installed Debian or Ubuntu system of an image version (an existing
installation brought in with diskless image import) boot from diskless on any
host, like the images diskless image build makes, and import the result as
the image's next version: every file system mounted by UUID, open-iscsi
installed if missing (from the system's own apt sources), the initramfs
logging in from the iBFT with the NIC drivers of any machine, ifupdown kept
off the boot NIC, GRUB for BIOS and/or UEFI, the system generalized, kernel and
initrd kept for boot kernel hosts. The version it starts from is left as it is.

Runs on the server's machine as root. See docs/images.md.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if err := imagebuild.CheckPrepare(os.Geteuid(), nil); err != nil {
				return err
			}
			c, err := newClient(cmd)
			if err != nil {
				return err
			}
			defer c.Close()
			ws, err := openWorkspace(cmd, name+"-prepare.log", cacheDir, verbose)
			if err != nil {
				return err
			}
			defer ws.close()
			work, logPath := ws.dir, ws.logPath
			stderr := cmd.ErrOrStderr()
			v := version
			if v == "" {
				v = "latest"
			}
			src := filepath.Join(work, name+"-prepare-source.img")
			defer os.Remove(src)
			fmt.Fprintf(stderr, "preparing image %s (version %s); log in %s\n", name, v, logPath)
			var acc api.Accepted
			if err := c.do(cmd.Context(), http.MethodPost, "/images/"+name+"/versions/"+v+"/export",
				api.ExportRequest{Path: src, Format: "raw"}, &acc); err != nil {
				return err
			}
			if _, err := c.wait(cmd.Context(), acc.Job, "read "+name); err != nil {
				return err
			}
			res, err := imagebuild.Prepare(cmd.Context(), src, ws.options(stderr))
			if err != nil {
				return fmt.Errorf("%w (log: %s)", err, logPath)
			}
			defer res.Remove()
			fmt.Fprintf(stderr, "[%6s] prepared: kernel %s\n", res.Took.Round(time.Second), res.KernelVersion)
			return importVersion(cmd, c, name, "", api.ImportRequest{Source: res.Disk, Kernel: res.Kernel, Initrd: res.Initrd, Cmdline: res.Cmdline})
		},
	}
	f := cmd.Flags()
	f.StringVar(&version, "version", "", "version to prepare (default: the newest)")
	f.StringVar(&cacheDir, "cache-dir", "", "where downloaded packages are kept (default: data-dir/cache/imagebuild)")
	f.BoolVarP(&verbose, "verbose", "v", false, "show every command and its output")
	return cmd
}

// workspace is where image build and image prepare work: data_dir/build
// (the data directory's file system, for the disk they make), the package
// cache, and the log of the commands they run.
type workspace struct {
	dir, cache, logPath string
	log                 io.Writer // the log file, and stderr with --verbose
	close               func() error
}

func openWorkspace(cmd *cobra.Command, logName, cacheDir string, verbose bool) (*workspace, error) {
	dataDir, _ := cmd.Flags().GetString("data-dir")
	dir, err := filepath.Abs(filepath.Join(dataDir, "build"))
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if cacheDir == "" {
		cacheDir = filepath.Join(dataDir, "cache", "imagebuild")
	}
	logPath := filepath.Join(dir, logName)
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	ws := &workspace{dir: dir, cache: cacheDir, logPath: logPath, log: logf, close: logf.Close}
	if verbose {
		ws.log = io.MultiWriter(logf, cmd.ErrOrStderr())
	}
	return ws, nil
}

// options are the builder's options in the workspace, its phases shown on
// stderr with their time.
func (ws *workspace) options(stderr io.Writer) imagebuild.Options {
	return imagebuild.Options{WorkDir: ws.dir, CacheDir: ws.cache, Log: ws.log,
		Progress: func(phase string, elapsed time.Duration) {
			fmt.Fprintf(stderr, "[%6s] %s\n", elapsed.Round(time.Second), phase)
		}}
}
