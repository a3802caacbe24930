package dhcp

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/diskless-boot/diskless/internal/fsutil"
)

// lease binds an address to a client until Expires. An expired lease stays
// as the client's previous binding until its address goes to another
// client, so a returning client gets its old address (RFC 2131 4.3.1).
type lease struct {
	mac      hwaddr
	ip       netip.Addr
	expires  time.Time
	hostname string
}

type offer struct {
	ip    netip.Addr
	until time.Time
}

// leaseDB is the address state of full mode. Every map is bounded by the
// number of addresses in the subnet, and byMAC plus offers together by
// Config.MaxLeases. Safe for concurrent use.
//
// A client the server has no record of - no reservation, no lease, no
// offer - is a new client: it gets an offer only within
// Config.NewLeasesPerSecond and MaxLeases, and a lease only by taking
// that offer (RFC 2131 4.3.2 SELECTING). Reserved clients and clients
// with a lease are never held back by those bounds, so a flood of made-up
// MACs cannot keep them from their address.
type leaseDB struct {
	cfg *Config

	mu           sync.Mutex
	byMAC        map[hwaddr]*lease
	byIP         map[netip.Addr]*lease
	offers       map[hwaddr]offer
	offered      map[netip.Addr]hwaddr
	declined     map[netip.Addr]time.Time
	reservedMAC  map[hwaddr]Reservation
	reservedIP   map[netip.Addr]hwaddr
	first, count uint32 // pool: count addresses from first
	cursor       uint32 // next pool offset to try for a never-used address
	gen          uint64 // bumped by every change that must reach the lease file

	newClients admission // NewLeasesPerSecond
	// A pick that scanned the whole pool in vain is not repeated before
	// fullUntil unless freed moved: a flood from clients that must be
	// refused costs O(1) each, not a scan of the pool each.
	freed     uint64 // bumped by every change that may free an address
	fullFreed uint64
	fullUntil time.Time
	// A sweep for stale records at MaxLeases found none: none before
	// sweepAfter.
	sweepAfter time.Time

	// Group commit: one writer at a time writes a snapshot of everything up
	// to some gen; waiters for older gens are done by that write.
	store   LeaseStore // nil: leases in memory only
	pmu     sync.Mutex
	pcond   *sync.Cond
	writing bool
	written uint64
	writes  atomic.Uint64 // successful lease file writes
}

// admission is a token bucket for new clients: rate per second, bursts of
// up to burst. Guarded by leaseDB.mu.
type admission struct {
	rate, burst float64
	tokens      float64
	last        time.Time
}

func (a *admission) take(now time.Time) bool {
	if a.last.IsZero() {
		a.tokens = a.burst
	} else if d := now.Sub(a.last); d > 0 {
		a.tokens = min(a.burst, a.tokens+d.Seconds()*a.rate)
	}
	a.last = now
	if a.tokens < 1 {
		return false
	}
	a.tokens--
	return true
}

func newLeaseDB(cfg *Config) *leaseDB {
	db := &leaseDB{
		cfg:         cfg,
		byMAC:       map[hwaddr]*lease{},
		byIP:        map[netip.Addr]*lease{},
		offers:      map[hwaddr]offer{},
		offered:     map[netip.Addr]hwaddr{},
		declined:    map[netip.Addr]time.Time{},
		reservedMAC: map[hwaddr]Reservation{},
		reservedIP:  map[netip.Addr]hwaddr{},
		store:       cfg.LeaseStore,
		newClients:  admission{rate: float64(cfg.NewLeasesPerSecond), burst: float64(cfg.NewLeasesPerSecond)},
	}
	if db.store == nil && cfg.LeaseFile != "" {
		db.store = leaseFileStore(cfg.LeaseFile)
	}
	db.pcond = sync.NewCond(&db.pmu)
	if cfg.PoolStart.IsValid() {
		db.first = u32(cfg.PoolStart)
		db.count = u32(cfg.PoolEnd) - db.first + 1
	}
	db.setReservationsLocked(cfg.Reservations)
	return db
}

