package app

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/diskless-boot/diskless/internal/boot"
	"github.com/diskless-boot/diskless/internal/dhcp"
	"github.com/diskless-boot/diskless/internal/inventory"
	"github.com/diskless-boot/diskless/internal/iscsi"
	"github.com/diskless-boot/diskless/internal/scsi"
	"github.com/diskless-boot/diskless/internal/web"
)

// supervisor serves the inventory's hosts on the running servers - one
// iSCSI target per host with its disk as LUN 0, the Booter's host table,
// the DHCP reservations - and applies changes to them while they run. It
// is the inventory's Runtime. It is safe for concurrent use.
type supervisor struct {
	inv    *inventory.Inventory
	isrv   *iscsi.Server
	booter *boot.Booter
	dhcp   *dhcp.Server // nil unless DHCP runs in full mode
	// neighbors names the MAC behind an address (boot logs are per MAC).
	neighbors web.Neighbors
	log       *slog.Logger

	mu     sync.Mutex
	hosts  map[string]*served     // by host name
	hostMu map[string]*sync.Mutex // serializes work on one host's target
}

// served is a host as the servers see it.
type served struct {
	rec inventory.Host // as last applied, with secrets
	st  *scsi.Target
	lu  *scsi.LogicalUnit // nil while the disk is closed
}

func newSupervisor(inv *inventory.Inventory, isrv *iscsi.Server, booter *boot.Booter, log *slog.Logger) *supervisor {
	return &supervisor{inv: inv, isrv: isrv, booter: booter, log: log,
		hosts: map[string]*served{}, hostMu: map[string]*sync.Mutex{}}
}

// start serves every host of the inventory. A host whose disk cannot be
// opened is logged and left without LU (its logins see no LUN) rather than
// keeping every other host from booting.
func (s *supervisor) start() error {
	hosts, err := s.inv.AllHostsWithSecrets()
	if err != nil {
		return err
	}
	for _, h := range hosts {
		s.sync(h.Name)
	}
	return s.refreshTables()
}

func (s *supervisor) lockHost(name string) func() {
	s.mu.Lock()
	m := s.hostMu[name]
	if m == nil {
		m = &sync.Mutex{}
		s.hostMu[name] = m
	}
	s.mu.Unlock()
	m.Lock()
	return m.Unlock
}

// sync serves host name as its record now says.
func (s *supervisor) sync(name string) {
	unlock := s.lockHost(name)
	defer unlock()
	s.syncLocked(name)
}

// syncLocked is sync with the host's lock held: the target is added,
// updated (credentials, allowed initiator) or removed, and its disk opened
// if it is not.
func (s *supervisor) syncLocked(name string) {
	rec, err := s.inv.HostWithSecrets(name)
	s.mu.Lock()
	sv := s.hosts[name]
	s.mu.Unlock()
	if inventory.KindOf(err) == inventory.NotFound {
		if sv != nil {
			s.closeDisk(name, sv)
			s.isrv.RemoveTarget(sv.rec.TargetIQN)
			s.mu.Lock()
			delete(s.hosts, name)
			s.mu.Unlock()
			s.log.Info("host removed", "host", name, "target", sv.rec.TargetIQN)
		}
		return
	}
	if err != nil {
		s.log.Error("host record unreadable", "host", name, "err", err)
		return
	}
	if sv == nil {
		sv = &served{rec: rec, st: scsi.NewTarget(scsi.TargetConfig{Name: rec.TargetIQN, RelTargetPort: 1, TargetPortGroup: 1})}
		if err := s.isrv.AddTarget(s.target(&rec, sv.st)); err != nil {
			s.log.Error("host not served", "host", name, "err", err)
			return
		}
		s.mu.Lock()
		s.hosts[name] = sv
		s.mu.Unlock()
	} else {
		sv.rec = rec
		if err := s.isrv.UpdateTarget(s.target(&rec, sv.st)); err != nil {
			s.log.Error("host target not updated", "host", name, "err", err)
		}
	}
	if sv.lu == nil {
		s.openDisk(name, sv)
	}
}

func (s *supervisor) target(h *inventory.Host, st *scsi.Target) *iscsi.Target {
	return &iscsi.Target{Name: h.TargetIQN, SCSI: st, CHAP: h.CHAP, MutualCHAP: h.MutualCHAP,
		AllowedInitiators: []string{h.InitiatorIQN}}
}

