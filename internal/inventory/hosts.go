package inventory

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/diskless-boot/diskless/internal/boot"
	"github.com/diskless-boot/diskless/internal/iscsi"
	"github.com/diskless-boot/diskless/internal/storage"
	"github.com/diskless-boot/diskless/internal/store"
)

// Limits of host values.
const (
	// MinSecretLen: shorter CHAP secrets are brute-forced offline from one
	// sniffed login (RFC 3723); iPXE and Windows want at least 12.
	MinSecretLen = 12
	// GeneratedSecretLen: 16 random letters and digits (95 bits), the
	// most some Windows and firmware initiators accept.
	GeneratedSecretLen = 16
	maxMACs            = 8
)

// CHAPSpec asks for CHAP credentials: off, or on with the given user and
// secret (empty ones are generated).
type CHAPSpec struct {
	Enabled bool
	User    string
	Secret  string
	// InYAML: the YAML configuration writes Secret (a host it declares),
	// so the secret changes in the file and RotateSecrets refuses it.
	InYAML bool
}

// HostSpec describes a host to add. Zero values take the defaults the
// field comments give.
type HostSpec struct {
	Name string
	MACs []string
	Arch string // "", "bios", "uefi"
	// Image (required unless RawPath) and Version (0: follow the newest).
	Image   string
	Version int
	// Mode: persistent (default), volatile, or raw (a private copy of the
	// image version, or RawPath used as it is).
	Mode    storage.DiskMode
	RawPath string
	Boot    string // sanboot (default) or kernel
	Kernel  string
	Initrd  string
	Cmdline string
	// InitiatorIQN and TargetIQN default to "<iqn base>.host.<id>" and
	// "<iqn base>.disk.<id>", id being the first MAC in hex (or the name
	// for a host without one).
	InitiatorIQN, TargetIQN string
	// CHAP and MutualCHAP: nil means on, with generated user and secret
	// for API hosts; see CHAPSpec.
	CHAP, MutualCHAP *CHAPSpec
	// CHAPRotation: RotateOff (default) or RotateBoot (needs CHAP).
	CHAPRotation string
	IP           string
	Source       string // SourceAPI (default), SourceYAML or SourceEnroll
}

// Hosts lists every host, secrets redacted, by name.
func (inv *Inventory) Hosts() ([]Host, error) {
	var out []Host
	err := inv.st.View(func(tx store.Tx) error {
		return forEachHost(tx, func(h *Host) error {
			out = append(out, h.redacted())
			return nil
		})
	})
	return out, err
}

// Host returns one host, secrets redacted.
func (inv *Inventory) Host(name string) (Host, error) {
	h, err := inv.HostWithSecrets(name)
	return h.redacted(), err
}

// HostWithSecrets returns one host with its CHAP secrets: for the server
// that serves them and for `host show --config`, never for listings.
func (inv *Inventory) HostWithSecrets(name string) (Host, error) {
	var h Host
	err := inv.st.View(func(tx store.Tx) error {
		var err error
		h, err = getHost(tx, name)
		return err
	})
	return h, err
}

// AllHostsWithSecrets returns every host with secrets (the server's view).
func (inv *Inventory) AllHostsWithSecrets() ([]Host, error) {
	var out []Host
	err := inv.st.View(func(tx store.Tx) error {
		return forEachHost(tx, func(h *Host) error {
			out = append(out, *h)
			return nil
		})
	})
	return out, err
}

func getHost(tx store.Tx, name string) (Host, error) {
	var h Host
	err := getJSON(tx, store.BucketHosts, name, &h)
	if errors.Is(err, store.ErrNotFound) {
		return h, notFound("no host %q", name)
	}
	return h, err
}

func forEachHost(tx store.Tx, fn func(*Host) error) error {
	return tx.ForEach(store.BucketHosts, "", func(k string, b []byte) error {
		var h Host
		if err := getJSON(tx, store.BucketHosts, k, &h); err != nil {
			return err
		}
		return fn(&h)
	})
}

// wantedBase is the version the host should be on.
func wantedBase(tx store.Tx, h *Host) (storage.VersionRef, error) {
	return resolve(tx, h.Image, h.Version)
}

