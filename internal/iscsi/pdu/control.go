package pdu

// Stage is a login stage (RFC 7143 11.12.3): CSG and NSG values.
type Stage uint8

const (
	StageSecurity    Stage = 0
	StageOperational Stage = 1
	StageFullFeature Stage = 3
)

func (s Stage) String() string {
	switch s {
	case StageSecurity:
		return "SecurityNegotiation"
	case StageOperational:
		return "LoginOperationalNegotiation"
	case StageFullFeature:
		return "FullFeaturePhase"
	}
	return "reserved stage 2"
}

// LoginRequest is an initiator's Login Request header (RFC 7143 11.12).
// Its data segment holds text keys.
type LoginRequest struct {
	Transit, Continue      bool
	CSG, NSG               Stage
	VersionMax, VersionMin uint8
	ISID                   uint64 // 48 bits
	TSIH                   uint16
	ITT                    uint32
	CID                    uint16
	CmdSN, ExpStatSN       uint32
}

// ParseLoginRequest decodes a Login Request header.
func ParseLoginRequest(h *BHS) (LoginRequest, error) {
	if h.Opcode() != OpLoginReq {
		return LoginRequest{}, ErrWrongOpcode
	}
	return LoginRequest{
		Transit: h[1]&0x80 != 0, Continue: h[1]&0x40 != 0,
		CSG: Stage(h[1] >> 2 & 3), NSG: Stage(h[1] & 3),
		VersionMax: h[2], VersionMin: h[3],
		ISID: h.u64at48(8), TSIH: h.u16(14), ITT: h.ITT(), CID: h.u16(20),
		CmdSN: h.u32(24), ExpStatSN: h.u32(28),
	}, nil
}

// Marshal encodes m into h (initiator side). Login requests are always immediate.
func (m *LoginRequest) Marshal(h *BHS) {
	h.startFlags(OpLoginReq, true, loginFlags(m.Transit, m.Continue, m.CSG, m.NSG))
	h[2], h[3] = m.VersionMax, m.VersionMin
	h.put48(8, m.ISID)
	h.put16(14, m.TSIH)
	h.put32(16, m.ITT)
	h.put16(20, m.CID)
	h.put32(24, m.CmdSN)
	h.put32(28, m.ExpStatSN)
}

func loginFlags(transit, cont bool, csg, nsg Stage) byte {
	b := byte(csg&3)<<2 | byte(nsg&3)
	if transit {
		b |= 0x80
	}
	if cont {
		b |= 0x40
	}
	return b
}

// Login status classes and details (RFC 7143 11.13.5).
const (
	LoginSuccess              = 0x0000
	LoginTargetMovedTemp      = 0x0101
	LoginInitiatorError       = 0x0200
	LoginAuthFailure          = 0x0201
	LoginForbidden            = 0x0202
	LoginTargetNotFound       = 0x0203
	LoginTargetRemoved        = 0x0204
	LoginUnsupportedVersion   = 0x0205
	LoginTooManyConnections   = 0x0206
	LoginMissingParameter     = 0x0207
	LoginCantIncludeInSession = 0x0208
	LoginSessionTypeNotSupp   = 0x0209
	LoginSessionDoesNotExist  = 0x020a
	LoginInvalidDuringLogin   = 0x020b
	LoginTargetError          = 0x0300
	LoginServiceUnavailable   = 0x0301
	LoginOutOfResources       = 0x0302
)

// LoginResponse is the target's Login Response header (RFC 7143 11.13).
type LoginResponse struct {
	Transit, Continue          bool
	CSG, NSG                   Stage
	VersionMax, VersionActive  uint8
	ISID                       uint64
	TSIH                       uint16
	ITT                        uint32
	StatSN, ExpCmdSN, MaxCmdSN uint32
	Status                     uint16 // class<<8 | detail
}

// Marshal encodes m into h.
func (m *LoginResponse) Marshal(h *BHS) {
	h.startFlags(OpLoginResp, false, loginFlags(m.Transit, m.Continue, m.CSG, m.NSG))
	h[2], h[3] = m.VersionMax, m.VersionActive
	h.put48(8, m.ISID)
	h.put16(14, m.TSIH)
	h.put32(16, m.ITT)
	h.put32(24, m.StatSN)
	h.put32(28, m.ExpCmdSN)
	h.put32(32, m.MaxCmdSN)
	h.put16(36, m.Status)
}