// openDisk opens the host's disk and makes it LUN 0 of its target.
func (s *supervisor) openDisk(name string, sv *served) {
	dev, err := s.inv.Backend().OpenDisk(name, sv.rec.Disk)
	if err != nil {
		s.log.Error("host disk not opened: its target has no LUN", "host", name, "err", err)
		return
	}
	lu, err := scsi.NewLogicalUnit(dev, scsi.LUConfig{Serial: name})
	if err == nil {
		err = sv.st.AddLU(0, lu)
	}
	if err != nil {
		s.inv.Backend().CloseDisk(name)
		s.log.Error("host disk not served", "host", name, "err", err)
		return
	}
	sv.lu = lu
	s.log.Info("host", "host", name, "target", sv.rec.TargetIQN, "iqn", sv.rec.InitiatorIQN, "disk", sv.rec.Disk.Mode,
		"base", sv.rec.Disk.Base().String(), "bytes", dev.Size(), "chap", sv.rec.CHAP != nil)
}

// closeDisk takes LUN 0 away and closes the disk (flushing it).
func (s *supervisor) closeDisk(name string, sv *served) {
	if sv.lu == nil {
		return
	}
	sv.st.RemoveLU(0)
	sv.lu = nil
	if err := s.inv.Backend().CloseDisk(name); err != nil {
		s.log.Error("host disk close", "host", name, "err", err)
	}
}

// Online implements inventory.Runtime.
func (s *supervisor) Online(name string) bool {
	s.mu.Lock()
	sv := s.hosts[name]
	s.mu.Unlock()
	return sv != nil && len(s.isrv.Sessions(sv.rec.TargetIQN)) > 0
}

// WithDiskClosed implements inventory.Runtime.
func (s *supervisor) WithDiskClosed(name string, fn func() error) error {
	unlock := s.lockHost(name)
	defer unlock()
	if s.Online(name) {
		return &inventory.Error{Kind: inventory.Conflict, Msg: fmt.Sprintf("host %q is online; shut it down first", name)}
	}
	s.mu.Lock()
	sv := s.hosts[name]
	s.mu.Unlock()
	if sv != nil {
		s.closeDisk(name, sv)
	}
	err := fn()
	s.syncLocked(name)
	return err
}

// Changed implements inventory.Runtime.
func (s *supervisor) Changed(name string) {
	s.sync(name)
	if err := s.refreshTables(); err != nil {
		s.log.Error("boot tables not updated", "host", name, "err", err)
	}
}

// refreshTables rebuilds the Booter's hosts and the DHCP reservations
// from the served hosts.
func (s *supervisor) refreshTables() error {
	s.mu.Lock()
	var hosts []boot.Host
	var res []dhcp.Reservation
	for _, sv := range s.hosts {
		h := &sv.rec
		for _, mac := range h.HardwareAddrs() {
			hosts = append(hosts, bootHost(h, mac))
			if ip, err := netip.ParseAddr(h.IP); err == nil {
				res = append(res, dhcp.Reservation{MAC: mac, IP: ip, Hostname: h.Name})
			}
		}
	}
	s.mu.Unlock()
	if err := s.booter.SetHosts(hosts); err != nil {
		return err
	}
	if s.dhcp != nil {
		return s.dhcp.SetReservations(res)
	}
	return nil
}

func bootHost(h *inventory.Host, mac net.HardwareAddr) boot.Host {
	return boot.Host{MAC: mac, Name: h.Name, Mode: boot.Mode(h.Boot),
		InitiatorIQN: h.InitiatorIQN, TargetIQN: h.TargetIQN, LUN: 0,
		CHAP: h.CHAP, MutualCHAP: h.MutualCHAP,
		Kernel: h.Kernel, Initrd: h.Initrd, Cmdline: h.Cmdline}
}

// beginBoot is called when a host fetches its iPXE script from its own
// address: the sessions of its previous boot are ended (that machine is
// gone) and the inventory applies what a new boot brings.
func (s *supervisor) beginBoot(mac net.HardwareAddr, name string) error {
	s.mu.Lock()
	sv := s.hosts[name]
	s.mu.Unlock()
	if sv == nil {
		return nil
	}
	if n := s.isrv.DropSessions(sv.rec.TargetIQN, "the host started a new boot"); n > 0 {
		s.log.Info("boot: sessions of the previous boot ended", "host", name, "mac", mac.String(), "sessions", n)
	}
	notes, err := s.inv.BeginBoot(name)
	for _, n := range notes {
		s.log.Info("boot: "+n, "host", name, "mac", mac.String())
	}
	return err
}

// hostByTarget names the host a target IQN belongs to.
func (s *supervisor) hostByTarget(iqn string) (inventory.Host, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sv := range s.hosts {
		if sv.rec.TargetIQN == iqn {
			return sv.rec, true
		}
	}
	return inventory.Host{}, false
}

