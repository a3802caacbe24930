package dhcp

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"
)

// Mode is how the server takes part in DHCP on its link.
type Mode string

const (
	ModeFull  Mode = "full"  // the link's DHCP server: addresses and boot information
	ModeProxy Mode = "proxy" // proxyDHCP beside the site's server: boot information only
	ModeOff   Mode = "off"   // no DHCP
)

// ParseMode checks a mode name from configuration.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case ModeFull, ModeProxy, ModeOff:
		return m, nil
	}
	return "", fmt.Errorf("dhcp: unknown mode %q (want full, proxy or off)", s)
}

// Reservation is a fixed address for one machine (full mode).
type Reservation struct {
	MAC      net.HardwareAddr
	IP       netip.Addr
	Hostname string // sent as option 12 when not empty
}

// Config configures a Server.
type Config struct {
	// Mode is full or proxy. Required.
	Mode Mode
	// Interface is the name of the one interface served. Sockets must be
	// bound to it (Listen does so); Serve refuses others. Required.
	Interface string
	// ServerIP is our IPv4 address on Interface: option 54, siaddr and the
	// default boot server. Required.
	ServerIP netip.Addr

	// Subnet is the served subnet (its mask is option 1). Required in full
	// mode; it must contain ServerIP, the pool and every reservation.
	Subnet netip.Prefix
	// PoolStart and PoolEnd bound the dynamic addresses, inclusive. Both
	// unset means reservations only. ServerIP, Router, DNS and the subnet's
	// network and broadcast addresses are never handed out.
	PoolStart, PoolEnd netip.Addr
	// Router is option 3 (default: none).
	Router netip.Addr
	// DNS is option 6 (default: none).
	DNS []netip.Addr
	// LeaseTime is the lease length (default 1 h, at least 1 min).
	LeaseTime time.Duration
	// Reservations are fixed addresses per MAC.
	Reservations []Reservation
	// LeaseFile keeps leases across restarts (default: none, leases live
	// in memory only). It is written atomically and an ACK that changes it
	// is sent only once it is written (RFC 2131 4.3.2). Changes are
	// written in batches, one write at a time and at most one per
	// leaseWriteGap (100 ms), so a flood of requests makes at most ten
	// writes a second; the workers never wait for the disk.
	LeaseFile string
	// LeaseStore, when set, keeps the leases instead of LeaseFile, with
	// the same format and the same write rules: a store several servers
	// share (a cluster's etcd), so a server that takes over answering
	// knows every lease the last one gave (Server.ReloadLeases).
	LeaseStore LeaseStore
	// NewLeasesPerSecond bounds how many new clients - no reservation, no
	// lease, no offer held - are offered an address per second, in bursts
	// of up to as many (default 50: a room of machines powered on at once
	// gets its offers within a second or two; firmware repeats a DISCOVER
	// after 4 s). The excess gets no answer and is counted in
	// Stats.RateLimited. Reserved clients and clients with a lease are
	// never limited, so they get their address even while made-up MACs
	// flood the server.
	NewLeasesPerSecond int
	// MaxLeases bounds the clients the server keeps an address for at
	// once: leases (current and previous bindings) plus offers held
	// (default 65536, a lease file of at most about 20 MB). At the bound,
	// lapsed offers and then the longest-expired binding are forgotten to
	// make room; failing that a new client gets no answer, counted in
	// Stats.LeaseLimit. Reserved clients and clients with a lease are never
	// refused by it.
	MaxLeases int

	// Boot decides what a network-boot client boots (default: nothing; full
	// mode then hands out addresses only).
	Boot BootPolicy
	// Answering, when set, is asked for every request received: while it
	// says false the request is dropped unanswered (a standby server of a
	// cluster, whose active server answers; package cluster).
	Answering func() bool
	// OnReply, when set, is told of every reply sent to a network-boot
	// client, after it went out (the boot telemetry's DHCP stage). It runs
	// on the worker: it must not block.
	OnReply func(Reply)
	// Workers is the number of packets handled at once per socket
	// (default 8). Handling waits for lease file writes, so a few more
	// workers than CPUs let writes be batched.
	Workers int
	// Logger receives the logs (default: discard). Logs clients can cause
	// are rate-limited.
	Logger *slog.Logger
}

const (
	defaultLeaseTime = time.Hour
	defaultNewLeases = 50
	defaultMaxLeases = 65536
	leaseWriteGap    = 100 * time.Millisecond // between lease file writes under load
	offerHold        = time.Minute            // an offered address is kept for the client this long
	declineHold      = 10 * time.Minute       // a declined address is not handed out for this long (RFC 2131 4.3.3)
	maxPoolSize      = 1 << 20
)