// setReservationsLocked replaces the reservations (already checked).
func (db *leaseDB) setReservationsLocked(rs []Reservation) {
	db.reservedMAC = make(map[hwaddr]Reservation, len(rs))
	db.reservedIP = make(map[netip.Addr]hwaddr, len(rs))
	db.freed++ // a reservation dropped frees its address
	for _, r := range rs {
		m, _ := toHW(r.MAC)
		r.IP = r.IP.Unmap()
		db.reservedMAC[m] = r
		db.reservedIP[r.IP] = m
	}
}

// reservation is mac's reservation, if it has one.
func (db *leaseDB) reservation(mac hwaddr) (Reservation, bool) {
	db.mu.Lock()
	defer db.mu.Unlock()
	r, ok := db.reservedMAC[mac]
	return r, ok
}

func (db *leaseDB) inPool(ip netip.Addr) bool {
	return ip.Is4() && u32(ip)-db.first < db.count
}

// validFor reports whether ip may be bound to mac at all: a reservation of
// mac, or a pool address that is not excluded and not reserved for another.
func (db *leaseDB) validFor(ip netip.Addr, mac hwaddr) bool {
	if !ip.Is4() || !db.cfg.Subnet.Contains(ip) || db.cfg.excluded(ip) {
		return false
	}
	if owner, ok := db.reservedIP[ip]; ok {
		return owner == mac
	}
	return db.inPool(ip)
}

// freeFor reports whether nobody else holds ip now: no unexpired lease or
// offer of another client and no recent DECLINE. Caller holds mu.
func (db *leaseDB) freeFor(ip netip.Addr, mac hwaddr, now time.Time) bool {
	if l := db.byIP[ip]; l != nil && l.mac != mac && now.Before(l.expires) {
		return false
	}
	if m, ok := db.offered[ip]; ok && m != mac && now.Before(db.offers[m].until) {
		return false
	}
	if t, ok := db.declined[ip]; ok && now.Before(t) {
		return false
	}
	return true
}

// offer picks an address for a DISCOVER from mac and holds it for a while
// (RFC 2131 4.3.1): the reservation; else the client's current or previous
// binding; else the address it was offered; else the one it asks for; else
// a never-used pool address; else the longest-expired one. A new client
// (see leaseDB) gets one only within MaxLeases and NewLeasesPerSecond;
// otherwise the outcome says which bound refused it.
func (db *leaseDB) offer(mac hwaddr, requested netip.Addr, now time.Time) (netip.Addr, outcome) {
	db.mu.Lock()
	defer db.mu.Unlock()
	if !db.knownLocked(mac, now) {
		if out := db.admitLocked(now); out != outAnswered {
			return netip.Addr{}, out
		}
	}
	ip, ok := db.pick(mac, requested, now)
	if !ok {
		return netip.Addr{}, outNoAddress
	}
	if o, had := db.offers[mac]; had && o.ip != ip {
		db.dropOfferLocked(mac)
	}
	if other, ok := db.offered[ip]; ok && other != mac {
		// An offer that lapsed: its client loses it for good, so offers
		// stay bounded by the pool whatever number of MACs pass by.
		db.dropOfferLocked(other)
	}
	db.offers[mac] = offer{ip: ip, until: now.Add(offerHold)}
	db.offered[ip] = mac
	return ip, outAnswered
}

// known is knownLocked for the read loop.
func (db *leaseDB) known(mac hwaddr, now time.Time) bool {
	db.mu.Lock()
	defer db.mu.Unlock()
	return db.knownLocked(mac, now)
}

// knownLocked reports a client that is not new: reserved, with a lease
// (current or previous binding) or with an offer still held for it.
func (db *leaseDB) knownLocked(mac hwaddr, now time.Time) bool {
	if _, ok := db.reservedMAC[mac]; ok {
		return true
	}
	if db.byMAC[mac] != nil {
		return true
	}
	o, ok := db.offers[mac]
	return ok && now.Before(o.until)
}

// admitLocked decides whether a new client may be taken on now:
// outAnswered if so, else outLeaseLimit or outRateLimited. The total is
// checked first, so a refusal at MaxLeases spends no token.
func (db *leaseDB) admitLocked(now time.Time) outcome {
	if len(db.byMAC)+len(db.offers) >= db.cfg.MaxLeases && !db.sweepLocked(now) {
		return outLeaseLimit
	}
	if !db.newClients.take(now) {
		return outRateLimited
	}
	return outAnswered
}

