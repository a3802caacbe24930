package inventory

import (
	"net"
	"strings"
	"time"

	"github.com/diskless-boot/diskless/internal/iscsi"
	"github.com/diskless-boot/diskless/internal/storage"
)

// Where a record came from: the API (changeable through the API and the
// CLI), the YAML configuration (changed by editing the file; the API
// refuses with a Conflict that says so), or enrollment (a machine that
// network-booted under unknown_hosts.policy enroll; changed like an API
// host, and counted against the enroll section's max_hosts).
const (
	SourceAPI    = "api"
	SourceYAML   = "yaml"
	SourceEnroll = "enroll"
)

// Boot modes of a host.
const (
	BootSanboot = "sanboot" // iPXE sanboots the LUN: MBR/GRUB/kernel from the disk
	BootKernel  = "kernel"  // iPXE loads kernel + initrd over HTTP, root on the LUN
)

// Architectures of a host (learnt from DHCP when not set).
const (
	ArchBIOS = "bios"
	ArchUEFI = "uefi"
)

// Image is a named, read-only disk with numbered versions.
type Image struct {
	Name        string    `json:"name"`
	Description string    `json:"description,omitempty"`
	Created     time.Time `json:"created"`
	Source      string    `json:"source"`
	// Latest is the newest published version (0: none yet).
	Latest int `json:"latest"`
	// Next is the number the next version gets (numbers are never reused,
	// so "v3" always means the same bytes).
	Next int `json:"next"`
}

// Version states.
const (
	VersionReady   = "ready"   // published: hosts may use it; it never changes
	VersionWriting = "writing" // being imported or promoted; not usable yet
)

// Version is one version of an image.
type Version struct {
	Image   string    `json:"image"`
	Number  int       `json:"version"`
	Size    int64     `json:"size"`
	Created time.Time `json:"created"`
	State   string    `json:"state"`
	// Origin says how it was made: "empty", "import <file> (<format>)",
	// "promote <host>".
	Origin string `json:"origin"`
}

// Ref is the version's storage reference.
func (v *Version) Ref() storage.VersionRef {
	return storage.VersionRef{Image: v.Image, Version: v.Number}
}

// Host is one machine diskless boots.
type Host struct {
	Name string   `json:"name"`
	MACs []string `json:"macs"`
	// Arch is "bios", "uefi" or "" (not known yet); ArchLearnt tells it
	// was learnt from the host's DHCP requests rather than set.
	Arch       string `json:"arch,omitempty"`
	ArchLearnt bool   `json:"arch_learnt,omitempty"`
	// Image and Version are what the host should boot: Version 0 follows
	// the image's newest version. Empty Image: a raw disk of the admin's.
	Image   string           `json:"image,omitempty"`
	Version int              `json:"version,omitempty"`
	Mode    storage.DiskMode `json:"disk_mode"`
	Boot    string           `json:"boot"`
	// Kernel, Initrd and Cmdline serve boot mode kernel (files on the
	// server; Cmdline is appended to the generated command line).
	Kernel  string `json:"kernel,omitempty"`
	Initrd  string `json:"initrd,omitempty"`
	Cmdline string `json:"cmdline,omitempty"`

	InitiatorIQN string             `json:"initiator_iqn"`
	TargetIQN    string             `json:"target_iqn"`
	CHAP         *iscsi.Credentials `json:"chap,omitempty"`
	MutualCHAP   *iscsi.Credentials `json:"mutual_chap,omitempty"`
	// NextCHAP and NextMutualCHAP are secrets RotateSecrets made while
	// the host ran: they replace CHAP and MutualCHAP when it begins its
	// next boot (BeginBoot). nil: none waiting.
	NextCHAP       *iscsi.Credentials `json:"next_chap,omitempty"`
	NextMutualCHAP *iscsi.Credentials `json:"next_mutual_chap,omitempty"`
	// CHAPRotation is RotateOff ("" in older records) or RotateBoot.
	CHAPRotation string `json:"chap_rotation,omitempty"`
	// CHAPInYAML and MutualCHAPInYAML: the YAML configuration writes that
	// secret, so it changes in the file and is never rotated.
	CHAPInYAML       bool `json:"chap_in_yaml,omitempty"`
	MutualCHAPInYAML bool `json:"mutual_chap_in_yaml,omitempty"`
	// IP is a fixed DHCP address (dhcp mode full), "" for one from the pool.
	IP string `json:"ip,omitempty"`

	Source  string    `json:"source"`
	Created time.Time `json:"created"`
	Updated time.Time `json:"updated"`

	// Disk is what the host's disk is made of now (it may lag behind
	// Image/Version/Mode while the host is online: see Pending).
	Disk storage.DiskState `json:"disk"`
	// ResetPending: a reset was asked while the host was online; it is
	// done when the host next boots.
	ResetPending bool `json:"reset_pending,omitempty"`
}

// HardwareAddrs parses MACs (valid ones only: the model checks them).
func (h *Host) HardwareAddrs() []net.HardwareAddr {
	var out []net.HardwareAddr
	for _, m := range h.MACs {
		if hw, err := net.ParseMAC(m); err == nil {
			out = append(out, hw)
		}
	}
	return out
}

// HasMAC reports whether mac is one of the host's.
func (h *Host) HasMAC(mac string) bool {
	for _, m := range h.MACs {
		if strings.EqualFold(m, mac) {
			return true
		}
	}
	return false
}

// redacted returns h without secret values (for listings); the users stay,
// and so does whether new secrets wait for the next boot.
func (h Host) redacted() Host {
	for _, c := range []**iscsi.Credentials{&h.CHAP, &h.MutualCHAP, &h.NextCHAP, &h.NextMutualCHAP} {
		if *c != nil {
			*c = &iscsi.Credentials{User: (*c).User}
		}
	}
	return h
}

// Rotation is the host's CHAPRotation, RotateOff for older records.
func (h *Host) Rotation() string {
	if h.CHAPRotation == "" {
		return RotateOff
	}
	return h.CHAPRotation
}
