package scsi

// The command table. It drives dispatch, CDB validation (a bit not set in
// a command's usage data must be zero, SPC-4 6.35.3), reservation
// conflict checks and REPORT SUPPORTED OPERATION CODES, so what the LU
// claims and what it does cannot drift apart.

// Operation codes (SPC-4 annex D, SBC-3 table 15).
const (
	opTestUnitReady     = 0x00
	opRequestSense      = 0x03
	opRead6             = 0x08
	opWrite6            = 0x0a
	opInquiry           = 0x12
	opModeSelect6       = 0x15
	opReserve6          = 0x16
	opRelease6          = 0x17
	opModeSense6        = 0x1a
	opStartStopUnit     = 0x1b
	opPreventAllow      = 0x1e
	opReadCapacity10    = 0x25
	opReadDefectData10  = 0x37
	opRead10            = 0x28
	opWrite10           = 0x2a
	opWriteVerify10     = 0x2e
	opVerify10          = 0x2f
	opPrefetch10        = 0x34
	opSyncCache10       = 0x35
	opWriteSame10       = 0x41
	opUnmap             = 0x42
	opModeSelect10      = 0x55
	opReserve10         = 0x56
	opRelease10         = 0x57
	opModeSense10       = 0x5a
	opPRIn              = 0x5e
	opPROut             = 0x5f
	opExtendedCopy      = 0x83
	opReceiveCopy       = 0x84
	opRead16            = 0x88
	opCompareAndWrite   = 0x89
	opWrite16           = 0x8a
	opOrWrite16         = 0x8b
	opWriteVerify16     = 0x8e
	opVerify16          = 0x8f
	opPrefetch16        = 0x90
	opSyncCache16       = 0x91
	opWriteSame16       = 0x93
	opWriteAtomic16     = 0x9c
	opServiceActionIn16 = 0x9e
	opReportLUNs        = 0xa0
	opMaintenanceIn     = 0xa3
	opRead12            = 0xa8
	opWrite12           = 0xaa
	opWriteVerify12     = 0xae
	opVerify12          = 0xaf
	opReadDefectData12  = 0xb7
)

// Service actions.
const (
	saReadCapacity16 = 0x10 // SERVICE ACTION IN(16)
	saGetLBAStatus   = 0x12 // SERVICE ACTION IN(16)
	saReportTPG      = 0x0a // MAINTENANCE IN
	saReportOpcodes  = 0x0c // MAINTENANCE IN
	saReportTMFs     = 0x0d // MAINTENANCE IN
	saXCopyLID1      = 0x00 // EXTENDED COPY
	saCopyStatus     = 0x00 // RECEIVE COPY RESULTS: COPY STATUS(LID1)
	saCopyOpParams   = 0x03 // RECEIVE COPY RESULTS: OPERATING PARAMETERS
	saCopyFailedSeg  = 0x04 // RECEIVE COPY RESULTS: FAILED SEGMENT DETAILS(LID1)
)

// handler selects the code that carries a command out. Dispatch is a
// switch on it rather than a function value so the compiler can keep a
// Command on the caller's stack.
type handler uint8

const (
	hTestUnitReady handler = iota + 1
	hRequestSense
	hRead
	hWrite
	hInquiry
	hModeSelect
	hReserve
	hRelease
	hModeSense
	hStartStop
	hPreventAllow
	hReadCapacity10
	hReadCapacity16
	hVerify
	hWriteVerify
	hSyncCache
	hPrefetch
	hWriteSame
	hUnmap
	hPRIn
	hPROut
	hCompareAndWrite
	hGetLBAStatus
	hReportLUNs
	hReportTPG
	hReportOpcodes
	hReportTMFs
	hOrWrite
	hReadDefectData
	hExtendedCopy
	hReceiveCopy
	hWriteAtomic
)

// Command flags.
const (
	fMedium uint8 = 1 << iota // needs the medium ready: NOT READY while stopped
	fWrite                    // modifies the medium: write protection applies
	fNoUA                     // neither reports nor clears unit attentions (SAM-5 5.14)
	fSPC2OK                   // allowed through another I_T nexus's RESERVE(6/10)
)

// resvClass says how a command fares against a persistent reservation held
// by another I_T nexus (SPC-4 5.12.1 table 48, SBC-3 4.17 table 13).
type resvClass uint8

