package dhcp

import (
	"errors"
	"net"
	"net/netip"
	"time"
)

// SetReservations replaces the fixed addresses while the server runs (the
// site's hosts change through the API). They are checked as Config's are;
// on error the old ones stay. A client bound to an address now reserved
// for another keeps it until it renews, when it gets a NAK. Full mode only.
func (s *Server) SetReservations(rs []Reservation) error {
	if s.leases == nil {
		return errors.New("dhcp: reservations need full mode")
	}
	rs = append([]Reservation(nil), rs...)
	for i := range rs {
		rs[i].IP = rs[i].IP.Unmap()
	}
	if err := s.cfg.checkReservations(rs); err != nil {
		return err
	}
	s.leases.mu.Lock()
	s.leases.setReservationsLocked(rs)
	s.leases.mu.Unlock()
	return nil
}

// LeaseOf returns the address leased to mac now (full mode), if any.
func (s *Server) LeaseOf(mac net.HardwareAddr) (netip.Addr, bool) {
	if s.leases == nil {
		return netip.Addr{}, false
	}
	m, ok := toHW(mac)
	if !ok {
		return netip.Addr{}, false
	}
	db := s.leases
	db.mu.Lock()
	defer db.mu.Unlock()
	if l := db.byMAC[m]; l != nil && time.Now().Before(l.expires) {
		return l.ip, true
	}
	return netip.Addr{}, false
}

// CheckReservation says why ip cannot be reserved for mac in the served
// subnet (full mode), nil when it can.
func (s *Server) CheckReservation(mac net.HardwareAddr, ip netip.Addr) error {
	if s.leases == nil {
		return nil
	}
	return s.cfg.checkReservations([]Reservation{{MAC: mac, IP: ip.Unmap()}})
}