// sweepLocked makes room under MaxLeases: offers that lapsed are
// dropped, then, if that freed nothing, the longest-expired lease (a
// previous binding kept for its client's return) is forgotten. It reports
// whether there is room now. A sweep that finds nothing is not repeated
// before the first record could lapse.
func (db *leaseDB) sweepLocked(now time.Time) bool {
	if now.Before(db.sweepAfter) {
		return false
	}
	next := now.Add(offerHold)
	for mac, o := range db.offers {
		if !now.Before(o.until) {
			db.dropOfferLocked(mac)
		} else if o.until.Before(next) {
			next = o.until
		}
	}
	if len(db.byMAC)+len(db.offers) < db.cfg.MaxLeases {
		return true
	}
	var oldest *lease
	for _, l := range db.byMAC {
		if now.Before(l.expires) {
			if l.expires.Before(next) {
				next = l.expires
			}
			continue
		}
		if oldest == nil || l.expires.Before(oldest.expires) {
			oldest = l
		}
	}
	if oldest == nil {
		db.sweepAfter = next
		return false
	}
	delete(db.byMAC, oldest.mac)
	if db.byIP[oldest.ip] == oldest {
		delete(db.byIP, oldest.ip)
	}
	db.gen++
	db.freed++
	return true
}

// dropOfferLocked forgets the offer held for mac, if any.
func (db *leaseDB) dropOfferLocked(mac hwaddr) {
	o, ok := db.offers[mac]
	if !ok {
		return
	}
	if db.offered[o.ip] == mac {
		delete(db.offered, o.ip)
	}
	delete(db.offers, mac)
	db.freed++
}

func (db *leaseDB) pick(mac hwaddr, requested netip.Addr, now time.Time) (netip.Addr, bool) {
	if r, ok := db.reservedMAC[mac]; ok {
		return r.IP, true
	}
	usable := func(ip netip.Addr) bool { return db.validFor(ip, mac) && db.freeFor(ip, mac, now) }
	if l := db.byMAC[mac]; l != nil && usable(l.ip) {
		return l.ip, true
	}
	if o, ok := db.offers[mac]; ok && usable(o.ip) {
		return o.ip, true
	}
	if requested.IsValid() && usable(requested) && db.byIP[requested] == nil {
		return requested, true
	}
	if db.freed == db.fullFreed && now.Before(db.fullUntil) {
		return netip.Addr{}, false // nothing freed since the last full scan
	}
	for i := uint32(0); i < db.count; i++ {
		off := (db.cursor + i) % db.count
		ip := fromU32(db.first + off)
		if db.byIP[ip] == nil && usable(ip) {
			db.cursor = (off + 1) % db.count
			return ip, true
		}
	}
	var best *lease
	for _, l := range db.byIP {
		if now.Before(l.expires) || !usable(l.ip) {
			continue
		}
		if best == nil || l.expires.Before(best.expires) || (l.expires.Equal(best.expires) && l.ip.Less(best.ip)) {
			best = l
		}
	}
	if best != nil {
		return best.ip, true
	}
	// Leases and offers lapse with time, not with an event that moves
	// freed: scan again at the latest a second from now.
	db.fullFreed, db.fullUntil = db.freed, now.Add(time.Second)
	return netip.Addr{}, false
}

// ackResult is the outcome of binding an address.
type ackResult struct {
	gen uint64 // wait for this gen to be written before sending the ACK
	nak string // non-empty: refuse with this reason (DHCPNAK option 56)
	// noOffer: refused because the client is new and this is not the
	// answer to an offer of ours; with an empty nak, say nothing.
	noOffer bool
}

// requestState is the client state of a REQUEST (RFC 2131 4.3.2).
type requestState int

const (
	stateSelecting  requestState = iota // server identifier: answering an OFFER
	stateInitReboot                     // requested address, no ciaddr
	stateRenewing                       // ciaddr: RENEWING or REBINDING
)