const (
	resvAllowed    resvClass = iota // allowed whatever the type
	resvRead                        // conflicts with Exclusive Access types
	resvWrite                       // conflicts with every type
	resvModeSelect                  // conflicts unless registered
	resvModeSense                   // read class, but registrants are allowed
	resvSelf                        // the command checks reservations itself
	resvStart                       // START STOP UNIT: write class unless START=1
	resvPrevent                     // PREVENT ALLOW: write class if PREVENT
)

// opcode describes one supported command (one service action).
type opcode struct {
	op    byte
	sa    byte
	hasSA bool // the service action is in CDB byte 1, bits 4-0
	name  string
	// usage is the CDB USAGE DATA (SPC-4 6.35.3): the operation code,
	// the service action where there is one, and a one for every other
	// CDB bit the device server looks at. Its length is the CDB length.
	usage []byte
	// removableUsage, when set, replaces usage on a removable LU (which
	// evaluates more bits of the CDB).
	removableUsage []byte
	flags          uint8
	resv           resvClass
	timeout        uint32 // recommended command timeout, seconds
	h              handler
	// avail reports whether this LU supports the command; nil: always.
	avail func(*LogicalUnit) bool
}

func canUnmap(lu *LogicalUnit) bool     { return lu.unmapper != nil }
func canMapStatus(lu *LogicalUnit) bool { return lu.alloc != nil }
func canPrefetch(lu *LogicalUnit) bool  { return lu.prefetcher != nil }

// Usage bytes shared by the block commands: byte 1 of READ/WRITE is
// DPO, FUA and FUA_NV (RDPROTECT/WRPROTECT are not supported: no
// protection information); VERIFY takes DPO and BYTCHK; WRITE AND VERIFY
// DPO and BYTCHK.
const (
	rwFlags     = 0x1a
	verifyFlags = 0x16
	wvFlags     = 0x12
	groupMask   = 0x1f
)

