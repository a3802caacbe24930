//go:build !linux

package dhcp

import (
	"errors"
	"net"
	"net/netip"
)

var errNoBind = errors.New("dhcp: binding a socket to an interface needs Linux")

// Listen needs SO_BINDTODEVICE, which only Linux has.
func Listen(iface string, port int) (net.PacketConn, error) { return nil, errNoBind }

func listenUDP(iface, addr string) (net.PacketConn, error) { return nil, errNoBind }

func boundDevice(c net.PacketConn) (string, error) { return "", errNoBind }

func checkInterfaceAddr(iface string, ip netip.Addr) error { return errNoBind }
