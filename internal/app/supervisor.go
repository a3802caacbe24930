package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/diskless-boot/diskless/internal/boot"
	"github.com/diskless-boot/diskless/internal/bootevent"
	"github.com/diskless-boot/diskless/internal/dhcp"
	"github.com/diskless-boot/diskless/internal/inventory"
	"github.com/diskless-boot/diskless/internal/iscsi"
	"github.com/diskless-boot/diskless/internal/metrics"
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
	// events follows boots (nil: not followed).
	events *bootevent.Tracker

	// dhcpOn: a DHCP server (full or proxy) sees network boots.
	dhcpOn bool
	// onDemand: a host's disk is opened at its first login (admit) rather
	// than when the host is served, and every disk is closed when the
	// server stops being the site's active server (release). Set for a
	// server of a cluster: the other servers have every host configured
	// too, and a disk on shared storage is locked by the one serving it.
	onDemand bool
	// active says whether this server is the cluster's active one (nil:
	// no cluster, always). A standby admits no login and makes no change
	// that needs a host's disk closed: only the active server knows
	// whether the host runs.
	active func() bool
	// leader names the active server, for a standby's refusals.
	leader func() string

	mu       sync.Mutex
	hosts    map[string]*served     // by host name
	hostMu   map[string]*sync.Mutex // serializes work on one host's target
	dhcpSeen map[string]time.Time   // MAC -> last network-boot DHCP request (bounded: known hosts only)
	learning map[string]bool        // hosts whose architecture is being saved
	stopped  bool

	// tablesMu makes each refreshTables build and install its tables
	// before the next builds: otherwise an older build could be installed
	// last, and a host's script carry the secrets its target no longer
	// takes.
	tablesMu sync.Mutex
}

// served is a host as the servers see it.
type served struct {
	rec inventory.Host // as last applied, with secrets; read and written under supervisor.mu
	st  *scsi.Target
	lu  *scsi.LogicalUnit // nil while the disk is closed; the host's lock
}

func newSupervisor(inv *inventory.Inventory, isrv *iscsi.Server, booter *boot.Booter, log *slog.Logger) *supervisor {
	return &supervisor{inv: inv, isrv: isrv, booter: booter, log: log,
		hosts: map[string]*served{}, hostMu: map[string]*sync.Mutex{}, dhcpSeen: map[string]time.Time{}, learning: map[string]bool{}}
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
		if h.CHAP == nil {
			// Said at every start: the admin turned it off, keep it seen.
			s.log.Warn("host without CHAP: anyone on its network who learns its initiator name can read and write its disk",
				"host", h.Name, "iqn", h.InitiatorIQN)
		}
		if h.Rotation() == inventory.RotateBoot && !s.dhcpOn {
			s.log.Warn("host with chap_rotation boot and no DHCP server: every fetch of its script from its address counts as a new boot, "+
				"so a process of its running system could change its secrets under it; use dhcp mode proxy or full", "host", h.Name)
		}
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
			if s.events != nil {
				s.events.Forget(name)
			}
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
		s.mu.Lock()
		sv.rec = rec
		s.mu.Unlock()
		if err := s.isrv.UpdateTarget(s.target(&rec, sv.st)); err != nil {
			s.log.Error("host target not updated", "host", name, "err", err)
		}
	}
	if sv.lu == nil && !s.onDemand {
		if err := s.openDisk(name, sv, &rec); err != nil {
			s.log.Error("host disk not opened; the host's logins try again", "host", name, "err", err)
		}
	}
}