var opcodeTable = []opcode{
	{op: opTestUnitReady, name: "TEST UNIT READY", h: hTestUnitReady, timeout: 10,
		usage: []byte{0x00, 0, 0, 0, 0, 0}, flags: fMedium},
	{op: opRequestSense, name: "REQUEST SENSE", h: hRequestSense, timeout: 10,
		usage: []byte{0x03, 0x01, 0, 0, 0xff, 0}, flags: fNoUA | fSPC2OK},
	{op: opRead6, name: "READ(6)", h: hRead, timeout: 30, resv: resvRead,
		usage: []byte{0x08, 0x1f, 0xff, 0xff, 0xff, 0}, flags: fMedium},
	{op: opWrite6, name: "WRITE(6)", h: hWrite, timeout: 30, resv: resvWrite,
		usage: []byte{0x0a, 0x1f, 0xff, 0xff, 0xff, 0}, flags: fMedium | fWrite},
	{op: opInquiry, name: "INQUIRY", h: hInquiry, timeout: 10,
		usage: []byte{0x12, 0x01, 0xff, 0xff, 0xff, 0}, flags: fNoUA | fSPC2OK},
	{op: opModeSelect6, name: "MODE SELECT(6)", h: hModeSelect, timeout: 10, resv: resvModeSelect,
		usage: []byte{0x15, 0x11, 0, 0, 0xff, 0}},
	{op: opReserve6, name: "RESERVE(6)", h: hReserve, timeout: 10, resv: resvSelf,
		usage: []byte{0x16, 0, 0, 0, 0, 0}},
	{op: opRelease6, name: "RELEASE(6)", h: hRelease, timeout: 10, resv: resvSelf,
		usage: []byte{0x17, 0, 0, 0, 0, 0}, flags: fSPC2OK},
	{op: opModeSense6, name: "MODE SENSE(6)", h: hModeSense, timeout: 10, resv: resvModeSense,
		usage: []byte{0x1a, 0x08, 0xff, 0xff, 0xff, 0}},
	// LOEJ (byte 4 bit 1) only on a removable medium.
	{op: opStartStopUnit, name: "START STOP UNIT", h: hStartStop, timeout: 60, resv: resvStart,
		usage: []byte{0x1b, 0x01, 0, 0, 0x05, 0}, removableUsage: []byte{0x1b, 0x01, 0, 0, 0x07, 0}},
	{op: opPreventAllow, name: "PREVENT ALLOW MEDIUM REMOVAL", h: hPreventAllow, timeout: 10,
		resv: resvPrevent, usage: []byte{0x1e, 0, 0, 0, 0x03, 0}},
	{op: opReadCapacity10, name: "READ CAPACITY(10)", h: hReadCapacity10, timeout: 10,
		usage: []byte{0x25, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0x01, 0}, flags: fMedium},
	{op: opReadDefectData10, name: "READ DEFECT DATA(10)", h: hReadDefectData, timeout: 10, resv: resvRead,
		flags: fMedium, usage: []byte{0x37, 0, 0x1f, 0, 0, 0, 0, 0xff, 0xff, 0}},
	{op: opRead10, name: "READ(10)", h: hRead, timeout: 30, resv: resvRead, flags: fMedium,
		usage: []byte{0x28, rwFlags, 0xff, 0xff, 0xff, 0xff, groupMask, 0xff, 0xff, 0}},
	{op: opWrite10, name: "WRITE(10)", h: hWrite, timeout: 30, resv: resvWrite, flags: fMedium | fWrite,
		usage: []byte{0x2a, rwFlags, 0xff, 0xff, 0xff, 0xff, groupMask, 0xff, 0xff, 0}},
	{op: opWriteVerify10, name: "WRITE AND VERIFY(10)", h: hWriteVerify, timeout: 60, resv: resvWrite,
		flags: fMedium | fWrite,
		usage: []byte{0x2e, wvFlags, 0xff, 0xff, 0xff, 0xff, groupMask, 0xff, 0xff, 0}},
	{op: opVerify10, name: "VERIFY(10)", h: hVerify, timeout: 60, resv: resvRead, flags: fMedium,
		usage: []byte{0x2f, verifyFlags, 0xff, 0xff, 0xff, 0xff, groupMask, 0xff, 0xff, 0}},
	{op: opPrefetch10, name: "PRE-FETCH(10)", h: hPrefetch, timeout: 30, resv: resvRead, flags: fMedium,
		usage: []byte{0x34, 0x02, 0xff, 0xff, 0xff, 0xff, groupMask, 0xff, 0xff, 0}, avail: canPrefetch},
	{op: opSyncCache10, name: "SYNCHRONIZE CACHE(10)", h: hSyncCache, timeout: 60, resv: resvWrite,
		flags: fMedium, usage: []byte{0x35, 0x06, 0xff, 0xff, 0xff, 0xff, groupMask, 0xff, 0xff, 0}},
	{op: opWriteSame10, name: "WRITE SAME(10)", h: hWriteSame, timeout: 120, resv: resvWrite,
		flags: fMedium | fWrite,
		usage: []byte{0x41, 0x18, 0xff, 0xff, 0xff, 0xff, groupMask, 0xff, 0xff, 0}},
	{op: opUnmap, name: "UNMAP", h: hUnmap, timeout: 60, resv: resvWrite, flags: fMedium | fWrite,
		usage: []byte{0x42, 0x01, 0, 0, 0, 0, groupMask, 0xff, 0xff, 0}, avail: canUnmap},
	{op: opModeSelect10, name: "MODE SELECT(10)", h: hModeSelect, timeout: 10, resv: resvModeSelect,
		usage: []byte{0x55, 0x11, 0, 0, 0, 0, 0, 0xff, 0xff, 0}},
	{op: opReserve10, name: "RESERVE(10)", h: hReserve, timeout: 10, resv: resvSelf,
		usage: []byte{0x56, 0, 0, 0, 0, 0, 0, 0, 0, 0}},
	{op: opRelease10, name: "RELEASE(10)", h: hRelease, timeout: 10, resv: resvSelf, flags: fSPC2OK,
		usage: []byte{0x57, 0, 0, 0, 0, 0, 0, 0, 0, 0}},
	{op: opModeSense10, name: "MODE SENSE(10)", h: hModeSense, timeout: 10, resv: resvModeSense,
		usage: []byte{0x5a, 0x18, 0xff, 0xff, 0, 0, 0, 0xff, 0xff, 0}},
	{op: opPRIn, sa: 0x00, hasSA: true, name: "PERSISTENT RESERVE IN (READ KEYS)", h: hPRIn, timeout: 10,
		usage: []byte{0x5e, 0x00, 0, 0, 0, 0, 0, 0xff, 0xff, 0}},
	{op: opPRIn, sa: 0x01, hasSA: true, name: "PERSISTENT RESERVE IN (READ RESERVATION)", h: hPRIn, timeout: 10,
		usage: []byte{0x5e, 0x01, 0, 0, 0, 0, 0, 0xff, 0xff, 0}},
	{op: opPRIn, sa: 0x02, hasSA: true, name: "PERSISTENT RESERVE IN (REPORT CAPABILITIES)", h: hPRIn, timeout: 10,
		usage: []byte{0x5e, 0x02, 0, 0, 0, 0, 0, 0xff, 0xff, 0}},
	{op: opPRIn, sa: 0x03, hasSA: true, name: "PERSISTENT RESERVE IN (READ FULL STATUS)", h: hPRIn, timeout: 10,
		usage: []byte{0x5e, 0x03, 0, 0, 0, 0, 0, 0xff, 0xff, 0}},
	{op: opPROut, sa: 0x00, hasSA: true, name: "PERSISTENT RESERVE OUT (REGISTER)", h: hPROut, timeout: 10,
		resv: resvSelf, usage: []byte{0x5f, 0x00, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0}},
	{op: opPROut, sa: 0x01, hasSA: true, name: "PERSISTENT RESERVE OUT (RESERVE)", h: hPROut, timeout: 10,
		resv: resvSelf, usage: []byte{0x5f, 0x01, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0}},
	{op: opPROut, sa: 0x02, hasSA: true, name: "PERSISTENT RESERVE OUT (RELEASE)", h: hPROut, timeout: 10,
		resv: resvSelf, usage: []byte{0x5f, 0x02, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0}},
	{op: opPROut, sa: 0x03, hasSA: true, name: "PERSISTENT RESERVE OUT (CLEAR)", h: hPROut, timeout: 10,
		resv: resvSelf, usage: []byte{0x5f, 0x03, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0}},
	{op: opPROut, sa: 0x04, hasSA: true, name: "PERSISTENT RESERVE OUT (PREEMPT)", h: hPROut, timeout: 10,
		resv: resvSelf, usage: []byte{0x5f, 0x04, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0}},
	{op: opPROut, sa: 0x05, hasSA: true, name: "PERSISTENT RESERVE OUT (PREEMPT AND ABORT)", h: hPROut,
		timeout: 10, resv: resvSelf, usage: []byte{0x5f, 0x05, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0}},
	{op: opPROut, sa: 0x06, hasSA: true, name: "PERSISTENT RESERVE OUT (REGISTER AND IGNORE EXISTING KEY)",
		h: hPROut, timeout: 10, resv: resvSelf,
		usage: []byte{0x5f, 0x06, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0}},
	// EXTENDED COPY and RECEIVE COPY RESULTS conflict with every
	// reservation type unless registered (SPC-4 table 48: write class);
	// the copy also checks each copy target LU it reads or writes
	// (xcopy.go).
	{op: opExtendedCopy, sa: saXCopyLID1, hasSA: true, name: "EXTENDED COPY(LID1)", h: hExtendedCopy,
		timeout: 120, resv: resvWrite,
		usage: []byte{0x83, saXCopyLID1, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0}},
	{op: opReceiveCopy, sa: saCopyStatus, hasSA: true, name: "RECEIVE COPY STATUS(LID1)", h: hReceiveCopy,
		timeout: 10, resv: resvWrite,
		usage: []byte{0x84, saCopyStatus, 0xff, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0}},
	{op: opReceiveCopy, sa: saCopyOpParams, hasSA: true, name: "RECEIVE COPY OPERATING PARAMETERS",
		h: hReceiveCopy, timeout: 10, resv: resvWrite,
		usage: []byte{0x84, saCopyOpParams, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0}},
	{op: opReceiveCopy, sa: saCopyFailedSeg, hasSA: true, name: "RECEIVE COPY FAILURE DETAILS(LID1)",
		h: hReceiveCopy, timeout: 10, resv: resvWrite,
		usage: []byte{0x84, saCopyFailedSeg, 0xff, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0}},
	{op: opRead16, name: "READ(16)", h: hRead, timeout: 30, resv: resvRead, flags: fMedium,
		usage: []byte{0x88, rwFlags, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
			0xff, 0xff, 0xff, 0xff, groupMask, 0}},
	{op: opCompareAndWrite, name: "COMPARE AND WRITE", h: hCompareAndWrite, timeout: 30, resv: resvWrite,
		flags: fMedium | fWrite,
		usage: []byte{0x89, rwFlags, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
			0, 0, 0, 0xff, groupMask, 0}},
	{op: opWrite16, name: "WRITE(16)", h: hWrite, timeout: 30, resv: resvWrite, flags: fMedium | fWrite,
		usage: []byte{0x8a, rwFlags, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
			0xff, 0xff, 0xff, 0xff, groupMask, 0}},
	{op: opOrWrite16, name: "ORWRITE(16)", h: hOrWrite, timeout: 30, resv: resvWrite, flags: fMedium | fWrite,
		usage: []byte{0x8b, rwFlags, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
			0xff, 0xff, 0xff, 0xff, groupMask, 0}},
	{op: opWriteVerify16, name: "WRITE AND VERIFY(16)", h: hWriteVerify, timeout: 60, resv: resvWrite,
		flags: fMedium | fWrite,
		usage: []byte{0x8e, wvFlags, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
			0xff, 0xff, 0xff, 0xff, groupMask, 0}},
	{op: opVerify16, name: "VERIFY(16)", h: hVerify, timeout: 60, resv: resvRead, flags: fMedium,
		usage: []byte{0x8f, verifyFlags, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
			0xff, 0xff, 0xff, 0xff, groupMask, 0}},
	{op: opPrefetch16, name: "PRE-FETCH(16)", h: hPrefetch, timeout: 30, resv: resvRead, flags: fMedium,
		usage: []byte{0x90, 0x02, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
			0xff, 0xff, 0xff, 0xff, groupMask, 0}, avail: canPrefetch},
	{op: opSyncCache16, name: "SYNCHRONIZE CACHE(16)", h: hSyncCache, timeout: 60, resv: resvWrite,
		flags: fMedium,
		usage: []byte{0x91, 0x06, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
			0xff, 0xff, 0xff, 0xff, groupMask, 0}},
	{op: opWriteSame16, name: "WRITE SAME(16)", h: hWriteSame, timeout: 120, resv: resvWrite,
		flags: fMedium | fWrite,
		usage: []byte{0x93, 0x19, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
			0xff, 0xff, 0xff, 0xff, groupMask, 0}},
	// WRITE ATOMIC(16) (SBC-4): DPO and FUA; ATOMIC BOUNDARY must
	// be zero (MAXIMUM ATOMIC BOUNDARY SIZE is zero), WRPROTECT too.
	{op: opWriteAtomic16, name: "WRITE ATOMIC(16)", h: hWriteAtomic, timeout: 30, resv: resvWrite,
		flags: fMedium | fWrite,
		usage: []byte{0x9c, 0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
			0, 0, 0xff, 0xff, groupMask, 0}},
	{op: opServiceActionIn16, sa: saReadCapacity16, hasSA: true, name: "READ CAPACITY(16)",
		h: hReadCapacity16, timeout: 10, flags: fMedium,
		usage: []byte{0x9e, saReadCapacity16, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
			0xff, 0xff, 0xff, 0xff, 0x01, 0}},
	{op: opServiceActionIn16, sa: saGetLBAStatus, hasSA: true, name: "GET LBA STATUS",
		h: hGetLBAStatus, timeout: 30, resv: resvRead, flags: fMedium, avail: canMapStatus,
		usage: []byte{0x9e, saGetLBAStatus, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
			0xff, 0xff, 0xff, 0xff, 0, 0}},
	{op: opReportLUNs, name: "REPORT LUNS", h: hReportLUNs, timeout: 10, flags: fNoUA | fSPC2OK,
		usage: []byte{0xa0, 0, 0xff, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0}},
	{op: opMaintenanceIn, sa: saReportTPG, hasSA: true, name: "REPORT TARGET PORT GROUPS",
		h: hReportTPG, timeout: 10,
		usage: []byte{0xa3, 0xe0 | saReportTPG, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0}},
	{op: opMaintenanceIn, sa: saReportOpcodes, hasSA: true, name: "REPORT SUPPORTED OPERATION CODES",
		h: hReportOpcodes, timeout: 10,
		usage: []byte{0xa3, saReportOpcodes, 0x87, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0}},
	{op: opMaintenanceIn, sa: saReportTMFs, hasSA: true,
		name: "REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS", h: hReportTMFs, timeout: 10,
		usage: []byte{0xa3, saReportTMFs, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0}},
	{op: opRead12, name: "READ(12)", h: hRead, timeout: 30, resv: resvRead, flags: fMedium,
		usage: []byte{0xa8, rwFlags, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, groupMask, 0}},
	{op: opWrite12, name: "WRITE(12)", h: hWrite, timeout: 30, resv: resvWrite, flags: fMedium | fWrite,
		usage: []byte{0xaa, rwFlags, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, groupMask, 0}},
	{op: opWriteVerify12, name: "WRITE AND VERIFY(12)", h: hWriteVerify, timeout: 60, resv: resvWrite,
		flags: fMedium | fWrite,
		usage: []byte{0xae, wvFlags, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, groupMask, 0}},
	{op: opVerify12, name: "VERIFY(12)", h: hVerify, timeout: 60, resv: resvRead, flags: fMedium,
		usage: []byte{0xaf, verifyFlags, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, groupMask, 0}},
	{op: opReadDefectData12, name: "READ DEFECT DATA(12)", h: hReadDefectData, timeout: 10, resv: resvRead,
		flags: fMedium, usage: []byte{0xb7, 0x1f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0}},
}