// stop closes every disk (after the iSCSI server stopped).
func (s *supervisor) stop() {
	s.mu.Lock()
	names := make([]string, 0, len(s.hosts))
	for n := range s.hosts {
		names = append(names, n)
	}
	s.mu.Unlock()
	for _, n := range names {
		unlock := s.lockHost(n)
		s.mu.Lock()
		sv := s.hosts[n]
		s.mu.Unlock()
		if sv != nil {
			s.closeDisk(n, sv)
		}
		unlock()
	}
}

// logLogin logs, for each iSCSI login, which host's target the initiator
// logged into: the boot stage an admin follows per host.
func (s *supervisor) logLogin(e iscsi.LoginEvent) {
	h, ok := s.hostByTarget(e.Target)
	if !ok {
		return
	}
	args := []any{"host", h.Name, "iqn", e.Initiator, "target", e.Target, "ip", e.Remote.String()}
	if ap, err := netip.ParseAddrPort(e.Remote.String()); err == nil && s.neighbors != nil {
		if mac, ok := s.neighbors.MACOf(ap.Addr().Unmap()); ok {
			args = append([]any{"mac", mac.String()}, args...)
		}
	}
	s.log.Info("boot: iSCSI login", args...)
}

// Sessions implements api.Status.
func (s *supervisor) Sessions(target string) []iscsi.SessionInfo { return s.isrv.Sessions(target) }

// HostIP implements api.Status: the DHCP lease, else the address of its
// iSCSI session.
func (s *supervisor) HostIP(h *inventory.Host) string {
	if s.dhcp != nil {
		for _, mac := range h.HardwareAddrs() {
			if ip, ok := s.dhcp.LeaseOf(mac); ok {
				return ip.String()
			}
		}
	}
	for _, ss := range s.isrv.Sessions(h.TargetIQN) {
		if ap, err := netip.ParseAddrPort(ss.Remote); err == nil {
			return ap.Addr().Unmap().String()
		}
	}
	return ""
}

// learnArch records the architecture of a host's PXE request when its
// record has none (or only a learnt one that changed).
func (s *supervisor) learnArch(name string, code uint16) {
	arch := inventory.ArchBIOS
	if code != boot.ArchBIOS {
		arch = inventory.ArchUEFI
	}
	s.mu.Lock()
	sv := s.hosts[name]
	known := sv != nil && (sv.rec.Arch == arch || sv.rec.Arch != "" && !sv.rec.ArchLearnt)
	s.mu.Unlock()
	if known {
		return
	}
	// Off the DHCP worker: a store write must not hold up replies.
	go func() {
		s.inv.LearnArch(name, arch)
		s.sync(name)
	}()
}

// unknownSaveEvery is how often the registry of machines seen but not
// configured is saved to the store when it changed: often enough for the
// admin's list, rare enough that a flood of DHCP packets never becomes a
// flood of store writes.
const unknownSaveEvery = 5 * time.Second

// keepUnknown loads the machines seen but not configured from the store
// into the booter's registry, then saves the registry back when it
// changed, until ctx ends (and once more then).
func (s *supervisor) keepUnknown(ctx context.Context) {
	reg := s.booter.Registry()
	if list, err := s.inv.UnknownHosts(); err == nil {
		var sightings []boot.Sighting
		for _, u := range list {
			hw, err := net.ParseMAC(u.MAC)
			if err != nil {
				continue
			}
			sg := boot.Sighting{MAC: hw, FirstSeen: u.FirstSeen, LastSeen: u.LastSeen, Arch: u.Arch, Count: u.Count}
			sg.IP, _ = netip.ParseAddr(u.IP)
			sightings = append(sightings, sg)
		}
		reg.Restore(sightings)
	}
	saved := reg.Gen()
	save := func() {
		gen := reg.Gen()
		if gen == saved {
			return
		}
		var list []inventory.UnknownHost
		for _, sg := range reg.List() {
			u := inventory.UnknownHost{MAC: sg.MAC.String(), Arch: sg.Arch, FirstSeen: sg.FirstSeen, LastSeen: sg.LastSeen, Count: sg.Count}
			if sg.IP.IsValid() {
				u.IP = sg.IP.String()
			}
			list = append(list, u)
		}
		if err := s.inv.SaveUnknownHosts(list); err != nil {
			s.log.Warn("machines seen but not configured not saved", "err", err)
			return
		}
		saved = gen
	}
	t := time.NewTicker(unknownSaveEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			save()
			return
		case <-t.C:
			save()
		}
	}
}
