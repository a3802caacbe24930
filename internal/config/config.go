// Package config owns the configuration of `diskless serve`: the Config
// struct with its documented defaults, loading it from YAML (unknown keys
// are errors), building the same Config from the quick-start flags, and
// Validate, whose errors name the file and line, the key and the reason so
// that nothing starts on a bad configuration.
//
// Configuration is input, not state: what is generated (install ID, IQNs,
// CHAP secrets) and everything changed at run time lives in the state
// store (internal/inventory, internal/store). It must not start services
// or log: the app reads a Config, declares its images and hosts to the
// inventory and wires the servers. There are no package globals; a Config is a plain value, not safe
// for concurrent mutation.
//
// docs/config.md is the reference of every key; a test keeps it in step
// with the yaml tags here.
package config

import (
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/diskless-boot/diskless/internal/inventory"
)

// Defaults of the keys that have one. docs/config.md repeats them.
const (
	DefaultDHCPMode       = DHCPProxy
	DefaultLeaseTime      = time.Hour
	DefaultTFTPRoot       = "/usr/lib/ipxe"
	DefaultHTTPPort       = 8080 // on server_ip: http.listen left out
	DefaultISCSIPort      = 3260 // on server_ip: iscsi.listen left out
	DefaultPortalGroupTag = 1
	DefaultDataDir        = "/var/lib/diskless"
	DefaultUnknownPolicy  = UnknownLocal
	DefaultBoot           = BootSanboot
	DefaultCHAPRotation   = CHAPRotationOff
	DefaultNamePattern    = inventory.DefaultNamePattern
	DefaultMaxEnrolled    = 256
	DefaultEnrollPerMin   = 10
	DefaultStoreBackend   = StoreBolt
	DefaultEtcdPrefix     = "/diskless/" // etcdstore.DefaultPrefix
	DefaultStorageBackend = StorageLocal
	DefaultCephConf       = "/etc/ceph/ceph.conf"
	DefaultRBDUser        = "diskless"
	DefaultRBDOpTimeout   = 30 * time.Second
	// LeaseFileName is the default lease file, inside data_dir.
	LeaseFileName = "dhcp-leases.json"
)

// DHCP modes (dhcp.mode).
const (
	DHCPFull  = "full"
	DHCPProxy = "proxy"
	DHCPOff   = "off"
)

// Unknown host policies (unknown_hosts.policy).
const (
	UnknownLocal  = "local"
	UnknownMenu   = "menu"
	UnknownRefuse = "refuse"
	UnknownEnroll = "enroll"
)

// State store backends (store.backend).
const (
	StoreBolt = "bolt"
	StoreEtcd = "etcd"
)

// Storage backends (storage.backend).
const (
	StorageLocal = "local"
	StorageRBD   = "rbd"
)

// Boot modes (hosts[].boot).
const (
	BootSanboot = "sanboot"
	BootKernel  = "kernel"
)

// CHAP rotation policies (hosts[].chap_rotation).
const (
	CHAPRotationOff  = "off"
	CHAPRotationBoot = "boot"
)

// Config is the whole configuration of `diskless serve`.
type Config struct {
	// Interface is the network interface every service is bound to, e.g.
	// "br0". Required. DHCP never answers on any other interface.
	Interface string `yaml:"interface"`
	// ServerIP is the IPv4 address clients reach the server at, handed out
	// as next-server and used in boot URLs. Default: the first IPv4 address
	// of Interface (see ResolveNetwork).
	ServerIP string `yaml:"server_ip"`
	// DHCP configures the DHCP / proxyDHCP server.
	DHCP DHCP `yaml:"dhcp"`
	// TFTP configures the read-only TFTP server for the iPXE binaries.
	TFTP TFTP `yaml:"tftp"`
	// HTTP configures the HTTP server of iPXE scripts, kernels and binaries.
	HTTP HTTP `yaml:"http"`
	// ISCSI configures the iSCSI target.
	ISCSI ISCSI `yaml:"iscsi"`
	// DataDir holds the state store (state.db: images, hosts, generated
	// names and secrets, API tokens), image versions, host disks and DHCP
	// leases. Default "/var/lib/diskless".
	DataDir string `yaml:"data_dir"`
	// Store says where the state store is: data_dir/state.db (bbolt) or
	// an etcd cluster several servers share.
	Store Store `yaml:"store"`
	// Cluster makes this server one of several serving the site (with
	// store.backend etcd): they elect one active server that holds the
	// site's floating address.
	Cluster Cluster `yaml:"cluster"`
	// Storage says where image versions and host disks are: files in
	// data_dir (local) or a Ceph RBD pool several servers share.
	Storage Storage `yaml:"storage"`
	// IQNBase is the prefix of generated IQNs. Default
	// "iqn.2026-01.boot.diskless:" followed by this install's random ID
	// (kept in the state store), so two installs never clash.
	IQNBase string `yaml:"iqn_base"`
	// API configures the admin REST API.
	API API `yaml:"api"`
	// UnknownHosts says what machines not listed in Hosts get.
	UnknownHosts UnknownHosts `yaml:"unknown_hosts"`
	// Boots configures how boots are followed.
	Boots Boots `yaml:"boots"`
	// Images are images declared here (infrastructure as code): each is
	// created in the store when missing. Default: none.
	Images []Image `yaml:"images"`
	// Hosts are machines declared here; more can be added through the
	// API and CLI. Default: none.
	Hosts []Host `yaml:"hosts"`

	src *source // where each key came from, for errors
}

