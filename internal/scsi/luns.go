package scsi

import "encoding/binary"

// REPORT LUNS (SPC-4 6.33).

// reportLUNs answers for the LU and clears its REPORTED LUNS DATA HAS
// CHANGED unit attention for the I_T nexus (SPC-4 6.33: the data it
// announced has now been read).
func (lu *LogicalUnit) reportLUNs(c *Command, r *Result) error {
	t := lu.target.Load()
	if t == nil {
		return senseErr(SenseIllegalRequest, ascLUNotSupported)
	}
	if err := t.reportLUNs(c, r); err != nil {
		return err
	}
	lu.nexus(c.Nexus).remove(ascReportedLUNsChanged)
	return nil
}

func (t *Target) reportLUNs(c *Command, r *Result) error {
	cdb := c.CDB
	alloc := be32(cdb[6:])
	if alloc < 16 {
		return invalidCDB(6, -1)
	}
	var luns []uint64
	switch cdb[2] {
	case 0x00, 0x02: // all logical units (there are no well-known LUs)
		luns = t.LUNs()
	case 0x01: // well-known logical units only: none
	default:
		return invalidCDB(2, -1)
	}
	data := make([]byte, 8, 8+8*len(luns))
	binary.BigEndian.PutUint32(data, uint32(8*len(luns)))
	for _, l := range luns {
		data = binary.BigEndian.AppendUint64(data, encodeLUN(l))
	}
	putAllocated(c, r, data, int(min(alloc, 1<<20)))
	return nil
}

// encodeLUN is the 8-byte LUN (SAM-5 4.7): peripheral device addressing
// below 256, flat space addressing up to MaxLUN.
func encodeLUN(lun uint64) uint64 {
	if lun < 256 {
		return lun << 48
	}
	return (0x4000 | lun&0x3fff) << 48
}