// opIndex finds table entries: [op] for commands without service
// actions; saIndex[op][sa] for those with.
var (
	opIndex [256]*opcode
	saIndex [256]map[byte]*opcode
)

// hasSAs reports whether operation code op carries a service action.
func hasSAs(op byte) bool { return saIndex[op] != nil }

func init() {
	for i := range opcodeTable {
		e := &opcodeTable[i]
		if e.hasSA {
			if saIndex[e.op] == nil {
				saIndex[e.op] = make(map[byte]*opcode)
			}
			saIndex[e.op][e.sa] = e
			continue
		}
		opIndex[e.op] = e
	}
}

// lookupOp finds the command a CDB asks for on lu (nil: a LUN without an
// LU, where only the table is consulted), or the sense data
// refusing it: INVALID COMMAND OPERATION CODE for an unknown or
// unsupported operation code, INVALID FIELD IN CDB (pointing at the
// service action) for an unknown service action (SPC-4 4.5.6).
func lookupOp(lu *LogicalUnit, cdb []byte) (*opcode, *SenseError) {
	op := cdb[0]
	var e *opcode
	if hasSAs(op) {
		if len(cdb) < 2 {
			return nil, invalidCDB(0, -1)
		}
		e = saIndex[op][cdb[1]&0x1f]
		if e == nil || (e.avail != nil && lu != nil && !e.avail(lu)) {
			return nil, invalidCDB(1, 4)
		}
		return e, nil
	}
	e = opIndex[op]
	if e == nil || (e.avail != nil && lu != nil && !e.avail(lu)) {
		return nil, senseErr(SenseIllegalRequest, ascInvalidOpcode)
	}
	return e, nil
}

