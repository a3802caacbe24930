//go:build linux

package harness

// The DHCP side of a simulated PXE client (RFC 2131, with the options of a
// BIOS PXE ROM, PXE 2.1 / RFC 4578), shared by bench/storm (clients that
// boot) and bench/hostile (a flood of made-up clients).

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"
)

// DHCPConn is one client socket on :68 of an interface, shared by many
// simulated clients: replies are handed to the client waiting for their
// xid. It is safe for concurrent use.
type DHCPConn struct {
	conn      *net.UDPConn
	unmatched func([]byte)
	mu        sync.Mutex
	wait      map[uint32]chan []byte
}

// ListenDHCP opens the socket on iface (SO_BINDTODEVICE, broadcast allowed,
// an 8 MiB receive buffer forced past rmem_max so that the clients never
// drop a reply). unmatched, when not nil, gets every reply (BOOTREPLY) no
// registered client waits for, on the reading goroutine; the slice is only
// valid during the call.
func ListenDHCP(iface string, unmatched func([]byte)) (*DHCPConn, error) {
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_BROADCAST, 1)
			if serr == nil {
				serr = syscall.BindToDevice(int(fd), iface)
			}
			if serr == nil {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUFFORCE, 8<<20)
			}
		})
		return errors.Join(err, serr)
	}}
	pc, err := lc.ListenPacket(context.Background(), "udp4", "0.0.0.0:68")
	if err != nil {
		return nil, err
	}
	d := &DHCPConn{conn: pc.(*net.UDPConn), unmatched: unmatched, wait: map[uint32]chan []byte{}}
	go d.read()
	return d, nil
}

// Close closes the socket; the reading goroutine ends.
func (d *DHCPConn) Close() error { return d.conn.Close() }

// Register makes replies with xid go to ch (dropped when ch is full).
func (d *DHCPConn) Register(xid uint32, ch chan []byte) {
	d.mu.Lock()
	d.wait[xid] = ch
	d.mu.Unlock()
}

// Unregister undoes Register.
func (d *DHCPConn) Unregister(xid uint32) {
	d.mu.Lock()
	delete(d.wait, xid)
	d.mu.Unlock()
}

func (d *DHCPConn) read() {
	buf := make([]byte, 1500)
	for {
		n, _, err := d.conn.ReadFromUDP(buf)
		if err != nil {
			return
		}
		if n < 240 || buf[0] != 2 {
			continue
		}
		xid := binary.BigEndian.Uint32(buf[4:])
		d.mu.Lock()
		ch := d.wait[xid]
		d.mu.Unlock()
		if ch == nil {
			if d.unmatched != nil {
				d.unmatched(buf[:n])
			}
			continue
		}
		select {
		case ch <- bytes.Clone(buf[:n]):
		default:
		}
	}
}

var dhcpBroadcast = &net.UDPAddr{IP: net.IPv4bcast, Port: 67}

// Send broadcasts pkt to the servers' port 67.
func (d *DHCPConn) Send(pkt []byte) error {
	_, err := d.conn.WriteToUDP(pkt, dhcpBroadcast)
	return err
}

// DHCPReply is what a client needs of a server's answer.
type DHCPReply struct {
	Type     byte // option 53: 2 OFFER, 5 ACK, 6 NAK
	YIAddr   netip.Addr
	SIAddr   netip.Addr
	ServerID netip.Addr // option 54
	File     string     // option 67, else the file field
}

// DHCP message types (RFC 2132 9.6).
const (
	DHCPDiscover = 1
	DHCPOffer    = 2
	DHCPRequest  = 3
	DHCPAck      = 5
	DHCPNak      = 6
)

