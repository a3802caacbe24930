package web

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
)

// Neighbors resolves the source address of a request to the MAC address
// of the machine that sent it on the served link. It is how a script
// holding secrets is kept to its host.
type Neighbors interface {
	MACOf(ip netip.Addr) (net.HardwareAddr, bool)
}

// NeighborFunc adapts a function (e.g. a lookup in the DHCP lease table)
// to Neighbors.
type NeighborFunc func(netip.Addr) (net.HardwareAddr, bool)

// MACOf calls f.
func (f NeighborFunc) MACOf(ip netip.Addr) (net.HardwareAddr, bool) { return f(ip) }

// Leases says whether ip is the address this server's DHCP leased to mac
// and the lease runs (a reserved address is leased once the host asked
// for it, as a booting host just did): the second witness, beside the
// neighbour table, that a request comes from the host, when diskless
// hands out the addresses. A machine that copies a host's MAC must then also hold the
// host's address, which the host itself holds while it runs.
type Leases interface {
	Leased(mac net.HardwareAddr, ip netip.Addr) bool
}

// LeaseFunc adapts a function to Leases.
type LeaseFunc func(mac net.HardwareAddr, ip netip.Addr) bool

// Leased calls f.
func (f LeaseFunc) Leased(mac net.HardwareAddr, ip netip.Addr) bool { return f(mac, ip) }

// AnyOf asks each Neighbors in turn; the first answer wins.
type AnyOf []Neighbors

// MACOf asks each in turn.
func (a AnyOf) MACOf(ip netip.Addr) (net.HardwareAddr, bool) {
	for _, n := range a {
		if n == nil {
			continue
		}
		if mac, ok := n.MACOf(ip); ok {
			return mac, true
		}
	}
	return nil, false
}

// ARPTable resolves IPv4 addresses from the kernel's neighbour table as
// /proc/net/arp shows it, limited to one interface. An HTTP client is
// always in it: the kernel resolved its address to answer its TCP
// handshake. Entries that are not complete (flag ATF_COM) do not count.
type ARPTable struct {
	Path      string // default /proc/net/arp
	Interface string // only entries of this device; "" means any
}

// maxARPFile bounds what is read of the table.
const maxARPFile = 16 << 20

// atfCom is ATF_COM of <linux/if_arp.h>: the entry is complete.
const atfCom = 0x2

// MACOf reads the table (it is small and changes all the time, so it is
// not cached).
func (t ARPTable) MACOf(ip netip.Addr) (net.HardwareAddr, bool) {
	ip = ip.Unmap()
	if !ip.Is4() {
		return nil, false
	}
	path := t.Path
	if path == "" {
		path = "/proc/net/arp"
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, false
	}
	defer f.Close()
	data := make([]byte, 0, 4096)
	buf := bytes.NewBuffer(data)
	if _, err := buf.ReadFrom(io.LimitReader(f, maxARPFile)); err != nil {
		return nil, false
	}
	return parseARP(buf.Bytes(), ip, t.Interface)
}

// parseARP finds ip in /proc/net/arp text:
//
//	IP address       HW type     Flags       HW address            Mask     Device
//	10.77.0.100      0x1         0x2         52:54:00:12:34:56     *        br0
func parseARP(data []byte, ip netip.Addr, dev string) (net.HardwareAddr, bool) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	first := true
	for sc.Scan() {
		if first { // header
			first = false
			continue
		}
		f := strings.Fields(sc.Text())
		if len(f) < 6 {
			continue
		}
		a, err := netip.ParseAddr(f[0])
		if err != nil || a != ip {
			continue
		}
		if dev != "" && f[5] != dev {
			continue
		}
		flags, err := strconv.ParseUint(strings.TrimPrefix(f[2], "0x"), 16, 32)
		if err != nil || flags&atfCom == 0 {
			continue
		}
		mac, err := net.ParseMAC(f[3])
		if err != nil || len(mac) != 6 || bytes.Equal(mac, make([]byte, 6)) {
			continue
		}
		return mac, true
	}
	return nil, false
}