// bind binds ip to mac for a REQUEST (RFC 2131 4.3.2), creating or extending
// the lease, or says why not. A new client (see leaseDB) gets a lease only
// for the address offered to it: anything else is refused as noOffer, with
// a NAK in SELECTING (the offer lapsed: start over) and INIT-REBOOT (it
// starts over at once rather than after its timeouts), in silence when
// RENEWING (RFC 2131 4.3.2: a server with no record of the client stays
// silent; a NAK would make a running machine drop its address, and with
// it a root disk on iSCSI, where waiting lets it rediscover at expiry)
// and beyond NewLeasesPerSecond.
func (db *leaseDB) bind(mac hwaddr, ip netip.Addr, hostname string, state requestState, now time.Time) ackResult {
	db.mu.Lock()
	defer db.mu.Unlock()
	r, reserved := db.reservedMAC[mac]
	if reserved && r.IP != ip {
		return ackResult{nak: "address reserved for this client is " + r.IP.String()}
	}
	if !reserved && db.byMAC[mac] == nil {
		if o, ok := db.offers[mac]; !ok || o.ip != ip || !now.Before(o.until) {
			// The NAK is broadcast: to a client the server knows nothing
			// of, it goes out only within NewLeasesPerSecond, so that a
			// flood of such requests is not reflected onto the whole link.
			nak := state != stateRenewing && db.newClients.take(now)
			switch {
			case nak && state == stateSelecting:
				return ackResult{noOffer: true, nak: "no offer held for this client"}
			case nak:
				return ackResult{noOffer: true, nak: "no lease for this client"}
			}
			return ackResult{noOffer: true}
		}
	}
	if !db.validFor(ip, mac) {
		return ackResult{nak: "requested address not valid here"}
	}
	if !db.freeFor(ip, mac, now) {
		return ackResult{nak: "requested address in use"}
	}
	if old := db.byMAC[mac]; old != nil && old.ip != ip {
		delete(db.byIP, old.ip)
		delete(db.byMAC, mac)
		db.freed++
	}
	if old := db.byIP[ip]; old != nil && old.mac != mac {
		delete(db.byMAC, old.mac) // expired lease of another client
	}
	l := db.byMAC[mac]
	if l == nil {
		l = &lease{mac: mac, ip: ip}
		db.byMAC[mac] = l
		db.byIP[ip] = l
	}
	l.expires = now.Add(db.cfg.LeaseTime)
	if len(hostname) <= 255 {
		l.hostname = hostname
	}
	db.dropOfferLocked(mac)
	db.gen++
	return ackResult{gen: db.gen}
}

// forgetOffer drops the offer held for mac: it took another server's
// (RFC 2131 4.3.2, SELECTING with a foreign server identifier).
func (db *leaseDB) forgetOffer(mac hwaddr) {
	db.mu.Lock()
	defer db.mu.Unlock()
	db.dropOfferLocked(mac)
}

// release ends mac's lease of ip (RFC 2131 4.3.4); the binding stays as the
// client's previous one. It returns the gen to write, or 0 if nothing changed.
func (db *leaseDB) release(mac hwaddr, ip netip.Addr, now time.Time) uint64 {
	db.mu.Lock()
	defer db.mu.Unlock()
	l := db.byMAC[mac]
	if l == nil || l.ip != ip || !now.Before(l.expires) {
		return 0
	}
	l.expires = now
	db.gen++
	db.freed++
	return db.gen
}

// decline marks ip as in use by someone unknown (RFC 2131 4.3.3): not
// handed out for a while, and mac loses its lease or offer of it. Only the
// client the address was given to can decline it, so no client can take
// addresses out of the pool by declining them.
func (db *leaseDB) decline(mac hwaddr, ip netip.Addr, now time.Time) uint64 {
	db.mu.Lock()
	defer db.mu.Unlock()
	held := false
	if l := db.byMAC[mac]; l != nil && l.ip == ip {
		delete(db.byMAC, mac)
		delete(db.byIP, ip)
		held = true
	}
	if o, ok := db.offers[mac]; ok && o.ip == ip {
		db.dropOfferLocked(mac)
		held = true
	}
	if !held {
		return 0
	}
	db.declined[ip] = now.Add(declineHold)
	db.gen++
	return db.gen
}

