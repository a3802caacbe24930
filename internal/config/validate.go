package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/diskless-boot/diskless/internal/boot"
	"github.com/diskless-boot/diskless/internal/inventory"
	"github.com/diskless-boot/diskless/internal/iscsi"
)

// FieldError is one problem of a Config: where the key was set ("file:line"
// or a flag), the key path ("hosts[1].mac") and why it is wrong. It never
// holds a secret.
type FieldError struct {
	Where, Key, Reason string
}

func (e *FieldError) Error() string { return e.Where + ": " + e.Key + ": " + e.Reason }

// Limits of values the config accepts.
const (
	minSecretLen  = 12 // RFC 7143 12.1.3 / RFC 3723: shorter secrets are brute-forced offline; iPXE and Windows want >= 12
	maxSecretLen  = boot.MaxArgLen
	maxNameLen    = 63
	maxCmdlineLen = boot.MaxLineLen // leaves room in the kernel's 2048-byte command line for the ISCSI_* values
	// Bounds of enrollment: beyond these a LAN of made-up MACs grows the
	// store faster than an admin notices.
	maxEnrolled     = 100000
	maxEnrollPerMin = 600
)

// Validate checks every key and reports every problem found (joined
// *FieldError values), so nothing starts on a bad configuration. It reads
// the file system only to check that image, kernel and initrd files exist.
func (c *Config) Validate() error {
	v := validator{c: c}
	v.check()
	return errors.Join(v.errs...)
}

type validator struct {
	c    *Config
	errs []error
}

func (v *validator) fail(key, format string, args ...any) {
	v.errs = append(v.errs, &FieldError{Where: v.c.src.where(key), Key: key, Reason: fmt.Sprintf(format, args...)})
}

func (v *validator) check() {
	c := v.c
	switch {
	case c.Interface == "":
		v.fail("interface", "required: the network interface to serve, e.g. br0")
	case len(c.Interface) > 15 || strings.ContainsAny(c.Interface, "/ \t\n:"):
		v.fail("interface", "%q is not a Linux interface name", c.Interface)
	}
	if c.ServerIP != "" {
		v.ipv4("server_ip", c.ServerIP)
	}
	v.checkDHCP()
	if c.TFTP.Enabled && c.TFTP.Root == "" {
		v.fail("tftp.root", "required when tftp.enabled is true")
	}
	if c.HTTP.Listen != "" {
		v.listen("http.listen", c.HTTP.Listen)
	}
	if c.ISCSI.Listen != "" {
		v.listen("iscsi.listen", c.ISCSI.Listen)
	}
	if c.ISCSI.PortalGroupTag < 1 || c.ISCSI.PortalGroupTag > 65535 {
		v.fail("iscsi.portal_group_tag", "%d is not in 1-65535", c.ISCSI.PortalGroupTag)
	}
	if c.DataDir == "" {
		v.fail("data_dir", "required: where generated secrets and leases are kept")
	}
	v.checkStore()
	v.checkStorage()
	if c.IQNBase != "" {
		if why := checkIQN(c.IQNBase); why != "" {
			v.fail("iqn_base", "%q: %s", c.IQNBase, why)
		} else if len(c.IQNBase)+len(".host.")+12 > iscsi.MaxNameLen {
			v.fail("iqn_base", "too long: generated IQNs would exceed %d bytes", iscsi.MaxNameLen)
		}
	}
	if b := c.Boots.StuckAfter; b < 10*time.Second || b > 24*time.Hour {
		v.fail("boots.stuck_after", "%s: want between 10s and 24h", b)
	}
	if c.API.Listen != "" {
		v.listen("api.listen", c.API.Listen)
	}
	v.checkImages()
	switch c.UnknownHosts.Policy {
	case UnknownLocal, UnknownMenu, UnknownRefuse:
	case UnknownEnroll:
		if c.DHCP.Mode == DHCPOff {
			v.fail("unknown_hosts.policy", "enroll needs dhcp.mode full or proxy: a machine is enrolled by its network-boot DHCP request")
		}
	default:
		v.fail("unknown_hosts.policy", "%q: want local, menu, refuse or enroll", c.UnknownHosts.Policy)
	}
	v.checkCluster()
	v.checkEnroll()
	v.checkHosts()
}