// AddHost adds a host and makes its disk. The returned host holds its
// secrets: the only time they are shown by a listing call.
func (inv *Inventory) AddHost(ctx context.Context, spec HostSpec, progress storage.Progress) (Host, error) {
	h, err := inv.hostFromSpec(spec)
	if err != nil {
		return Host{}, err
	}
	if err := inv.rt.CheckHost(&h); err != nil {
		return Host{}, err
	}
	unlock := inv.lock(h.Name)
	defer unlock()
	var base storage.VersionRef
	err = inv.st.View(func(tx store.Tx) error {
		if _, err := tx.Get(store.BucketHosts, h.Name); err == nil {
			return conflict("host %q exists", h.Name)
		}
		if err := checkUnique(tx, &h); err != nil {
			return err
		}
		if err := rawPathTaken(tx, h.Name, spec.RawPath); err != nil {
			return err
		}
		if h.Image != "" {
			var err error
			base, err = wantedBase(tx, &h)
			if KindOf(err) == NotFound {
				err = invalid("image", "%v", err)
			}
			return err
		}
		return nil
	})
	if err != nil {
		return Host{}, err
	}
	h.Disk, err = inv.be.CreateDisk(ctx, h.Name, h.Mode, base, spec.RawPath, progress)
	if err != nil {
		return Host{}, err
	}
	err = inv.st.Update(func(tx store.Tx) error {
		if _, err := tx.Get(store.BucketHosts, h.Name); err == nil {
			return conflict("host %q exists", h.Name)
		}
		if err := checkUnique(tx, &h); err != nil {
			return err
		}
		if err := rawPathTaken(tx, h.Name, spec.RawPath); err != nil {
			return err
		}
		// The version may have been deleted while the disk was made.
		for _, v := range h.Disk.Versions() {
			if _, err := getVersion(tx, v.Image, v.Version); err != nil {
				return conflict("version %s was deleted while the host was added", v)
			}
		}
		return putJSON(tx, store.BucketHosts, h.Name, h)
	})
	if err != nil {
		inv.be.Prune(h.Name, storage.DiskState{})
		return Host{}, err
	}
	inv.rt.Changed(h.Name)
	return h, nil
}

// hostFromSpec checks a spec and fills in the defaults and generated
// values.
func (inv *Inventory) hostFromSpec(spec HostSpec) (Host, error) {
	now := inv.now().UTC()
	h := Host{Name: spec.Name, Arch: spec.Arch, Image: spec.Image, Version: spec.Version, Mode: spec.Mode,
		Boot: spec.Boot, Kernel: spec.Kernel, Initrd: spec.Initrd, Cmdline: spec.Cmdline,
		InitiatorIQN: spec.InitiatorIQN, TargetIQN: spec.TargetIQN, IP: spec.IP, CHAPRotation: spec.CHAPRotation,
		Source: spec.Source, Created: now, Updated: now}
	if err := storage.CheckName("host", h.Name); err != nil {
		return h, invalid("name", "%v", err)
	}
	if h.Source == "" {
		h.Source = SourceAPI
	}
	var err error
	if h.MACs, err = normalizeMACs(spec.MACs); err != nil {
		return h, err
	}
	if h.Mode == "" {
		h.Mode = storage.Persistent
	}
	if _, err := storage.ParseDiskMode(string(h.Mode)); err != nil {
		return h, invalid("disk_mode", "%v", err)
	}
	switch {
	case spec.RawPath != "":
		if h.Mode != storage.Raw {
			return h, invalid("raw_path", "only with disk mode raw")
		}
		if !filepath.IsAbs(spec.RawPath) {
			return h, invalid("raw_path", "%q: give an absolute path (the server may run elsewhere)", spec.RawPath)
		}
		if h.Image != "" {
			return h, invalid("raw_path", "give an image or a raw file, not both")
		}
		if _, err := os.Stat(spec.RawPath); err != nil {
			return h, invalid("raw_path", "%v", err)
		}
	case h.Image == "":
		return h, invalid("image", "required: the image the host boots")
	}
	if h.Version < 0 {
		return h, invalid("version", "%d: want 0 (newest) or a version number", h.Version)
	}
	if h.Boot == "" {
		h.Boot = BootSanboot
	}
	if h.CHAP, err = inv.credentials("chap", spec.CHAP, h.Name, nil, h.Source); err != nil {
		return h, err
	}
	if h.MutualCHAP, err = inv.credentials("mutual_chap", spec.MutualCHAP, h.Name+"-target", h.CHAP, h.Source); err != nil {
		return h, err
	}
	if h.Source == SourceYAML {
		h.CHAPInYAML = h.CHAP != nil && spec.CHAP != nil && spec.CHAP.InYAML
		h.MutualCHAPInYAML = h.MutualCHAP != nil && spec.MutualCHAP != nil && spec.MutualCHAP.InYAML
	}
	id := h.Name
	if len(h.MACs) > 0 {
		id = strings.ReplaceAll(h.MACs[0], ":", "")
	}
	if h.InitiatorIQN == "" {
		h.InitiatorIQN = inv.iqnBase + ".host." + id
	}
	if h.TargetIQN == "" {
		h.TargetIQN = inv.iqnBase + ".disk." + id
	}
	return h, checkHost(&h)
}

