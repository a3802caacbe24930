package scsi

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
)

// TargetConfig configures a SCSI target device.
type TargetConfig struct {
	// Name is the SCSI target device name (the iSCSI target IQN). It
	// appears in SCSI name string designators of VPD page 83h; empty
	// leaves them out.
	Name string
	// RelTargetPort is the relative target port identifier of the one
	// target port. Default 1.
	RelTargetPort uint16
	// TargetPortGroup is the target port group of that port (ALUA,
	// REPORT TARGET PORT GROUPS). Default 1.
	TargetPortGroup uint16
	// PortalGroupTag is the iSCSI target portal group tag in the target
	// port name "<Name>,t,0x<tag>" (RFC 7143 13.2.1). Default 1.
	PortalGroupTag uint16
	// AbortTasks, when set, is called by PERSISTENT RESERVE OUT with
	// PREEMPT AND ABORT with the I_T nexuses whose tasks on lun the
	// transport must abort (SPC-4 5.12.11.2.6). It must not block on
	// commands of lun.
	AbortTasks func(lun uint64, victims []Nexus)
}

// MaxLUN is the largest LUN: flat space addressing has 14 bits (SAM-5
// 4.7.6).
const MaxLUN = 1<<14 - 1

// ErrNoSuchLUN is returned for a LUN the target does not have.
var ErrNoSuchLUN = errors.New("scsi: no such LUN")

// Target is a SCSI target device: a set of logical units behind one
// target port. It is safe for concurrent use.
//
// The transport needs no call for ABORT TASK: the control mode page
// reports TAS=0, so an aborted task just ends without status and nothing
// in the LU changes.
type Target struct {
	cfg        TargetConfig
	mu         sync.Mutex // serializes AddLU/RemoveLU
	lus        atomic.Pointer[map[uint64]*LogicalUnit]
	abortTasks atomic.Pointer[func(lun uint64, victims []Nexus)]
}

// SetAbortTasks installs the transport's PREEMPT AND ABORT callback when
// the transport is attached after the target was made (see
// TargetConfig.AbortTasks, which it replaces).
func (t *Target) SetAbortTasks(fn func(lun uint64, victims []Nexus)) {
	t.abortTasks.Store(&fn)
}

func (t *Target) abortTasksFunc() func(lun uint64, victims []Nexus) {
	if fn := t.abortTasks.Load(); fn != nil {
		return *fn
	}
	return t.cfg.AbortTasks
}

// Quick reports whether cdb is a plain READ, or a WRITE while the write
// cache is on, without FUA: such a command completes from the host's page
// cache, so a transport may run it without handing it to another
// goroutine. Anything that may wait for the medium (FUA, write-through,
// SYNCHRONIZE CACHE, UNMAP, ...) is not quick, and nothing is on a device
// whose I/O goes over the network (disk.Remote).
func (t *Target) Quick(lun uint64, cdb []byte) bool {
	lu := t.LU(lun)
	if lu == nil || len(cdb) == 0 || lu.remote {
		return false
	}
	e := opIndex[cdb[0]]
	if e == nil {
		return false
	}
	switch e.h {
	case hRead:
		return !fua(cdb) // READ(6) has no FUA
	case hWrite:
		return lu.wce.Load() && !fua(cdb)
	}
	return false
}

// Async reports whether cdb is a READ that Execute hands to the device
// when the command has a Done callback: a plain READ (no FUA, which may
// flush first) on a device that reads asynchronously (disk.AsyncReader).
// A transport may run such a command on its reader, which goes on at once.
func (t *Target) Async(lun uint64, cdb []byte) bool {
	lu := t.LU(lun)
	if lu == nil || len(cdb) == 0 || lu.async == nil {
		return false
	}
	e := opIndex[cdb[0]]
	return e != nil && e.h == hRead && !fua(cdb)
}

