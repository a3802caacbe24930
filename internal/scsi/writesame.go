package scsi

// WRITE SAME(10/16) (SBC-3 5.45, 5.46).
//
// One block of Data-Out (or zeros, with NDOB) is written to every block of
// the range: zeros through the device's zeroing call when it has one, any
// other pattern block by block. With UNMAP set (and ANCHOR clear) the
// action is an unmap whatever the block holds (SBC-4 table 237, "Unmap":
// a thin provisioned LU should deallocate): the range is deallocated and,
// LBPRZ being 1, reads back as zeros.

func (lu *LogicalUnit) writeSame(c *Command, r *Result) error {
	cdb := c.CDB
	var lba, n uint64
	var lengthField int
	ndob := false
	if cdb[0] == opWriteSame10 {
		lba, n, lengthField = uint64(be32(cdb[2:])), uint64(be16(cdb[7:])), 7
	} else {
		lba, n, lengthField = be64(cdb[2:]), uint64(be32(cdb[10:])), 10
		ndob = cdb[1]&0x01 != 0
	}
	unmap := cdb[1]&0x08 != 0
	switch {
	case cdb[1]&0x10 != 0:
		// ANCHOR: anchored blocks are not supported (ANC_SUP=0).
		return invalidCDB(1, 4)
	case unmap && lu.unmapper == nil:
		// LBPWS/LBPWS10 are clear on a fully provisioned LU.
		return invalidCDB(1, 3)
	}
	if n == 0 {
		// WSNZ=0: zero blocks means up to the end of the medium.
		if lba > lu.blocks.Load() {
			return lbaOutOfRange()
		}
		n = lu.blocks.Load() - lba
	}
	if err := lu.checkRange(lba, n); err != nil {
		return err
	}
	if n > maxWriteSameBlocks {
		return invalidCDB(lengthField, -1)
	}
	var pattern []byte
	if !ndob {
		r.Wanted = int(lu.bs)
		if uint64(len(c.DataOut)) != lu.bs {
			// The Data-Out buffer is exactly one block.
			return senseErr(SenseIllegalRequest, ascInvalidFieldInCmdIU)
		}
		pattern = c.DataOut
	}
	if n == 0 {
		return nil
	}
	off, length := int64(lba<<lu.shift), int64(n<<lu.shift)
	zero := ndob || allZero(pattern)
	lu.ioMu.RLock()
	var err error
	switch {
	case unmap:
		err = lu.unmapper.Unmap(off, length)
	case zero && lu.zeroer != nil:
		err = lu.zeroer.WriteZeroes(off, length)
	default:
		if pattern == nil {
			pattern = make([]byte, lu.bs)
		}
		err = lu.fill(pattern, lba, n)
	}
	lu.ioMu.RUnlock()
	if err != nil {
		return diskError(err, lba, true)
	}
	return lu.settle(false)
}

// fill writes pattern to n blocks at lba, a pooled chunk at a time.
func (lu *LogicalUnit) fill(pattern []byte, lba, n uint64) error {
	bp := chunkPool.Get().(*[]byte)
	defer chunkPool.Put(bp)
	per := lu.chunkBlocks()
	buf := (*bp)[:min(per, n)<<lu.shift]
	for i := 0; i < len(buf); i += len(pattern) {
		copy(buf[i:], pattern)
	}
	for done := uint64(0); done < n; {
		k := min(per, n-done)
		if _, err := lu.dev.WriteAt(buf[:k<<lu.shift], int64((lba+done)<<lu.shift)); err != nil {
			return err
		}
		done += k
	}
	return nil
}

func allZero(b []byte) bool {
	for _, v := range b {
		if v != 0 {
			return false
		}
	}
	return true
}
