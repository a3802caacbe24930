package config

import (
	"fmt"
	"net"
	"net/netip"
)

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
	if vip := c.Cluster.Prefix(); vip.IsValid() {
		// A cluster: clients know the floating address, which the
		// active server holds; the admin plane stays on the server's
		// own address, where every server, active or not, answers.
		if len(prefixes) == 0 {
			return &FieldError{Where: c.src.where("interface"), Key: "interface", Reason: c.Interface + " has no IPv4 address of its own (the cluster's floating address moves between servers)"}
		}
		for _, p := range prefixes {
			if p.Addr() != vip.Addr() {
				own = p
				break
			}
		}
		if !own.IsValid() {
			own = prefixes[0]
		}
		if c.API.Listen == "" {
			c.API.Listen = net.JoinHostPort(own.Addr().String(), fmt.Sprint(DefaultHTTPPort))
		}
		c.ServerIP = vip.Addr().String()
		own = vip
	} else if c.ServerIP == "" {
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
	// Listeners default to the served network's address, not the
	// wildcard: the admin and boot planes stay off other networks.
	if c.HTTP.Listen == "" {
		c.HTTP.Listen = net.JoinHostPort(c.ServerIP, fmt.Sprint(DefaultHTTPPort))
	}
	if c.ISCSI.Listen == "" {
		c.ISCSI.Listen = net.JoinHostPort(c.ServerIP, fmt.Sprint(DefaultISCSIPort))
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