// DHCP is the dhcp section.
type DHCP struct {
	// Mode is "full" (address pool and reservations), "proxy" (PXE answers
	// only, beside the site's DHCP server) or "off". Default "proxy".
	Mode string `yaml:"mode"`
	// Range is the address pool "FIRST-LAST" (IPv4, inclusive). Required
	// with mode full.
	Range string `yaml:"range"`
	// Netmask is the subnet mask handed out, dotted ("255.255.255.0") or
	// a prefix length ("24"). Default: the mask of Interface's address.
	Netmask string `yaml:"netmask"`
	// Router is the default gateway handed out (IPv4). Default: none.
	Router string `yaml:"router"`
	// DNS are the name servers handed out (IPv4). Default: none.
	DNS []string `yaml:"dns"`
	// LeaseTime is how long a lease lasts, e.g. "1h". Default 1h; at least 1m.
	LeaseTime time.Duration `yaml:"lease_time"`
	// LeaseFile persists leases across restarts. Default
	// "<data_dir>/dhcp-leases.json".
	LeaseFile string `yaml:"lease_file"`
}

// TFTP is the tftp section.
type TFTP struct {
	// Root is the directory served (read-only) holding the iPXE binaries
	// undionly.kpxe, snponly.efi, ipxe.efi. Default "/usr/lib/ipxe"
	// (Debian's ipxe package).
	Root string `yaml:"root"`
	// Enabled turns the TFTP server on. Default true.
	Enabled bool `yaml:"enabled"`
}

// HTTP is the http section.
type HTTP struct {
	// Listen is the address the HTTP server binds, "[HOST]:PORT". Default
	// server_ip:8080 (only the served network, never the wildcard). Its
	// port goes into the boot URLs.
	Listen string `yaml:"listen"`
}

// ISCSI is the iscsi section.
type ISCSI struct {
	// Listen is the iSCSI portal, "[HOST]:PORT". Default server_ip:3260.
	Listen string `yaml:"listen"`
	// PortalGroupTag is the target portal group tag (1-65535), passed to
	// the initramfs as ISCSI_TARGET_GROUP. Default 1.
	PortalGroupTag int `yaml:"portal_group_tag"`
}

// API is the api section.
type API struct {
	// Listen is the address of the admin API, "[HOST]:PORT". Default ""
	// serves it on http.listen beside the boot endpoints; set it to move
	// the admin plane to a loopback or management address.
	Listen string `yaml:"listen"`
}

// Store is the store section.
type Store struct {
	// Backend is "bolt" (data_dir/state.db, one server) or "etcd" (an
	// etcd cluster several servers of one site share). Default "bolt".
	Backend string `yaml:"backend"`
	// Etcd configures the etcd backend.
	Etcd Etcd `yaml:"etcd"`
}

// Etcd is the store.etcd section.
type Etcd struct {
	// Endpoints are the etcd members' client URLs
	// ("http://10.0.0.1:2379"). Required with backend etcd.
	Endpoints []string `yaml:"endpoints"`
	// Prefix starts every key diskless keeps in etcd; sites sharing an
	// etcd use different ones. Default "/diskless/".
	Prefix string `yaml:"prefix"`
	// Timeout bounds each read or write of the store, retries included.
	// Default 0: the store's own (10s); between 1s and 5m.
	Timeout time.Duration `yaml:"timeout"`
}

