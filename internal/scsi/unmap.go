package scsi

// UNMAP (SBC-3 5.28): deallocate the ranges of the block descriptors.
// Every descriptor is checked before any range is touched.

func (lu *LogicalUnit) unmap(c *Command, r *Result) error {
	cdb := c.CDB
	if cdb[1]&0x01 != 0 {
		return invalidCDB(1, 0) // ANCHOR: ANC_SUP=0
	}
	plen := int(be16(cdb[7:]))
	r.Wanted = plen
	if plen == 0 {
		return nil
	}
	data := c.DataOut
	if len(data) > plen {
		data = data[:plen]
	}
	if len(data) < 8 {
		return paramListLengthError()
	}
	// Only whole descriptors inside the parameter list count.
	dlen := min(int(be16(data[2:])), len(data)-8)
	nd := dlen / 16
	if nd > maxUnmapDescriptors {
		return invalidParam(2, -1)
	}
	var total uint64
	for i := 0; i < nd; i++ {
		d := data[8+16*i:]
		lba, n := be64(d), uint64(be32(d[8:]))
		if err := lu.checkRange(lba, n); err != nil {
			return err
		}
		if total += n; total > maxUnmapBlocks {
			return invalidParam(8+16*i+8, -1)
		}
	}
	lu.ioMu.RLock()
	defer lu.ioMu.RUnlock()
	for i := 0; i < nd; i++ {
		d := data[8+16*i:]
		lba, n := be64(d), uint64(be32(d[8:]))
		if n == 0 {
			continue
		}
		if err := lu.unmapper.Unmap(int64(lba<<lu.shift), int64(n<<lu.shift)); err != nil {
			return diskError(err, lba, true)
		}
	}
	return lu.settle(false)
}
