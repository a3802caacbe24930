package config

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/diskless-boot/diskless/internal/boot"
	"github.com/diskless-boot/diskless/internal/fsutil"
)

// Files kept in data_dir.
const (
	InstallIDFile = "install-id"        // random ID behind generated IQNs
	SecretsFile   = "chap-secrets.json" // generated CHAP credentials, mode 0600
	// DefaultIQNDomain is the start of generated IQNs; the install ID
	// follows it.
	DefaultIQNDomain = "iqn.2026-01.boot.diskless"
	// GeneratedSecretLen is the length of generated CHAP secrets: 16
	// characters from 62 (95 bits), the most Windows and some firmware
	// initiators accept, well over the 12 iPXE and RFC 3723 ask for.
	GeneratedSecretLen = 16
)

// NewSecret is a CHAP credential Finalize generated in this run. The caller
// prints it once for the admin to configure clients (it is kept in data_dir
// for later runs and never logged). String redacts the secret.
type NewSecret struct {
	MAC, Host string
	Key       string // "chap" or "mutual_chap"
	User      string
	Secret    string
}

// String redacts the secret.
func (s NewSecret) String() string {
	return fmt.Sprintf("%s %s %s user=%q secret=REDACTED", s.Host, s.MAC, s.Key, s.User)
}

// Finalize fills in what the configuration leaves to be generated, keeping
// it in DataDir so that every restart gives the same answers: the install
// ID and the IQNs derived from it and each MAC, and CHAP users and secrets
// (crypto/rand). It returns the secrets generated now, which the caller
// prints once. Call it after Validate; it is idempotent.
func (c *Config) Finalize() ([]NewSecret, error) {
	if err := os.MkdirAll(c.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("config: data_dir: %w", err)
	}
	base := c.IQNBase
	if base == "" {
		id, err := installID(c.DataDir)
		if err != nil {
			return nil, err
		}
		base = DefaultIQNDomain + ":" + id
	}
	store, err := loadSecrets(filepath.Join(c.DataDir, SecretsFile))
	if err != nil {
		return nil, err
	}
	var fresh []NewSecret
	changed := false
	for i := range c.Hosts {
		h := &c.Hosts[i]
		hw := h.HardwareAddr()
		if hw == nil {
			return nil, fmt.Errorf("config: hosts[%d]: mac %q not validated", i, h.MAC)
		}
		if h.InitiatorIQN == "" {
			h.InitiatorIQN = base + ".host." + macHex(hw)
		}
		if h.TargetIQN == "" {
			h.TargetIQN = base + ".disk." + macHex(hw)
		}
		for _, k := range []struct {
			name, userSuffix string
			ch               *CHAP
		}{{"chap", "", &h.CHAP}, {"mutual_chap", "-target", &h.MutualCHAP}} {
			if !k.ch.Enabled {
				continue
			}
			if k.ch.User == "" {
				k.ch.User = h.Name + k.userSuffix
			}
			if k.ch.Secret != "" {
				continue
			}
			id := hw.String() + " " + k.name
			if s, ok := store[id]; ok && s.User == k.ch.User {
				k.ch.Secret = s.Secret
				continue
			}
			secret, err := GenerateSecret()
			if err != nil {
				return nil, err
			}
			// Mutual CHAP must not reuse the host's secret (RFC 7143 12.1.3);
			// with 95 random bits a collision is hypothetical, but cheap to rule out.
			if k.name == "mutual_chap" && secret == h.CHAP.Secret {
				if secret, err = GenerateSecret(); err != nil {
					return nil, err
				}
			}
			k.ch.Secret = secret
			store[id] = storedSecret{User: k.ch.User, Secret: secret}
			changed = true
			fresh = append(fresh, NewSecret{MAC: hw.String(), Host: h.Name, Key: k.name, User: k.ch.User, Secret: secret})
		}
	}
	if changed {
		if err := saveSecrets(filepath.Join(c.DataDir, SecretsFile), store); err != nil {
			return nil, err
		}
	}
	return fresh, nil
}

// GenerateSecret returns GeneratedSecretLen random letters and digits from
// crypto/rand (rejection sampling, so every character is equally likely).
func GenerateSecret() (string, error) {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	out := make([]byte, 0, GeneratedSecretLen)
	var buf [32]byte
	for len(out) < GeneratedSecretLen {
		if _, err := rand.Read(buf[:]); err != nil {
			return "", fmt.Errorf("config: generate secret: %w", err)
		}
		for _, b := range buf {
			if b < 248 && len(out) < GeneratedSecretLen { // 248 = 4*62
				out = append(out, alphabet[int(b)%len(alphabet)])
			}
		}
	}
	return string(out), nil
}