// Cluster is the cluster section (docs/scale-out.md).
type Cluster struct {
	// Address is the site's floating address with its prefix length,
	// e.g. "10.0.0.10/24": the address clients know (DHCP server, scripts,
	// iSCSI portal), held on interface by the active server. Setting it
	// turns the cluster on; it is then the server address (server_ip).
	Address string `yaml:"address"`
	// Name is this server's member name, unique in the site. Default the
	// host name.
	Name string `yaml:"name"`
	// Lease is how long a server that stopped renewing its membership in
	// etcd stays a member: the longest a dead server goes unnoticed.
	// Whole seconds, 2s-60s; default 3s.
	Lease time.Duration `yaml:"lease"`
}

// Enabled reports whether the cluster section is set.
func (c *Cluster) Enabled() bool { return c.Address != "" }

// Prefix is the floating address parsed (invalid when unset or wrong).
func (c *Cluster) Prefix() netip.Prefix {
	p, _ := netip.ParsePrefix(c.Address)
	return p
}

// Storage is the storage section.
type Storage struct {
	// Backend is "local" (files in data_dir) or "rbd" (a Ceph pool; needs
	// the binary built with -tags ceph). Default "local".
	Backend string `yaml:"backend"`
	// RBD configures the rbd backend.
	RBD RBD `yaml:"rbd"`
}

// RBD is the storage.rbd section.
type RBD struct {
	// Pool holds the images and host disks. Required with backend rbd.
	Pool string `yaml:"pool"`
	// CephConf is the Ceph configuration file (mon_host). Default
	// "/etc/ceph/ceph.conf".
	CephConf string `yaml:"ceph_conf"`
	// User is the cephx client name without "client.". Default
	// "diskless".
	User string `yaml:"user"`
	// Keyring is the file holding its key. Default "": what ceph_conf
	// says (/etc/ceph/ceph.client.<user>.keyring).
	Keyring string `yaml:"keyring"`
	// OpTimeout bounds every call into the cluster (rados_osd_op_timeout,
	// rados_mon_op_timeout, client_mount_timeout). Default 30s; between
	// 1s and 10m.
	OpTimeout time.Duration `yaml:"op_timeout"`
}

// Boots is the boots section: the boot telemetry.
type Boots struct {
	// StuckAfter marks a boot stuck when it made no progress (no DHCP,
	// TFTP, HTTP or iSCSI step) for this long before the operating system
	// logged in, e.g. "5m". Default 5m; between 10s and 24h.
	StuckAfter time.Duration `yaml:"stuck_after"`
}

// DefaultStuckAfter is boots.stuck_after's default.
const DefaultStuckAfter = 5 * time.Minute

// Image is one image declared in the images section.
type Image struct {
	// Name is the image's name: 1-63 of a-z 0-9 . _ -. Required, unique.
	Name string `yaml:"name"`
	// Import is a disk file (raw, qcow2, or vmdk/vhdx/vdi with qemu-img)
	// imported as version 1 when the image does not exist yet.
	Import string `yaml:"import"`
	// Size makes version 1 an empty disk of this size ("8G", "512M",
	// bytes) when the image does not exist yet. One of Import and Size.
	Size string `yaml:"size"`
	// Description is a free text for listings.
	Description string `yaml:"description"`
}

// UnknownHosts is the unknown_hosts section.
type UnknownHosts struct {
	// Policy is what a machine not in hosts gets: "local" (boot from its
	// local disk), "menu" (an iPXE menu: local disk, retry, shell, reboot),
	// "refuse" (no boot offer, no script) or "enroll" (it becomes a host as
	// Enroll says and boots as one). Default "local". Unknown machines are
	// recorded either way.
	Policy string `yaml:"policy"`
	// Enroll is how a machine becomes a host under policy enroll, and the
	// defaults of `diskless host adopt` under any policy.
	Enroll Enroll `yaml:"enroll"`
}

