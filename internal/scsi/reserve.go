package scsi

// RESERVE(6/10) and RELEASE(6/10): SPC-2 logical unit reservations
// (SPC-2 7.21, 7.17), with the SPC-4 5.9.3 exceptions when persistent
// reservation registrations exist, and the reservation conflict checks
// for all other commands.

// updateResvLocked refreshes the fast-path flag after a reservation change.
func (lu *LogicalUnit) updateResvLocked() {
	lu.resv.Store(lu.spc2 != nil || lu.pr.has)
}

// prException applies SPC-4 5.9.3 to RESERVE/RELEASE while persistent
// reservation registrations exist: the command completes with GOOD and no
// effect from a holder, or from a registrant under a registrants-only or
// all-registrants reservation; from anyone else it conflicts.
func (lu *LogicalUnit) prExceptionLocked(n Nexus) error {
	p := &lu.pr
	if p.find(n) >= 0 && (p.isHolder(n) || (p.has && sharedType(p.typ))) {
		return nil
	}
	return errConflict
}

func (lu *LogicalUnit) reserve(c *Command) error {
	n := c.Nexus
	lu.mu.Lock()
	defer lu.mu.Unlock()
	if len(lu.pr.regs) > 0 {
		return lu.prExceptionLocked(n)
	}
	if lu.spc2 != nil {
		if *lu.spc2 == n {
			return nil
		}
		return errConflict
	}
	lu.spc2 = &n
	lu.updateResvLocked()
	return nil
}

// release drops the caller's reservation; from an I_T nexus holding none
// it does nothing and completes with GOOD (SPC-2 7.17).
func (lu *LogicalUnit) release(c *Command) error {
	n := c.Nexus
	lu.mu.Lock()
	defer lu.mu.Unlock()
	if len(lu.pr.regs) > 0 {
		return lu.prExceptionLocked(n)
	}
	lu.releaseSPC2Locked(n)
	return nil
}

// releaseSPC2Locked drops the RESERVE(6/10) reservation if n holds it.
func (lu *LogicalUnit) releaseSPC2Locked(n Nexus) {
	if lu.spc2 != nil && *lu.spc2 == n {
		lu.spc2 = nil
		lu.updateResvLocked()
	}
}

// conflicts reports whether command e from c.Nexus conflicts with a
// reservation held by another I_T nexus. Under a RESERVE(6/10) only the
// fSPC2OK commands pass (SPC-2 5.5.1); under a persistent reservation the
// SPC-4 table 48 / SBC-3 table 13 rules apply.
func (lu *LogicalUnit) conflicts(c *Command, e *opcode) bool {
	class := e.resv
	switch class {
	case resvStart:
		// START=1 with POWER CONDITION 0h is allowed, stopping is not.
		class = resvWrite
		if c.CDB[4]&0xf1 == 0x01 {
			class = resvAllowed
		}
	case resvPrevent:
		class = resvWrite
		if c.CDB[4]&3 == 0 {
			class = resvAllowed
		}
	}
	return lu.conflictsAs(c.Nexus, class, e.flags&fSPC2OK != 0)
}

// conflictsAs reports whether an access of the given class from n
// conflicts with a reservation another I_T nexus holds; spc2OK lets it
// through a RESERVE(6/10) reservation.
func (lu *LogicalUnit) conflictsAs(n Nexus, class resvClass, spc2OK bool) bool {
	lu.mu.Lock()
	defer lu.mu.Unlock()
	if lu.spc2 != nil && *lu.spc2 != n && !spc2OK {
		return true
	}
	p := &lu.pr
	if !p.has || p.isHolder(n) {
		return false
	}
	registered := p.find(n) >= 0
	switch class {
	case resvRead:
		return exclusiveAccess(p.typ) && !(registered && sharedType(p.typ))
	case resvWrite:
		return !(registered && sharedType(p.typ))
	case resvModeSelect:
		return !registered
	case resvModeSense:
		return !registered && exclusiveAccess(p.typ)
	}
	return false
}
