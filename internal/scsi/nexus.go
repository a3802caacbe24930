package scsi

import (
	"maps"
	"sync"
	"sync/atomic"
)

// itNexus is what a logical unit keeps per I_T nexus: its queue of unit
// attention conditions (SAM-5 5.14) and the EXTENDED COPY commands it runs
// or holds results of as copy manager (SPC-4 6.4: list identifiers are
// per I_T nexus).
type itNexus struct {
	pending atomic.Int32 // len(ua), read without the lock on every command
	mu      sync.Mutex
	ua      []uint16 // ASC/ASCQ, oldest first
	copies  []*copyRecord
}

// add queues a unit attention. A reset-class condition (ASC 29h) replaces
// the others, which it makes moot (SAM-5 5.14); others are queued once,
// up to maxUAQueue.
func (it *itNexus) add(code uint16) {
	it.mu.Lock()
	defer it.mu.Unlock()
	if code>>8 == 0x29 {
		it.ua = append(it.ua[:0], code)
	} else {
		for _, c := range it.ua {
			if c == code {
				return
			}
		}
		if len(it.ua) >= maxUAQueue {
			return
		}
		it.ua = append(it.ua, code)
	}
	it.pending.Store(int32(len(it.ua)))
}

// pop takes the oldest unit attention: the one reported now, and so
// cleared (UA_INTLCK_CTRL=00b).
func (it *itNexus) pop() (uint16, bool) {
	it.mu.Lock()
	defer it.mu.Unlock()
	if len(it.ua) == 0 {
		return 0, false
	}
	code := it.ua[0]
	it.ua = append(it.ua[:0], it.ua[1:]...)
	it.pending.Store(int32(len(it.ua)))
	return code, true
}

// remove clears one pending condition, if queued.
func (it *itNexus) remove(code uint16) {
	it.mu.Lock()
	defer it.mu.Unlock()
	for i, c := range it.ua {
		if c == code {
			it.ua = append(it.ua[:i], it.ua[i+1:]...)
			break
		}
	}
	it.pending.Store(int32(len(it.ua)))
}

// nexus returns the state of I_T nexus n, creating it on first access
// with POWER ON, RESET, OR BUS DEVICE RESET OCCURRED pending: to a nexus
// new to this LU, the LU has just come up.
//
// A new nexus also starts a stopped LU. An OS stops its disk with START
// STOP UNIT at shutdown, and the next boot of that machine comes through
// PXE firmware (iPXE, a BIOS or UEFI iSCSI initiator) that never sends
// START UNIT: it would see NOT READY, INITIALIZING COMMAND REQUIRED and
// fail to boot. A virtual disk has no motor to keep off, so the stopped
// state only has to last as long as the nexuses that saw it: a new
// login, told of a power on by its unit attention, finds the unit active
// as a power on would leave it. The same goes for an ejected removable
// medium: the next boot finds it loaded.
func (lu *LogicalUnit) nexus(n Nexus) *itNexus {
	if it := (*lu.nexuses.Load())[n]; it != nil {
		return it
	}
	lu.mu.Lock()
	defer lu.mu.Unlock()
	m := *lu.nexuses.Load()
	if it := m[n]; it != nil {
		return it
	}
	it := &itNexus{}
	it.add(ascPowerOnReset)
	m = maps.Clone(m)
	m[n] = it
	lu.nexuses.Store(&m)
	lu.stopped.Store(false)
	lu.ejected.Store(false)
	return it
}

// uaAll establishes a unit attention for every I_T nexus known to the LU
// except *except (nil: all). Nexuses not seen yet get POWER ON on their
// first command, which subsumes it.
func (lu *LogicalUnit) uaAll(code uint16, except *Nexus) {
	for n, it := range *lu.nexuses.Load() {
		if except == nil || n != *except {
			it.add(code)
		}
	}
}

// uaTo establishes a unit attention for nexus n if it is known.
func (lu *LogicalUnit) uaTo(n Nexus, code uint16) {
	if it := (*lu.nexuses.Load())[n]; it != nil {
		it.add(code)
	}
}

// forget drops the state of nexus n (I_T nexus loss): a later nexus with
// the same name starts afresh with a POWER ON unit attention.
func (lu *LogicalUnit) forget(n Nexus) {
	lu.mu.Lock()
	defer lu.mu.Unlock()
	m := *lu.nexuses.Load()
	if _, ok := m[n]; !ok {
		return
	}
	m = maps.Clone(m)
	delete(m, n)
	lu.nexuses.Store(&m)
}
