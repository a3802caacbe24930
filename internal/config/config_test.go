package config

import (
	"bytes"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite golden files")

func TestLoadExample(t *testing.T) {
	c, err := Load("testdata/good.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Interface != "br0" || c.ServerIP != "10.77.0.1" || c.DHCP.Mode != DHCPFull {
		t.Errorf("top level: %+v", c)
	}
	if c.DHCP.LeaseTime != 30*time.Minute || len(c.DHCP.DNS) != 2 {
		t.Errorf("dhcp: %+v", c.DHCP)
	}
	// Relative paths are relative to the file; derived defaults follow.
	if c.DataDir != "testdata/state" || c.DHCP.LeaseFile != "testdata/state/dhcp-leases.json" {
		t.Errorf("data_dir %q lease_file %q", c.DataDir, c.DHCP.LeaseFile)
	}
	if !c.TFTP.Enabled || c.TFTP.Root != "/usr/lib/ipxe" {
		t.Errorf("tftp defaults lost: %+v", c.TFTP)
	}
	h0, h1 := c.Hosts[0], c.Hosts[1]
	if h0.Boot != BootSanboot || !h0.CHAP.Enabled || h0.CHAP.Secret != "" || !h0.MutualCHAP.Enabled || h0.Image != "testdata/disk.img" {
		t.Errorf("host 0: %+v", h0)
	}
	if h1.MAC != "52:54:00:ab:cd:ef" || h1.Name != "host-525400abcdef" || h1.Kernel != "testdata/vmlinuz" || h1.CHAP.User != "client2" || h1.CHAP.Secret != "abcdefghijkl12" {
		t.Errorf("host 1: %+v", h1)
	}
	if h1.Reservation().String() != "10.77.0.50" {
		t.Errorf("reservation %v", h1.Reservation())
	}
	if first, last := c.DHCP.Pool(); first.String() != "10.77.0.100" || last.String() != "10.77.0.200" {
		t.Errorf("pool %v-%v", first, last)
	}
	if c.HTTPPort() != 8080 || c.ISCSIPort() != 3260 {
		t.Errorf("ports %d %d", c.HTTPPort(), c.ISCSIPort())
	}
}

// Every bad file gets all its problems reported as file:line: key: why.
func TestLoadErrors(t *testing.T) {
	files, _ := filepath.Glob("testdata/errors/*.yaml")
	if len(files) == 0 {
		t.Fatal("no test files")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			_, err := Load(f)
			if err == nil {
				t.Fatal("loaded")
			}
			golden := strings.TrimSuffix(f, ".yaml") + ".err"
			got := err.Error() + "\n"
			if *update {
				os.WriteFile(golden, []byte(got), 0o644)
			}
			want, _ := os.ReadFile(golden)
			if got != string(want) {
				t.Errorf("got:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

func TestTypoNamesLineAndKey(t *testing.T) {
	_, err := Load("testdata/errors/typo.yaml")
	want := `testdata/errors/typo.yaml:3: unknown key "dhcp.mdoe" (did you mean "mode"?)`
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("got %v, want %s", err, want)
	}
}

func TestSecretNeverInError(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "d.img")
	os.WriteFile(img, nil, 0o644)
	cfg := fmt.Sprintf("interface: br0\nhosts:\n  - mac: 52:54:00:12:34:56\n    image: %s\n    chap: {user: u, secret: \"sh0rt$ecret\"}\n", img)
	path := filepath.Join(dir, "c.yaml")
	os.WriteFile(path, []byte(cfg), 0o644)
	_, err := Load(path)
	if err == nil || !strings.Contains(err.Error(), ":5: hosts[0].chap.secret:") {
		t.Fatalf("want an error on the secret, got %v", err)
	}
	if strings.Contains(err.Error(), "sh0rt") {
		t.Errorf("error shows the secret: %v", err)
	}
}

func TestEmptySectionKeepsDefaults(t *testing.T) {
	c, err := Parse("x.yaml", []byte("interface: eth0\ntftp:\ndhcp:\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !c.TFTP.Enabled || c.DHCP.Mode != DefaultDHCPMode || c.DHCP.LeaseTime != DefaultLeaseTime {
		t.Errorf("defaults lost: %+v %+v", c.TFTP, c.DHCP)
	}
	if err := c.Validate(); err != nil {
		t.Error(err)
	}
}

// An etcd store needs only its endpoints; the prefix has its default and
// an empty store section keeps bolt.
func TestStoreSection(t *testing.T) {
	c, err := Parse("x.yaml", []byte("interface: eth0\nstore:\n  backend: etcd\n  etcd:\n    endpoints: [http://10.0.0.1:2379]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if e := c.Store.Etcd; c.Store.Backend != StoreEtcd || e.Prefix != "/diskless/" || e.Timeout != 0 || len(e.Endpoints) != 1 {
		t.Errorf("store: %+v", c.Store)
	}
	if c, _ := Parse("x.yaml", []byte("interface: eth0\nstore:\n")); c.Store.Backend != StoreBolt {
		t.Errorf("empty store section: backend %q, want bolt", c.Store.Backend)
	}
}

func TestStorageSection(t *testing.T) {
	c, err := Parse("x.yaml", []byte("interface: eth0\nstorage:\n  backend: rbd\n  rbd:\n    pool: diskless\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if r := c.Storage.RBD; c.Storage.Backend != StorageRBD || r.Pool != "diskless" || r.CephConf != "/etc/ceph/ceph.conf" ||
		r.User != "diskless" || r.OpTimeout != 30*time.Second {
		t.Errorf("storage: %+v", c.Storage)
	}
	for _, bad := range []string{
		"storage:\n  backend: rbd\n",                                          // no pool
		"storage:\n  backend: ceph\n",                                         // unknown backend
		"storage:\n  rbd:\n    pool: p\n",                                     // pool without rbd
		"storage:\n  backend: rbd\n  rbd:\n    pool: p\n    op_timeout: 0s\n", // no bound
	} {
		c, err := Parse("x.yaml", []byte("interface: eth0\n"+bad))
		if err == nil {
			err = c.Validate()
		}
		if err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestEmptyFileIsDefaults(t *testing.T) {
	c, err := Parse("x.yaml", nil)
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	want.fillDerived()
	c.src = nil
	if !reflect.DeepEqual(c, want) {
		t.Errorf("got %+v want %+v", c, want)
	}
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "interface: required") {
		t.Errorf("an empty config must ask for the interface: %v", err)
	}
}

func TestFromQuickFlags(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	os.WriteFile(img, []byte("x"), 0o644)
	c, err := FromQuickFlags(QuickFlags{
		Interface: "br0", DHCP: "full", DHCPRange: "10.77.0.100-10.77.0.200",
		Hosts: []string{"52:54:00:12:34:56=" + img}, DataDir: dir,
	})
	if err != nil {
		t.Fatal(err)
	}
	// CHAP and mutual CHAP by default; --no-chap turns both off.
	if c.DHCP.Mode != DHCPFull || len(c.Hosts) != 1 || !c.Hosts[0].CHAP.Enabled || !c.Hosts[0].MutualCHAP.Enabled ||
		c.Hosts[0].Boot != BootSanboot || c.DataDir != dir {
		t.Errorf("%+v", c)
	}
	if c, err := FromQuickFlags(QuickFlags{Interface: "br0", Hosts: []string{"52:54:00:12:34:56=" + img}, NoCHAP: true}); err != nil ||
		c.Hosts[0].CHAP.Enabled || c.Hosts[0].MutualCHAP.Enabled {
		t.Errorf("--no-chap: %v %+v", err, c)
	}
	if c.DHCP.LeaseFile != filepath.Join(dir, LeaseFileName) {
		t.Errorf("lease file %q", c.DHCP.LeaseFile)
	}

	_, err = FromQuickFlags(QuickFlags{Interface: "br0", DHCP: "full", Hosts: []string{"nomac=" + img, "52:54:00:12:34:56=" + img}})
	for _, want := range []string{
		`--dhcp-range (not given): dhcp.range: required with dhcp.mode full`,
		`--host "nomac=` + img + `": hosts[0].mac: "nomac" is not an Ethernet address`,
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("want %q in %v", want, err)
		}
	}
	if _, err := FromQuickFlags(QuickFlags{Interface: "br0", Hosts: []string{"52:54:00:12:34:56"}}); err == nil || !strings.Contains(err.Error(), "want MAC=IMAGE") {
		t.Errorf("host without image: %v", err)
	}
	if _, err := FromQuickFlags(QuickFlags{Hosts: []string{"52:54:00:12:34:56=" + img}}); err == nil || !strings.Contains(err.Error(), "--interface (not given): interface: required") {
		t.Errorf("no interface: %v", err)
	}
	// No --host: the hosts of the state store are served.
	if c, err := FromQuickFlags(QuickFlags{Interface: "br0"}); err != nil || len(c.Hosts) != 0 {
		t.Errorf("no --host: %v", err)
	}
}

func TestCHAPRedacted(t *testing.T) {
	c := CHAP{Enabled: true, User: "u", Secret: "topsecret-123"}
	var logs bytes.Buffer
	slog.New(slog.NewTextHandler(&logs, nil)).Info("x", "chap", c)
	for _, s := range []string{fmt.Sprint(c), fmt.Sprintf("%+v", c), fmt.Sprintf("%#v", c), fmt.Sprint(Host{CHAP: c}), logs.String()} {
		if strings.Contains(s, "topsecret") {
			t.Errorf("secret shown: %s", s)
		}
	}
}

func quick(t *testing.T, dataDir string, chap bool, macs ...string) *Config {
	t.Helper()
	imgDir := t.TempDir()
	var hosts []string
	for i, m := range macs {
		img := filepath.Join(imgDir, fmt.Sprint(i))
		os.WriteFile(img, nil, 0o644)
		hosts = append(hosts, m+"="+img)
	}
	c, err := FromQuickFlags(QuickFlags{Interface: "br0", Hosts: hosts, NoCHAP: !chap, DataDir: dataDir})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestResolveNetwork(t *testing.T) {
	addrs := func(name string) ([]net.Addr, error) {
		if name != "br0" {
			return nil, fmt.Errorf("no interface %s", name)
		}
		_, n6, _ := net.ParseCIDR("fd00::1/64")
		return []net.Addr{n6, &net.IPNet{IP: net.ParseIP("10.77.0.1"), Mask: net.CIDRMask(24, 32)}}, nil
	}
	c := quick(t, t.TempDir(), false, "52:54:00:12:34:56")
	c.DHCP.Mode, c.DHCP.Range = DHCPFull, "10.77.0.100-10.77.0.200"
	if err := c.ResolveNetwork(addrs); err != nil {
		t.Fatal(err)
	}
	if c.ServerIP != "10.77.0.1" || c.DHCP.Netmask != "255.255.255.0" {
		t.Errorf("server_ip %q netmask %q", c.ServerIP, c.DHCP.Netmask)
	}
	// Listeners default to the served address, never the wildcard.
	if c.HTTP.Listen != "10.77.0.1:8080" || c.ISCSI.Listen != "10.77.0.1:3260" {
		t.Errorf("default listeners %q %q, want the served address", c.HTTP.Listen, c.ISCSI.Listen)
	}
	c = quick(t, t.TempDir(), false, "52:54:00:12:34:56")
	c.ServerIP = "10.77.0.2"
	if err := c.ResolveNetwork(addrs); err == nil || !strings.Contains(err.Error(), "server_ip: 10.77.0.2 is not an address of br0") {
		t.Errorf("foreign server_ip: %v", err)
	}
	c = quick(t, t.TempDir(), false, "52:54:00:12:34:56")
	c.DHCP.Mode, c.DHCP.Range = DHCPFull, "10.78.0.100-10.78.0.200"
	if err := c.ResolveNetwork(addrs); err == nil || !strings.Contains(err.Error(), "not in the subnet of br0") {
		t.Errorf("pool outside the subnet: %v", err)
	}
	c.Interface = "eth9"
	if err := c.ResolveNetwork(addrs); err == nil || !strings.Contains(err.Error(), `--interface "br0": interface: no interface eth9`) {
		t.Errorf("missing interface: %v", err)
	}
}

// docs/config.md documents every key.
func TestDocsListEveryKey(t *testing.T) {
	doc, err := os.ReadFile("../../docs/config.md")
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	var walk func(reflect.Type, string)
	walk = func(t reflect.Type, prefix string) {
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if name == "" || !f.IsExported() {
				continue
			}
			key := prefix + name
			keys = append(keys, key)
			ft := f.Type
			if ft.Kind() == reflect.Slice {
				ft = ft.Elem()
				key += "[]"
			}
			if ft.Kind() == reflect.Struct && ft != chapType && ft != reflect.TypeOf(time.Duration(0)) {
				walk(ft, key+".")
			}
		}
	}
	walk(reflect.TypeOf(Config{}), "")
	for _, k := range keys {
		if !bytes.Contains(doc, []byte("`"+k+"`")) {
			t.Errorf("docs/config.md does not document `%s`", k)
		}
	}
}
