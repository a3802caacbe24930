package scsi

import (
	"encoding/binary"
	"fmt"
)

// Persistent reservations (SPC-4 5.12, 6.13, 6.14). State lives in memory:
// APTPL is not supported (PTPL_C=0), so registrations and the reservation
// survive everything but a power cycle (cold target reset), as SPC-4
// 5.12.3 requires of them when APTPL is clear.

// Persistent reservation types (SPC-4 6.13.3.4, table 168).
const (
	prWriteExclusive     = 0x1
	prExclusiveAccess    = 0x3
	prWriteExclusiveRO   = 0x5
	prExclusiveAccessRO  = 0x6
	prWriteExclusiveAR   = 0x7
	prExclusiveAccessAR  = 0x8
	prScopeLU            = 0x0
	prInReadKeys         = 0x0
	prInReadReservation  = 0x1
	prInReportCaps       = 0x2
	prInReadFullStatus   = 0x3
	prOutRegister        = 0x0
	prOutReserve         = 0x1
	prOutRelease         = 0x2
	prOutClear           = 0x3
	prOutPreempt         = 0x4
	prOutPreemptAbort    = 0x5
	prOutRegisterIgnore  = 0x6
	prOutParamListLength = 24
)

func validPRType(t byte) bool {
	switch t {
	case prWriteExclusive, prExclusiveAccess, prWriteExclusiveRO, prExclusiveAccessRO,
		prWriteExclusiveAR, prExclusiveAccessAR:
		return true
	}
	return false
}

// allRegistrants: every registrant is a holder.
func allRegistrants(t byte) bool { return t == prWriteExclusiveAR || t == prExclusiveAccessAR }

// sharedType: registrants have access (registrants-only or all-registrants).
func sharedType(t byte) bool {
	return t == prWriteExclusiveRO || t == prExclusiveAccessRO || allRegistrants(t)
}

// exclusiveAccess: reads conflict too.
func exclusiveAccess(t byte) bool {
	return t == prExclusiveAccess || t == prExclusiveAccessRO || t == prExclusiveAccessAR
}

type prReg struct {
	n   Nexus
	key uint64
}

// prState is guarded by LogicalUnit.mu.
type prState struct {
	gen    uint32  // PRGENERATION
	regs   []prReg // in registration order
	has    bool    // a persistent reservation exists
	typ    byte
	holder Nexus // the holder, unless allRegistrants(typ)
}

func (p *prState) find(n Nexus) int {
	for i := range p.regs {
		if p.regs[i].n == n {
			return i
		}
	}
	return -1
}

func (p *prState) isHolder(n Nexus) bool {
	if !p.has {
		return false
	}
	if allRegistrants(p.typ) {
		return p.find(n) >= 0
	}
	return p.holder == n
}

// resKey is the RESERVATION KEY of the reservation: the holder's key, or
// zero for all-registrants types (SPC-4 6.13.3.2).
func (p *prState) resKey() uint64 {
	if allRegistrants(p.typ) {
		return 0
	}
	if i := p.find(p.holder); i >= 0 {
		return p.regs[i].key
	}
	return 0
}

// removeLocked removes registration i with the effects of SPC-4 5.12.8 and
// 5.12.10: the holder's reservation goes with it (for all-registrants
// types, with the last registrant), and registrants-only reservations
// released that way tell the other registrants.
func (lu *LogicalUnit) removeRegLocked(i int) {
	p := &lu.pr
	gone := p.regs[i].n
	p.regs = append(p.regs[:i], p.regs[i+1:]...)
	switch {
	case !p.has:
	case allRegistrants(p.typ):
		if len(p.regs) == 0 {
			p.has = false
		}
	case p.holder == gone:
		p.has = false
		if sharedType(p.typ) {
			for _, r := range p.regs {
				lu.uaTo(r.n, ascReservationsReleased)
			}
		}
	}
	lu.updateResvLocked()
}

// prIn is PERSISTENT RESERVE IN (SPC-4 6.13).
func (lu *LogicalUnit) prIn(c *Command, r *Result) error {
	alloc := int(be16(c.CDB[7:]))
	lu.mu.Lock()
	data := lu.prInDataLocked(c.CDB[1] & 0x1f)
	lu.mu.Unlock()
	putAllocated(c, r, data, alloc)
	return nil
}

