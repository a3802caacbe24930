package iscsi

// noLUN is what decodeLUN returns for an address it cannot map; the SCSI
// target answers LOGICAL UNIT NOT SUPPORTED for it.
const noLUN = ^uint64(0)

// decodeLUN maps the 8-byte SAM LUN field to a LUN number (SAM-5 4.7):
// peripheral device addressing (method 00b, bus 0) for LUNs below 256 and
// flat space addressing (01b) for 14-bit LUNs; only the first level is
// used, the other levels must be zero.
func decodeLUN(raw uint64) uint64 {
	if raw&0x0000ffffffffffff != 0 {
		return noLUN
	}
	b0, b1 := byte(raw>>56), byte(raw>>48)
	switch b0 >> 6 {
	case 0:
		if b0&0x3f != 0 {
			return noLUN
		}
		return uint64(b1)
	case 1:
		return uint64(b0&0x3f)<<8 | uint64(b1)
	}
	return noLUN
}

// Serial number arithmetic on 32-bit sequence numbers (RFC 1982), as
// RFC 7143 4.2.2.1 requires for CmdSN and StatSN comparisons.
func snLess(a, b uint32) bool   { return a != b && int32(a-b) < 0 }
func snLessEq(a, b uint32) bool { return a == b || int32(a-b) < 0 }