// usage is the CDB usage data of e on this LU (SPC-4 6.35.3).
func (lu *LogicalUnit) usage(e *opcode) []byte {
	if lu.cfg.Removable && e.removableUsage != nil {
		return e.removableUsage
	}
	return e.usage
}

// checkCDB refuses a CDB that is too short or sets a bit the command does
// not use: ILLEGAL REQUEST, INVALID FIELD IN CDB with the field pointer on
// the first offending bit. The control byte's NACA and LINK bits are
// refused this way too (no ACA, no linked commands: SAM-5 5.3).
func (e *opcode) checkCDB(cdb, usage []byte) *SenseError {
	if len(cdb) < len(usage) {
		return invalidCDB(len(cdb), -1)
	}
	for i := 1; i < len(usage); i++ {
		allowed := usage[i]
		if i == 1 && e.hasSA {
			allowed |= 0x1f
		}
		if bad := cdb[i] &^ allowed; bad != 0 {
			return invalidCDB(i, highestBit(bad))
		}
	}
	return nil
}

// CommandName names the command a CDB carries, for logs and metrics
// labels: the table's name, or "UNKNOWN" for anything not supported.
func CommandName(cdb []byte) string {
	if len(cdb) == 0 {
		return "UNKNOWN"
	}
	if e, err := lookupOp(nil, cdb); err == nil {
		return e.name
	}
	return "UNKNOWN"
}