// checkStore checks the store section.
func (v *validator) checkStore() {
	st := &v.c.Store
	e := &st.Etcd
	switch st.Backend {
	case StoreBolt:
		if len(e.Endpoints) > 0 {
			v.fail("store.etcd.endpoints", "set, but store.backend is bolt: set store.backend: etcd to use etcd")
		}
	case StoreEtcd:
		if len(e.Endpoints) == 0 {
			v.fail("store.etcd.endpoints", "required with store.backend etcd: the etcd members' client URLs, e.g. http://10.0.0.1:2379")
		}
	default:
		v.fail("store.backend", "%q: want bolt or etcd", st.Backend)
	}
	for i, ep := range e.Endpoints {
		u, err := url.Parse(ep)
		if err != nil || u.Scheme != "http" || u.Host == "" || u.Path != "" && u.Path != "/" {
			// TLS to etcd is not configurable yet: https would fail later.
			v.fail(fmt.Sprintf("store.etcd.endpoints[%d]", i), "%q: want http://HOST:PORT", ep)
		}
	}
	if !strings.HasPrefix(e.Prefix, "/") || !strings.HasSuffix(e.Prefix, "/") || len(e.Prefix) < 2 {
		v.fail("store.etcd.prefix", "%q: want a key prefix that starts and ends with /, e.g. /diskless/", e.Prefix)
	}
	if e.Timeout != 0 && (e.Timeout < time.Second || e.Timeout > 5*time.Minute) {
		v.fail("store.etcd.timeout", "%s: want between 1s and 5m", e.Timeout)
	}
}

// checkCluster checks the cluster section.
func (v *validator) checkCluster() {
	c := &v.c.Cluster
	if !c.Enabled() {
		if c.Name != "" || c.Lease != 0 {
			v.fail("cluster.address", "required when the cluster section is set: the site's floating address, e.g. 10.0.0.10/24")
		}
		return
	}
	if p, err := netip.ParsePrefix(c.Address); err != nil || !p.Addr().Is4() || p.Bits() < 8 || p.Bits() > 32 {
		v.fail("cluster.address", "%q: want an IPv4 address with its prefix length, e.g. 10.0.0.10/24", c.Address)
	}
	if v.c.Store.Backend != StoreEtcd {
		v.fail("cluster.address", "a cluster needs store.backend etcd: the servers elect the active one through etcd")
	}
	if v.c.ServerIP != "" && c.Prefix().IsValid() && v.c.ServerIP != c.Prefix().Addr().String() {
		v.fail("server_ip", "%s: in a cluster the server address is the floating address %s; leave server_ip unset", v.c.ServerIP, c.Prefix().Addr())
	}
	if c.Name != "" && !clusterName.MatchString(c.Name) {
		v.fail("cluster.name", "%q: want 1-63 of a-z A-Z 0-9 . _ -", c.Name)
	}
	if c.Lease != 0 && (c.Lease < 2*time.Second || c.Lease > time.Minute || c.Lease%time.Second != 0) {
		v.fail("cluster.lease", "%s: want whole seconds between 2s and 60s", c.Lease)
	}
	// The cluster's DHCP leases are one etcd value, which etcd bounds
	// (--max-request-bytes, 1.5 MiB by default): ~150 bytes a lease.
	if first, last := v.c.DHCP.Pool(); v.c.DHCP.Mode == DHCPFull && first.IsValid() && last.IsValid() {
		if n := int64(u32(last)) - int64(u32(first)) + 1; n > MaxClusterPool {
			v.fail("dhcp.range", "%d addresses: a cluster keeps its DHCP leases in one etcd value, which holds at most %d; use a smaller range, or dhcp mode proxy beside the site's DHCP server", n, MaxClusterPool)
		}
	}
}

// MaxClusterPool bounds dhcp.range in a cluster (see checkCluster).
const MaxClusterPool = 8192

