//go:build linux

package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/diskless-boot/diskless/bench/harness"
	"github.com/diskless-boot/diskless/internal/testutil/bootdisk"
	"github.com/diskless-boot/diskless/internal/testutil/netns"
)

// The test network (10.77.0.0/16) and its machines.
const (
	serverIP  = "10.77.0.1"
	otherIP   = "10.77.0.2"
	bootIP    = "10.77.0.50" // pc1's reservation
	atkPrefix = "10.77.1."   // attacker addresses .1 ... .maxAddrs
	maxAddrs  = 50
	poolFirst = "10.77.128.10"
	poolLast  = "10.77.143.250"
	bootMAC   = "52:54:00:12:34:56"
	otherMAC  = "02:77:00:00:00:02"
	atkMAC    = "02:77:00:00:01:01"
	ipxeROM   = "/usr/lib/ipxe/qemu/efi-e1000.rom" // what QEMU loads for -device e1000
	// otherISID is the ISID of the other host's session: fixed, so the
	// impersonation attack can reuse it like one who sniffed it.
	otherISID = 0x80_1234_5678_9a
)

// network is the namespaces of one run.
type network struct {
	hvNS, srvNS, othNS, atkNS string
	tap, srvIf, othIf, atkIf  string
}

// newNetwork builds the network of the package doc; c removes it.
func newNetwork(c *harness.Cleanup, id string) (*network, error) {
	n := &network{hvNS: "dlhx-" + id + "-v", srvNS: "dlhx-" + id + "-s", othNS: "dlhx-" + id + "-o", atkNS: "dlhx-" + id + "-a",
		tap: "ht" + id, srvIf: "hs" + id, othIf: "ho" + id, atkIf: "ha" + id}
	br := "hb" + id
	for _, ns := range []string{n.hvNS, n.srvNS, n.othNS, n.atkNS} {
		if err := harness.AddNS(c, ns); err != nil {
			return nil, err
		}
	}
	steps := [][]string{
		{"ip", "-n", n.hvNS, "link", "add", br, "type", "bridge", "forward_delay", "0"},
		{"ip", "-n", n.hvNS, "tuntap", "add", "dev", n.tap, "mode", "tap"},
		{"ip", "-n", n.hvNS, "link", "set", n.tap, "master", br, "up"},
	}
	for _, l := range []struct{ ns, ifc, mac string }{{n.srvNS, n.srvIf, ""}, {n.othNS, n.othIf, otherMAC}, {n.atkNS, n.atkIf, atkMAC}} {
		steps = append(steps,
			[]string{"ip", "-n", n.hvNS, "link", "add", "v" + l.ifc, "type", "veth", "peer", "name", l.ifc, "netns", l.ns},
			[]string{"ip", "-n", n.hvNS, "link", "set", "v" + l.ifc, "master", br, "up"})
		if l.mac != "" {
			steps = append(steps, []string{"ip", "-n", l.ns, "link", "set", l.ifc, "address", l.mac})
		}
	}
	steps = append(steps,
		[]string{"ip", "-n", n.hvNS, "link", "set", br, "up"},
		[]string{"ip", "-n", n.srvNS, "addr", "add", serverIP + "/16", "dev", n.srvIf},
		[]string{"ip", "-n", n.srvNS, "link", "set", n.srvIf, "up"},
		[]string{"ip", "-n", n.othNS, "addr", "add", otherIP + "/16", "dev", n.othIf},
		[]string{"ip", "-n", n.othNS, "link", "set", n.othIf, "up"},
	)
	for i := 1; i <= maxAddrs; i++ {
		steps = append(steps, []string{"ip", "-n", n.atkNS, "addr", "add", fmt.Sprintf("%s%d/16", atkPrefix, i), "dev", n.atkIf})
	}
	steps = append(steps, []string{"ip", "-n", n.atkNS, "link", "set", n.atkIf, "up"})
	if err := harness.Steps(steps...); err != nil {
		return nil, err
	}
	// Neighbour tables and backlogs big enough for thousands of
	// connections and a DHCP flood on one link.
	for _, ns := range []string{n.srvNS, n.atkNS, n.othNS} {
		harness.Sh("ip", "netns", "exec", ns, "sysctl", "-qw",
			"net.ipv4.neigh.default.gc_thresh1=4096", "net.ipv4.neigh.default.gc_thresh2=8192",
			"net.ipv4.neigh.default.gc_thresh3=16384", "net.core.somaxconn=8192",
			"net.ipv4.ip_local_port_range=10000 65000")
	}
	return n, nil
}

// hostInfo is what the roles know of a host of the store.
type hostInfo struct {
	Name         string `json:"name"`
	MAC          string `json:"mac"`
	InitiatorIQN string `json:"initiator_iqn"`
	TargetIQN    string `json:"target_iqn"`
	CHAPUser     string `json:"chap_user"`
	CHAPSecret   string `json:"chap_secret"`
	MutualUser   string `json:"mutual_user"`
	MutualSecret string `json:"mutual_secret"`
}