// ParseDHCPReply decodes b; false when it is not a DHCP message.
func ParseDHCPReply(b []byte) (DHCPReply, bool) {
	var r DHCPReply
	if len(b) < 240 || !bytes.Equal(b[236:240], []byte{99, 130, 83, 99}) {
		return r, false
	}
	r.YIAddr = netip.AddrFrom4([4]byte(b[16:20]))
	r.SIAddr = netip.AddrFrom4([4]byte(b[20:24]))
	r.File = string(bytes.TrimRight(b[108:236], "\x00"))
	o := b[240:]
	for len(o) > 0 {
		code := o[0]
		if code == 255 {
			break
		}
		if code == 0 {
			o = o[1:]
			continue
		}
		if len(o) < 2 || len(o) < 2+int(o[1]) {
			return r, false
		}
		v := o[2 : 2+int(o[1])]
		switch code {
		case 53:
			if len(v) == 1 {
				r.Type = v[0]
			}
		case 54:
			if len(v) == 4 {
				r.ServerID = netip.AddrFrom4([4]byte(v))
			}
		case 67:
			r.File = string(bytes.TrimRight(v, "\x00"))
		}
		o = o[2+int(o[1]):]
	}
	return r, r.Type != 0
}

// BuildDHCP returns a client message of type typ with the options of a
// BIOS PXE ROM: 57 max size 1260, 93 arch 0, 94 UNDI 2.1, 97 the GUID uuid
// (16 bytes), 55, 60 PXEClient:Arch:00000:UNDI:002001; 50 reqIP and 54
// serverID when valid; the broadcast flag set.
func BuildDHCP(typ byte, xid uint32, mac net.HardwareAddr, uuid []byte, reqIP, serverID netip.Addr) []byte {
	b := make([]byte, 240, 400)
	b[0], b[1], b[2] = 1, 1, 6
	binary.BigEndian.PutUint32(b[4:], xid)
	binary.BigEndian.PutUint16(b[10:], 0x8000) // broadcast
	copy(b[28:], mac)
	copy(b[236:], []byte{99, 130, 83, 99})
	opt := func(code byte, v ...byte) { b = append(append(b, code, byte(len(v))), v...) }
	opt(53, typ)
	opt(57, 0x04, 0xec)                                                                                               // max message size 1260
	opt(93, 0, 0)                                                                                                     // BIOS x86
	opt(94, 1, 2, 1)                                                                                                  // UNDI 2.1
	opt(97, append([]byte{0}, uuid...)...)                                                                            // client GUID
	opt(55, 1, 2, 3, 4, 5, 6, 11, 12, 13, 15, 16, 17, 18, 43, 54, 60, 66, 67, 128, 129, 130, 131, 132, 133, 134, 135) // like a PXE ROM
	opt(60, []byte("PXEClient:Arch:00000:UNDI:002001")...)
	if reqIP.IsValid() {
		a := reqIP.As4()
		opt(50, a[:]...)
	}
	if serverID.IsValid() {
		a := serverID.As4()
		opt(54, a[:]...)
	}
	b = append(b, 255)
	for len(b) < 300 {
		b = append(b, 0)
	}
	return b
}

// ErrNAK is a DHCPNAK answering an Exchange.
var ErrNAK = errors.New("dhcp NAK")

// Exchange broadcasts pkt and waits on ch (registered for pkt's xid) for a
// reply of type want, retransmitting after 2, 4, 8, ... s until deadline.
// A NAK returns ErrNAK.
func (d *DHCPConn) Exchange(ch chan []byte, pkt []byte, want byte, deadline time.Time) (DHCPReply, error) {
	wait := 2 * time.Second
	for time.Now().Before(deadline) {
		if err := d.Send(pkt); err != nil {
			return DHCPReply{}, err
		}
		t := time.NewTimer(min(wait, time.Until(deadline)))
		for done := false; !done; {
			select {
			case b := <-ch:
				if r, ok := ParseDHCPReply(b); ok && r.Type == want {
					t.Stop()
					return r, nil
				} else if ok && r.Type == DHCPNak {
					t.Stop()
					return r, ErrNAK
				}
			case <-t.C:
				done = true
			}
		}
		wait *= 2
	}
	return DHCPReply{}, errors.New("dhcp timeout")
}
