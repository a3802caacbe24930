package scsi

import "encoding/binary"

// READ CAPACITY(10) and READ CAPACITY(16) (SBC-3 5.15, 5.16).

// checkPMI refuses a LOGICAL BLOCK ADDRESS without PMI: both fields are
// obsolete, and a non-zero address with PMI=0 is an error (SBC-3 5.15).
func checkPMI(lba uint64, pmi byte) error {
	if pmi&1 == 0 && lba != 0 {
		return invalidCDB(2, -1)
	}
	return nil
}

func (lu *LogicalUnit) readCapacity10(c *Command, r *Result) error {
	if err := checkPMI(uint64(be32(c.CDB[2:])), c.CDB[8]); err != nil {
		return err
	}
	var b [8]byte
	// Capacities beyond 32 bits report FFFFFFFFh: use READ CAPACITY(16).
	binary.BigEndian.PutUint32(b[0:], uint32(min(lu.blocks.Load()-1, 0xffffffff)))
	binary.BigEndian.PutUint32(b[4:], uint32(lu.bs))
	r.Wanted = len(b)
	r.N = copy(c.DataIn, b[:])
	return nil
}

func (lu *LogicalUnit) readCapacity16(c *Command, r *Result) error {
	if err := checkPMI(be64(c.CDB[2:]), c.CDB[14]); err != nil {
		return err
	}
	b := make([]byte, 32)
	binary.BigEndian.PutUint64(b[0:], lu.blocks.Load()-1)
	binary.BigEndian.PutUint32(b[8:], uint32(lu.bs))
	// No protection information; one logical block per physical block.
	if lu.unmapper != nil {
		b[14] = 0x80 | 0x40 // LBPME, LBPRZ
	}
	putAllocated(c, r, b, int(be32(c.CDB[10:])))
	return nil
}
