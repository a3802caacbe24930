package scsi

// READ DEFECT DATA(10/12) (SBC-3 5.19, 5.20). An image file has no
// defects: the requested lists are reported valid and empty, in the
// requested format when it is one SBC-3 defines for address descriptors.
func (lu *LogicalUnit) readDefectData(c *Command, r *Result) error {
	cdb := c.CDB
	flags, alloc := cdb[2], int(be16(cdb[7:]))
	field := 2
	if cdb[0] == opReadDefectData12 {
		flags, alloc, field = cdb[1], int(be32(cdb[6:])), 1
	}
	format := flags & 0x07
	switch format {
	case 0x0, 0x3, 0x4, 0x5: // short block, long block, bytes from index, physical sector
	default:
		return invalidCDB(field, 2)
	}
	hdr := flags & 0x1f // PLISTV, GLISTV as requested, DEFECT LIST FORMAT
	// (10): header with a zero DEFECT LIST LENGTH; (12): header with
	// GENERATION CODE and DEFECT LIST LENGTH zero.
	data := []byte{0, hdr, 0, 0}
	if cdb[0] == opReadDefectData12 {
		data = append(data, 0, 0, 0, 0)
	}
	putAllocated(c, r, data, alloc)
	return nil
}
