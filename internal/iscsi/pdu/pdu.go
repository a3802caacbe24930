// Package pdu encodes and decodes iSCSI protocol data units (RFC 7143 section 11).
//
// Every PDU starts with a 48-byte Basic Header Segment (BHS), optionally
// followed by Additional Header Segments, a header digest, a data segment
// padded to 4 bytes, and a data digest:
//
//	 0               1               2               3
//	+---------------+---------------+---------------+---------------+
//	|.|I| Opcode    |F|  opcode-specific fields                     |  0
//	+---------------+---------------+---------------+---------------+
//	|TotalAHSLength | DataSegmentLength                             |  4
//	+---------------+---------------+---------------+---------------+
//	| LUN or opcode-specific fields (8 bytes)                       |  8
//	+---------------+---------------+---------------+---------------+
//	| Initiator Task Tag                                            | 16
//	+---------------+---------------+---------------+---------------+
//	| opcode-specific fields (28 bytes)                             | 20
//	+---------------+---------------+---------------+---------------+
//	| AHS (TotalAHSLength*4 bytes), Header-Digest (CRC32C, optional)|
//	| Data segment, padded to 4 bytes, Data-Digest (optional)       |
//	+---------------+---------------+---------------+---------------+
//
// The package is pure: no I/O beyond the io.Reader/io.Writer it is handed,
// no logging, no goroutines. It never panics on peer input: every length the
// peer controls is checked before anything is allocated.
package pdu

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// BHSLen is the size of the Basic Header Segment (RFC 7143 11.2.1).
const BHSLen = 48

// BHS is a Basic Header Segment.
type BHS [BHSLen]byte

// Opcode is the 6-bit PDU opcode (RFC 7143 11.2.1.2).
type Opcode uint8

// Initiator opcodes.
const (
	OpNOPOut        Opcode = 0x00
	OpSCSICommand   Opcode = 0x01
	OpTaskMgmtReq   Opcode = 0x02
	OpLoginReq      Opcode = 0x03
	OpTextReq       Opcode = 0x04
	OpDataOut       Opcode = 0x05
	OpLogoutReq     Opcode = 0x06
	OpSNACKReq      Opcode = 0x10
	OpNOPIn         Opcode = 0x20
	OpSCSIResponse  Opcode = 0x21
	OpTaskMgmtResp  Opcode = 0x22
	OpLoginResp     Opcode = 0x23
	OpTextResp      Opcode = 0x24
	OpDataIn        Opcode = 0x25
	OpLogoutResp    Opcode = 0x26
	OpR2T           Opcode = 0x31
	OpAsyncMessage  Opcode = 0x32
	OpReject        Opcode = 0x3f
	opcodeMask             = 0x3f
	immediateBit           = 0x40
	finalBit               = 0x80
	reservedTaskTag uint32 = 0xffffffff
)

// ReservedTag is the tag value 0xffffffff, meaning "no task" (RFC 7143 11.2.1.8).
const ReservedTag = reservedTaskTag

var opcodeNames = map[Opcode]string{
	OpNOPOut: "NOP-Out", OpSCSICommand: "SCSI Command", OpTaskMgmtReq: "Task Management Request",
	OpLoginReq: "Login Request", OpTextReq: "Text Request", OpDataOut: "SCSI Data-Out",
	OpLogoutReq: "Logout Request", OpSNACKReq: "SNACK Request", OpNOPIn: "NOP-In",
	OpSCSIResponse: "SCSI Response", OpTaskMgmtResp: "Task Management Response",
	OpLoginResp: "Login Response", OpTextResp: "Text Response", OpDataIn: "SCSI Data-In",
	OpLogoutResp: "Logout Response", OpR2T: "R2T", OpAsyncMessage: "Asynchronous Message",
	OpReject: "Reject",
}

func (o Opcode) String() string {
	if s, ok := opcodeNames[o]; ok {
		return s
	}
	return fmt.Sprintf("opcode 0x%02x", uint8(o))
}

// Opcode returns the PDU's opcode.
func (h *BHS) Opcode() Opcode { return Opcode(h[0] & opcodeMask) }

// Immediate reports the I bit (RFC 7143 11.2.1.1): the command is not
// queued in CmdSN order.
func (h *BHS) Immediate() bool { return h[0]&immediateBit != 0 }

// Final reports the F bit of byte 1.
func (h *BHS) Final() bool { return h[1]&finalBit != 0 }

// TotalAHSLength is the AHS length in bytes (the field counts 4-byte words).
func (h *BHS) TotalAHSLength() int { return int(h[4]) * 4 }

// DataSegmentLength is the length of the data segment without padding.
func (h *BHS) DataSegmentLength() int {
	return int(h[5])<<16 | int(h[6])<<8 | int(h[7])
}

// LUN returns bytes 8-15 (LUN for the opcodes that carry one).
func (h *BHS) LUN() uint64 { return binary.BigEndian.Uint64(h[8:16]) }

// ITT returns the Initiator Task Tag.
func (h *BHS) ITT() uint32 { return binary.BigEndian.Uint32(h[16:20]) }

func (h *BHS) setLengths(ahsLen, dataLen int) {
	h[4] = byte(ahsLen / 4)
	h[5] = byte(dataLen >> 16)
	h[6] = byte(dataLen >> 8)
	h[7] = byte(dataLen)
}

func (h *BHS) u32(off int) uint32      { return binary.BigEndian.Uint32(h[off:]) }
func (h *BHS) u16(off int) uint16      { return binary.BigEndian.Uint16(h[off:]) }
func (h *BHS) put32(off int, v uint32) { binary.BigEndian.PutUint32(h[off:], v) }
func (h *BHS) put16(off int, v uint16) { binary.BigEndian.PutUint16(h[off:], v) }
func (h *BHS) put64(off int, v uint64) { binary.BigEndian.PutUint64(h[off:], v) }
func (h *BHS) startFlags(op Opcode, imm bool, b1 byte) {
	*h = BHS{}
	h[0] = byte(op)
	if imm {
		h[0] |= immediateBit
	}
	h[1] = b1
}

// PDU is one iSCSI PDU: header, additional header segments and data.
// DataSegmentLength and TotalAHSLength in BHS are filled in from AHS and
// Data when the PDU is encoded.
type PDU struct {
	BHS  BHS
	AHS  []byte // multiple of 4 bytes
	Data []byte // without padding
}

// Pad returns the number of padding bytes after a data segment of n bytes.
func Pad(n int) int { return -n & 3 }

// Errors of decoding. Every error returned by this package wraps one of these.
var (
	ErrHeaderDigest   = errors.New("pdu: header digest mismatch")
	ErrDataDigest     = errors.New("pdu: data digest mismatch")
	ErrTooLong        = errors.New("pdu: data segment exceeds negotiated maximum")
	ErrMalformed      = errors.New("pdu: malformed")
	ErrWrongOpcode    = errors.New("pdu: wrong opcode for message type")
	errNotMultipleOf4 = fmt.Errorf("%w: AHS length not a multiple of 4", ErrMalformed)
)