// admit is the iSCSI server's Admit: the login of a host whose disk is
// not open opens it; a disk that cannot be opened (another server holds
// it, the storage does not answer) refuses the login with an error the
// initiator retries. With onDemand that is how every disk opens; without,
// it opens a disk that failed to open when the host was served - an RBD
// disk still locked by this server's own previous, crashed process (its
// lock goes when Ceph sees that client's watch expire, ~30 s), a disk
// file that was missing - instead of serving the host a target without
// its LUN until the next change of its record. A standby admits nobody:
// checked under the host's lock, so a login racing the step-down either
// comes before release (which then closes what it opened) or is refused.
func (s *supervisor) admit(target, _ string) error {
	h, ok := s.hostByTarget(target)
	if !ok {
		return nil // the login fails on its own
	}
	unlock := s.lockHost(h.Name)
	defer unlock()
	if s.active != nil && !s.active() {
		return errors.New("this server is a standby of the cluster")
	}
	s.mu.Lock()
	sv := s.hosts[h.Name]
	var rec inventory.Host
	if sv != nil {
		rec = sv.rec
	}
	stopped := s.stopped
	s.mu.Unlock()
	if sv == nil || sv.lu != nil {
		return nil
	}
	if stopped {
		return errors.New("the server is stopping")
	}
	if err := s.openDisk(h.Name, sv, &rec); err != nil {
		s.log.Warn("host login refused for now: its disk cannot be opened", "host", h.Name, "err", err)
		return err
	}
	return nil
}

// release drops every session and closes every disk: the server stopped
// being the site's active server (or lost its lock on a disk, for one
// host), and another server may take the disks over. Every LU goes
// first, so no command reaches a disk from then on; then the hosts'
// sessions are dropped and their disks closed (flushed, unlocked), a few
// hosts at a time: a slow session's close must not hold the others' disks
// past the heir's takeover.
func (s *supervisor) release(why string, only ...string) {
	s.mu.Lock()
	names := only
	if len(names) == 0 {
		for n := range s.hosts {
			names = append(names, n)
		}
	}
	s.mu.Unlock()
	luOf := map[string]*scsi.LogicalUnit{}
	for _, n := range names {
		unlock := s.lockHost(n)
		s.mu.Lock()
		sv := s.hosts[n]
		s.mu.Unlock()
		if sv != nil && sv.lu != nil {
			luOf[n] = sv.lu
			sv.st.RemoveLU(0)
			sv.lu = nil
		}
		unlock()
	}
	var wg sync.WaitGroup
	slots := make(chan struct{}, 16)
	for _, n := range names {
		wg.Add(1)
		slots <- struct{}{}
		go func() {
			defer func() { <-slots; wg.Done() }()
			unlock := s.lockHost(n)
			defer unlock()
			s.mu.Lock()
			sv := s.hosts[n]
			s.mu.Unlock()
			if sv == nil {
				return
			}
			lu := luOf[n]
			if dropped := s.isrv.DropSessions(sv.rec.TargetIQN, why); dropped > 0 || lu != nil {
				s.log.Warn("host released", "host", n, "sessions", dropped, "why", why)
			}
			if lu != nil && sv.lu == nil {
				sv.lu = lu // closeDisk closes the disk the LU was on
				s.closeDisk(n, sv)
			}
		}()
	}
	wg.Wait()
}

func (s *supervisor) target(h *inventory.Host, st *scsi.Target) *iscsi.Target {
	return &iscsi.Target{Name: h.TargetIQN, SCSI: st, CHAP: h.CHAP, MutualCHAP: h.MutualCHAP,
		AllowedInitiators: []string{h.InitiatorIQN}}
}

