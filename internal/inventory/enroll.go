package inventory

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/diskless-boot/diskless/internal/storage"
	"github.com/diskless-boot/diskless/internal/store"
)

// Placeholders of a name pattern, and the pattern used when none is given:
// the name a host declared in the YAML without one gets.
const (
	PatternNumber      = "{n}"   // the first number from 1 no host name takes
	PatternMAC         = "{mac}" // the MAC in hex without colons
	DefaultNamePattern = "host-" + PatternMAC
	// maxNameNumber bounds the search for a free {n} (and the length a
	// pattern is checked with).
	maxNameNumber = 999999
)

// metaEnroll keeps the enroll defaults of the last server start.
const metaEnroll = "enroll"

// EnrollSpec is how a machine becomes a host without the admin naming
// every value: the unknown_hosts.enroll section of the configuration. The
// server keeps the one it started with in the store (SetEnrollDefaults), so
// an adoption by the CLI without a server takes the same defaults.
type EnrollSpec struct {
	Image   string           `json:"image,omitempty"`
	Version int              `json:"version,omitempty"` // 0: follow the newest
	Mode    storage.DiskMode `json:"disk_mode,omitempty"`
	Boot    string           `json:"boot,omitempty"`
	// NamePattern makes the host's name (CheckNamePattern); default
	// DefaultNamePattern.
	NamePattern string `json:"name_pattern,omitempty"`
	// MaxHosts bounds the hosts Enroll makes (Source SourceEnroll):
	// made-up MACs must not grow the store without end. 0: no bound
	// (adoption by the admin is not bounded).
	MaxHosts int `json:"max_hosts,omitempty"`
}

// ErrMaxHosts: Enroll refused a machine because MaxHosts enrolled hosts
// exist.
var ErrMaxHosts = errors.New("inventory: the site has max_hosts enrolled hosts")

// CheckNamePattern checks a name pattern: literal text with {n}, {mac} or
// both (one of them, or every machine would get the same name) and no
// other braces, that makes a valid host name (1-63 of a-z 0-9 . _ -,
// starting with a letter or digit) with any number and MAC.
func CheckNamePattern(p string) error {
	if !strings.Contains(p, PatternNumber) && !strings.Contains(p, PatternMAC) {
		return fmt.Errorf("%q: put {n} (first free number) or {mac} (MAC without colons) in it, or every machine would get the same name", p)
	}
	if rest := strings.NewReplacer(PatternNumber, "", PatternMAC, "").Replace(p); strings.ContainsAny(rest, "{}") {
		return fmt.Errorf("%q: the only placeholders are {n} and {mac}", p)
	}
	for _, n := range []int{1, maxNameNumber} {
		name := ExpandName(p, n, net.HardwareAddr{0x52, 0x54, 0, 0x12, 0x34, 0x56})
		if err := storage.CheckName("host", name); err != nil {
			return fmt.Errorf("%q makes %q: want 1-63 of a-z 0-9 . _ - (lower case), starting with a letter or digit", p, name)
		}
	}
	return nil
}

// ExpandName is the name pattern p makes for number n and mac.
func ExpandName(p string, n int, mac net.HardwareAddr) string {
	return strings.NewReplacer(PatternNumber, strconv.Itoa(n),
		PatternMAC, strings.ReplaceAll(mac.String(), ":", "")).Replace(p)
}

// freeName is the name p gives mac among the hosts of tx: with {n}, the
// lowest number whose name no host has; with {mac} alone, that name unless
// a host has it (Conflict).
func freeName(tx store.Tx, p string, mac net.HardwareAddr) (string, error) {
	taken := map[string]bool{}
	if err := tx.ForEach(store.BucketHosts, "", func(k string, _ []byte) error {
		taken[k] = true
		return nil
	}); err != nil {
		return "", err
	}
	if !strings.Contains(p, PatternNumber) {
		name := ExpandName(p, 0, mac)
		if taken[name] {
			return "", conflict("name %q (from pattern %q) is host %q's: give another name", name, p, name)
		}
		return name, nil
	}
	// At most len(taken)+1 tries: each taken number is one host.
	for n := 1; n <= maxNameNumber; n++ {
		if name := ExpandName(p, n, mac); !taken[name] {
			return name, nil
		}
	}
	return "", conflict("pattern %q has no free number left", p)
}

// enrollTries bounds the retries of Enroll and Adopt when another host
// takes the chosen name between choosing it and adding the host.
const enrollTries = 3

// Enroll makes the machine with this MAC a host as spec says: the first
// free name of its pattern, Source SourceEnroll, IQNs and CHAP secrets
// generated, its copy-on-write disk on the image (its architecture is
// learnt from its DHCP requests, as for any host). It refuses with ErrMaxHosts when spec.MaxHosts
// enrolled hosts exist, and with the inventory's errors when the image is
// missing or the MAC is a host's already. The returned host holds its
// secrets.
//
// The bound is checked before the host is added, not in one transaction
// with it: the caller serializes enrollments (one machine at a time).
func (inv *Inventory) Enroll(ctx context.Context, mac net.HardwareAddr, spec EnrollSpec) (Host, error) {
	if spec.MaxHosts > 0 {
		n := 0
		err := inv.st.View(func(tx store.Tx) error {
			return forEachHost(tx, func(h *Host) error {
				if h.Source == SourceEnroll {
					n++
				}
				return nil
			})
		})
		if err != nil {
			return Host{}, err
		}
		if n >= spec.MaxHosts {
			return Host{}, fmt.Errorf("%w (%d)", ErrMaxHosts, spec.MaxHosts)
		}
	}
	return inv.addNamed(ctx, mac, "", HostSpec{Image: spec.Image, Version: spec.Version, Mode: spec.Mode,
		Boot: spec.Boot, Source: SourceEnroll}, spec.NamePattern)
}

