//go:build !linux

package ra

import (
	"errors"
	"net"
)

// listenRaw needs SO_BINDTODEVICE, which only Linux has.
func listenRaw(string) (net.PacketConn, error) {
	return nil, errors.New("binding a socket to an interface is only supported on Linux")
}
