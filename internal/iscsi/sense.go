package iscsi

// Sense data for the few conditions the transport itself reports, before
// a command reaches the SCSI layer (fixed format, SPC-4 4.5.3).
var (
	// ILLEGAL REQUEST, INVALID FIELD IN CDB.
	senseInvalidFieldInCDB = fixedSense(0x05, 0x24, 0x00)
	// ABORTED COMMAND, PROTOCOL SERVICE CRC ERROR (a data digest failed).
	senseProtocolCRCError = fixedSense(0x0b, 0x47, 0x05)
)

func fixedSense(key, asc, ascq byte) []byte {
	s := make([]byte, 18)
	s[0] = 0x70
	s[2] = key
	s[7] = 10
	s[12] = asc
	s[13] = ascq
	return s
}