// credentials builds chap or mutual_chap from a spec: nil is on with
// generated values for API hosts, off for YAML hosts (their file says).
func (inv *Inventory) credentials(field string, spec *CHAPSpec, defUser string, chap *iscsi.Credentials, source string) (*iscsi.Credentials, error) {
	if spec == nil {
		spec = &CHAPSpec{Enabled: source != SourceYAML}
	}
	if !spec.Enabled {
		return nil, nil
	}
	if field == "mutual_chap" && chap == nil {
		return nil, invalid(field, "needs chap")
	}
	c := &iscsi.Credentials{User: spec.User, Secret: spec.Secret}
	if c.User == "" {
		c.User = defUser
	}
	for c.Secret == "" || chap != nil && c.Secret == chap.Secret {
		if spec.Secret != "" {
			// Mutual CHAP must not reuse the host's secret (RFC 7143 12.1.3).
			return nil, invalid(field+".secret", "must differ from the chap secret")
		}
		s, err := GenerateSecret()
		if err != nil {
			return nil, err
		}
		c.Secret = s
	}
	return c, nil
}

// patchCredentials applies a CHAPSpec to current credentials: the current
// ones stay when the spec asks for CHAP without naming others.
func (inv *Inventory) patchCredentials(field string, spec *CHAPSpec, cur *iscsi.Credentials, defUser string, chap *iscsi.Credentials) (*iscsi.Credentials, error) {
	if !spec.Enabled {
		return nil, nil
	}
	if cur != nil && spec.Secret == "" && (spec.User == "" || spec.User == cur.User) {
		return cur, nil
	}
	s := *spec
	if s.User == "" && cur != nil {
		s.User = cur.User
	}
	return inv.credentials(field, &s, defUser, chap, SourceAPI)
}

