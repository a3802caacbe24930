package scsi

import (
	"encoding/binary"
	"fmt"
)

// SenseKey is the SENSE KEY of sense data (SPC-4 4.5.6, table 27).
type SenseKey byte

const (
	SenseNoSense        SenseKey = 0x0
	SenseRecoveredError SenseKey = 0x1
	SenseNotReady       SenseKey = 0x2
	SenseMediumError    SenseKey = 0x3
	SenseHardwareError  SenseKey = 0x4
	SenseIllegalRequest SenseKey = 0x5
	SenseUnitAttention  SenseKey = 0x6
	SenseDataProtect    SenseKey = 0x7
	SenseCopyAborted    SenseKey = 0xa
	SenseAbortedCommand SenseKey = 0xb
	SenseMiscompare     SenseKey = 0xe
)

// senseKeyNames are the sense keys' names in SPC-4 4.5.6 table 27, with
// underscores for spaces: a fixed set of 16, fit for a metric label.
var senseKeyNames = [16]string{
	"NO_SENSE", "RECOVERED_ERROR", "NOT_READY", "MEDIUM_ERROR", "HARDWARE_ERROR", "ILLEGAL_REQUEST",
	"UNIT_ATTENTION", "DATA_PROTECT", "BLANK_CHECK", "VENDOR_SPECIFIC", "COPY_ABORTED", "ABORTED_COMMAND",
	"OBSOLETE", "VOLUME_OVERFLOW", "MISCOMPARE", "RESERVED",
}

// String is the key's name in SPC-4 table 27, e.g. ILLEGAL_REQUEST; Ch
// (once EQUAL) is OBSOLETE and Fh RESERVED.
func (k SenseKey) String() string { return senseKeyNames[k&0x0f] }

// SenseKeyOf returns the sense key of sense data in fixed (SPC-4 4.5.3,
// response codes 70h/71h) or descriptor format (4.5.2, 72h/73h); ok is
// false when the data is too short or neither.
func SenseKeyOf(sense []byte) (key SenseKey, ok bool) {
	if len(sense) < 3 {
		return 0, false
	}
	switch sense[0] & 0x7f {
	case 0x70, 0x71:
		return SenseKey(sense[2] & 0x0f), true
	case 0x72, 0x73:
		return SenseKey(sense[1] & 0x0f), true
	}
	return 0, false
}

// Additional sense code and qualifier pairs (SPC-4 4.5.6, table 28),
// ASC in the high byte.
const (
	ascNoAdditionalSense      = 0x0000
	ascOperationInProgress    = 0x0016
	ascNotReadyInitRequired   = 0x0402 // LOGICAL UNIT NOT READY, INITIALIZING COMMAND REQUIRED
	ascUnreachableCopyTarget  = 0x0804
	ascCopyTargetUnreachable  = 0x0d02 // COPY TARGET DEVICE NOT REACHABLE
	ascIncorrectCopyTarget    = 0x0d03 // INCORRECT COPY TARGET DEVICE TYPE
	ascWriteError             = 0x0c00
	ascInvalidFieldInCmdIU    = 0x0e03 // INVALID FIELD IN COMMAND INFORMATION UNIT
	ascUnrecoveredReadError   = 0x1100
	ascParamListLengthError   = 0x1a00
	ascMiscompareDuringVerify = 0x1d00
	ascInvalidOpcode          = 0x2000
	ascLBAOutOfRange          = 0x2100
	ascInvalidFieldInCDB      = 0x2400
	ascLUNotSupported         = 0x2500
	ascInvalidFieldInParam    = 0x2600
	ascInvalidReleaseOfPR     = 0x2604
	ascTooManyTargetDescs     = 0x2606 // TOO MANY TARGET DESCRIPTORS
	ascUnsupportedTargetDesc  = 0x2607 // UNSUPPORTED TARGET DESCRIPTOR TYPE CODE
	ascTooManySegmentDescs    = 0x2608 // TOO MANY SEGMENT DESCRIPTORS
	ascUnsupportedSegmentDesc = 0x2609 // UNSUPPORTED SEGMENT DESCRIPTOR TYPE CODE
	ascWriteProtected         = 0x2700
	ascSoftwareWriteProtected = 0x2702
	ascSpaceAllocFailedWP     = 0x2707 // SPACE ALLOCATION FAILED WRITE PROTECT (SBC-3 4.7.3.7)
	ascPowerOnReset           = 0x2900 // POWER ON, RESET, OR BUS DEVICE RESET OCCURRED
	ascPowerOnOccurred        = 0x2901
	ascBusDeviceReset         = 0x2903 // BUS DEVICE RESET FUNCTION OCCURRED
	ascModeParametersChanged  = 0x2a01
	ascReservationsPreempted  = 0x2a03
	ascReservationsReleased   = 0x2a04
	ascRegistrationsPreempted = 0x2a05
	ascCapacityDataChanged    = 0x2a09
	ascCommandsCleared        = 0x2f00 // COMMANDS CLEARED BY ANOTHER INITIATOR
	ascSavingNotSupported     = 0x3900
	ascReportedLUNsChanged    = 0x3f0e
	ascMediumNotPresent       = 0x3a00
	ascInternalTargetFailure  = 0x4400
	ascMediumRemovalPrevented = 0x5302
	ascInsufficientResources  = 0x5503
)

