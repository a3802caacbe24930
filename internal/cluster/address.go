package cluster

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// address is the floating address on one interface.
type address struct {
	link   string
	prefix netip.Prefix
}

func newAddress(link string, p netip.Prefix) (*address, error) {
	if link == "" || !p.Addr().Is4() {
		return nil, fmt.Errorf("cluster: floating address %v on %q: want an IPv4 address/prefix and an interface", p, link)
	}
	return &address{link: link, prefix: p}, nil
}

func (a *address) netlinkAddr() (netlink.Link, *netlink.Addr, error) {
	l, err := netlink.LinkByName(a.link)
	if err != nil {
		return nil, nil, fmt.Errorf("cluster: interface %s: %w", a.link, err)
	}
	ip := a.prefix.Addr().AsSlice()
	return l, &netlink.Addr{IPNet: &net.IPNet{IP: ip, Mask: net.CIDRMask(a.prefix.Bits(), 32)}, Label: ""}, nil
}

// add puts the address on the interface, or renews it, valid until
// until: the kernel removes it by itself then (an IPv4 address lifetime,
// as ip-address(8) valid_lft sets). So a server whose process dies - and
// can no longer remove it - loses the address when its lease ends, not
// later, and the clients' packets stop reaching a machine with no one
// serving behind the address.
func (a *address) add(until time.Time) error {
	l, na, err := a.netlinkAddr()
	if err != nil {
		return err
	}
	// Rounded down: the kernel checks lifetimes on a timer rounded up
	// to the next second, so the address goes within the lease.
	lft := int(time.Until(until) / time.Second)
	if lft < 1 {
		return fmt.Errorf("cluster: %v: the lease runs out within a second", a.prefix)
	}
	na.ValidLft, na.PreferedLft = lft, lft
	if err := netlink.AddrReplace(l, na); err != nil {
		return fmt.Errorf("cluster: adding %v to %s: %w", a.prefix, a.link, err)
	}
	return nil
}

// remove takes the address off the interface; removed says it was there.
func (a *address) remove() (removed bool, err error) {
	l, na, err := a.netlinkAddr()
	if err != nil {
		return false, err
	}
	if err := netlink.AddrDel(l, na); err != nil {
		if errors.Is(err, unix.EADDRNOTAVAIL) || errors.Is(err, unix.ENOENT) {
			return false, nil
		}
		return false, fmt.Errorf("cluster: removing %v from %s: %w", a.prefix, a.link, err)
	}
	return true, nil
}

// announce sends gratuitous ARPs (a request and a reply, once a second,
// as VRRP routers do at a takeover) for as long as span, so the clients
// and switches that knew the address at the old server's MAC move to ours
// at once instead of when their ARP entries age out - and keep doing so
// while the old server's kernel may still answer for the address. It
// stops early when ctx ends or still() says the node is no longer active:
// an announcement after stepping down would pull the clients away from
// the heir.
func (a *address) announce(ctx context.Context, span time.Duration, still func() bool, log *slog.Logger) {
	ifi, err := net.InterfaceByName(a.link)
	if err == nil && len(ifi.HardwareAddr) != 6 {
		err = fmt.Errorf("%s has no Ethernet address", a.link)
	}
	if err != nil {
		log.Warn("cluster: no gratuitous ARP: clients find the address when their ARP entries expire", "err", err)
		return
	}
	go func() {
		end := time.Now().Add(span)
		for first := true; time.Now().Before(end); first = false {
			if !first {
				select {
				case <-ctx.Done():
					return
				case <-time.After(time.Second):
				}
			}
			for _, op := range []uint16{1, 2} {
				if !still() {
					return
				}
				if err := sendGratuitousARP(ifi, a.prefix.Addr(), op); err != nil {
					log.Warn("cluster: gratuitous ARP not sent", "err", err)
					return
				}
			}
		}
	}()
}

// sendGratuitousARP broadcasts an ARP packet (op 1 request, 2 reply) whose
// sender and target protocol address are both ip (RFC 5227 3: ARP
// Announcement).
func sendGratuitousARP(ifi *net.Interface, ip netip.Addr, op uint16) error {
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ARP)))
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	pkt := make([]byte, 28)
	binary.BigEndian.PutUint16(pkt[0:], 1)      // Ethernet
	binary.BigEndian.PutUint16(pkt[2:], 0x0800) // IPv4
	pkt[4], pkt[5] = 6, 4
	binary.BigEndian.PutUint16(pkt[6:], op)
	copy(pkt[8:], ifi.HardwareAddr)
	ip4 := ip.As4()
	copy(pkt[14:], ip4[:])
	if op == 2 {
		copy(pkt[18:], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	}
	copy(pkt[24:], ip4[:])
	sa := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ARP), Ifindex: ifi.Index, Halen: 6,
		Addr: [8]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}}
	return unix.Sendto(fd, pkt, 0, sa)
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
