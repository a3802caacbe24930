// Package scsi implements the SCSI target device that diskless exports:
// SPC-4 primary commands and SBC-3 block commands, executed on disk.Device
// logical units. It decodes CDBs, builds sense data, mode and VPD pages, and
// keeps reservations and unit attentions per I_T nexus.
//
// It does no networking: a transport (internal/iscsi) hands it complete
// commands with their Data-Out and sends back what it returns.
//
// A Target routes commands to its LogicalUnits; both are safe for
// concurrent use. Which commands exist, which CDB bits they take and how
// they fare under reservations is one table (opcodes.go) that dispatch,
// CDB checking and REPORT SUPPORTED OPERATION CODES all read.
package scsi

import "github.com/diskless-boot/diskless/internal/disk"

// Status is a SCSI status byte (SAM-5 5.3).
type Status byte

const (
	StatusGood                Status = 0x00
	StatusCheckCondition      Status = 0x02
	StatusConditionMet        Status = 0x04
	StatusBusy                Status = 0x08
	StatusReservationConflict Status = 0x18
	StatusTaskSetFull         Status = 0x28
	StatusACAActive           Status = 0x30
	StatusTaskAborted         Status = 0x40
)

// Nexus identifies the I_T nexus a command arrived on: the initiator port
// (iSCSI name + ISID, SAM-5 / RFC 7143 section 4.4.1) and the relative target
// port. Reservations and unit attentions are kept per Nexus. It is comparable
// and usable as a map key.
type Nexus struct {
	InitiatorName string // e.g. iqn.2010-04.org.ipxe:00000000-...
	ISID          uint64 // 48-bit ISID of the session
	RelTargetPort uint16 // relative target port identifier, 1-based
}

// Command is one SCSI command, with all its Data-Out already received.
type Command struct {
	Nexus Nexus
	LUN   uint64 // flat LUN number (SAM-5 4.7), decoded by the transport
	CDB   []byte
	// DataOut holds what the initiator sent (exactly the iSCSI
	// ExpectedDataTransferLength). It may be shorter or longer than the
	// CDB implies; the command decides what that means.
	DataOut []byte
	// DataIn is the buffer for Data-In, of length ExpectedDataTransferLength
	// for read-direction commands (nil otherwise). The command fills a prefix.
	DataIn []byte
	// FileDataIn says the transport can send Data-In straight from a host
	// file (sendfile); READ then answers with Result.File instead of
	// copying into DataIn when the device allows it.
	FileDataIn bool
	// LentDataIn says the transport can send Data-In from a buffer of the
	// device's own; READ then answers with Result.Lent when the device
	// lends it (disk.Lender).
	LentDataIn bool
	// Done, when set, lets a command end later: Execute may then return
	// a Result with Pending set and call Done with the real one, exactly
	// once, from a thread of the device's (a READ on a disk.AsyncReader,
	// see Target.Async). Done must not block. When Execute returns a
	// Result that is not Pending, Done is never called.
	Done func(Result)
}

// Result is the outcome of a Command.
type Result struct {
	Status Status
	// Sense is fixed-format sense data (SPC-4 4.5.3) when Status is
	// CHECK CONDITION, nil otherwise.
	Sense []byte
	// N is the number of bytes of DataIn filled.
	N int
	// File, when Len > 0, holds the Data-In instead of DataIn: N bytes
	// to send from this file range (see Command.FileDataIn).
	File disk.FileRange
	// Lent, when not nil, holds the Data-In instead of DataIn: N bytes
	// the device lent (see Command.LentDataIn), valid until Release.
	Lent []byte
	// Release, when set, must be called once File or Lent has been sent
	// or will not be: for File, commands that must look indivisible wait
	// until then; Lent goes back to the device.
	Release func()
	// Wanted is the number of bytes the command would have transferred
	// (Data-In or Data-Out) had the buffers been big enough; the transport
	// derives the residual overflow/underflow from it (RFC 7143 11.4.5).
	// For commands with an ALLOCATION LENGTH it is at most that length:
	// truncation there is not an overflow (SPC-4 4.2.5.6). It is set on
	// CHECK CONDITION too.
	Wanted int
	// Pending: the command goes on, and Command.Done receives its Result;
	// nothing else here is set.
	Pending bool
}