// SenseError is a command outcome reported as CHECK CONDITION with sense
// data. Handlers return it; Execute turns it into a Result.
type SenseError struct {
	Key SenseKey
	// ASC and ASCQ in one value, ASC in the high byte.
	Code uint16
	// Info goes to the INFORMATION field when InfoValid (an LBA, or a
	// byte offset for MISCOMPARE).
	Info      uint64
	InfoValid bool
	// Field pointer (SPC-4 4.5.2.4.2) for ILLEGAL REQUEST: the byte
	// (and Bit, when BitValid) of the CDB (InCDB) or of the parameter
	// list that is wrong.
	FieldValid bool
	InCDB      bool
	Field      uint16
	Bit        uint8
	BitValid   bool
	// CmdSpecific is the COMMAND-SPECIFIC INFORMATION field and Extra
	// the additional sense bytes after byte 17 of fixed-format sense
	// data: EXTENDED COPY puts a copy target's status and sense data
	// there (SPC-4 6.4.5). Descriptor format, which only REQUEST SENSE
	// builds for the LU's own state, carries neither.
	CmdSpecific uint32
	Extra       []byte
	// Err is the underlying cause, for logs.
	Err error
}

func (e *SenseError) Error() string {
	s := fmt.Sprintf("scsi: sense %#x/%#04x", byte(e.Key), e.Code)
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *SenseError) Unwrap() error { return e.Err }

// fixedSenseLen is the size of the fixed-format sense data built here,
// without additional sense bytes; maxSenseLen bounds it with them (SPC-4
// 4.5.1: at most 252 bytes).
const (
	fixedSenseLen = 18
	maxSenseLen   = 252
)

// AppendFixed appends fixed-format sense data (SPC-4 4.5.3, response code
// 70h: current error).
func (e *SenseError) AppendFixed(b []byte) []byte {
	var s [fixedSenseLen]byte
	s[0] = 0x70
	if e.InfoValid && e.Info <= 0xffffffff {
		s[0] |= 0x80 // VALID
		binary.BigEndian.PutUint32(s[3:], uint32(e.Info))
	}
	s[2] = byte(e.Key) & 0x0f
	extra := e.Extra[:min(len(e.Extra), maxSenseLen-fixedSenseLen)]
	s[7] = byte(fixedSenseLen - 8 + len(extra))
	binary.BigEndian.PutUint32(s[8:], e.CmdSpecific)
	s[12], s[13] = byte(e.Code>>8), byte(e.Code)
	e.putSKS(s[15:18])
	return append(append(b, s[:]...), extra...)
}

// AppendDescriptor appends descriptor-format sense data (SPC-4 4.5.2,
// response code 72h) with an information and a sense-key-specific
// descriptor when they apply.
func (e *SenseError) AppendDescriptor(b []byte) []byte {
	start := len(b)
	b = append(b, 0x72, byte(e.Key)&0x0f, byte(e.Code>>8), byte(e.Code), 0, 0, 0, 0)
	if e.InfoValid {
		// Information descriptor (SPC-4 4.5.2.2).
		b = append(b, 0x00, 0x0a, 0x80, 0)
		b = binary.BigEndian.AppendUint64(b, e.Info)
	}
	if e.FieldValid {
		// Sense key specific descriptor (SPC-4 4.5.2.4).
		b = append(b, 0x02, 0x06, 0, 0, 0, 0, 0, 0)
		e.putSKS(b[len(b)-4 : len(b)-1])
	}
	b[start+7] = byte(len(b) - start - 8)
	return b
}

// putSKS fills the 3-byte SENSE KEY SPECIFIC field with the field pointer.
func (e *SenseError) putSKS(s []byte) {
	if !e.FieldValid {
		return
	}
	s[0] = 0x80 // SKSV
	if e.InCDB {
		s[0] |= 0x40 // C/D
	}
	if e.BitValid {
		s[0] |= 0x08 | e.Bit&7 // BPV, BIT POINTER
	}
	binary.BigEndian.PutUint16(s[1:], e.Field)
}

func senseErr(key SenseKey, code uint16) *SenseError {
	return &SenseError{Key: key, Code: code}
}

// fieldErr is ILLEGAL REQUEST with code, pointing at byte field (and bit,
// if bit >= 0) of the CDB (inCDB) or of the parameter data.
func fieldErr(code uint16, inCDB bool, field, bit int) *SenseError {
	e := &SenseError{Key: SenseIllegalRequest, Code: code, FieldValid: true, InCDB: inCDB, Field: uint16(field)}
	if bit >= 0 {
		e.Bit, e.BitValid = uint8(bit), true
	}
	return e
}

// invalidCDB is INVALID FIELD IN CDB at byte field (bit, if >= 0).
func invalidCDB(field, bit int) *SenseError {
	return fieldErr(ascInvalidFieldInCDB, true, field, bit)
}

// invalidParam is INVALID FIELD IN PARAMETER LIST at byte field (bit, if
// >= 0) of the parameter data.
func invalidParam(field, bit int) *SenseError {
	return fieldErr(ascInvalidFieldInParam, false, field, bit)
}

func paramListLengthError() *SenseError {
	return senseErr(SenseIllegalRequest, ascParamListLengthError)
}

func lbaOutOfRange() *SenseError {
	return senseErr(SenseIllegalRequest, ascLBAOutOfRange)
}

// highestBit is the bit pointer of the most significant set bit of b.
func highestBit(b byte) int {
	for i := 7; i >= 0; i-- {
		if b&(1<<i) != 0 {
			return i
		}
	}
	return -1
}