// ParseLoginResponse decodes a Login Response header (initiator side).
func ParseLoginResponse(h *BHS) (LoginResponse, error) {
	if h.Opcode() != OpLoginResp {
		return LoginResponse{}, ErrWrongOpcode
	}
	return LoginResponse{
		Transit: h[1]&0x80 != 0, Continue: h[1]&0x40 != 0,
		CSG: Stage(h[1] >> 2 & 3), NSG: Stage(h[1] & 3),
		VersionMax: h[2], VersionActive: h[3], ISID: h.u64at48(8), TSIH: h.u16(14),
		ITT: h.ITT(), StatSN: h.u32(24), ExpCmdSN: h.u32(28), MaxCmdSN: h.u32(32), Status: h.u16(36),
	}, nil
}

// TextRequest is an initiator's Text Request header (RFC 7143 11.10).
type TextRequest struct {
	Immediate        bool
	Final, Continue  bool
	LUN              uint64
	ITT, TTT         uint32
	CmdSN, ExpStatSN uint32
}

// ParseTextRequest decodes a Text Request header.
func ParseTextRequest(h *BHS) (TextRequest, error) {
	if h.Opcode() != OpTextReq {
		return TextRequest{}, ErrWrongOpcode
	}
	return TextRequest{
		Immediate: h.Immediate(), Final: h.Final(), Continue: h[1]&0x40 != 0,
		LUN: h.LUN(), ITT: h.ITT(), TTT: h.u32(20), CmdSN: h.u32(24), ExpStatSN: h.u32(28),
	}, nil
}

// Marshal encodes m into h (initiator side).
func (m *TextRequest) Marshal(h *BHS) {
	h.startFlags(OpTextReq, m.Immediate, finalContinue(m.Final, m.Continue))
	h.put64(8, m.LUN)
	h.put32(16, m.ITT)
	h.put32(20, m.TTT)
	h.put32(24, m.CmdSN)
	h.put32(28, m.ExpStatSN)
}

func finalContinue(f, c bool) byte {
	var b byte
	if f {
		b |= 0x80
	}
	if c {
		b |= 0x40
	}
	return b
}

// TextResponse is the target's Text Response header (RFC 7143 11.11).
type TextResponse struct {
	Final, Continue            bool
	LUN                        uint64
	ITT, TTT                   uint32
	StatSN, ExpCmdSN, MaxCmdSN uint32
}

// Marshal encodes m into h.
func (m *TextResponse) Marshal(h *BHS) {
	h.startFlags(OpTextResp, false, finalContinue(m.Final, m.Continue))
	h.put64(8, m.LUN)
	h.put32(16, m.ITT)
	h.put32(20, m.TTT)
	h.put32(24, m.StatSN)
	h.put32(28, m.ExpCmdSN)
	h.put32(32, m.MaxCmdSN)
}

// ParseTextResponse decodes a Text Response header (initiator side).
func ParseTextResponse(h *BHS) (TextResponse, error) {
	if h.Opcode() != OpTextResp {
		return TextResponse{}, ErrWrongOpcode
	}
	return TextResponse{Final: h.Final(), Continue: h[1]&0x40 != 0, LUN: h.LUN(), ITT: h.ITT(), TTT: h.u32(20),
		StatSN: h.u32(24), ExpCmdSN: h.u32(28), MaxCmdSN: h.u32(32)}, nil
}

// Logout reason codes (RFC 7143 11.14.1).
const (
	LogoutCloseSession    = 0
	LogoutCloseConnection = 1
	LogoutRemoveForRecov  = 2
)

// LogoutRequest is an initiator's Logout Request header (RFC 7143 11.14).
type LogoutRequest struct {
	Immediate        bool
	Reason           uint8
	ITT              uint32
	CID              uint16
	CmdSN, ExpStatSN uint32
}

// ParseLogoutRequest decodes a Logout Request header.
func ParseLogoutRequest(h *BHS) (LogoutRequest, error) {
	if h.Opcode() != OpLogoutReq {
		return LogoutRequest{}, ErrWrongOpcode
	}
	return LogoutRequest{
		Immediate: h.Immediate(), Reason: h[1] & 0x7f, ITT: h.ITT(), CID: h.u16(20),
		CmdSN: h.u32(24), ExpStatSN: h.u32(28),
	}, nil
}

// Marshal encodes m into h (initiator side).
func (m *LogoutRequest) Marshal(h *BHS) {
	h.startFlags(OpLogoutReq, m.Immediate, 0x80|m.Reason&0x7f)
	h.put32(16, m.ITT)
	h.put16(20, m.CID)
	h.put32(24, m.CmdSN)
	h.put32(28, m.ExpStatSN)
}

// Logout responses (RFC 7143 11.15.1).
const (
	LogoutSuccess         = 0
	LogoutCIDNotFound     = 1
	LogoutRecoveryNotSupp = 2
	LogoutCleanupFailed   = 3
)

