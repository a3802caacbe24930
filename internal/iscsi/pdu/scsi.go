package pdu

import "fmt"

// TaskAttr is the ATTR field of a SCSI Command (RFC 7143 11.3.1.1).
type TaskAttr uint8

const (
	AttrUntagged TaskAttr = 0
	AttrSimple   TaskAttr = 1
	AttrOrdered  TaskAttr = 2
	AttrHead     TaskAttr = 3
	AttrACA      TaskAttr = 4
)

// AHS types (RFC 7143 11.2.2.2).
const (
	AHSExtendedCDB      = 1
	AHSBidiReadLength   = 2
	maxExtendedCDBBytes = 260 - 16
)

// SCSICommand is an initiator's SCSI Command PDU (RFC 7143 11.3).
type SCSICommand struct {
	Immediate bool
	Final     bool // no unsolicited Data-Out PDUs follow
	Read      bool // R: Data-In expected
	Write     bool // W: Data-Out expected
	Attr      TaskAttr
	LUN       uint64
	ITT       uint32
	// ExpectedDataTransferLength is the initiator's buffer size for the
	// command's data, in the direction given by Read / Write.
	ExpectedDataTransferLength uint32
	CmdSN                      uint32
	ExpStatSN                  uint32
	CDB                        [16]byte
	// ExtendedCDB holds the CDB bytes past 16, from an Extended CDB AHS.
	ExtendedCDB []byte
	// BidiReadLength is the expected Data-In length of a bidirectional
	// command (Bidirectional Read Expected Data Transfer Length AHS).
	BidiReadLength uint32
}

// FullCDB returns the whole CDB: 16 bytes, or more with an extended CDB.
func (m *SCSICommand) FullCDB() []byte {
	if len(m.ExtendedCDB) == 0 {
		return m.CDB[:]
	}
	return append(append(make([]byte, 0, 16+len(m.ExtendedCDB)), m.CDB[:]...), m.ExtendedCDB...)
}

// ParseSCSICommand decodes a SCSI Command PDU header and its AHS.
func ParseSCSICommand(p *PDU) (SCSICommand, error) {
	h := &p.BHS
	if h.Opcode() != OpSCSICommand {
		return SCSICommand{}, ErrWrongOpcode
	}
	m := SCSICommand{
		Immediate:                  h.Immediate(),
		Final:                      h[1]&0x80 != 0,
		Read:                       h[1]&0x40 != 0,
		Write:                      h[1]&0x20 != 0,
		Attr:                       TaskAttr(h[1] & 0x07),
		LUN:                        h.LUN(),
		ITT:                        h.ITT(),
		ExpectedDataTransferLength: h.u32(20),
		CmdSN:                      h.u32(24),
		ExpStatSN:                  h.u32(28),
	}
	copy(m.CDB[:], h[32:48])
	// Walk the AHS list: each is 2-byte length, 1-byte type, then
	// length bytes (RFC 7143 11.2.2), padded to 4 bytes.
	ahs := p.AHS
	for len(ahs) > 0 {
		if len(ahs) < 4 {
			return m, fmt.Errorf("%w: truncated AHS", ErrMalformed)
		}
		l := int(ahs[0])<<8 | int(ahs[1])
		typ := ahs[2]
		if 3+l > len(ahs) {
			return m, fmt.Errorf("%w: AHS length %d past end", ErrMalformed, l)
		}
		var body []byte // the AHS-specific bytes after the type byte
		if l > 0 {
			body = ahs[4 : 3+l]
		}
		switch typ {
		case AHSExtendedCDB:
			// AHSLength counts the reserved byte plus the CDB bytes.
			if l < 2 || l-1 > maxExtendedCDBBytes {
				return m, fmt.Errorf("%w: extended CDB AHS length %d", ErrMalformed, l)
			}
			m.ExtendedCDB = append([]byte(nil), body...)
		case AHSBidiReadLength:
			if l != 5 {
				return m, fmt.Errorf("%w: bidi AHS length %d", ErrMalformed, l)
			}
			m.BidiReadLength = uint32(body[0])<<24 | uint32(body[1])<<16 | uint32(body[2])<<8 | uint32(body[3])
		default:
			return m, fmt.Errorf("%w: AHS type %d", ErrMalformed, typ)
		}
		adv := (3 + l + 3) &^ 3
		if adv > len(ahs) {
			adv = len(ahs)
		}
		ahs = ahs[adv:]
	}
	return m, nil
}