// openDisk opens the host's disk (as rec says) and makes it LUN 0 of its
// target. The host's lock is held.
func (s *supervisor) openDisk(name string, sv *served, rec *inventory.Host) error {
	// A failure of the disk is logged with the image it is on (a raw
	// copy: the image it was made from; the admin's file: none).
	image := rec.Disk.Base().String()
	if rec.Disk.Base().IsZero() {
		image = rec.Image
	}
	log := s.log
	if image != "" {
		log = log.With("image", image)
	}
	dev, err := s.inv.Backend().OpenDisk(name, rec.Disk, log)
	if err != nil {
		return err
	}
	lu, err := scsi.NewLogicalUnit(dev, scsi.LUConfig{Serial: name})
	if err == nil {
		err = sv.st.AddLU(0, lu)
	}
	if err != nil {
		s.inv.Backend().CloseDisk(name)
		return fmt.Errorf("host disk not served: %w", err)
	}
	sv.lu = lu
	s.log.Info("host", "host", name, "target", rec.TargetIQN, "iqn", rec.InitiatorIQN, "disk", rec.Disk.Mode,
		"base", rec.Disk.Base().String(), "bytes", dev.Size(), "chap", rec.CHAP != nil)
	return nil
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

// targetOf is the target IQN of a served host.
func (s *supervisor) targetOf(name string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sv := s.hosts[name]; sv != nil {
		return sv.rec.TargetIQN, true
	}
	return "", false
}

// Online implements inventory.Runtime.
func (s *supervisor) Online(name string) bool {
	iqn, ok := s.targetOf(name)
	return ok && len(s.isrv.Sessions(iqn)) > 0
}

// CheckHost implements inventory.Runtime: a fixed address must be one the
// DHCP server can hand out (full mode).
func (s *supervisor) CheckHost(h *inventory.Host) error {
	if s.dhcp == nil || h.IP == "" {
		return nil
	}
	ip, err := netip.ParseAddr(h.IP)
	if err != nil {
		return nil // checkHost reports it
	}
	for _, mac := range h.HardwareAddrs() {
		if err := s.dhcp.CheckReservation(mac, ip); err != nil {
			return &inventory.Error{Kind: inventory.Invalid, Field: "ip", Msg: err.Error()}
		}
	}
	return nil
}

// WithDiskClosed implements inventory.Runtime. The LU goes first, then
// the sessions are counted: a login racing the check then finds no LUN
// instead of writing into a disk about to be copied or changed.
func (s *supervisor) WithDiskClosed(name string, fn func() error) error {
	if err := s.MayChangeDisks(); err != nil {
		return err
	}
	unlock := s.lockHost(name)
	defer unlock()
	s.mu.Lock()
	sv := s.hosts[name]
	s.mu.Unlock()
	var lu *scsi.LogicalUnit
	if sv != nil && sv.lu != nil {
		lu = sv.lu
		sv.st.RemoveLU(0)
		sv.lu = nil
	}
	if s.Online(name) {
		// Serve the disk again as it was: the same LU on the same open
		// disk (opening it again would find it open).
		if lu != nil {
			if err := sv.st.AddLU(0, lu); err != nil {
				s.log.Error("host disk not served again after a refused change", "host", name, "err", err)
			} else {
				sv.lu = lu
			}
		}
		return &inventory.Error{Kind: inventory.Conflict, Msg: fmt.Sprintf("host %q is online; shut it down first", name)}
	}
	if sv != nil {
		if err := s.inv.Backend().CloseDisk(name); err != nil {
			s.log.Error("host disk close", "host", name, "err", err)
		}
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
	s.tablesMu.Lock()
	defer s.tablesMu.Unlock()
	s.mu.Lock()
	var hosts []boot.Host
	var res []dhcp.Reservation
	names := map[string]string{}
	for _, sv := range s.hosts {
		h := &sv.rec
		files := s.versionFiles(h)
		for _, mac := range h.HardwareAddrs() {
			bh := bootHost(h, mac)
			bh.Files = files
			hosts = append(hosts, bh)
			names[mac.String()] = dhcpHostname(h.Name)
			ip, err := netip.ParseAddr(h.IP)
			if err != nil || s.dhcp == nil {
				continue
			}
			if err := s.dhcp.CheckReservation(mac, ip); err != nil {
				// Saved before this server's subnet was known (another
				// configuration): the host gets an address from the pool.
				s.log.Error("host's fixed address not reserved", "host", h.Name, "mac", mac.String(), "err", err)
				continue
			}
			res = append(res, dhcp.Reservation{MAC: mac, IP: ip, Hostname: dhcpHostname(h.Name)})
		}
	}
	s.mu.Unlock()
	if err := s.booter.SetHosts(hosts); err != nil {
		return err
	}
	if s.dhcp != nil {
		if err := s.dhcp.SetHostnames(names); err != nil {
			return err
		}
		return s.dhcp.SetReservations(res)
	}
	return nil
}

// dhcpHostname is a host's name as its DHCP host name (option 12): host
// names may hold '_', which host names on the network may not (RFC 952,
// and systemd-hostnamed refuses it).
func dhcpHostname(name string) string {
	return strings.ReplaceAll(name, "_", "-")
}

// leasedTo is the HTTP server's second witness in full DHCP mode: ip is the
// address this server's DHCP leased to mac and the lease runs. A host with
// a reservation holds a lease of its reserved address once it has asked,
// as every booting host has just done before it fetches its script.
func (s *supervisor) leasedTo(mac net.HardwareAddr, ip netip.Addr) bool {
	if s.dhcp == nil {
		return false
	}
	l, ok := s.dhcp.LeaseOf(mac)
	return ok && l == ip.Unmap()
}

func bootHost(h *inventory.Host, mac net.HardwareAddr) boot.Host {
	return boot.Host{MAC: mac, Name: h.Name, Mode: boot.Mode(h.Boot),
		InitiatorIQN: h.InitiatorIQN, TargetIQN: h.TargetIQN, LUN: 0,
		CHAP: h.CHAP, MutualCHAP: h.MutualCHAP,
		Kernel: h.Kernel, Initrd: h.Initrd, Cmdline: h.Cmdline}
}

// versionFiles serves a kernel-mode host without a kernel of its own the
// kernel and initrd kept with the image version its disk is on when they
// are asked for (the modules are on that disk; the disk moves to new
// versions, at the boot that fetches them too), or, before the disk is
// made, the version it will be made from. nil for every other host.
func (s *supervisor) versionFiles(h *inventory.Host) *boot.VersionFiles {
	if h.Boot != inventory.BootKernel || h.Kernel != "" || h.Image == "" {
		return nil
	}
	name := h.Name
	return &boot.VersionFiles{Open: func(file string) (*os.File, error) {
		cur, err := s.inv.Host(name)
		if err != nil {
			return nil, err
		}
		ref := cur.Disk.Base()
		if ref.IsZero() {
			v, err := s.inv.ResolveVersion(cur.Image, cur.Version)
			if err != nil {
				return nil, fmt.Errorf("%s: no image version to take it from: %w", file, err)
			}
			ref = v.Ref()
		}
		f, err := s.inv.Backend().OpenBootFile(ref, file)
		if err != nil {
			return nil, fmt.Errorf("%s of %s (a version keeps them when diskless image build made it): %w", file, ref, err)
		}
		return f, nil
	}}
}

// beginBoot is called when a host fetches its iPXE script from its own
// address: the sessions of its previous boot are ended (that machine is
// gone) and the inventory applies what a new boot brings.
func (s *supervisor) beginBoot(mac net.HardwareAddr, name string) error {
	iqn, ok := s.targetOf(name)
	if !ok {
		return nil
	}
	if !s.netbooted(mac) {
		// The running system itself can fetch its script (any process,
		// no privilege needed): that is not a boot, and must not end the
		// sessions or wipe the disk under it. A real boot asked DHCP a
		// moment ago, as a network-boot client.
		s.log.Warn("iPXE script fetched without a network boot's DHCP request from this MAC just before: not starting a new boot",
			"host", name, "mac", mac.String())
		return nil
	}
	if n := s.isrv.DropSessions(iqn, "the host started a new boot"); n > 0 {
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
	s.stopped = true
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

// bootWindow is how long after a network-boot DHCP request of a MAC a
// script fetch counts as that machine's new boot: PXE firmware and iPXE
// ask DHCP seconds before they fetch the script.
const bootWindow = 2 * time.Minute

// sawNetboot records a network-boot DHCP request (PXE firmware or iPXE)
// of a known host's MAC, and learns the host's architecture from it when
// its record has none (or only a learnt one that changed).
func (s *supervisor) sawNetboot(mac net.HardwareAddr, name string, code uint16) {
	arch := inventory.ArchBIOS
	if code != boot.ArchBIOS {
		arch = inventory.ArchUEFI
	}
	s.mu.Lock()
	s.dhcpSeen[mac.String()] = time.Now()
	sv := s.hosts[name]
	known := sv == nil || sv.rec.Arch == arch || sv.rec.Arch != "" && !sv.rec.ArchLearnt
	busy := s.learning[name] || s.stopped
	if !known && !busy {
		s.learning[name] = true
	}
	s.mu.Unlock()
	if known || busy {
		return
	}
	// Off the DHCP worker: a store write must not hold up replies; one
	// at a time per host, so a flood of requests is one write.
	go func() {
		s.inv.LearnArch(name, arch)
		s.sync(name)
		s.mu.Lock()
		delete(s.learning, name)
		s.mu.Unlock()
	}()
}

// netbooted reports a network-boot DHCP request of mac within bootWindow.
// Without a DHCP server (dhcp off) every script fetch is taken for a boot.
func (s *supervisor) netbooted(mac net.HardwareAddr) bool {
	if !s.dhcpOn {
		return true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.dhcpSeen[mac.String()]
	return ok && time.Since(t) < bootWindow
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

// metricsHosts is every host's figures for a metrics scrape: its sessions,
// its target's command counters, and its disk's own data.
func (s *supervisor) metricsHosts() []metrics.Host {
	hosts, err := s.inv.Hosts()
	if err != nil {
		s.log.Warn("metrics: host list", "err", err)
		return nil
	}
	out := make([]metrics.Host, 0, len(hosts))
	for _, h := range hosts {
		m := metrics.Host{Name: h.Name}
		sessions := s.isrv.Sessions(h.TargetIQN)
		m.Sessions = len(sessions)
		m.Commands, _ = s.isrv.CommandStats(h.TargetIQN)
		m.Online = m.Sessions > 0
		m.State = s.bootState(h.Name, sessions).State
		m.DiskBytes, _ = s.inv.Backend().Usage(h.Name, h.Disk)
		out = append(out, m)
	}
	return out
}

// BootState implements api.Status: where the host stands in its boot.
func (s *supervisor) BootState(h *inventory.Host) bootevent.State {
	return s.bootState(h.Name, s.isrv.Sessions(h.TargetIQN))
}

func (s *supervisor) bootState(host string, sessions []iscsi.SessionInfo) bootevent.State {
	if s.events == nil {
		return bootevent.State{}
	}
	var since time.Time
	if len(sessions) > 0 {
		since = sessions[0].Since // oldest first
	}
	return s.events.State(host, len(sessions), since)
}

// Boots implements api.Status: the host's boot timelines, newest first.
func (s *supervisor) Boots(host string) ([]bootevent.Boot, error) {
	if s.events == nil {
		return []bootevent.Boot{}, nil
	}
	return s.events.Boots(host)
}

// LastBoot implements api.Status: the host's latest boot.
func (s *supervisor) LastBoot(host string) (bootevent.Boot, bool) {
	if s.events == nil {
		return bootevent.Boot{}, false
	}
	return s.events.LastBoot(host)
}

// SubscribeEvents implements api.Status: every boot event from now on.
func (s *supervisor) SubscribeEvents() (<-chan bootevent.Event, func(), error) {
	if s.events == nil {
		return nil, nil, errors.New("boot events are not followed")
	}
	return s.events.Subscribe()
}

// MayChangeDisks implements inventory.Runtime: a standby makes no change
// to a disk - whether the host runs is known to the active server only
// (its sessions), and the active server holds the disks open.
func (s *supervisor) MayChangeDisks() error {
	if s.active == nil || s.active() {
		return nil
	}
	where := "the active server"
	if s.leader != nil {
		if l := s.leader(); l != "" {
			where += " (" + l + ")"
		}
	}
	return &inventory.Error{Kind: inventory.Conflict,
		Msg: "this server is a standby of the cluster: make changes to a host's disk through " + where}
}
