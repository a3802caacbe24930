package iscsi

import "github.com/diskless-boot/diskless/internal/scsi"

// Sense data for the few conditions the transport itself reports, before
// a command reaches the SCSI layer (fixed format, SPC-4 4.5.3).
var (
	// ILLEGAL REQUEST, INVALID FIELD IN CDB.
	senseInvalidFieldInCDB = (&scsi.SenseError{Key: scsi.SenseIllegalRequest, Code: 0x2400}).AppendFixed(nil)
	// ABORTED COMMAND, PROTOCOL SERVICE CRC ERROR (a data digest failed).
	senseProtocolCRCError = (&scsi.SenseError{Key: scsi.SenseAbortedCommand, Code: 0x4705}).AppendFixed(nil)
)