// checkHost checks every value that ends up in scripts, DHCP or iSCSI.
func checkHost(h *Host) error {
	switch h.Arch {
	case "", ArchBIOS, ArchUEFI:
	default:
		return invalid("arch", "%q: want bios, uefi or empty (learnt from DHCP)", h.Arch)
	}
	for _, v := range []struct{ field, val string }{{"initiator_iqn", h.InitiatorIQN}, {"target_iqn", h.TargetIQN}} {
		if err := iscsi.CheckName(v.val); err != nil {
			return invalid(v.field, "%q: %v", v.val, err)
		}
		if !boot.SafeArg(v.val, 1) {
			return invalid(v.field, "%q has characters unsafe in an iPXE script", v.val)
		}
	}
	if h.InitiatorIQN == h.TargetIQN {
		return invalid("target_iqn", "must differ from initiator_iqn")
	}
	for _, c := range []struct {
		field string
		cr    *iscsi.Credentials
	}{{"chap", h.CHAP}, {"mutual_chap", h.MutualCHAP}} {
		if c.cr == nil {
			continue
		}
		if !boot.SafeArg(c.cr.User, 1) {
			return invalid(c.field+".user", "%q: want 1-255 of A-Z a-z 0-9 . _ ~ + = : / @ , -", c.cr.User)
		}
		if !boot.SafeArg(c.cr.Secret, MinSecretLen) {
			return invalid(c.field+".secret", "want %d-255 of A-Z a-z 0-9 . _ ~ + = : / @ , -", MinSecretLen)
		}
	}
	switch h.CHAPRotation {
	case "":
		h.CHAPRotation = RotateOff
	case RotateOff:
	case RotateBoot:
		if h.CHAP == nil {
			return invalid("chap_rotation", "boot needs chap: a host without CHAP has no secret to rotate")
		}
		if h.CHAPInYAML || h.MutualCHAPInYAML {
			return invalid("chap_rotation", "boot generates the secrets: leave chap.secret and mutual_chap.secret out of the YAML")
		}
	default:
		return invalid("chap_rotation", "%q: want off or boot", h.CHAPRotation)
	}
	switch h.Boot {
	case BootSanboot:
		if h.Kernel != "" || h.Initrd != "" || h.Cmdline != "" {
			return invalid("kernel", "kernel, initrd and cmdline go with boot mode kernel only")
		}
	case BootKernel:
		if h.Kernel == "" && (h.Image == "" || h.Mode == storage.Raw) {
			// On an overlay, the version the disk is on serves its own
			// kernel and initrd (an image build keeps them); a raw copy
			// no longer says which version it was.
			return invalid("kernel", "required with boot mode kernel on a raw disk")
		}
		if h.Initrd != "" && h.Kernel == "" {
			return invalid("initrd", "goes with kernel: a version's kernel comes with its own initrd")
		}
		for _, f := range []struct{ field, path string }{{"kernel", h.Kernel}, {"initrd", h.Initrd}} {
			if f.path == "" {
				continue
			}
			if !filepath.IsAbs(f.path) {
				return invalid(f.field, "%q: give an absolute path", f.path)
			}
			if st, err := os.Stat(f.path); err != nil || !st.Mode().IsRegular() {
				return invalid(f.field, "%q is not a readable file", f.path)
			}
		}
		if len(h.Cmdline) > boot.MaxLineLen || strings.ContainsAny(h.Cmdline, boot.LineUnsafe) || !printable(h.Cmdline) {
			return invalid("cmdline", "at most %d printable characters without %s", boot.MaxLineLen, boot.LineUnsafe)
		}
	default:
		return invalid("boot", "%q: want sanboot or kernel", h.Boot)
	}
	if h.IP != "" {
		a, err := netip.ParseAddr(h.IP)
		if err != nil || !a.Is4() || a.IsUnspecified() || a.IsMulticast() || a.IsLoopback() {
			return invalid("ip", "%q is not a usable IPv4 address", h.IP)
		}
		h.IP = a.String()
	}
	if h.Mode == storage.Raw && h.Version == 0 && h.Image != "" {
		// A raw disk is a copy: it cannot follow anything.
		return invalid("version", "a raw disk is a copy of one version: give the version")
	}
	return nil
}

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// normalizeMACs parses and lowercases MACs (6 bytes, no duplicates).
func normalizeMACs(in []string) ([]string, error) {
	if len(in) > maxMACs {
		return nil, invalid("macs", "at most %d", maxMACs)
	}
	out := []string{}
	for _, m := range in {
		hw, err := net.ParseMAC(strings.TrimSpace(m))
		if err != nil || len(hw) != 6 {
			return nil, invalid("macs", "%q is not an Ethernet address", m)
		}
		if slices.Contains(out, hw.String()) {
			return nil, invalid("macs", "%s given twice", hw)
		}
		out = append(out, hw.String())
	}
	return out, nil
}

// rawPathTaken refuses a disk file another host uses: two hosts must never
// write one disk.
func rawPathTaken(tx store.Tx, name, path string) error {
	if path == "" {
		return nil
	}
	return forEachHost(tx, func(o *Host) error {
		if o.Name != name && o.Disk.Mode == storage.Raw && o.Disk.RawPath == path {
			return conflict("disk file %s is host %q's", path, o.Name)
		}
		return nil
	})
}

// checkUnique refuses a MAC, target IQN, initiator IQN or IP another host
// has.
func checkUnique(tx store.Tx, h *Host) error {
	return forEachHost(tx, func(o *Host) error {
		if o.Name == h.Name {
			return nil
		}
		for _, m := range h.MACs {
			if o.HasMAC(m) {
				return conflict("MAC %s belongs to host %q", m, o.Name)
			}
		}
		switch {
		case o.TargetIQN == h.TargetIQN:
			return conflict("target IQN %s belongs to host %q", h.TargetIQN, o.Name)
		case o.InitiatorIQN == h.InitiatorIQN:
			return conflict("initiator IQN %s belongs to host %q", h.InitiatorIQN, o.Name)
		case h.IP != "" && o.IP == h.IP:
			return conflict("IP %s belongs to host %q", h.IP, o.Name)
		}
		return nil
	})
}