// Marshal encodes m into p (initiator side; used by tests and tools).
func (m *SCSICommand) Marshal(p *PDU) {
	h := &p.BHS
	var b1 byte
	if m.Final {
		b1 |= 0x80
	}
	if m.Read {
		b1 |= 0x40
	}
	if m.Write {
		b1 |= 0x20
	}
	h.startFlags(OpSCSICommand, m.Immediate, b1|byte(m.Attr&7))
	h.put64(8, m.LUN)
	h.put32(16, m.ITT)
	h.put32(20, m.ExpectedDataTransferLength)
	h.put32(24, m.CmdSN)
	h.put32(28, m.ExpStatSN)
	copy(h[32:48], m.CDB[:])
	p.AHS = p.AHS[:0]
	if len(m.ExtendedCDB) > 0 {
		l := 1 + len(m.ExtendedCDB)
		p.AHS = append(p.AHS, byte(l>>8), byte(l), AHSExtendedCDB, 0)
		p.AHS = append(p.AHS, m.ExtendedCDB...)
		for len(p.AHS)%4 != 0 {
			p.AHS = append(p.AHS, 0)
		}
	}
}

// SCSIResponse is the target's SCSI Response PDU (RFC 7143 11.4). The data
// segment carries the sense data: use SenseData to build it.
type SCSIResponse struct {
	BidiOverflow, BidiUnderflow bool
	Overflow, Underflow         bool
	Response                    uint8 // 0 = command completed at target
	Status                      uint8
	ITT                         uint32
	StatSN, ExpCmdSN, MaxCmdSN  uint32
	ExpDataSN                   uint32
	BidiResidualCount           uint32
	ResidualCount               uint32
}

// Marshal encodes m into h.
func (m *SCSIResponse) Marshal(h *BHS) {
	b1 := byte(0x80)
	if m.BidiOverflow {
		b1 |= 0x10
	}
	if m.BidiUnderflow {
		b1 |= 0x08
	}
	if m.Overflow {
		b1 |= 0x04
	}
	if m.Underflow {
		b1 |= 0x02
	}
	h.startFlags(OpSCSIResponse, false, b1)
	h[2] = m.Response
	h[3] = m.Status
	h.put32(16, m.ITT)
	h.put32(24, m.StatSN)
	h.put32(28, m.ExpCmdSN)
	h.put32(32, m.MaxCmdSN)
	h.put32(36, m.ExpDataSN)
	h.put32(40, m.BidiResidualCount)
	h.put32(44, m.ResidualCount)
}

// ParseSCSIResponse decodes a SCSI Response header (initiator side).
func ParseSCSIResponse(h *BHS) (SCSIResponse, error) {
	if h.Opcode() != OpSCSIResponse {
		return SCSIResponse{}, ErrWrongOpcode
	}
	return SCSIResponse{
		BidiOverflow: h[1]&0x10 != 0, BidiUnderflow: h[1]&0x08 != 0,
		Overflow: h[1]&0x04 != 0, Underflow: h[1]&0x02 != 0,
		Response: h[2], Status: h[3], ITT: h.ITT(),
		StatSN: h.u32(24), ExpCmdSN: h.u32(28), MaxCmdSN: h.u32(32), ExpDataSN: h.u32(36),
		BidiResidualCount: h.u32(40), ResidualCount: h.u32(44),
	}, nil
}

// SenseData builds a SCSI Response data segment: a 2-byte SenseLength and
// the sense bytes (RFC 7143 11.4.7).
func SenseData(dst, sense []byte) []byte {
	dst = append(dst, byte(len(sense)>>8), byte(len(sense)))
	return append(dst, sense...)
}

// DataOut is an initiator's SCSI Data-Out PDU header (RFC 7143 11.7).
type DataOut struct {
	Final        bool
	LUN          uint64
	ITT          uint32
	TTT          uint32
	ExpStatSN    uint32
	DataSN       uint32
	BufferOffset uint32
}

// ParseDataOut decodes a Data-Out header.
func ParseDataOut(h *BHS) (DataOut, error) {
	if h.Opcode() != OpDataOut {
		return DataOut{}, ErrWrongOpcode
	}
	return DataOut{
		Final: h.Final(), LUN: h.LUN(), ITT: h.ITT(), TTT: h.u32(20),
		ExpStatSN: h.u32(28), DataSN: h.u32(36), BufferOffset: h.u32(40),
	}, nil
}