// activeLeases returns the unexpired leases, for tests and status.
func (db *leaseDB) activeLeases(now time.Time) map[string]netip.Addr {
	db.mu.Lock()
	defer db.mu.Unlock()
	m := map[string]netip.Addr{}
	for _, l := range db.byMAC {
		if now.Before(l.expires) {
			m[l.mac.String()] = l.ip
		}
	}
	return m
}

// The lease file, JSON so an admin can read it.
type leaseFile struct {
	Version  int              `json:"version"`
	Leases   []leaseRecord    `json:"leases"`
	Declined []declinedRecord `json:"declined,omitempty"`
}

type leaseRecord struct {
	MAC      string    `json:"mac"`
	IP       string    `json:"ip"`
	Expires  time.Time `json:"expires"`
	Hostname string    `json:"hostname,omitempty"`
}

type declinedRecord struct {
	IP    string    `json:"ip"`
	Until time.Time `json:"until"`
}

const (
	leaseFileVersion = 1
	maxLeaseFile     = 64 << 20
)

// load reads the lease file. Leases the configuration no longer allows
// (address outside the pool, now reserved for another MAC) are dropped and
// reported; a missing file is an empty database; a corrupt one is an error,
// because starting empty could hand out addresses twice.
//
// With replace (ReloadLeases) the record replaces every lease, offer and
// declined address the server had: the record is the truth of a cluster,
// written by the active server alone, and what a standby had is older.
func (db *leaseDB) load(now time.Time, replace bool) (dropped []string, err error) {
	if db.store == nil {
		return nil, nil
	}
	data, err := db.store.LoadLeases()
	if err != nil {
		return nil, fmt.Errorf("dhcp: %s: %w", db.store, err)
	}
	if data == nil {
		return nil, nil
	}
	if len(data) > maxLeaseFile {
		return nil, fmt.Errorf("dhcp: %s: %d bytes is too large", db.store, len(data))
	}
	var lf leaseFile
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&lf); err != nil {
		return nil, fmt.Errorf("dhcp: %s: %w", db.store, err)
	}
	if lf.Version != leaseFileVersion {
		return nil, fmt.Errorf("dhcp: %s: version %d, want %d", db.store, lf.Version, leaseFileVersion)
	}
	// Every record checked before any is taken: a bad one must not leave
	// a table half replaced.
	for _, r := range lf.Leases {
		hw, err1 := net.ParseMAC(r.MAC)
		_, err2 := netip.ParseAddr(r.IP)
		if _, ok := toHW(hw); err1 != nil || err2 != nil || !ok {
			return nil, fmt.Errorf("dhcp: %s: bad lease %q %q", db.store, r.MAC, r.IP)
		}
	}
	for _, d := range lf.Declined {
		if _, err := netip.ParseAddr(d.IP); err != nil {
			return nil, fmt.Errorf("dhcp: %s: bad declined address %q", db.store, d.IP)
		}
	}
	db.mu.Lock()
	defer db.mu.Unlock()
	if replace {
		clear(db.byMAC)
		clear(db.byIP)
		clear(db.offers)
		clear(db.offered)
		clear(db.declined)
		db.freed++
	}
	for _, r := range lf.Leases {
		hw, err1 := net.ParseMAC(r.MAC)
		ip, err2 := netip.ParseAddr(r.IP)
		mac, ok := toHW(hw)
		if err1 != nil || err2 != nil || !ok {
			return nil, fmt.Errorf("dhcp: %s: bad lease %q %q", db.store, r.MAC, r.IP)
		}
		if !db.validFor(ip, mac) {
			dropped = append(dropped, fmt.Sprintf("%s %s: address no longer valid for this client", r.MAC, r.IP))
			continue
		}
		if res, ok := db.reservedMAC[mac]; ok && res.IP != ip {
			dropped = append(dropped, fmt.Sprintf("%s %s: client now has reservation %s", r.MAC, r.IP, res.IP))
			continue
		}
		if old := db.byIP[ip]; old != nil {
			if !r.Expires.After(old.expires) {
				continue
			}
			delete(db.byMAC, old.mac)
		}
		if old := db.byMAC[mac]; old != nil {
			if !r.Expires.After(old.expires) {
				continue
			}
			delete(db.byIP, old.ip)
		}
		l := &lease{mac: mac, ip: ip, expires: r.Expires, hostname: r.Hostname}
		db.byMAC[mac], db.byIP[ip] = l, l
	}
	for _, d := range lf.Declined {
		ip, err := netip.ParseAddr(d.IP)
		if err != nil {
			return nil, fmt.Errorf("dhcp: %s: bad declined address %q", db.store, d.IP)
		}
		if now.Before(d.Until) && db.cfg.Subnet.Contains(ip) {
			db.declined[ip] = d.Until
		}
	}
	if len(dropped) > 0 {
		db.gen++
	}
	return dropped, nil
}