// HostPatch is a change to a host: nil fields stay as they are.
type HostPatch struct {
	MACs    *[]string
	Arch    *string
	Image   *string
	Version *int
	Mode    *storage.DiskMode
	Boot    *string
	Kernel  *string
	Initrd  *string
	Cmdline *string
	IP      *string
	// CHAP and MutualCHAP change the credentials: off, on (keeping the
	// current ones when the spec names no other), or given ones. New
	// credentials drop secrets waiting for the next boot (RotateSecrets).
	CHAP, MutualCHAP *CHAPSpec
	// CHAPRotation: RotateOff or RotateBoot.
	CHAPRotation *string
	// RawPath points a raw disk the admin named at another file (the host
	// must be offline).
	RawPath *string
	// FromYAML lets the YAML declaration change a host it declares;
	// Source moves a host between the YAML and the API (with FromYAML).
	FromYAML bool
	Source   *string
}

// SetHost changes a host. Changes to what the disk is (image, version,
// mode) apply at once when the host is offline and at its next boot when
// it is online; notes say which, for the admin.
func (inv *Inventory) SetHost(name string, p HostPatch) (Host, []string, error) {
	unlock := inv.lock(name)
	defer unlock()
	var h Host
	err := inv.st.View(func(tx store.Tx) error {
		var err error
		h, err = getHost(tx, name)
		return err
	})
	if err != nil {
		return Host{}, nil, err
	}
	if h.Source == SourceYAML && !p.FromYAML {
		return Host{}, nil, conflict("host %q is declared in the YAML configuration; change it there", name)
	}
	if p.MACs != nil {
		if h.MACs, err = normalizeMACs(*p.MACs); err != nil {
			return Host{}, nil, err
		}
	}
	set := func(dst *string, v *string) {
		if v != nil {
			*dst = *v
		}
	}
	set(&h.Arch, p.Arch)
	if p.Arch != nil {
		h.ArchLearnt = false
	}
	set(&h.Image, p.Image)
	set(&h.Boot, p.Boot)
	set(&h.Kernel, p.Kernel)
	set(&h.Initrd, p.Initrd)
	set(&h.Cmdline, p.Cmdline)
	set(&h.IP, p.IP)
	if p.Version != nil {
		if *p.Version < 0 {
			return Host{}, nil, invalid("version", "%d: want 0 (newest) or a version number", *p.Version)
		}
		h.Version = *p.Version
	}
	if p.Mode != nil {
		if _, err := storage.ParseDiskMode(string(*p.Mode)); err != nil {
			return Host{}, nil, invalid("disk_mode", "%v", err)
		}
		if (*p.Mode == storage.Raw) != (h.Mode == storage.Raw) {
			return Host{}, nil, conflict("a host cannot move between a raw disk and a copy-on-write one; add a new host instead")
		}
		if *p.Mode == storage.Volatile && len(h.Disk.Snapshots) > 0 {
			return Host{}, nil, conflict("host %q has snapshots; a volatile disk keeps none: delete them first", name)
		}
		h.Mode = *p.Mode
	}
	oldCHAP, oldMutual := h.CHAP, h.MutualCHAP
	if p.CHAP != nil {
		if h.CHAP, err = inv.patchCredentials("chap", p.CHAP, h.CHAP, h.Name, nil); err != nil {
			return Host{}, nil, err
		}
	}
	if p.MutualCHAP != nil || p.CHAP != nil && !p.CHAP.Enabled {
		spec := p.MutualCHAP
		if spec == nil || h.CHAP == nil {
			spec = &CHAPSpec{} // no CHAP, no mutual CHAP
		}
		if h.MutualCHAP, err = inv.patchCredentials("mutual_chap", spec, h.MutualCHAP, h.Name+"-target", h.CHAP); err != nil {
			return Host{}, nil, err
		}
	}
	if !sameCredentials(oldCHAP, h.CHAP) || !sameCredentials(oldMutual, h.MutualCHAP) {
		// Rotated secrets were made for the credentials replaced now.
		h.NextCHAP, h.NextMutualCHAP = nil, nil
	}
	if p.FromYAML {
		if p.CHAP != nil {
			h.CHAPInYAML = p.CHAP.InYAML
		}
		if p.MutualCHAP != nil {
			h.MutualCHAPInYAML = p.MutualCHAP.InYAML
		}
	}
	h.CHAPInYAML = h.CHAPInYAML && h.CHAP != nil
	h.MutualCHAPInYAML = h.MutualCHAPInYAML && h.MutualCHAP != nil
	set(&h.CHAPRotation, p.CHAPRotation)
	if p.Source != nil && p.FromYAML {
		h.Source = *p.Source
		if h.Source != SourceYAML {
			// No file writes its secrets any more.
			h.CHAPInYAML, h.MutualCHAPInYAML = false, false
		}
	}
	newRaw := p.RawPath != nil && *p.RawPath != h.Disk.RawPath
	if newRaw {
		if h.Disk.Mode != storage.Raw || h.Disk.Owned {
			return Host{}, nil, conflict("host %q: only a raw disk file the admin named can be changed", name)
		}
		if st, err := os.Stat(*p.RawPath); err != nil || !filepath.IsAbs(*p.RawPath) || !st.Mode().IsRegular() && st.Mode()&os.ModeDevice == 0 {
			return Host{}, nil, invalid("raw_path", "%q is not a disk file given by its absolute path", *p.RawPath)
		}
		if inv.rt.Online(name) {
			return Host{}, nil, conflict("host %q is online; its disk file changes when it is off", name)
		}
	}
	if h.Mode == storage.Raw && (p.Image != nil || p.Version != nil) {
		return Host{}, nil, conflict("a raw disk is a private copy; it cannot change image or version")
	}
	if err := checkHost(&h); err != nil {
		return Host{}, nil, err
	}
	if err := inv.rt.CheckHost(&h); err != nil {
		return Host{}, nil, err
	}
	h.Updated = inv.now().UTC()
	save := func() error {
		return inv.st.Update(func(tx store.Tx) error {
			if err := checkUnique(tx, &h); err != nil {
				return err
			}
			if newRaw {
				if err := rawPathTaken(tx, name, h.Disk.RawPath); err != nil {
					return err
				}
			}
			if h.Image != "" {
				if _, err := wantedBase(tx, &h); err != nil {
					return err
				}
			}
			return putJSON(tx, store.BucketHosts, name, h)
		})
	}
	if newRaw {
		h.Disk.RawPath = *p.RawPath
		err = inv.rt.WithDiskClosed(name, save)
	} else {
		err = save()
	}
	if err != nil {
		return Host{}, nil, err
	}
	notes, err := inv.applyOrDefer(name)
	if KindOf(err) == Conflict {
		// Saved; the host came online meanwhile: its next boot applies it.
		notes, err = append(notes, fmt.Sprintf("host %s is online: the change applies at its next boot", name)), nil
	}
	inv.rt.Changed(name)
	h, _ = inv.HostWithSecrets(name)
	return h.redacted(), notes, err
}

