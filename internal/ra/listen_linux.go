package ra

import (
	"context"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// listenRaw opens the raw ICMPv6 socket bound to iface, so that it neither
// hears nor answers solicitations from any other interface.
func listenRaw(iface string) (net.PacketConn, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.BindToDevice(int(fd), iface)
		})
		if err != nil {
			return err
		}
		return serr
	}}
	return lc.ListenPacket(context.Background(), "ip6:ipv6-icmp", "::")
}