// Enroll is the unknown_hosts.enroll section.
type Enroll struct {
	// Image is the image enrolled hosts boot. Required with policy enroll;
	// it must exist (in images or the state store) when the server starts.
	Image string `yaml:"image"`
	// Version pins enrolled hosts to one version. Default 0: the newest.
	Version int `yaml:"version"`
	// Disk is "persistent" or "volatile", as hosts[].disk. Default
	// persistent.
	Disk string `yaml:"disk"`
	// Boot is "sanboot" or "kernel", as hosts[].boot (kernel: the image
	// version's kernel). Default sanboot.
	Boot string `yaml:"boot"`
	// NamePattern names enrolled hosts: {n} is the first number from 1 no
	// host name takes, {mac} the MAC in hex without colons. Default
	// "host-{mac}" (the name a host declared without one gets).
	NamePattern string `yaml:"name_pattern"`
	// MaxHosts stops enrollment when that many enrolled hosts exist (a
	// LAN can make up MACs). Default 256.
	MaxHosts int `yaml:"max_hosts"`
	// MaxPerMinute bounds enrollments per minute (bursts of as many).
	// Default 10.
	MaxPerMinute int `yaml:"max_per_minute"`
}

// Host is one machine diskless boots.
type Host struct {
	// MAC is the host's Ethernet address. Required, unique.
	MAC string `yaml:"mac"`
	// Name is a label for logs and the CHAP user name. Default
	// "host-<mac without colons>". Letters, digits, '-', '_', '.'.
	Name string `yaml:"name"`
	// Image is the name of an image (declared in images or made with the
	// CLI/API), or the path of a disk file or block device the host uses
	// alone (a value with a '/' or naming an existing file). Required.
	Image string `yaml:"image"`
	// Version pins the host to one image version. Default 0: the newest.
	Version int `yaml:"version"`
	// Disk is the disk mode: "persistent" (a copy-on-write overlay kept
	// across boots), "volatile" (discarded at each new boot) or "raw" (a
	// private full copy). Default persistent for an image, raw for a file.
	Disk string `yaml:"disk"`
	// Boot is "sanboot" (iPXE boots the LUN's boot loader) or "kernel"
	// (iPXE loads Kernel and Initrd over HTTP, the initramfs logs into
	// the LUN). Default "sanboot".
	Boot string `yaml:"boot"`
	// Kernel is the kernel file served to the host; required with boot
	// kernel, not allowed otherwise.
	Kernel string `yaml:"kernel"`
	// Initrd is the initramfs file served to the host (boot kernel only).
	// Default: none.
	Initrd string `yaml:"initrd"`
	// Cmdline is appended to the generated kernel command line (boot
	// kernel only), e.g. "root=/dev/sda1 console=ttyS0". Default empty.
	Cmdline string `yaml:"cmdline"`
	// CHAP is true (default: user = Name, secret generated and kept in
	// the state store), {user, secret}, or false: no authentication, which
	// logs a warning at every start.
	CHAP CHAP `yaml:"chap"`
	// MutualCHAP makes the target prove itself to the host too; same forms
	// as CHAP (user default Name + "-target"). Requires chap. Default: on
	// when chap is.
	MutualCHAP CHAP `yaml:"mutual_chap"`
	// CHAPRotation is "off" (default: the secrets change when the admin
	// rotates them) or "boot": new generated secrets at every boot of the
	// host, for images whose initramfs logs in from the iBFT. "boot"
	// needs chap, with no secret written here.
	CHAPRotation string `yaml:"chap_rotation"`
	// InitiatorIQN is the host's iSCSI name. Default
	// "<iqn_base>.host.<mac hex>".
	InitiatorIQN string `yaml:"initiator_iqn"`
	// TargetIQN is the name of the host's target. Default
	// "<iqn_base>.disk.<mac hex>".
	TargetIQN string `yaml:"target_iqn"`
	// IP is a fixed address (reservation) for dhcp mode full. Default: one
	// from dhcp.range.
	IP string `yaml:"ip"`
}