// addNamed adds spec for mac, named name or, when name is "", by pattern.
func (inv *Inventory) addNamed(ctx context.Context, mac net.HardwareAddr, name string, spec HostSpec, pattern string) (Host, error) {
	if len(mac) != 6 {
		return Host{}, invalid("mac", "%q is not an Ethernet address", mac)
	}
	if pattern == "" {
		pattern = DefaultNamePattern
	}
	if err := CheckNamePattern(pattern); err != nil && name == "" {
		return Host{}, invalid("name_pattern", "%v", err)
	}
	spec.MACs = []string{mac.String()}
	for try := 1; ; try++ {
		spec.Name = name
		if name == "" {
			if err := inv.st.View(func(tx store.Tx) error {
				var err error
				spec.Name, err = freeName(tx, pattern, mac)
				return err
			}); err != nil {
				return Host{}, err
			}
		}
		h, err := inv.AddHost(ctx, spec, nil)
		if name == "" && try < enrollTries && KindOf(err) == Conflict && inv.hostExists(spec.Name) {
			continue // the name went to another host meanwhile
		}
		return h, err
	}
}

func (inv *Inventory) hostExists(name string) bool {
	_, err := inv.Host(name)
	return err == nil
}

// AdoptSpec is what the admin says when adopting a machine of the unknown
// list; left-out values come from the enroll defaults.
type AdoptSpec struct {
	Name    string // default: the defaults' name pattern, else DefaultNamePattern
	Image   string
	Version *int
	Mode    storage.DiskMode
	Boot    string
}

// Adopt makes a machine of the unknown list a host (Source SourceAPI: the
// admin chose it) and takes it off the list. Values AdoptSpec leaves out
// come from the enroll defaults (SetEnrollDefaults); the image is required
// from one of them. Not bounded by MaxHosts. The returned host holds its
// secrets.
func (inv *Inventory) Adopt(ctx context.Context, mac string, a AdoptSpec) (Host, error) {
	hw, err := net.ParseMAC(strings.TrimSpace(mac))
	if err != nil || len(hw) != 6 {
		return Host{}, invalid("mac", "%q is not an Ethernet address", mac)
	}
	err = inv.st.View(func(tx store.Tx) error {
		_, err := tx.Get(store.BucketUnknown, hw.String())
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return Host{}, notFound("%s is not in the unknown list (`diskless host unknown`); add it with `diskless host add`", hw)
	}
	if err != nil {
		return Host{}, err
	}
	if h, ok := inv.HostByMAC(hw.String()); ok {
		return Host{}, conflict("%s is host %q's already", hw, h.Name)
	}
	def, err := inv.EnrollDefaults()
	if err != nil {
		return Host{}, err
	}
	spec := HostSpec{Image: cmpOr(a.Image, def.Image), Version: def.Version, Mode: storage.DiskMode(cmpOr(string(a.Mode), string(def.Mode))),
		Boot: cmpOr(a.Boot, def.Boot), Source: SourceAPI}
	if a.Version != nil {
		spec.Version = *a.Version
	} else if a.Image != "" && a.Image != def.Image {
		spec.Version = 0 // the defaults' pin is for their image
	}
	if spec.Image == "" {
		return Host{}, invalid("image", "required: name one (there is no unknown_hosts.enroll.image to take it from)")
	}
	if spec.Mode == storage.Raw {
		return Host{}, invalid("disk_mode", "persistent or volatile: for a raw copy, `diskless host add` it")
	}
	if a.Name != "" {
		if err := storage.CheckName("host", a.Name); err != nil {
			return Host{}, invalid("name", "%v", err)
		}
	}
	h, err := inv.addNamed(ctx, hw, a.Name, spec, def.NamePattern)
	if err != nil {
		return Host{}, err
	}
	// Off the list: the server's registry drops it too when it serves the
	// host, and the list never shows a host's MAC anyway.
	if err := inv.st.Update(func(tx store.Tx) error { return tx.Delete(store.BucketUnknown, hw.String()) }); err != nil {
		inv.log.Warn("adopted machine left in the stored unknown list", "mac", hw.String(), "err", err)
	}
	return h, nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// SetEnrollDefaults keeps the enroll section the server starts with, for
// adoptions (by the API, or by the CLI while no server runs).
func (inv *Inventory) SetEnrollDefaults(spec EnrollSpec) error {
	return inv.st.Update(func(tx store.Tx) error { return putJSON(tx, store.BucketMeta, metaEnroll, spec) })
}

// EnrollDefaults is what SetEnrollDefaults kept (zero before any).
func (inv *Inventory) EnrollDefaults() (EnrollSpec, error) {
	var spec EnrollSpec
	err := inv.st.View(func(tx store.Tx) error {
		b, err := tx.Get(store.BucketMeta, metaEnroll)
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		return json.Unmarshal(b, &spec)
	})
	return spec, err
}