func (lu *LogicalUnit) prInDataLocked(sa byte) []byte {
	p := &lu.pr
	b := binary.BigEndian.AppendUint32(nil, p.gen)
	switch sa {
	case prInReadKeys:
		b = binary.BigEndian.AppendUint32(b, uint32(8*len(p.regs)))
		for _, r := range p.regs {
			b = binary.BigEndian.AppendUint64(b, r.key)
		}
	case prInReadReservation:
		if !p.has {
			return binary.BigEndian.AppendUint32(b, 0)
		}
		b = binary.BigEndian.AppendUint32(b, 16)
		b = binary.BigEndian.AppendUint64(b, p.resKey())
		b = append(b, 0, 0, 0, 0, 0, prScopeLU<<4|p.typ, 0, 0)
	case prInReportCaps:
		// CRH: RESERVE/RELEASE follow SPC-4 5.9.3. TMV with the six
		// types; ALLOW COMMANDS 011b: TEST UNIT READY and PERSISTENT
		// RESERVE IN pass Write Exclusive and Exclusive Access. No
		// SPEC_I_PT, ALL_TG_PT or APTPL.
		return []byte{0, 8, 0x10, 0x80 | 3<<4, 0xea, 0x01, 0, 0}
	case prInReadFullStatus:
		var list []byte
		for _, r := range p.regs {
			var d [24]byte
			binary.BigEndian.PutUint64(d[0:], r.key)
			if p.isHolder(r.n) {
				d[12] = 0x01 // R_HOLDER
				d[13] = prScopeLU<<4 | p.typ
			}
			binary.BigEndian.PutUint16(d[18:], r.n.RelTargetPort)
			tid := transportID(r.n)
			binary.BigEndian.PutUint32(d[20:], uint32(len(tid)))
			list = append(append(list, d[:]...), tid...)
		}
		b = binary.BigEndian.AppendUint32(b, uint32(len(list)))
		b = append(b, list...)
	}
	return b
}

// transportID is the iSCSI TransportID of an initiator port (SPC-4
// 7.6.4.6, format 01b): "<name>,i,0x<ISID>" NUL-terminated, padded to a
// multiple of four.
func transportID(n Nexus) []byte {
	name := fmt.Sprintf("%s,i,0x%012x", n.InitiatorName, n.ISID&0xffffffffffff)
	l := (len(name) + 1 + 3) &^ 3
	b := make([]byte, 4+l)
	b[0] = 0x40 | 0x05 // FORMAT CODE 01b, PROTOCOL IDENTIFIER iSCSI
	binary.BigEndian.PutUint16(b[2:], uint16(l))
	copy(b[4:], name)
	return b
}

// prOut is PERSISTENT RESERVE OUT (SPC-4 6.14) with the basic parameter
// list; REGISTER AND MOVE and REPLACE LOST RESERVATION are not supported.
func (lu *LogicalUnit) prOut(c *Command, r *Result) error {
	cdb := c.CDB
	sa, scope, typ := cdb[1]&0x1f, cdb[2]>>4, cdb[2]&0x0f
	plen := be32(cdb[5:])
	r.Wanted = int(plen)
	switch sa {
	case prOutReserve, prOutRelease, prOutPreempt, prOutPreemptAbort:
		if scope != prScopeLU {
			return invalidCDB(2, 7)
		}
		if !validPRType(typ) {
			return invalidCDB(2, 3)
		}
	}
	if plen != prOutParamListLength || len(c.DataOut) < prOutParamListLength {
		return paramListLengthError()
	}
	param := c.DataOut[:prOutParamListLength]
	rk, sark, flags := be64(param), be64(param[8:]), param[20]
	register := sa == prOutRegister || sa == prOutRegisterIgnore
	switch {
	case flags&^0x0d != 0:
		return invalidParam(20, highestBit(flags&^0x0d))
	case flags&0x08 != 0: // SPEC_I_PT: SIP_C=0
		return invalidParam(20, 3)
	case register && flags&0x04 != 0: // ALL_TG_PT: ATP_C=0
		return invalidParam(20, 2)
	case register && flags&0x01 != 0: // APTPL: PTPL_C=0
		return invalidParam(20, 0)
	}
	n := c.Nexus
	lu.mu.Lock()
	// A RESERVE(6/10) of another I_T nexus blocks persistent
	// reservation changes (SPC-2 5.5.1).
	if lu.spc2 != nil && *lu.spc2 != n {
		lu.mu.Unlock()
		return errConflict
	}
	victims, err := lu.prOutLocked(n, sa, typ, rk, sark)
	lu.mu.Unlock()
	if err == nil && sa == prOutPreemptAbort && len(victims) > 0 {
		if t := lu.target.Load(); t != nil && t.abortTasksFunc() != nil {
			t.abortTasksFunc()(lu.lun.Load(), victims)
		}
	}
	return err
}