// LogoutResponse is the target's Logout Response header (RFC 7143 11.15).
type LogoutResponse struct {
	Response                   uint8
	ITT                        uint32
	StatSN, ExpCmdSN, MaxCmdSN uint32
	Time2Wait, Time2Retain     uint16
}

// Marshal encodes m into h.
func (m *LogoutResponse) Marshal(h *BHS) {
	h.startFlags(OpLogoutResp, false, 0x80)
	h[2] = m.Response
	h.put32(16, m.ITT)
	h.put32(24, m.StatSN)
	h.put32(28, m.ExpCmdSN)
	h.put32(32, m.MaxCmdSN)
	h.put16(40, m.Time2Wait)
	h.put16(42, m.Time2Retain)
}

// ParseLogoutResponse decodes a Logout Response header (initiator side).
func ParseLogoutResponse(h *BHS) (LogoutResponse, error) {
	if h.Opcode() != OpLogoutResp {
		return LogoutResponse{}, ErrWrongOpcode
	}
	return LogoutResponse{Response: h[2], ITT: h.ITT(), StatSN: h.u32(24), ExpCmdSN: h.u32(28),
		MaxCmdSN: h.u32(32), Time2Wait: h.u16(40), Time2Retain: h.u16(42)}, nil
}

// NOPOut is an initiator's NOP-Out header (RFC 7143 11.18). Its data
// segment is ping data to be echoed.
type NOPOut struct {
	Immediate        bool
	LUN              uint64
	ITT, TTT         uint32
	CmdSN, ExpStatSN uint32
}

// ParseNOPOut decodes a NOP-Out header.
func ParseNOPOut(h *BHS) (NOPOut, error) {
	if h.Opcode() != OpNOPOut {
		return NOPOut{}, ErrWrongOpcode
	}
	return NOPOut{Immediate: h.Immediate(), LUN: h.LUN(), ITT: h.ITT(), TTT: h.u32(20),
		CmdSN: h.u32(24), ExpStatSN: h.u32(28)}, nil
}

// Marshal encodes m into h (initiator side).
func (m *NOPOut) Marshal(h *BHS) {
	h.startFlags(OpNOPOut, m.Immediate, 0x80)
	h.put64(8, m.LUN)
	h.put32(16, m.ITT)
	h.put32(20, m.TTT)
	h.put32(24, m.CmdSN)
	h.put32(28, m.ExpStatSN)
}

// NOPIn is the target's NOP-In header (RFC 7143 11.19).
type NOPIn struct {
	LUN                        uint64
	ITT, TTT                   uint32
	StatSN, ExpCmdSN, MaxCmdSN uint32
}

// Marshal encodes m into h.
func (m *NOPIn) Marshal(h *BHS) {
	h.startFlags(OpNOPIn, false, 0x80)
	h.put64(8, m.LUN)
	h.put32(16, m.ITT)
	h.put32(20, m.TTT)
	h.put32(24, m.StatSN)
	h.put32(28, m.ExpCmdSN)
	h.put32(32, m.MaxCmdSN)
}

// ParseNOPIn decodes a NOP-In header (initiator side).
func ParseNOPIn(h *BHS) (NOPIn, error) {
	if h.Opcode() != OpNOPIn {
		return NOPIn{}, ErrWrongOpcode
	}
	return NOPIn{LUN: h.LUN(), ITT: h.ITT(), TTT: h.u32(20), StatSN: h.u32(24),
		ExpCmdSN: h.u32(28), MaxCmdSN: h.u32(32)}, nil
}

// Task management functions (RFC 7143 11.5.1).
const (
	TMFAbortTask        = 1
	TMFAbortTaskSet     = 2
	TMFClearACA         = 3
	TMFClearTaskSet     = 4
	TMFLogicalUnitReset = 5
	TMFTargetWarmReset  = 6
	TMFTargetColdReset  = 7
	TMFTaskReassign     = 8
)

// Task management responses (RFC 7143 11.6.1).
const (
	TMFComplete            = 0
	TMFTaskDoesNotExist    = 1
	TMFLUNDoesNotExist     = 2
	TMFTaskStillAllegiant  = 3
	TMFReassignNotSupp     = 4
	TMFNotSupported        = 5
	TMFAuthorizationFailed = 6
	TMFRejected            = 255
)

// TaskMgmtRequest is an initiator's Task Management Function Request
// header (RFC 7143 11.5).
type TaskMgmtRequest struct {
	Immediate        bool
	Function         uint8
	LUN              uint64
	ITT              uint32
	ReferencedTag    uint32
	CmdSN, ExpStatSN uint32
	RefCmdSN         uint32
	ExpDataSN        uint32
}