func u32(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

var clusterName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// checkStorage checks the storage section.
func (v *validator) checkStorage() {
	st := &v.c.Storage
	r := &st.RBD
	switch st.Backend {
	case StorageLocal:
		if r.Pool != "" {
			v.fail("storage.rbd.pool", "set, but storage.backend is local: set storage.backend: rbd to use Ceph")
		}
		return
	case StorageRBD:
	default:
		v.fail("storage.backend", "%q: want local or rbd", st.Backend)
		return
	}
	if r.Pool == "" {
		v.fail("storage.rbd.pool", "required with storage.backend rbd: the Ceph pool that holds images and host disks")
	}
	if r.CephConf == "" {
		v.fail("storage.rbd.ceph_conf", "empty: want the Ceph configuration file, e.g. /etc/ceph/ceph.conf")
	}
	if r.User == "" || strings.HasPrefix(r.User, "client.") {
		v.fail("storage.rbd.user", "%q: want the cephx user without \"client.\", e.g. diskless", r.User)
	}
	if r.OpTimeout < time.Second || r.OpTimeout > 10*time.Minute {
		v.fail("storage.rbd.op_timeout", "%s: want between 1s and 10m", r.OpTimeout)
	}
}

// checkEnroll checks unknown_hosts.enroll: used by policy enroll, and as
// the defaults of `host adopt` under any policy.
func (v *validator) checkEnroll() {
	e := &v.c.UnknownHosts.Enroll
	k := func(name string) string { return "unknown_hosts.enroll." + name }
	switch {
	case e.Image == "" && v.c.UnknownHosts.Policy == UnknownEnroll:
		v.fail(k("image"), "required with unknown_hosts.policy enroll: the image enrolled machines boot")
	case e.Image != "" && !imageName.MatchString(e.Image):
		v.fail(k("image"), "%q is not an image name (1-63 of a-z 0-9 . _ -): enrolled hosts get a copy-on-write disk on an image", e.Image)
	}
	if e.Version < 0 {
		v.fail(k("version"), "%d: want a version number, or leave it out for the newest", e.Version)
	}
	switch e.Disk {
	case "", DiskPersistent, DiskVolatile:
	default:
		v.fail(k("disk"), "%q: want persistent or volatile", e.Disk)
	}
	switch e.Boot {
	case "", BootSanboot, BootKernel:
	default:
		v.fail(k("boot"), "%q: want sanboot or kernel", e.Boot)
	}
	if err := inventory.CheckNamePattern(e.NamePattern); err != nil {
		v.fail(k("name_pattern"), "%v", err)
	}
	if e.MaxHosts < 1 || e.MaxHosts > maxEnrolled {
		v.fail(k("max_hosts"), "%d: want 1-%d", e.MaxHosts, maxEnrolled)
	}
	if e.MaxPerMinute < 1 || e.MaxPerMinute > maxEnrollPerMin {
		v.fail(k("max_per_minute"), "%d: want 1-%d", e.MaxPerMinute, maxEnrollPerMin)
	}
}

func (v *validator) checkDHCP() {
	d := &v.c.DHCP
	switch d.Mode {
	case DHCPFull, DHCPProxy, DHCPOff:
	default:
		v.fail("dhcp.mode", "%q: want full, proxy or off", d.Mode)
	}
	var first, last netip.Addr
	if d.Range != "" {
		var err error
		if first, last, err = parseRange(d.Range); err != nil {
			v.fail("dhcp.range", "%q: %v", d.Range, err)
		}
	} else if d.Mode == DHCPFull {
		v.fail("dhcp.range", "required with dhcp.mode full: the address pool, e.g. 10.77.0.100-10.77.0.200")
	}
	var mask net.IPMask
	if d.Netmask != "" {
		var err error
		if mask, err = parseMask(d.Netmask); err != nil {
			v.fail("dhcp.netmask", "%q: %v", d.Netmask, err)
		}
	}
	if mask != nil && first.IsValid() && !sameSubnet(first, last, mask) {
		v.fail("dhcp.range", "%s-%s spans more than one subnet of netmask %s", first, last, d.Netmask)
	}
	if d.Router != "" {
		v.ipv4("dhcp.router", d.Router)
	}
	for i, s := range d.DNS {
		v.ipv4(fmt.Sprintf("dhcp.dns[%d]", i), s)
	}
	if d.LeaseTime < time.Minute || d.LeaseTime > 365*24*time.Hour {
		v.fail("dhcp.lease_time", "%s: want between 1m and 8760h", d.LeaseTime)
	}
	if d.Mode == DHCPFull && d.LeaseFile == "" {
		v.fail("dhcp.lease_file", "required with dhcp.mode full (default: data_dir/%s)", LeaseFileName)
	}
}

func (v *validator) checkHosts() {
	c := v.c
	seen := map[string]string{} // "kind\x00value" -> key path that has it
	// unique reports a second host with the same id (compared) of a kind;
	// show is what the message quotes.
	unique := func(key, kind, id, show string) {
		if id == "" {
			return
		}
		id = kind + "\x00" + id
		if prev, ok := seen[id]; ok {
			v.fail(key, "%q is also the %s of %s (%s)", show, kind, parentPath(prev), c.src.where(prev))
			return
		}
		seen[id] = key
	}
	mask := c.DHCP.Mask()
	first, _ := c.DHCP.Pool()
	for i := range c.Hosts {
		h := &c.Hosts[i]
		p := fmt.Sprintf("hosts[%d]", i)
		k := func(name string) string { return p + "." + name }
		if h.MAC == "" {
			v.fail(k("mac"), "required")
		} else if hw, err := net.ParseMAC(h.MAC); err != nil || len(hw) != 6 {
			v.fail(k("mac"), "%q is not an Ethernet address (like 52:54:00:12:34:56)", h.MAC)
		} else {
			unique(k("mac"), "mac", hw.String(), h.MAC)
		}
		if h.Name != "" && !isName(h.Name) {
			v.fail(k("name"), "%q: use 1-%d letters, digits, '-', '_' or '.'", h.Name, maxNameLen)
		}
		unique(k("name"), "name", h.Name, h.Name)
		switch {
		case h.Image == "":
			v.fail(k("image"), "required: the image this host boots (a name from images, or a disk file)")
		case h.ImageFile():
			v.file(k("image"), h.Image, true)
			if abs, err := filepath.Abs(h.Image); err == nil {
				unique(k("image"), "image", abs, h.Image)
			}
			if h.Disk != "" && h.Disk != DiskRaw {
				v.fail(k("disk"), "%q: a disk file is used as it is (raw); give an image name for a copy-on-write disk", h.Disk)
			}
			if h.Version != 0 {
				v.fail(k("version"), "only with an image name")
			}
		default:
			if !imageName.MatchString(h.Image) {
				v.fail(k("image"), "%q is neither a file nor an image name (1-63 of a-z 0-9 . _ -)", h.Image)
			}
			switch h.Disk {
			case "", DiskPersistent, DiskVolatile:
			case DiskRaw:
				if h.Version == 0 {
					v.fail(k("version"), "a raw disk is a private copy of one version: give the version")
				}
			default:
				v.fail(k("disk"), "%q: want persistent, volatile or raw", h.Disk)
			}
			if h.Version < 0 {
				v.fail(k("version"), "%d: want a version number, or leave it out for the newest", h.Version)
			}
		}
		switch h.Boot {
		case BootSanboot:
			for _, f := range []struct{ key, val string }{{"kernel", h.Kernel}, {"initrd", h.Initrd}, {"cmdline", h.Cmdline}} {
				if f.val != "" {
					v.fail(k(f.key), "only used with boot: kernel (this host has boot: sanboot)")
				}
			}
		case BootKernel:
			if h.Kernel == "" && (h.Image == "" || h.ImageFile()) {
				v.fail(k("kernel"), "required with boot: kernel, unless image names an image (whose versions keep their kernel)")
			} else if h.Kernel != "" {
				v.file(k("kernel"), h.Kernel, false)
			}
			if h.Initrd != "" {
				v.file(k("initrd"), h.Initrd, false)
			}
			if why := checkCmdline(h.Cmdline); why != "" {
				v.fail(k("cmdline"), "%s", why)
			}
		default:
			v.fail(k("boot"), "%q: want sanboot or kernel", h.Boot)
		}
		v.credentials(k("chap"), h.CHAP)
		v.credentials(k("mutual_chap"), h.MutualCHAP)
		if h.MutualCHAP.Enabled && !h.CHAP.Enabled {
			v.fail(k("mutual_chap"), "needs chap: the target only proves itself after the host has")
		}
		if h.MutualCHAP.Secret != "" && h.MutualCHAP.Secret == h.CHAP.Secret {
			v.fail(k("mutual_chap"), "secret must differ from the chap secret (RFC 7143 12.1.3)")
		}
		switch h.CHAPRotation {
		case "", CHAPRotationOff:
		case CHAPRotationBoot:
			switch {
			case !h.CHAP.Enabled:
				v.fail(k("chap_rotation"), "boot needs chap: a host without CHAP has no secret to rotate")
			case h.CHAP.Secret != "" || h.MutualCHAP.Secret != "":
				v.fail(k("chap_rotation"), "boot generates the secrets: leave chap.secret and mutual_chap.secret out")
			}
		default:
			v.fail(k("chap_rotation"), "%q: want off or boot", h.CHAPRotation)
		}
		for _, f := range []struct{ key, val string }{{"initiator_iqn", h.InitiatorIQN}, {"target_iqn", h.TargetIQN}} {
			if f.val == "" {
				continue
			}
			if why := checkIQN(f.val); why != "" {
				v.fail(k(f.key), "%q: %s", f.val, why)
			}
		}
		unique(k("target_iqn"), "target_iqn", h.TargetIQN, h.TargetIQN)
		unique(k("initiator_iqn"), "initiator_iqn", h.InitiatorIQN, h.InitiatorIQN)
		if h.IP != "" && v.ipv4(k("ip"), h.IP) {
			a := netip.MustParseAddr(h.IP)
			unique(k("ip"), "ip", a.String(), h.IP)
			if mask != nil && first.IsValid() && !sameSubnet(first, a, mask) {
				v.fail(k("ip"), "%s is outside the subnet of dhcp.range (netmask %s)", a, c.DHCP.Netmask)
			}
		}
	}
}

// imageName is what an image name may be (storage.NamePattern).
var imageName = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

func (v *validator) checkImages() {
	seen := map[string]bool{}
	for i, im := range v.c.Images {
		k := func(name string) string { return fmt.Sprintf("images[%d].%s", i, name) }
		if !imageName.MatchString(im.Name) {
			v.fail(k("name"), "%q: want 1-63 of a-z 0-9 . _ -, starting with a letter or digit", im.Name)
		} else if seen[im.Name] {
			v.fail(k("name"), "%q declared twice", im.Name)
		}
		seen[im.Name] = true
		switch {
		case im.Import != "" && im.Size != "":
			v.fail(k("size"), "give import or size, not both")
		case im.Import != "":
			v.file(k("import"), im.Import, true)
		case im.Size != "":
			if _, err := inventory.ParseSize(im.Size); err != nil {
				v.fail(k("size"), "%v", err)
			}
		default:
			v.fail(k("import"), "required: a disk file to import, or size for an empty image")
		}
		if len(im.Description) > 256 {
			v.fail(k("description"), "at most 256 bytes")
		}
	}
}

func (v *validator) credentials(key string, ch CHAP) {
	if !ch.Enabled {
		return
	}
	if ch.User != "" && !boot.SafeArg(ch.User, 1) {
		v.fail(key+".user", "use 1-%d of A-Z a-z 0-9 . _ ~ + = : / @ , -", maxSecretLen)
	}
	// The secret itself never goes into the message.
	if ch.Secret != "" && !boot.SafeArg(ch.Secret, minSecretLen) {
		v.fail(key+".secret", "use %d-%d of A-Z a-z 0-9 . _ ~ + = : / @ , - (iPXE and initiators need at least %d)", minSecretLen, maxSecretLen, minSecretLen)
	}
}

func (v *validator) ipv4(key, s string) bool {
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is4() {
		v.fail(key, "%q is not an IPv4 address", s)
		return false
	}
	return true
}

func (v *validator) listen(key, s string) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		v.fail(key, "%q: want [HOST]:PORT, e.g. :8080", s)
		return
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		v.fail(key, "%q: port must be 1-65535 (clients are told it)", s)
	}
	if host != "" {
		if _, err := netip.ParseAddr(host); err != nil {
			v.fail(key, "%q: host must be an IP address or empty", s)
		}
	}
}

