package iscsi

// Seeds of FuzzSession: the sessions real initiators run (iPXE's boot,
// open-iscsi's login and I/O, libiscsi with digests and mutual CHAP, a
// SendTargets discovery), and the corners the target must survive (CmdSN
// gaps, task management, reinstatement, idle timeouts, memory pressure).
// They are written with fzSeed so they stay readable and follow the
// decoder if it changes.

// fzSeed builds a FuzzSession input.
type fzSeed struct{ b []byte }

func newFzSeed(flags, shape byte) *fzSeed { return &fzSeed{b: []byte{flags, shape}} }

func (s *fzSeed) op(op byte, params ...byte) *fzSeed {
	s.b = append(append(s.b, op), params...)
	return s
}

func (s *fzSeed) login(opFlags, style byte) *fzSeed { return s.op(fzOpLogin|opFlags, style) }

func fzCDB(name string) byte {
	for i, e := range fzCDBs {
		if e.name == name {
			return byte(i)
		}
	}
	panic("no CDB " + name)
}

// cmd adds a SCSI command: flags and the CmdSN and ITT/LUN selectors as
// fzClient.command reads them.
func (s *fzSeed) cmd(opFlags byte, name string, lba uint16, n, flags, sn, itt byte) *fzSeed {
	return s.op(fzOpCommand|opFlags, fzCDB(name), byte(lba>>8), byte(lba), n, flags, sn, itt)
}

func (s *fzSeed) tur() *fzSeed { return s.cmd(0, "TEST UNIT READY", 0, 0, 0, 0, 0) }

// craftedLogin adds one Login Request: flags as craftedLogin reads them,
// and the keys by fzLoginKeys index with their value selectors.
func (s *fzSeed) craftedLogin(opFlags, flags byte, keys ...[2]int) *fzSeed {
	var mask uint16
	sel := map[int]byte{}
	for _, k := range keys {
		mask |= 1 << k[0]
		sel[k[0]] = byte(k[1])
	}
	s.op(fzOpLoginPDU|opFlags, flags, byte(mask>>8), byte(mask))
	for i := range fzLoginKeys {
		if mask&(1<<i) != 0 {
			s.b = append(s.b, sel[i])
		}
	}
	return s
}