// Default returns the configuration with every default set and no hosts.
func Default() *Config {
	c := &Config{
		DHCP:    DHCP{Mode: DefaultDHCPMode, LeaseTime: DefaultLeaseTime},
		Boots:   Boots{StuckAfter: DefaultStuckAfter},
		TFTP:    TFTP{Root: DefaultTFTPRoot, Enabled: true},
		ISCSI:   ISCSI{PortalGroupTag: DefaultPortalGroupTag},
		DataDir: DefaultDataDir,
		Store:   Store{Backend: DefaultStoreBackend, Etcd: Etcd{Prefix: DefaultEtcdPrefix}},
		Storage: Storage{Backend: DefaultStorageBackend, RBD: RBD{CephConf: DefaultCephConf, User: DefaultRBDUser,
			OpTimeout: DefaultRBDOpTimeout}},
		UnknownHosts: UnknownHosts{Policy: DefaultUnknownPolicy},
	}
	c.UnknownHosts.Enroll = Enroll{NamePattern: DefaultNamePattern, MaxHosts: DefaultMaxEnrolled, MaxPerMinute: DefaultEnrollPerMin}
	return c
}

// fillDerived sets the defaults that depend on other keys.
func (c *Config) fillDerived() {
	if c.DHCP.LeaseFile == "" && c.DataDir != "" {
		c.DHCP.LeaseFile = joinPath(c.DataDir, LeaseFileName)
	}
	for i := range c.Hosts {
		h := &c.Hosts[i]
		if h.Boot == "" {
			h.Boot = DefaultBoot
		}
		if h.CHAPRotation == "" {
			h.CHAPRotation = DefaultCHAPRotation
		}
		// Secure by default: CHAP and mutual CHAP unless the file says
		// otherwise (issue 13: anyone on the LAN who learns a host's
		// initiator name could otherwise use its disk).
		if !h.CHAP.Set {
			h.CHAP = CHAP{Enabled: true}
		}
		if !h.MutualCHAP.Set {
			h.MutualCHAP = CHAP{Enabled: h.CHAP.Enabled}
		}
		if h.MAC != "" {
			h.MAC = strings.ToLower(h.MAC)
		}
		if hw, err := net.ParseMAC(h.MAC); err == nil && len(hw) == 6 {
			h.MAC = hw.String()
			if h.Name == "" {
				h.Name = "host-" + macHex(hw)
			}
		}
	}
}

// Disk modes (hosts[].disk).
const (
	DiskPersistent = "persistent"
	DiskVolatile   = "volatile"
	DiskRaw        = "raw"
)

// ImageFile reports whether Image names a disk file rather than an image
// (after Load or FromQuickFlags, which make file paths absolute).
func (h *Host) ImageFile() bool { return strings.Contains(h.Image, "/") }

// HardwareAddr is the host's MAC (valid after Validate).
func (h *Host) HardwareAddr() net.HardwareAddr {
	hw, _ := net.ParseMAC(h.MAC)
	return hw
}

// Reservation is the host's fixed address, invalid when none.
func (h *Host) Reservation() netip.Addr {
	a, _ := netip.ParseAddr(h.IP)
	return a
}

// Server is ServerIP parsed (invalid until set or resolved).
func (c *Config) Server() netip.Addr {
	a, _ := netip.ParseAddr(c.ServerIP)
	return a
}

// Pool is dhcp.range parsed (both invalid when unset).
func (d *DHCP) Pool() (first, last netip.Addr) {
	first, last, _ = parseRange(d.Range)
	return first, last
}

// Mask is dhcp.netmask parsed (nil when unset).
func (d *DHCP) Mask() net.IPMask {
	m, _ := parseMask(d.Netmask)
	return m
}

// Routers and name servers parsed.
func (d *DHCP) RouterAddr() netip.Addr {
	a, _ := netip.ParseAddr(d.Router)
	return a
}

// DNSAddrs is dhcp.dns parsed.
func (d *DHCP) DNSAddrs() []netip.Addr {
	var out []netip.Addr
	for _, s := range d.DNS {
		if a, err := netip.ParseAddr(s); err == nil {
			out = append(out, a)
		}
	}
	return out
}

// Where says where key ("unknown_hosts.enroll.image") was set: "file:line",
// the flag, or "default"; for errors found after Validate (at start).
func (c *Config) Where(key string) string { return c.src.where(key) }

// HTTPPort is the port of http.listen (valid after Validate).
func (c *Config) HTTPPort() uint16 { return listenPort(c.HTTP.Listen, DefaultHTTPPort) }

// ISCSIPort is the port of iscsi.listen (valid after Validate).
func (c *Config) ISCSIPort() uint16 { return listenPort(c.ISCSI.Listen, DefaultISCSIPort) }

func macHex(hw net.HardwareAddr) string {
	return strings.ReplaceAll(hw.String(), ":", "")
}