// NewTarget makes an empty target.
func NewTarget(cfg TargetConfig) *Target {
	if cfg.RelTargetPort == 0 {
		cfg.RelTargetPort = 1
	}
	if cfg.TargetPortGroup == 0 {
		cfg.TargetPortGroup = 1
	}
	if cfg.PortalGroupTag == 0 {
		cfg.PortalGroupTag = 1
	}
	t := &Target{cfg: cfg}
	empty := map[uint64]*LogicalUnit{}
	t.lus.Store(&empty)
	return t
}

// AddLU makes lu reachable as lun. An LU belongs to one target. The other
// LUs get REPORTED LUNS DATA HAS CHANGED (SPC-4 6.33).
func (t *Target) AddLU(lun uint64, lu *LogicalUnit) error {
	if lun > MaxLUN {
		return fmt.Errorf("scsi: LUN %d above %d", lun, MaxLUN)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	m := *t.lus.Load()
	if _, ok := m[lun]; ok {
		return fmt.Errorf("scsi: LUN %d already in use", lun)
	}
	if !lu.target.CompareAndSwap(nil, t) {
		return fmt.Errorf("scsi: LU already belongs to a target")
	}
	lu.lun.Store(lun)
	for _, other := range m {
		other.uaAll(ascReportedLUNsChanged, nil)
	}
	m = maps.Clone(m)
	m[lun] = lu
	t.lus.Store(&m)
	return nil
}

// RemoveLU takes lun away; commands already running on it finish. The
// remaining LUs get REPORTED LUNS DATA HAS CHANGED. Closing the device is
// the caller's business.
func (t *Target) RemoveLU(lun uint64) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	m := *t.lus.Load()
	lu, ok := m[lun]
	if !ok {
		return ErrNoSuchLUN
	}
	m = maps.Clone(m)
	delete(m, lun)
	t.lus.Store(&m)
	lu.target.Store(nil)
	for _, other := range m {
		other.uaAll(ascReportedLUNsChanged, nil)
	}
	return nil
}

// LU returns the logical unit at lun, or nil.
func (t *Target) LU(lun uint64) *LogicalUnit { return (*t.lus.Load())[lun] }

// LUNs lists the LUNs in ascending order.
func (t *Target) LUNs() []uint64 {
	return slices.Sorted(maps.Keys(*t.lus.Load()))
}

// Execute runs a command on the LU cmd.LUN selects. For a LUN the target
// does not have, INQUIRY reports peripheral qualifier 011b, REPORT LUNS
// and REQUEST SENSE work, anything else fails with LOGICAL UNIT NOT
// SUPPORTED (SPC-4 6.6.2, SAM-5 5.9).
func (t *Target) Execute(cmd *Command) Result {
	if len(cmd.CDB) == 0 {
		var r Result
		return r.fail(invalidCDB(0, -1))
	}
	if lu := t.LU(cmd.LUN); lu != nil {
		return lu.execute(cmd)
	}
	return t.executeNoLU(cmd)
}

func (t *Target) executeNoLU(c *Command) Result {
	var r Result
	e, serr := lookupOp(nil, c.CDB)
	if serr == nil {
		serr = e.checkCDB(c.CDB, e.usage)
	}
	if serr != nil {
		return r.fail(serr)
	}
	var err error
	switch e.op {
	case opInquiry:
		if c.CDB[1]&1 != 0 {
			err = senseErr(SenseIllegalRequest, ascLUNotSupported)
			break
		}
		// Peripheral qualifier 011b, device type 1Fh: no LU here.
		data := make([]byte, 36)
		data[0] = 0x7f
		data[2], data[3], data[4] = spcVersion, 0x12, 31
		putAllocated(c, &r, data, int(be16(c.CDB[3:])))
	case opReportLUNs:
		err = t.reportLUNs(c, &r)
	case opRequestSense:
		err = requestSenseData(c, &r, senseErr(SenseIllegalRequest, ascLUNotSupported))
	default:
		err = senseErr(SenseIllegalRequest, ascLUNotSupported)
	}
	if err != nil {
		return r.fail(err)
	}
	return r
}