// siteInfo is the store's content the roles need, passed to them as a
// file. The attacker reads pc1's and other's secrets only to tell whether
// a script leaked them, and writer's to log in as the host it owns.
type siteInfo struct {
	Server   string   `json:"server"`
	PoolFrst string   `json:"pool_first"`
	PoolLast string   `json:"pool_last"`
	Boot     hostInfo `json:"boot"`
	Other    hostInfo `json:"other"`
	Writer   hostInfo `json:"writer"`
	// BigBlocks is the size of the writer's disk in 512-byte blocks.
	BigBlocks uint64 `json:"big_blocks"`
}

const bigSize = 1 << 30

// site is the prepared state store and what it holds.
type site struct {
	template string // data dir, copied for each phase
	marker   string // what pc1's disk prints
	info     siteInfo
	infoFile string
}

// newSite makes the images and hosts of the package doc with the CLI in a
// template data directory under work.
func newSite(bin, work string) (*site, error) {
	s := &site{template: filepath.Join(work, "template"), marker: "DISKLESS-HOSTILE-" + netns.ID() + netns.ID()}
	img := filepath.Join(work, "golden.img")
	if err := os.WriteFile(img, bootdisk.MBR(4<<20, s.marker), 0o644); err != nil {
		return nil, err
	}
	cli := func(args ...string) ([]byte, error) {
		out, err := exec.Command(bin, append(args, "--data-dir", s.template)...).CombinedOutput()
		if err != nil {
			return nil, fmt.Errorf("diskless %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out, nil
	}
	for _, args := range [][]string{
		{"image", "import", "golden", img},
		{"image", "create", "big", "--size", fmt.Sprint(bigSize)},
		{"host", "add", "pc1", "--image", "golden", "--disk", "volatile", "--mac", bootMAC, "--ip", bootIP},
		{"host", "add", "other", "--image", "golden", "--disk", "persistent", "--mac", otherMAC, "--ip", otherIP},
		{"host", "add", "writer", "--image", "big", "--disk", "persistent", "--mac", atkMAC, "--ip", atkPrefix + "1"},
	} {
		if _, err := cli(args...); err != nil {
			return nil, err
		}
	}
	s.info = siteInfo{Server: serverIP, PoolFrst: poolFirst, PoolLast: poolLast, BigBlocks: bigSize / 512}
	for _, h := range []struct {
		name string
		mac  string
		to   *hostInfo
	}{{"pc1", bootMAC, &s.info.Boot}, {"other", otherMAC, &s.info.Other}, {"writer", atkMAC, &s.info.Writer}} {
		var view struct {
			InitiatorIQN string `json:"initiator_iqn"`
			TargetIQN    string `json:"target_iqn"`
		}
		out, err := cli("host", "show", h.name, "--json")
		if err == nil {
			err = json.Unmarshal(out, &view)
		}
		if err != nil {
			return nil, err
		}
		out, err = cli("host", "show", h.name, "--secrets", "--json")
		if err != nil {
			return nil, err
		}
		var raw struct {
			CHAP       *struct{ User, Secret string } `json:"chap"`
			MutualCHAP *struct{ User, Secret string } `json:"mutual_chap"`
		}
		if err := json.Unmarshal(out, &raw); err != nil {
			return nil, err
		}
		*h.to = hostInfo{Name: h.name, MAC: h.mac, InitiatorIQN: view.InitiatorIQN, TargetIQN: view.TargetIQN}
		if raw.CHAP == nil {
			return nil, fmt.Errorf("host %s has no CHAP: the harness measures the default, CHAP on", h.name)
		}
		h.to.CHAPUser, h.to.CHAPSecret = raw.CHAP.User, raw.CHAP.Secret
		if raw.MutualCHAP != nil {
			h.to.MutualUser, h.to.MutualSecret = raw.MutualCHAP.User, raw.MutualCHAP.Secret
		}
	}
	s.infoFile = filepath.Join(work, "site.json")
	b, _ := json.Marshal(s.info)
	return s, os.WriteFile(s.infoFile, b, 0o600)
}

func readSite(path string) (siteInfo, error) {
	var si siteInfo
	b, err := os.ReadFile(path)
	if err == nil {
		err = json.Unmarshal(b, &si)
	}
	return si, err
}

// dataDir copies the template into dir/state for one phase's server.
func (s *site) dataDir(dir string) (string, error) {
	d := filepath.Join(dir, "state")
	if out, err := exec.Command("cp", "-a", "--sparse=always", s.template, d).CombinedOutput(); err != nil {
		return "", fmt.Errorf("cp %s: %v: %s", s.template, err, out)
	}
	return d, nil
}

// serverConfig writes the YAML of a phase's server.
func serverConfig(dir, iface, data string) (string, error) {
	p := filepath.Join(dir, "diskless.yaml")
	y := fmt.Sprintf("interface: %s\ndata_dir: %s\ndhcp:\n  mode: full\n  range: %s-%s\n", iface, data, poolFirst, poolLast)
	return p, os.WriteFile(p, []byte(y), 0o644)
}
