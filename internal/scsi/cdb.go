package scsi

import "encoding/binary"

// CDB field decoding shared by the commands.

func be16(b []byte) uint16 { return binary.BigEndian.Uint16(b) }
func be32(b []byte) uint32 { return binary.BigEndian.Uint32(b) }
func be64(b []byte) uint64 { return binary.BigEndian.Uint64(b) }

// lbaAndLength decodes the LOGICAL BLOCK ADDRESS and TRANSFER LENGTH (or
// VERIFICATION LENGTH, PREFETCH LENGTH, NUMBER OF LOGICAL BLOCKS) of the
// block commands, by CDB size (SBC-3 5.x): 6-byte CDBs carry a 21-bit LBA
// and an 8-bit length where 0 means 256 (READ(6)/WRITE(6), SBC-3 5.13).
func lbaAndLength(cdb []byte) (lba uint64, n uint32) {
	switch cdbLen(cdb[0]) {
	case 6:
		lba = uint64(cdb[1]&0x1f)<<16 | uint64(cdb[2])<<8 | uint64(cdb[3])
		n = uint32(cdb[4])
		if n == 0 {
			n = 256
		}
	case 10:
		lba, n = uint64(be32(cdb[2:])), uint32(be16(cdb[7:]))
	case 12:
		lba, n = uint64(be32(cdb[2:])), be32(cdb[6:])
	case 16:
		lba, n = be64(cdb[2:]), be32(cdb[10:])
	}
	return lba, n
}

// cdbLen is the CDB length the group code of an operation code implies
// (SPC-4 4.2.5.1).
func cdbLen(op byte) int {
	switch op >> 5 {
	case 0:
		return 6
	case 1, 2:
		return 10
	case 4:
		return 16
	case 5:
		return 12
	}
	return 0
}

// putAllocated copies data, truncated to the allocation length, to the
// Data-In buffer. Truncation at the allocation length is not an error and
// no residual overflow (SPC-4 4.2.5.6): Wanted is what would be sent.
func putAllocated(c *Command, r *Result, data []byte, alloc int) {
	n := min(len(data), alloc)
	r.Wanted = n
	r.N = copy(c.DataIn, data[:n])
}

// BlockRange returns the LBA and transfer length (in blocks) of a READ,
// WRITE or VERIFY CDB of any size (SBC-3 5.8-5.44); zero for a CDB shorter
// than its operation code implies. For transports that record what a
// command touched (I/O traces).
func BlockRange(cdb []byte) (lba uint64, blocks uint32) {
	if len(cdb) == 0 || len(cdb) < cdbLen(cdb[0]) {
		return 0, 0
	}
	return lbaAndLength(cdb)
}