// LUNReset carries out the SCSI side of LOGICAL UNIT RESET (SAM-5 7.8,
// 6.3.3); the transport has already aborted the tasks. RESERVE(6/10)
// reservations and PREVENT state are cleared, the mode pages go back to
// their defaults (nothing is saved), and every I_T nexus gets BUS DEVICE
// RESET FUNCTION OCCURRED. That includes the nexus the TMF came through
// (SAM-5 6.3.3 c: "every I_T nexus"): a multipath initiator reads the
// TMF response on one path but keeps per-path state (reservations, mode
// pages) that the unit attention tells each path to re-check; libiscsi's
// MultipathIO.Reset and Linux LIO hold to it. Persistent reservations
// stay.
func (t *Target) LUNReset(lun uint64) error {
	lu := t.LU(lun)
	if lu == nil {
		return ErrNoSuchLUN
	}
	lu.reset(false)
	lu.uaAll(ascBusDeviceReset, nil)
	return nil
}

// TargetReset resets every LU (SAM-5 6.3.2, RFC 7143 11.5.1). A warm
// reset is a logical unit reset of each LU, BUS DEVICE RESET FUNCTION
// OCCURRED for every I_T nexus, the issuer's included, as for LUNReset.
// A cold reset is a power cycle: persistent reservations (never APTPL
// here) are lost too, a stopped LU starts, and the unit attention is
// POWER ON OCCURRED.
func (t *Target) TargetReset(cold bool) {
	code := uint16(ascBusDeviceReset)
	if cold {
		code = ascPowerOnOccurred
	}
	for _, lu := range *t.lus.Load() {
		lu.reset(cold)
		lu.uaAll(code, nil)
	}
}

// NexusLost handles I_T nexus loss (SAM-5 6.3.4): a RESERVE(6/10)
// reservation and PREVENT state held through n are released; the LUs
// forget n, so a nexus coming back gets a POWER ON unit attention.
// Persistent reservation registrations survive (SPC-4 5.12.3).
func (t *Target) NexusLost(n Nexus) {
	for _, lu := range *t.lus.Load() {
		lu.mu.Lock()
		lu.releaseSPC2Locked(n)
		delete(lu.prevents, n)
		lu.mu.Unlock()
		lu.forget(n)
	}
}

// AbortTaskSet is called after ABORT TASK SET (SAM-5 7.3). The tasks are
// the transport's; with TAS=0 no other I_T nexus is told, so the LU state
// does not change.
func (t *Target) AbortTaskSet(n Nexus, lun uint64) {}

// ClearTaskSet is called after CLEAR TASK SET (SAM-5 7.4). The control
// mode page reports TST=000b (one task set shared by all I_T nexuses), so
// the transport aborts the tasks of every nexus; each other nexus gets
// COMMANDS CLEARED BY ANOTHER INITIATOR (TAS=0).
func (t *Target) ClearTaskSet(n Nexus, lun uint64) {
	if lu := t.LU(lun); lu != nil {
		lu.uaAll(ascCommandsCleared, &n)
	}
}

// reset returns an LU to its state after a reset (warm) or power on (cold).
// Held EXTENDED COPY results are discarded either way.
func (lu *LogicalUnit) reset(cold bool) {
	for _, it := range *lu.nexuses.Load() {
		it.dropCopies()
	}
	lu.mu.Lock()
	defer lu.mu.Unlock()
	lu.spc2 = nil
	clear(lu.prevents)
	lu.wce.Store(!lu.cfg.WriteCacheDisabled)
	lu.swp.Store(false)
	if cold {
		// Power on: the LU starts, with its medium loaded.
		lu.pr = prState{}
		lu.stopped.Store(false)
		lu.ejected.Store(false)
	}
	lu.updateResvLocked()
}
