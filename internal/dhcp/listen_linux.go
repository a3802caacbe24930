//go:build linux

package dhcp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// recvBuffer is the socket receive buffer asked for (bytes).
const recvBuffer = 4 << 20

// Listen opens a UDP socket on port of every address, bound to the
// interface iface (SO_BINDTODEVICE), so it hears broadcasts on iface only
// and its broadcasts leave through iface only. SO_REUSEADDR lets a site
// DHCP server on the same host bind the port too (proxy mode).
func Listen(iface string, port int) (net.PacketConn, error) {
	return listenUDP(iface, net.JoinHostPort("0.0.0.0", strconv.Itoa(port)))
}

func listenUDP(iface, addr string) (net.PacketConn, error) {
	if iface == "" {
		return nil, errors.New("dhcp: listen: no interface")
	}
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); serr != nil {
				return
			}
			if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_BROADCAST, 1); serr != nil {
				return
			}
			// A boot storm (hundreds of machines powered on at once)
			// sends bursts the default ~200 KiB buffer drops, and
			// every drop costs a client its 2/4/8 s retry. Ask for
			// more; past rmem_max only root's FORCE variant gets
			// it, and a smaller buffer is no reason to fail.
			if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, recvBuffer) != nil {
				unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, recvBuffer)
			}
			serr = unix.BindToDevice(int(fd), iface)
		})
		if err != nil {
			return err
		}
		return serr
	}}
	pc, err := lc.ListenPacket(context.Background(), "udp4", addr)
	if err != nil {
		return nil, fmt.Errorf("dhcp: listen on %s %s: %w", iface, addr, err)
	}
	return pc, nil
}

// boundDevice returns the interface a socket is bound to with
// SO_BINDTODEVICE, "" if none.
func boundDevice(c net.PacketConn) (string, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return "", fmt.Errorf("%T is not a socket", c)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return "", err
	}
	var dev string
	var gerr error
	if err := rc.Control(func(fd uintptr) {
		dev, gerr = unix.GetsockoptString(int(fd), unix.SOL_SOCKET, unix.SO_BINDTODEVICE)
	}); err != nil {
		return "", err
	}
	return dev, gerr
}

// checkInterfaceAddr makes sure ip is an address of iface.
func checkInterfaceAddr(iface string, ip netip.Addr) error {
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return fmt.Errorf("dhcp: interface %s: %w", iface, err)
	}
	addrs, err := ifi.Addrs()
	if err != nil {
		return fmt.Errorf("dhcp: interface %s: %w", iface, err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if x, ok := netip.AddrFromSlice(n.IP); ok && x.Unmap() == ip {
				return nil
			}
		}
	}
	return fmt.Errorf("dhcp: server address %v is not on interface %s", ip, iface)
}