// ParseTaskMgmtRequest decodes a Task Management Function Request header.
func ParseTaskMgmtRequest(h *BHS) (TaskMgmtRequest, error) {
	if h.Opcode() != OpTaskMgmtReq {
		return TaskMgmtRequest{}, ErrWrongOpcode
	}
	return TaskMgmtRequest{Immediate: h.Immediate(), Function: h[1] & 0x7f, LUN: h.LUN(), ITT: h.ITT(),
		ReferencedTag: h.u32(20), CmdSN: h.u32(24), ExpStatSN: h.u32(28), RefCmdSN: h.u32(32),
		ExpDataSN: h.u32(36)}, nil
}

// Marshal encodes m into h (initiator side).
func (m *TaskMgmtRequest) Marshal(h *BHS) {
	h.startFlags(OpTaskMgmtReq, m.Immediate, 0x80|m.Function&0x7f)
	h.put64(8, m.LUN)
	h.put32(16, m.ITT)
	h.put32(20, m.ReferencedTag)
	h.put32(24, m.CmdSN)
	h.put32(28, m.ExpStatSN)
	h.put32(32, m.RefCmdSN)
	h.put32(36, m.ExpDataSN)
}

// TaskMgmtResponse is the target's Task Management Function Response
// header (RFC 7143 11.6).
type TaskMgmtResponse struct {
	Response                   uint8
	ITT                        uint32
	StatSN, ExpCmdSN, MaxCmdSN uint32
}

// Marshal encodes m into h.
func (m *TaskMgmtResponse) Marshal(h *BHS) {
	h.startFlags(OpTaskMgmtResp, false, 0x80)
	h[2] = m.Response
	h.put32(16, m.ITT)
	h.put32(24, m.StatSN)
	h.put32(28, m.ExpCmdSN)
	h.put32(32, m.MaxCmdSN)
}

// Reject reasons (RFC 7143 11.17.1).
const (
	RejectDataDigestError  = 0x02
	RejectSNACKReject      = 0x03
	RejectProtocolError    = 0x04
	RejectCmdNotSupported  = 0x05
	RejectImmCmdReject     = 0x06
	RejectTaskInProgress   = 0x07
	RejectInvalidDataAck   = 0x08
	RejectInvalidPDUField  = 0x09
	RejectOutOfResources   = 0x0a
	RejectNegotiationReset = 0x0b
	RejectWaitingForLogout = 0x0c
)

// Reject is the target's Reject PDU header (RFC 7143 11.17). Its data
// segment is the complete header of the rejected PDU.
type Reject struct {
	Reason                     uint8
	StatSN, ExpCmdSN, MaxCmdSN uint32
	DataSN                     uint32
}

// Marshal encodes m into h.
func (m *Reject) Marshal(h *BHS) {
	h.startFlags(OpReject, false, 0x80)
	h[2] = m.Reason
	h.put32(16, reservedTaskTag)
	h.put32(24, m.StatSN)
	h.put32(28, m.ExpCmdSN)
	h.put32(32, m.MaxCmdSN)
	h.put32(36, m.DataSN)
}

// ParseReject decodes a Reject header (initiator side). The data segment
// holds the rejected PDU's header.
func ParseReject(h *BHS) (Reject, error) {
	if h.Opcode() != OpReject {
		return Reject{}, ErrWrongOpcode
	}
	return Reject{Reason: h[2], StatSN: h.u32(24), ExpCmdSN: h.u32(28), MaxCmdSN: h.u32(32), DataSN: h.u32(36)}, nil
}

// SNACKRequest is an initiator's SNACK Request header (RFC 7143 11.16).
// With ErrorRecoveryLevel 0 the target rejects it; it is decoded so the
// Reject can say why.
type SNACKRequest struct {
	Type      uint8
	LUN       uint64
	ITT, TTT  uint32
	ExpStatSN uint32
	BegRun    uint32
	RunLength uint32
}

// ParseSNACKRequest decodes a SNACK Request header.
func ParseSNACKRequest(h *BHS) (SNACKRequest, error) {
	if h.Opcode() != OpSNACKReq {
		return SNACKRequest{}, ErrWrongOpcode
	}
	return SNACKRequest{Type: h[1] & 0x0f, LUN: h.LUN(), ITT: h.ITT(), TTT: h.u32(20),
		ExpStatSN: h.u32(28), BegRun: h.u32(40), RunLength: h.u32(44)}, nil
}

func (h *BHS) u64at48(off int) uint64 {
	var v uint64
	for i := 0; i < 6; i++ {
		v = v<<8 | uint64(h[off+i])
	}
	return v
}

func (h *BHS) put48(off int, v uint64) {
	for i := 5; i >= 0; i-- {
		h[off+i] = byte(v)
		v >>= 8
	}
}