func (lu *LogicalUnit) prOutLocked(n Nexus, sa, typ byte, rk, sark uint64) ([]Nexus, error) {
	p := &lu.pr
	i := p.find(n)
	switch sa {
	case prOutRegister, prOutRegisterIgnore:
		if i < 0 {
			if sa == prOutRegister && rk != 0 {
				return nil, errConflict
			}
			if sark != 0 {
				p.regs = append(p.regs, prReg{n: n, key: sark})
				p.gen++
			}
			return nil, nil
		}
		if sa == prOutRegister && rk != p.regs[i].key {
			return nil, errConflict
		}
		if sark == 0 {
			lu.removeRegLocked(i)
		} else {
			p.regs[i].key = sark
		}
		p.gen++
		return nil, nil
	}
	// Every other service action needs the caller registered with the
	// key it gives (SPC-4 5.12.9-5.12.11).
	if i < 0 || p.regs[i].key != rk {
		return nil, errConflict
	}
	switch sa {
	case prOutReserve:
		if p.has {
			if p.isHolder(n) && p.typ == typ {
				return nil, nil
			}
			return nil, errConflict
		}
		p.has, p.typ, p.holder = true, typ, n
		lu.updateResvLocked()
		return nil, nil
	case prOutRelease:
		if !p.has || !p.isHolder(n) {
			return nil, nil
		}
		if p.typ != typ {
			return nil, senseErr(SenseIllegalRequest, ascInvalidReleaseOfPR)
		}
		old := p.typ
		p.has = false
		lu.updateResvLocked()
		if sharedType(old) {
			for _, r := range p.regs {
				if r.n != n {
					lu.uaTo(r.n, ascReservationsReleased)
				}
			}
		}
		return nil, nil
	case prOutClear:
		for _, r := range p.regs {
			if r.n != n {
				lu.uaTo(r.n, ascReservationsPreempted)
			}
		}
		p.regs, p.has = nil, false
		p.gen++
		lu.updateResvLocked()
		return nil, nil
	}
	return lu.preemptLocked(n, typ, sark)
}

// preemptLocked is PREEMPT (and the state part of PREEMPT AND ABORT),
// SPC-4 5.12.11.2. It returns the I_T nexuses whose registrations went.
func (lu *LogicalUnit) preemptLocked(n Nexus, typ byte, sark uint64) ([]Nexus, error) {
	p := &lu.pr
	// removeKey drops every registration with key sark but the caller's.
	removeKey := func(all bool) []Nexus {
		var gone []Nexus
		kept := p.regs[:0]
		for _, r := range p.regs {
			if r.n != n && (all || r.key == sark) {
				gone = append(gone, r.n)
				continue
			}
			kept = append(kept, r)
		}
		p.regs = kept
		for _, v := range gone {
			lu.uaTo(v, ascRegistrationsPreempted)
		}
		return gone
	}
	var gone []Nexus
	switch {
	case !p.has || (allRegistrants(p.typ) && sark != 0) ||
		(!allRegistrants(p.typ) && sark != p.resKey()):
		// Only registrations are preempted (5.12.11.2.2/.3).
		if sark == 0 {
			return nil, invalidParam(8, -1)
		}
		if gone = removeKey(false); len(gone) == 0 {
			return nil, errConflict
		}
		if p.has && allRegistrants(p.typ) && len(p.regs) == 0 {
			p.has = false
		}
	default:
		// The reservation is preempted: the holder's registrations go
		// (all other registrations for all-registrants types), and the
		// caller holds a reservation of the new type (5.12.11.2.4).
		old := p.typ
		gone = removeKey(allRegistrants(p.typ))
		p.has, p.typ, p.holder = true, typ, n
		if old != typ {
			for _, r := range p.regs {
				if r.n != n {
					lu.uaTo(r.n, ascReservationsReleased)
				}
			}
		}
	}
	p.gen++
	lu.updateResvLocked()
	return gone, nil
}