// Marshal encodes m into h (initiator side).
func (m *DataOut) Marshal(h *BHS) {
	var b1 byte
	if m.Final {
		b1 = 0x80
	}
	h.startFlags(OpDataOut, false, b1)
	h.put64(8, m.LUN)
	h.put32(16, m.ITT)
	h.put32(20, m.TTT)
	h.put32(28, m.ExpStatSN)
	h.put32(36, m.DataSN)
	h.put32(40, m.BufferOffset)
}

// DataIn is the target's SCSI Data-In PDU header (RFC 7143 11.7). With
// HasStatus set it also completes the command (phase collapse, 11.7.4).
type DataIn struct {
	Final, Ack          bool
	Overflow, Underflow bool
	HasStatus           bool
	Status              uint8
	LUN                 uint64
	ITT                 uint32
	TTT                 uint32
	StatSN              uint32 // only meaningful with HasStatus
	ExpCmdSN, MaxCmdSN  uint32
	DataSN              uint32
	BufferOffset        uint32
	ResidualCount       uint32
}

// Marshal encodes m into h.
func (m *DataIn) Marshal(h *BHS) {
	var b1 byte
	if m.Final {
		b1 |= 0x80
	}
	if m.Ack {
		b1 |= 0x40
	}
	if m.HasStatus {
		b1 |= 0x01
		if m.Overflow {
			b1 |= 0x04
		}
		if m.Underflow {
			b1 |= 0x02
		}
	}
	h.startFlags(OpDataIn, false, b1)
	if m.HasStatus {
		h[3] = m.Status
		h.put32(24, m.StatSN)
		h.put32(44, m.ResidualCount)
	}
	h.put64(8, m.LUN)
	h.put32(16, m.ITT)
	h.put32(20, m.TTT)
	h.put32(28, m.ExpCmdSN)
	h.put32(32, m.MaxCmdSN)
	h.put32(36, m.DataSN)
	h.put32(40, m.BufferOffset)
}

// ParseDataIn decodes a Data-In header (initiator side).
func ParseDataIn(h *BHS) (DataIn, error) {
	if h.Opcode() != OpDataIn {
		return DataIn{}, ErrWrongOpcode
	}
	return DataIn{
		Final: h.Final(), Ack: h[1]&0x40 != 0, Overflow: h[1]&0x04 != 0, Underflow: h[1]&0x02 != 0,
		HasStatus: h[1]&0x01 != 0, Status: h[3], LUN: h.LUN(), ITT: h.ITT(), TTT: h.u32(20),
		StatSN: h.u32(24), ExpCmdSN: h.u32(28), MaxCmdSN: h.u32(32), DataSN: h.u32(36),
		BufferOffset: h.u32(40), ResidualCount: h.u32(44),
	}, nil
}

// R2T is the target's Ready To Transfer PDU (RFC 7143 11.8).
type R2T struct {
	LUN                        uint64
	ITT, TTT                   uint32
	StatSN, ExpCmdSN, MaxCmdSN uint32
	R2TSN                      uint32
	BufferOffset               uint32
	DesiredDataTransferLength  uint32
}

// Marshal encodes m into h.
func (m *R2T) Marshal(h *BHS) {
	h.startFlags(OpR2T, false, 0x80)
	h.put64(8, m.LUN)
	h.put32(16, m.ITT)
	h.put32(20, m.TTT)
	h.put32(24, m.StatSN)
	h.put32(28, m.ExpCmdSN)
	h.put32(32, m.MaxCmdSN)
	h.put32(36, m.R2TSN)
	h.put32(40, m.BufferOffset)
	h.put32(44, m.DesiredDataTransferLength)
}

// ParseR2T decodes an R2T header (initiator side).
func ParseR2T(h *BHS) (R2T, error) {
	if h.Opcode() != OpR2T {
		return R2T{}, ErrWrongOpcode
	}
	return R2T{
		LUN: h.LUN(), ITT: h.ITT(), TTT: h.u32(20), StatSN: h.u32(24), ExpCmdSN: h.u32(28),
		MaxCmdSN: h.u32(32), R2TSN: h.u32(36), BufferOffset: h.u32(40), DesiredDataTransferLength: h.u32(44),
	}, nil
}