// file checks that path exists and is a regular file (or, for disk images,
// a block device).
func (v *validator) file(key, path string, blockOK bool) {
	st, err := os.Stat(path)
	if err != nil {
		v.fail(key, "%v", err)
		return
	}
	m := st.Mode()
	if m.IsRegular() || blockOK && m&os.ModeDevice != 0 && m&os.ModeCharDevice == 0 {
		return
	}
	v.fail(key, "%s is not a regular file", path)
}

func parseRange(s string) (first, last netip.Addr, err error) {
	a, b, ok := strings.Cut(s, "-")
	if !ok {
		return first, last, errors.New("want FIRST-LAST, e.g. 10.77.0.100-10.77.0.200")
	}
	first, err1 := netip.ParseAddr(strings.TrimSpace(a))
	last, err2 := netip.ParseAddr(strings.TrimSpace(b))
	if err1 != nil || err2 != nil || !first.Is4() || !last.Is4() {
		return netip.Addr{}, netip.Addr{}, errors.New("both ends must be IPv4 addresses")
	}
	if last.Less(first) {
		return netip.Addr{}, netip.Addr{}, errors.New("the first address is after the last")
	}
	return first, last, nil
}

// parseMask accepts "255.255.255.0", "24" or "/24".
func parseMask(s string) (net.IPMask, error) {
	if n, err := strconv.Atoi(strings.TrimPrefix(s, "/")); err == nil {
		if n < 1 || n > 32 {
			return nil, errors.New("prefix length must be 1-32")
		}
		return net.CIDRMask(n, 32), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is4() {
		return nil, errors.New("want a dotted mask like 255.255.255.0 or a prefix length like 24")
	}
	b := a.As4()
	m := net.IPMask(b[:])
	if ones, bits := m.Size(); bits == 0 || ones == 0 {
		return nil, errors.New("not a contiguous netmask")
	}
	return m, nil
}

func sameSubnet(a, b netip.Addr, mask net.IPMask) bool {
	x, y := a.As4(), b.As4()
	for i := range 4 {
		if x[i]&mask[i] != y[i]&mask[i] {
			return false
		}
	}
	return true
}

func listenPort(s string, def uint16) uint16 {
	if s == "" {
		return def
	}
	_, port, _ := net.SplitHostPort(s)
	n, _ := strconv.ParseUint(port, 10, 16)
	return uint16(n)
}

func isName(s string) bool {
	if s == "" || len(s) > maxNameLen {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return false
		}
	}
	return true
}

// checkCmdline rejects what could end the iPXE kernel line or be expanded
// by iPXE or the initramfs shell.
func checkCmdline(s string) string {
	if len(s) > maxCmdlineLen {
		return fmt.Sprintf("longer than %d bytes", maxCmdlineLen)
	}
	for _, r := range s {
		if r < 0x20 || r > 0x7e {
			return fmt.Sprintf("character %q not allowed: printable ASCII only", r)
		}
		if strings.ContainsRune(boot.LineUnsafe, r) {
			return fmt.Sprintf("character %q not allowed: iPXE or the initramfs shell would interpret it", r)
		}
	}
	return ""
}

// checkIQN checks an iSCSI name (iscsi.CheckName) and says why not, or "".
func checkIQN(s string) string {
	if err := iscsi.CheckName(s); err != nil {
		return err.Error()
	}
	return ""
}

func isHex(s string) bool {
	for _, r := range s {
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f') {
			return false
		}
	}
	return s != ""
}

func joinPath(dir, name string) string { return filepath.Join(dir, name) }
