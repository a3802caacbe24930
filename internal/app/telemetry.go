package app

import (
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/diskless-boot/diskless/internal/bootevent"
	"github.com/diskless-boot/diskless/internal/dhcp"
	"github.com/diskless-boot/diskless/internal/iscsi"
	"github.com/diskless-boot/diskless/internal/tftp"
)

// This file turns what the servers saw into boot events naming the host
// (bootevent owns what becomes of them: timelines, states, counters, the
// log and the live stream).

// emit hands e to the tracker, when there is one.
func (s *supervisor) emit(e bootevent.Event) {
	if s.events != nil {
		s.events.Emit(e)
	}
}

// hostOfMAC names the host with mac, "" for a machine that is no host.
func (s *supervisor) hostOfMAC(mac net.HardwareAddr) string {
	if h, ok := s.booter.Host(mac); ok {
		return h.Name
	}
	return ""
}

// dhcpReply is dhcp.Config.OnReply: the firmware's or iPXE's DHCP step.
func (s *supervisor) dhcpReply(r dhcp.Reply) {
	e := bootevent.Event{Host: s.hostOfMAC(r.MAC), MAC: r.MAC.String(), Arch: r.Client.Arch.String(),
		Stage: bootevent.StageDHCP, Detail: r.Request + " -> " + r.Op}
	if r.Client.IPXE {
		e.Stage = bootevent.StageIPXEDHCP
	}
	if r.IP.IsValid() && !r.IP.IsUnspecified() {
		e.IP = r.IP.String()
	}
	if r.File != "" {
		e.Detail += ", boot file " + r.File
	}
	s.emit(e)
}

// tftpTransfer is tftp.Config.OnTransfer: the firmware loading iPXE. The
// kernel's neighbour table names the MAC (it answered the client's ARP to
// send the data).
func (s *supervisor) tftpTransfer(ti tftp.TransferInfo) {
	e := bootevent.Event{IP: ti.Client.Addr().String(), Stage: bootevent.StageTFTP,
		Detail: fmt.Sprintf("%s, %d bytes in %s (blksize %d, windowsize %d)", ti.File, ti.Bytes,
			ti.Duration.Round(time.Millisecond), ti.BlockSize, ti.WindowSize)}
	if s.neighbors != nil {
		if mac, ok := s.neighbors.MACOf(ti.Client.Addr()); ok {
			e.MAC, e.Host = mac.String(), s.hostOfMAC(mac)
		}
	}
	if ti.Err != nil {
		e.Error = ti.Err.Error()
	}
	s.emit(e)
}

// ipxeISID: iPXE's ISIDs are of the IANA enterprise number type (T = 01)
// with iPXE's number, 10019 (iPXE's net/tcp/iscsi.c): the upper 32 of the
// 48 bits. open-iscsi uses the OUI type.
const ipxeISID = 0x40000000 | 10019

// login is iscsi.Config.OnLogin: iPXE's login (the firmware reads the
// disk) or the operating system's (root is being mounted).
func (s *supervisor) login(e iscsi.LoginEvent) {
	h, ok := s.hostByTarget(e.Target)
	if !ok {
		return
	}
	ev := bootevent.Event{Host: h.Name, IP: addrOf(e.Remote), Stage: bootevent.StageRootLogin,
		Detail: "login of " + e.Initiator}
	if e.ISID>>16 == ipxeISID {
		ev.Stage, ev.Detail = bootevent.StageSANLogin, "iPXE login of "+e.Initiator
	}
	ev.MAC = s.macOf(ev.IP)
	s.emit(ev)
}

// loginFailed is iscsi.Config.OnLoginFailed: a refused login fails the
// boot (wrong CHAP either way); others (a connection lost during login)
// are in the timeline without failing it.
func (s *supervisor) loginFailed(f iscsi.LoginFailure) {
	h, ok := s.hostByTarget(f.Target)
	if !ok {
		return
	}
	ev := bootevent.Event{Host: h.Name, IP: addrOf(f.Remote), Stage: bootevent.StageSANLogin,
		Detail: "login of " + f.Initiator + " failed", Error: f.Err.Error()}
	if f.ISID>>16 != ipxeISID {
		ev.Stage = bootevent.StageRootLogin
	}
	if f.Auth {
		ev.Stage, ev.Detail = bootevent.StageFailed, bootevent.DetailLoginRefused
	}
	ev.MAC = s.macOf(ev.IP)
	s.emit(ev)
}

// addrOf is the address of a connection's remote end, "" if none.
func addrOf(a net.Addr) string {
	if a == nil {
		return ""
	}
	if ap, err := netip.ParseAddrPort(a.String()); err == nil {
		return ap.Addr().Unmap().String()
	}
	return ""
}

// macOf is the MAC the neighbour table has for ip, "" if none.
func (s *supervisor) macOf(ip string) string {
	a, err := netip.ParseAddr(ip)
	if err != nil || s.neighbors == nil {
		return ""
	}
	if mac, ok := s.neighbors.MACOf(a); ok {
		return mac.String()
	}
	return ""
}
