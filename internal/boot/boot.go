// Package boot owns the per-host boot decisions of diskless: which file or
// URL a PXE client is offered (DHCPBoot), the iPXE script a host gets
// (Script: sanboot of its iSCSI LUN, or the kernel + initrd "without GRUB"
// mode), what unknown machines get, and the registry that records them.
//
// It takes plain types (no import of internal/config or internal/dhcp) and
// does no I/O besides checking which iPXE binaries exist; it never logs. It
// must not decide who may see a script: internal/web checks that a script
// holding secrets goes only to the host it belongs to (Script.Secret says
// when).
//
// Every value that ends up in a script is checked against an allowlist when
// the Booter is built and again when rendering, so nothing in a
// configuration can inject iPXE commands.
package boot

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/diskless-boot/diskless/internal/iscsi"
)

// Mode is how a known host boots.
type Mode string

const (
	// Sanboot: iPXE attaches the iSCSI LUN and boots its boot loader.
	Sanboot Mode = "sanboot"
	// Kernel: iPXE loads kernel and initrd over HTTP; the initramfs logs
	// into the LUN from the ISCSI_* values on the command line.
	Kernel Mode = "kernel"
)

// Policy is what an unknown MAC gets.
type Policy string

const (
	PolicyLocal  Policy = "local"  // boot from the local disk
	PolicyMenu   Policy = "menu"   // an iPXE menu: local disk, retry, shell, reboot
	PolicyRefuse Policy = "refuse" // no boot offer, no script
)

// Credentials are a CHAP user and secret: the target's own type, so one
// value goes from the host model to the script and the login check.
// Printing them, with fmt or slog, shows the user only.
type Credentials = iscsi.Credentials

// Host is one machine the Booter knows.
type Host struct {
	MAC          net.HardwareAddr
	Name         string
	Mode         Mode
	InitiatorIQN string
	TargetIQN    string
	LUN          uint16
	// CHAP are the credentials the host logs in with; MutualCHAP those
	// the target answers with (needs CHAP). nil: none.
	CHAP, MutualCHAP *Credentials
	// Kernel and Initrd are server-side files served to the host over HTTP
	// in Kernel mode (Initrd may be empty). Cmdline is appended to the
	// generated kernel command line.
	Kernel, Initrd, Cmdline string
	// Files, when Kernel is empty, serves the kernel and initrd kept with
	// the image version the host's disk is on (an image build extracts
	// them): the kernel whose modules are on the disk.
	Files *VersionFiles
}

// VersionFiles are the boot files of the image version a host's disk is
// on when they are asked for (the disk moves to new versions).
type VersionFiles struct {
	// Open opens "kernel" or "initrd"; its errors name the version. One it
	// does not keep is an error wrapping fs.ErrNotExist.
	Open func(name string) (*os.File, error)
}

// cmdline is the kernel command line the version keeps ("" if none): what
// its boot loader would pass (root=UUID=..., consoles).
func (v *VersionFiles) cmdline() (string, error) {
	f, err := v.Open("cmdline")
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxLineLen+1))
	if err != nil {
		return "", err
	}
	line := strings.TrimSpace(string(b))
	if len(b) > MaxLineLen || !safeLine(line) {
		return "", fmt.Errorf("the version's kernel command line is too long or has characters unsafe in a script")
	}
	return line, nil
}

// has reports whether the version keeps the file name.
func (v *VersionFiles) has(name string) bool {
	f, err := v.Open(name)
	if err != nil {
		return false
	}
	f.Close()
	return true
}

// Secret reports whether the host's script carries secrets.
func (h *Host) Secret() bool { return h.CHAP != nil || h.MutualCHAP != nil }