// installID reads data_dir/install-id, creating it (8 random hex digits)
// on first use.
func installID(dir string) (string, error) {
	path := filepath.Join(dir, InstallIDFile)
	b, err := os.ReadFile(path)
	if err == nil {
		id := strings.TrimSpace(string(b))
		if len(id) < 4 || len(id) > 32 || !isHex(id) {
			return "", fmt.Errorf("config: %s: %q is not an install ID (4-32 lowercase hex digits)", path, id)
		}
		return id, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("config: %w", err)
	}
	var raw [4]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", fmt.Errorf("config: install ID: %w", err)
	}
	id := hex.EncodeToString(raw[:])
	if err := writeFileAtomic(path, []byte(id+"\n"), 0o644); err != nil {
		return "", err
	}
	return id, nil
}

type storedSecret struct {
	User   string `json:"user"`
	Secret string `json:"secret"`
}

func loadSecrets(path string) (map[string]storedSecret, error) {
	m := map[string]storedSecret{}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return m, nil
	}
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("config: %s: %w", path, err)
	}
	for id, s := range m {
		if !boot.SafeArg(s.User, 1) || !boot.SafeArg(s.Secret, minSecretLen) {
			return nil, fmt.Errorf("config: %s: entry %q is not a valid credential", path, id)
		}
	}
	return m, nil
}

func saveSecrets(path string, m map[string]storedSecret) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	return writeFileAtomic(path, append(b, '\n'), 0o600)
}

// writeFileAtomic is fsutil.WriteFileAtomic with this package's error
// prefix.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	if err := fsutil.WriteFileAtomic(path, data, perm); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	return nil
}

// InterfaceAddrs returns the addresses of a network interface; net's
// lookup by default, replaced in tests.
type InterfaceAddrs func(name string) ([]net.Addr, error)

// ResolveNetwork fills the defaults that come from the interface: server_ip
// (its first IPv4 address) and dhcp.netmask (the mask of that address),
// and checks that a configured server_ip is on the interface and that the
// DHCP pool is inside its subnet. addrs nil means the running system.
func (c *Config) ResolveNetwork(addrs InterfaceAddrs) error {
	if addrs == nil {
		addrs = func(name string) ([]net.Addr, error) {
			ifi, err := net.InterfaceByName(name)
			if err != nil {
				return nil, err
			}
			return ifi.Addrs()
		}
	}
	list, err := addrs(c.Interface)
	if err != nil {
		return &FieldError{Where: c.src.where("interface"), Key: "interface", Reason: err.Error()}
	}
	var prefixes []netip.Prefix
	for _, a := range list {
		if n, ok := a.(*net.IPNet); ok {
			ip, ok := netip.AddrFromSlice(n.IP)
			ones, _ := n.Mask.Size()
			if ok && ip.Unmap().Is4() {
				prefixes = append(prefixes, netip.PrefixFrom(ip.Unmap(), ones))
			}
		}
	}
	var own netip.Prefix
	if c.ServerIP == "" {
		if len(prefixes) == 0 {
			return &FieldError{Where: c.src.where("interface"), Key: "interface", Reason: c.Interface + " has no IPv4 address; give it one or set server_ip"}
		}
		own = prefixes[0]
		c.ServerIP = own.Addr().String()
	} else {
		want := c.Server()
		for _, p := range prefixes {
			if p.Addr() == want {
				own = p
			}
		}
		if !own.IsValid() {
			return &FieldError{Where: c.src.where("server_ip"), Key: "server_ip", Reason: fmt.Sprintf("%s is not an address of %s", want, c.Interface)}
		}
	}
	if c.DHCP.Netmask == "" {
		c.DHCP.Netmask = net.IP(net.CIDRMask(own.Bits(), 32)).String()
	}
	if c.DHCP.Mode == DHCPFull {
		first, last := c.DHCP.Pool()
		mask := c.DHCP.Mask()
		if first.IsValid() && (!sameSubnet(first, own.Addr(), mask) || !sameSubnet(last, own.Addr(), mask)) {
			return &FieldError{Where: c.src.where("dhcp.range"), Key: "dhcp.range", Reason: fmt.Sprintf("%s is not in the subnet of %s (%s/%s)", c.DHCP.Range, c.Interface, own.Addr(), c.DHCP.Netmask)}
		}
	}
	return nil
}