func (c *Config) validate() (Config, error) {
	d := *c
	d.ServerIP, d.PoolStart, d.PoolEnd, d.Router = d.ServerIP.Unmap(), d.PoolStart.Unmap(), d.PoolEnd.Unmap(), d.Router.Unmap()
	d.DNS = append([]netip.Addr(nil), d.DNS...)
	for i := range d.DNS {
		d.DNS[i] = d.DNS[i].Unmap()
	}
	d.Reservations = append([]Reservation(nil), d.Reservations...)
	for i := range d.Reservations {
		d.Reservations[i].IP = d.Reservations[i].IP.Unmap()
	}
	if d.Subnet.IsValid() {
		d.Subnet = netip.PrefixFrom(d.Subnet.Addr().Unmap(), d.Subnet.Bits())
	}
	switch d.Mode {
	case ModeFull, ModeProxy:
	case ModeOff:
		return d, errors.New("dhcp: mode off: nothing to serve")
	default:
		return d, fmt.Errorf("dhcp: unknown mode %q", d.Mode)
	}
	if d.Interface == "" {
		return d, errors.New("dhcp: no interface to serve")
	}
	if !d.ServerIP.Is4() || d.ServerIP.IsUnspecified() {
		return d, fmt.Errorf("dhcp: server address %v is not a usable IPv4 address", d.ServerIP)
	}
	if d.LeaseTime == 0 {
		d.LeaseTime = defaultLeaseTime
	}
	if d.LeaseTime < time.Minute || d.LeaseTime > 365*24*time.Hour {
		return d, fmt.Errorf("dhcp: lease time %v out of range [1m, 1y]", d.LeaseTime)
	}
	if d.Workers <= 0 {
		d.Workers = 8
	}
	if d.Workers > 1024 {
		return d, fmt.Errorf("dhcp: %d workers is too many", d.Workers)
	}
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	if d.NewLeasesPerSecond <= 0 {
		d.NewLeasesPerSecond = defaultNewLeases
	}
	if d.MaxLeases <= 0 {
		d.MaxLeases = defaultMaxLeases
	}
	if d.Mode == ModeProxy {
		return d, nil
	}

	if !d.Subnet.IsValid() || !d.Subnet.Addr().Is4() || d.Subnet.Bits() > 30 || d.Subnet.Bits() < 8 {
		return d, fmt.Errorf("dhcp: full mode needs an IPv4 subnet between /8 and /30, have %v", d.Subnet)
	}
	d.Subnet = d.Subnet.Masked()
	if !d.Subnet.Contains(d.ServerIP) {
		return d, fmt.Errorf("dhcp: server address %v is outside subnet %v", d.ServerIP, d.Subnet)
	}
	if d.PoolStart.IsValid() != d.PoolEnd.IsValid() {
		return d, errors.New("dhcp: pool needs both a start and an end")
	}
	if d.PoolStart.IsValid() {
		for _, a := range []netip.Addr{d.PoolStart, d.PoolEnd} {
			if !a.Is4() || !d.Subnet.Contains(a) {
				return d, fmt.Errorf("dhcp: pool address %v is outside subnet %v", a, d.Subnet)
			}
		}
		if d.PoolEnd.Less(d.PoolStart) {
			return d, fmt.Errorf("dhcp: pool %v-%v ends before it starts", d.PoolStart, d.PoolEnd)
		}
		if u32(d.PoolEnd)-u32(d.PoolStart) >= maxPoolSize {
			return d, fmt.Errorf("dhcp: pool %v-%v larger than %d addresses", d.PoolStart, d.PoolEnd, maxPoolSize)
		}
	}
	if d.Router.IsValid() && (!d.Router.Is4() || !d.Subnet.Contains(d.Router)) {
		return d, fmt.Errorf("dhcp: router %v is outside subnet %v", d.Router, d.Subnet)
	}
	for _, a := range d.DNS {
		if !a.Is4() {
			return d, fmt.Errorf("dhcp: DNS server %v is not IPv4", a)
		}
	}
	if err := d.checkReservations(d.Reservations); err != nil {
		return d, err
	}
	return d, nil
}

// excluded reports addresses never handed out: ours, the router's, DNS
// servers', and the subnet's network and broadcast addresses.
func (c *Config) excluded(a netip.Addr) bool {
	if a == c.ServerIP || a == c.Router {
		return true
	}
	for _, d := range c.DNS {
		if a == d {
			return true
		}
	}
	network := u32(c.Subnet.Addr())
	bcast := network | (1<<(32-c.Subnet.Bits()) - 1)
	return u32(a) == network || u32(a) == bcast
}

// netmask is the subnet mask of c.Subnet.
func (c *Config) netmask() []byte {
	m := net.CIDRMask(c.Subnet.Bits(), 32)
	return []byte(m)
}

// hwaddr is an Ethernet MAC, comparable so it can key maps.
type hwaddr [6]byte

func toHW(m net.HardwareAddr) (hwaddr, bool) {
	var h hwaddr
	if len(m) != 6 {
		return h, false
	}
	copy(h[:], m)
	return h, true
}

func (h hwaddr) String() string { return net.HardwareAddr(h[:]).String() }

func u32(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func fromU32(v uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// checkReservations checks reservations against the subnet: Ethernet
// MACs, usable addresses, each MAC and address once.
func (d *Config) checkReservations(rs []Reservation) error {
	seenMAC := map[hwaddr]bool{}
	seenIP := map[netip.Addr]bool{}
	for _, r := range rs {
		m, ok := toHW(r.MAC)
		if !ok {
			return fmt.Errorf("dhcp: reservation %v: not an Ethernet MAC", r.MAC)
		}
		if !r.IP.Is4() || !d.Subnet.Contains(r.IP) || d.excluded(r.IP) {
			return fmt.Errorf("dhcp: reservation %v: address %v is not usable in subnet %v", r.MAC, r.IP, d.Subnet)
		}
		if seenMAC[m] {
			return fmt.Errorf("dhcp: reservation %v: MAC reserved twice", r.MAC)
		}
		if seenIP[r.IP] {
			return fmt.Errorf("dhcp: reservation %v: address %v reserved twice", r.MAC, r.IP)
		}
		if len(r.Hostname) > 255 {
			return fmt.Errorf("dhcp: reservation %v: hostname too long", r.MAC)
		}
		seenMAC[m], seenIP[r.IP] = true, true
	}
	return nil
}