// Config configures a Booter.
type Config struct {
	Hosts []Host
	// Unknown is the policy for MACs not in Hosts (default PolicyLocal).
	Unknown Policy
	// HTTPPort is the port of the HTTP server in boot URLs (required).
	HTTPPort uint16
	// ISCSIPort is the iSCSI portal port in SAN URIs (default 3260).
	ISCSIPort uint16
	// PortalGroupTag is passed to the initramfs as ISCSI_TARGET_GROUP
	// (default 1).
	PortalGroupTag uint16
	// Binaries is the directory of iPXE binaries (the TFTP root, e.g.
	// os.DirFS("/usr/lib/ipxe")); DHCPBoot only offers files present in
	// it. nil: none.
	Binaries fs.FS
	// Registry records unknown MACs (default: a new one of 4096 entries).
	Registry *Registry
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Booter makes the boot decisions. It is safe for concurrent use; SetHosts
// replaces its hosts while it serves.
type Booter struct {
	cfg      Config
	hosts    atomic.Pointer[map[string]*Host] // by MAC string; replaced whole
	present  map[string]bool                  // binaries found in cfg.Binaries
	registry *Registry
}

// ErrRefused is returned for an unknown MAC under PolicyRefuse.
var ErrRefused = errors.New("boot: unknown host refused by policy")

// New checks every host (unique MACs, safe values) and which iPXE binaries
// exist.
func New(cfg Config) (*Booter, error) {
	if cfg.Unknown == "" {
		cfg.Unknown = PolicyLocal
	}
	switch cfg.Unknown {
	case PolicyLocal, PolicyMenu, PolicyRefuse:
	default:
		return nil, fmt.Errorf("boot: unknown-host policy %q", cfg.Unknown)
	}
	if cfg.HTTPPort == 0 {
		return nil, errors.New("boot: HTTP port required")
	}
	if cfg.ISCSIPort == 0 {
		cfg.ISCSIPort = 3260
	}
	if cfg.PortalGroupTag == 0 {
		cfg.PortalGroupTag = 1
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Registry == nil {
		cfg.Registry = NewRegistry(4096, cfg.Now)
	}
	b := &Booter{cfg: cfg, present: map[string]bool{}, registry: cfg.Registry}
	if err := b.SetHosts(cfg.Hosts); err != nil {
		return nil, err
	}
	if cfg.Binaries != nil {
		for _, names := range binaries {
			for _, n := range names {
				if st, err := fs.Stat(cfg.Binaries, n); err == nil && st.Mode().IsRegular() {
					b.present[n] = true
				}
			}
		}
	}
	return b, nil
}

// SetHosts replaces the hosts (each checked as New does); on error the
// hosts in use stay. Boots in progress finish with what they were given.
// Machines of the registry that are hosts now leave it.
func (b *Booter) SetHosts(hosts []Host) error {
	m := make(map[string]*Host, len(hosts))
	for i := range hosts {
		h := hosts[i] // copy: the Booter owns its hosts
		if h.Name == "" && len(h.MAC) == 6 {
			h.Name = "host-" + strings.ReplaceAll(h.MAC.String(), ":", "")
		}
		if err := checkHost(&h); err != nil {
			return fmt.Errorf("boot: host %d (%s): %w", i, h.MAC, err)
		}
		key := h.MAC.String()
		if _, dup := m[key]; dup {
			return fmt.Errorf("boot: host %s given twice", key)
		}
		m[key] = &h
	}
	b.hosts.Store(&m)
	macs := make([]net.HardwareAddr, 0, len(hosts))
	for i := range hosts {
		macs = append(macs, hosts[i].MAC)
	}
	b.registry.Forget(macs)
	return nil
}

// host is the host with this MAC.
func (b *Booter) host(mac net.HardwareAddr) (*Host, bool) {
	h, ok := (*b.hosts.Load())[mac.String()]
	return h, ok
}

func checkHost(h *Host) error {
	if len(h.MAC) != 6 {
		return errors.New("MAC must be 6 bytes")
	}
	if h.Name != "" && !SafeArg(h.Name, 1) {
		return fmt.Errorf("name %q has characters unsafe in a script", h.Name)
	}
	for _, v := range []struct{ what, val string }{{"initiator IQN", h.InitiatorIQN}, {"target IQN", h.TargetIQN}} {
		if !validIQN(v.val) {
			return fmt.Errorf("%s %q is not a valid iSCSI name", v.what, v.val)
		}
	}
	for _, c := range []struct {
		what string
		cr   *Credentials
	}{{"CHAP", h.CHAP}, {"mutual CHAP", h.MutualCHAP}} {
		if c.cr == nil {
			continue
		}
		// Messages never quote the secret.
		if !SafeArg(c.cr.User, 1) {
			return fmt.Errorf("%s user %q has characters unsafe in a script", c.what, c.cr.User)
		}
		if !SafeArg(c.cr.Secret, 12) {
			return fmt.Errorf("%s secret: need 12-255 characters of A-Z a-z 0-9 . _ ~ + = : / @ , -", c.what)
		}
	}
	if h.MutualCHAP != nil && h.CHAP == nil {
		return errors.New("mutual CHAP needs CHAP")
	}
	switch h.Mode {
	case Sanboot:
	case Kernel:
		if h.Kernel == "" && h.Files == nil {
			return errors.New("kernel mode needs a kernel: a file, or an image version that keeps one")
		}
		if !safeLine(h.Cmdline) {
			return fmt.Errorf("command line %q has characters unsafe in a script", h.Cmdline)
		}
	default:
		return fmt.Errorf("mode %q: want sanboot or kernel", h.Mode)
	}
	return nil
}

// Host returns the host with this MAC.
func (b *Booter) Host(mac net.HardwareAddr) (Host, bool) {
	h, ok := b.host(mac)
	if !ok {
		return Host{}, false
	}
	return *h, true
}

// Registry is where unknown MACs are recorded.
func (b *Booter) Registry() *Registry { return b.registry }

// ErrNoHostFile: the host boots no such file (unknown MAC, not Kernel
// mode, no initrd, another name).
var ErrNoHostFile = errors.New("boot: no such host file")

// OpenHostFile opens a Kernel mode host's "kernel" or "initrd": its own
// file, or its image version's. What the host does not boot is
// ErrNoHostFile; any other error is a file it should have and cannot open.
func (b *Booter) OpenHostFile(mac net.HardwareAddr, name string) (*os.File, error) {
	h, ok := b.host(mac)
	if !ok || h.Mode != Kernel {
		return nil, ErrNoHostFile
	}
	path := ""
	switch name {
	case "kernel":
		path = h.Kernel
	case "initrd":
		path = h.Initrd
	default:
		return nil, ErrNoHostFile
	}
	if path != "" {
		return os.Open(path)
	}
	if h.Kernel == "" && h.Files != nil {
		f, err := h.Files.Open(name)
		if name == "initrd" && errors.Is(err, fs.ErrNotExist) {
			return nil, ErrNoHostFile // a version may keep a kernel only
		}
		return f, err
	}
	return nil, ErrNoHostFile
}

// OpenBinary opens one of the iPXE binaries DHCPBoot may offer (name as in
// the offered URL path, e.g. "snponly.efi"); others are fs.ErrNotExist.
func (b *Booter) OpenBinary(name string) (fs.File, error) {
	if !b.present[name] {
		return nil, fs.ErrNotExist
	}
	return b.cfg.Binaries.Open(name)
}

// What may go into an iPXE script. config checks the same when it loads,
// with reasons; boot checks again before writing a script.
const (
	// MaxArgLen bounds one word (a name, CHAP user or secret).
	MaxArgLen = 255
	// MaxLineLen bounds a kernel command line.
	MaxLineLen = 1024
	// LineUnsafe are the printable characters a command line must not
	// hold: iPXE or the initramfs shell would interpret them.
	LineUnsafe = "$\"'\\`;&|#<>(){}*?[]"
)

// SafeArg reports whether s (of at least minLen bytes) holds only what
// means nothing to iPXE's parser (no whitespace, $, quotes, backslash, # or
// operators) nor to the initramfs shell that splits the kernel command
// line (no globs).
func SafeArg(s string, minLen int) bool {
	if len(s) < minLen || len(s) > MaxArgLen {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._~+=:/@,-", r)) {
			return false
		}
	}
	return true
}

// safeLine is SafeArg for a command line: single spaces allowed, plus the
// punctuation kernel parameters use.
func safeLine(s string) bool {
	if len(s) > MaxLineLen {
		return false
	}
	for _, r := range s {
		if r < 0x20 || r > 0x7e || strings.ContainsRune(LineUnsafe, r) {
			return false
		}
	}
	return true
}

// validIQN: an iSCSI name (iscsi.CheckName) that is also safe to put in an
// iPXE script.
func validIQN(s string) bool {
	return iscsi.CheckName(s) == nil && SafeArg(s, 1)
}