// RemoveHost removes a host and its disk (a raw file the admin named is
// left alone). Refused while the host is online.
func (inv *Inventory) RemoveHost(name string, fromYAML bool) error {
	unlock := inv.lock(name)
	defer unlock()
	h, err := inv.HostWithSecrets(name)
	if err != nil {
		return err
	}
	if h.Source == SourceYAML && !fromYAML {
		return conflict("host %q is declared in the YAML configuration; remove it there", name)
	}
	err = inv.rt.WithDiskClosed(name, func() error {
		return inv.st.Update(func(tx store.Tx) error {
			if err := deleteBoots(tx, name); err != nil {
				return err
			}
			return tx.Delete(store.BucketHosts, name)
		})
	})
	if err != nil {
		return err
	}
	inv.rt.Changed(name)
	if err := inv.be.Prune(name, storage.DiskState{}); err != nil {
		return fmt.Errorf("inventory: host %s removed, its disk files not all: %w", name, err)
	}
	return nil
}

// HostByMAC finds the host with this MAC.
func (inv *Inventory) HostByMAC(mac string) (Host, bool) {
	var out Host
	found := false
	inv.st.View(func(tx store.Tx) error {
		return forEachHost(tx, func(h *Host) error {
			if h.HasMAC(mac) {
				out, found = *h, true
			}
			return nil
		})
	})
	return out, found
}

// LearnArch records the architecture a host's DHCP request showed, when
// none was set.
func (inv *Inventory) LearnArch(name, arch string) {
	if arch != ArchBIOS && arch != ArchUEFI {
		return
	}
	unlock, ok := inv.tryLock(name)
	if !ok {
		return
	}
	defer unlock()
	inv.st.Update(func(tx store.Tx) error {
		h, err := getHost(tx, name)
		if err != nil || h.Arch == arch || h.Arch != "" && !h.ArchLearnt {
			return err
		}
		h.Arch, h.ArchLearnt = arch, true
		return putJSON(tx, store.BucketHosts, name, h)
	})
}