// encodeLocked renders the database for the lease file. Caller holds mu.
func (db *leaseDB) encodeLocked(now time.Time) ([]byte, error) {
	lf := leaseFile{Version: leaseFileVersion, Leases: make([]leaseRecord, 0, len(db.byIP))}
	ips := make([]netip.Addr, 0, len(db.byIP))
	for ip := range db.byIP {
		ips = append(ips, ip)
	}
	slices.SortFunc(ips, netip.Addr.Compare)
	for _, ip := range ips {
		l := db.byIP[ip]
		lf.Leases = append(lf.Leases, leaseRecord{MAC: l.mac.String(), IP: ip.String(), Expires: l.expires.UTC(), Hostname: l.hostname})
	}
	ips = ips[:0]
	for ip, t := range db.declined {
		if now.Before(t) {
			ips = append(ips, ip)
		}
	}
	slices.SortFunc(ips, netip.Addr.Compare)
	for _, ip := range ips {
		lf.Declined = append(lf.Declined, declinedRecord{IP: ip.String(), Until: db.declined[ip].UTC()})
	}
	return json.Marshal(&lf)
}

// sync returns once every change up to gen is in the lease file
// (RFC 2131 4.3.2: a server commits a binding to persistent storage before
// it sends the DHCPACK). Concurrent callers share writes.
func (db *leaseDB) sync(gen uint64, now func() time.Time) error {
	if db.store == nil || gen == 0 {
		return nil
	}
	db.pmu.Lock()
	defer db.pmu.Unlock()
	for db.written < gen {
		if db.writing {
			db.pcond.Wait()
			continue
		}
		db.writing = true
		db.pmu.Unlock()
		db.mu.Lock()
		target := db.gen
		data, err := db.encodeLocked(now())
		db.mu.Unlock()
		if err == nil {
			err = db.store.SaveLeases(data)
		}
		if err == nil {
			db.writes.Add(1)
		}
		db.pmu.Lock()
		db.writing = false
		if err == nil && target > db.written {
			db.written = target
		}
		db.pcond.Broadcast()
		if err != nil {
			return fmt.Errorf("dhcp: writing the leases to %s: %w", db.store, err)
		}
	}
	return nil
}

func (db *leaseDB) currentGen() uint64 {
	db.mu.Lock()
	defer db.mu.Unlock()
	return db.gen
}

// LeaseStore keeps the lease database's one record (JSON) somewhere other
// than a file. Implementations are safe for concurrent use; String names
// it in errors.
type LeaseStore interface {
	// LoadLeases returns the record, nil when there is none yet.
	LoadLeases() ([]byte, error)
	// SaveLeases replaces it; when it returns nil the record is durable.
	SaveLeases([]byte) error
	String() string
}

// leaseFileStore is Config.LeaseFile.
type leaseFileStore string

func (f leaseFileStore) String() string { return "lease file " + string(f) }

func (f leaseFileStore) LoadLeases() ([]byte, error) {
	fh, err := os.Open(string(f))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	// One byte more than allowed tells load it is too large.
	data, err := io.ReadAll(io.LimitReader(fh, maxLeaseFile+1))
	if err != nil {
		return nil, err
	}
	if data == nil {
		data = []byte{}
	}
	return data, nil
}

func (f leaseFileStore) SaveLeases(data []byte) error {
	return fsutil.WriteFileAtomic(string(f), data, 0o644)
}