func fzSeeds() [][]byte {
	const (
		c2   = fzClient2
		pipe = fzPipeline
		alt  = fzAlt
		// Login styles.
		ipxe, openISCSI, libISCSI, discovery = 0, 1, 2, 3
		mutual                               = 8
		init2                                = 1 << 4
		wrapSN                               = 3 << 4
		// Limits (second byte).
		small, medium, strict = 1 << 2, 2 << 2, 3 << 2
		qd1, qd2              = 1, 2
	)
	var seeds []*fzSeed

	// iPXE: login without CHAP, the probe commands of sanboot, reads of
	// the boot sector, one write (all by R2T: InitialR2T=Yes and no
	// immediate data), logout.
	seeds = append(seeds, newFzSeed(0, 0).login(0, ipxe).tur().tur().
		cmd(0, "INQUIRY", 0, 0, 0, 0, 0).cmd(0, "READ CAPACITY(10)", 0, 0, 0, 0, 0).
		cmd(0, "READ(10)", 0, 1, 0, 0, 0).cmd(0, "READ(10)", 1, 64, 0, 0, 0).
		cmd(0, "WRITE(10)", 100, 8, 0, 0, 0).op(fzOpFinishData, 0xff).
		cmd(0, "READ(10)", 100, 8, 0, 0, 0).op(fzOpLogout, 0, 0, 0))

	// open-iscsi with mutual CHAP, medium limits: immediate data,
	// unsolicited Data-Out and R2T in one write; FUA, SYNCHRONIZE CACHE,
	// a NOP-Out ping, SendTargets in a normal session, logout.
	seeds = append(seeds, newFzSeed(3, medium).login(0, openISCSI|mutual).tur().
		cmd(0, "REPORT LUNS", 0, 0, 0, 0, 0).cmd(0, "READ CAPACITY(16)", 0, 0, 0, 0, 0).
		cmd(0, "WRITE(16) FUA", 8, 100, 0, 0, 0).op(fzOpDataOut, 0, 0, 0).op(fzOpFinishData, 0xff).
		cmd(0, "READ(16) FUA", 8, 100, 0, 0, 0).cmd(0, "SYNCHRONIZE CACHE(10)", 0, 0, 0, 0, 0).
		op(fzOpNOP, 1, 0, 0).op(fzOpText, 1, 0).op(fzOpLogout, 0, 0, 0))

	// libiscsi with digests and CHAP, small limits, queue depth 2: two
	// writes queued at once, Data-Out by hand, ABORT TASK of one, LUN
	// RESET, a read back, logout.
	seeds = append(seeds, newFzSeed(1, small|qd2).login(0, libISCSI).tur().
		cmd(pipe, "WRITE(10)", 0, 16, 0, 0, 0).cmd(0, "WRITE(10)", 16, 16, 0, 0, 0).
		op(fzOpDataOut, 0, 0, 0).op(fzOpDataOut, 1, 1, 1).op(fzOpDataOut, 0, 0, 0).
		op(fzOpTaskMgmt, 0, 0, 0, 0).op(fzOpFinishData, 0xff).
		op(fzOpTaskMgmt, 5, 3, 0, 0).tur().cmd(0, "READ(10)", 0, 32, 0, 0, 0).op(fzOpLogout, 0, 0, 0))

	// Data-Out the target must refuse (RFC 7143 11.7): offset, DataSN,
	// length past the burst, an unknown TTT, an unknown ITT, a chunk
	// again, an empty one; each write then fails with CHECK CONDITION or
	// goes on, and none may be left waiting.
	s := newFzSeed(0, small).login(0, ipxe).tur()
	for mode := byte(4); mode <= 10; mode++ {
		s.cmd(0, "WRITE(10)", uint16(mode)*8, 8, 0, 0, 0).op(fzOpDataOut, 0, mode, 1).op(fzOpDataOut, 0, 0, 0)
	}
	seeds = append(seeds, s.op(fzOpFinishData, 0xff).op(fzOpLogout, 0, 0, 0))

	// Discovery with two targets: SendTargets=All and by name, a
	// renegotiated MaxRecvDataSegmentLength, logout not immediate.
	seeds = append(seeds, newFzSeed(0x20, 0).login(0, discovery).op(fzOpText, 0, 0).op(fzOpText, 3, 0).
		op(fzOpText, 4, 0).op(fzOpText, 0, 0).op(fzOpText, 7, 0).op(fzOpNOP, 0, 0, 0).cmd(0, "TEST UNIT READY", 0, 0, 0, 0, 0).
		op(fzOpTaskMgmt, 5, 3, 0, 0).op(fzOpLogout|alt, 0, 0, 0))

	// Session reinstatement: the same initiator and ISID log in on a
	// second connection while the first has a write waiting for data.
	seeds = append(seeds, newFzSeed(0x40, 0).login(0, openISCSI).tur().
		cmd(0, "WRITE(10)", 0, 128, 4, 0, 0).login(c2, openISCSI).
		op(fzOpCommand|c2, fzCDB("WRITE(10)"), 0, 0, 8, 0, 0, 0x20).op(fzOpFinishData|c2, 0xff).
		op(fzOpCommand|c2, fzCDB("READ(10)"), 0, 0, 8, 0, 0, 0x20).op(fzOpTaskMgmt|c2, 6, 3, 0, 0))

	// Two hosts on one target, the LUN reset of one aborting the other's
	// write; then a cold reset.
	seeds = append(seeds, newFzSeed(0, 0).login(0, openISCSI).tur().login(c2, openISCSI|init2).
		op(fzOpCommand|c2, fzCDB("TEST UNIT READY"), 0, 0, 0, 0, 0, 0).
		cmd(0, "WRITE(10)", 200, 128, 4, 0, 0).op(fzOpTaskMgmt|c2, 5, 3, 0, 0).
		op(fzOpFinishData, 0xff).cmd(0, "READ(10)", 200, 4, 0, 0, 0).op(fzOpTaskMgmt, 7, 3, 0, 0))

	// CmdSN gaps: a command ahead of ExpCmdSN waits until the gap fills;
	// duplicates and commands far outside the window are dropped; the
	// CmdSN wraps.
	seeds = append(seeds, newFzSeed(0, qd2).login(0, openISCSI|wrapSN).tur().
		cmd(pipe, "WRITE(10)", 300, 4, 0, 5, 0).cmd(pipe, "READ(10)", 300, 4, 0, 4, 0).
		cmd(0, "READ(10)", 0, 1, 0, 7, 0).cmd(0, "READ(10)", 300, 4, 0, 6, 0).
		op(fzOpNOP|alt, 1, 0, 0).cmd(alt, "INQUIRY", 0, 0, 0, 0, 0).op(fzOpLogout, 0, 0, 0))

	// ABORT TASK of a CmdSN not yet received (RFC 7143 11.5.1 b): the
	// command that arrives with it later is dropped, and must not stay in
	// the task table.
	seeds = append(seeds, newFzSeed(0, 0).login(0, openISCSI).tur().
		cmd(0, "WRITE(10)", 400, 4, 0, 5, 0).op(fzOpTaskMgmt, 0, 3, 2, 0).
		cmd(0, "READ(10)", 400, 4, 0, 6, 0).op(fzOpLogout, 0, 0, 0))

	// A Logout waiting behind a CmdSN gap runs when the gap fills: the
	// connection must still close after its response.
	seeds = append(seeds, newFzSeed(0, 0).login(0, openISCSI).tur().
		op(fzOpLogout|alt, 0, 0, 5).op(fzOpNOP|alt, 1, 6, 0))

	// NOP-In pings: answered once, then not, until the target hangs up;
	// meanwhile a login that never finishes times out.
	seeds = append(seeds, newFzSeed(8, 0).login(0, ipxe).tur().op(fzOpSleep, 2).op(fzOpAnswerPing).
		op(fzOpSleep, 2).craftedLogin(c2, 0x01, [2]int{0, 0}, [2]int{1, 0}).op(fzOpSleep, 4).op(fzOpSleep, 3))

	// Memory pressure: small budgets, two sessions with writes that wait
	// for data, a read that gets TASK SET FULL, then the data.
	seeds = append(seeds, newFzSeed(0x10, strict).login(0, openISCSI).tur().login(c2, openISCSI|init2).
		op(fzOpCommand|c2, fzCDB("TEST UNIT READY"), 0, 0, 0, 0, 0, 0).
		cmd(0, "WRITE(10)", 0, 128, 0, 0, 0).op(fzOpCommand|c2, fzCDB("WRITE(10)"), 1, 0, 128, 0, 0, 0).
		cmd(0, "READ(10)", 0, 1, 0, 0, 0).op(fzOpFinishData|c2, 0xff).op(fzOpFinishData, 0xff).
		cmd(0, "READ(10)", 0, 1, 0, 0, 0))

	// A login built PDU by PDU: CHAP by hand (mutual), digests, then I/O
	// with a corrupted data digest.
	seeds = append(seeds, newFzSeed(3, 0).
		craftedLogin(0, 0x10, [2]int{0, 0}, [2]int{1, 0}, [2]int{2, 0}, [2]int{3, 2}).
		craftedLogin(0, 0x10, [2]int{4, 0}).
		craftedLogin(0, 0x11, [2]int{5, 0}, [2]int{6, 0}, [2]int{7, 0}).
		craftedLogin(0, 0x35, [2]int{8, 1}, [2]int{9, 1}, [2]int{10, 1}).
		tur().op(fzOpNOP|pipe, 1, 0, 0).op(fzOpCorrupt).tur())

	// Broken PDUs after login: SNACK, an unknown opcode, a Login Request,
	// an R2T from the initiator, an oversized NOP-Out.
	raw := func(s *fzSeed, opcode byte) *fzSeed {
		s.op(fzOpRaw|alt, opcode, 4)
		s.b = append(s.b, make([]byte, 43)...)
		s.b[len(s.b)-40+8] = 0x77 // ITT
		s.b = append(s.b, 1, 2, 3, 4)
		return s
	}
	s = newFzSeed(0, medium).login(0, libISCSI).tur()
	for _, op := range []byte{0x10, 0x1c, 0x43, 0x31, 0x05} {
		raw(s, op)
	}
	seeds = append(seeds, s.op(fzOpNOP, 3, 0, 0))

	out := make([][]byte, len(seeds))
	for i, s := range seeds {
		out[i] = s.b
	}
	return out
}
