package scsi

// COMPARE AND WRITE and ORWRITE: the read-modify-write commands, atomic
// against every other read and write of the LU (ioMu).

import "bytes"

// maxCAWBlocks is the MAXIMUM COMPARE AND WRITE LENGTH: 255 (the CDB
// field's limit) or 1 MiB worth of blocks, whichever is less.
func (lu *LogicalUnit) maxCAWBlocks() uint64 {
	return min(uint64(maxCompareAndWrite), uint64(1<<20)>>lu.shift)
}

// compareAndWrite is COMPARE AND WRITE (SBC-3 5.2): the Data-Out buffer is
// NUMBER OF LOGICAL BLOCKS blocks to compare, then as many to write. The
// read, compare and write happen under ioMu held exclusively, so no other
// read or write of the LU interleaves.
func (lu *LogicalUnit) compareAndWrite(c *Command, r *Result) error {
	lba, n := be64(c.CDB[2:]), uint64(c.CDB[13])
	if err := lu.checkRange(lba, n); err != nil {
		return err
	}
	if n > lu.maxCAWBlocks() {
		return invalidCDB(13, -1)
	}
	half := n << lu.shift
	r.Wanted = int(2 * half)
	// Compare data and write data travel as one buffer: a buffer of
	// another size (a wrong ExpectedDataTransferLength, or data with
	// NUMBER OF LOGICAL BLOCKS zero) has no meaning the NUMBER OF LOGICAL
	// BLOCKS field can give it.
	if uint64(len(c.DataOut)) != 2*half {
		return invalidCDB(13, -1)
	}
	if n == 0 {
		return nil
	}
	// half is at most maxCAWBlocks, 1 MiB: a pooled chunk holds it.
	bp := chunkPool.Get().(*[]byte)
	defer chunkPool.Put(bp)
	cur := (*bp)[:half]
	lu.lockExclusive()
	defer lu.unlockExclusive()
	if _, err := lu.dev.ReadAt(cur, int64(lba<<lu.shift)); err != nil {
		return diskError(err, lba, false)
	}
	if !bytes.Equal(cur, c.DataOut[:half]) {
		return &SenseError{Key: SenseMiscompare, Code: ascMiscompareDuringVerify,
			Info: uint64(firstDiff(cur, c.DataOut[:half])), InfoValid: true}
	}
	if _, err := lu.dev.WriteAt(c.DataOut[half:], int64(lba<<lu.shift)); err != nil {
		return diskError(err, lba, true)
	}
	return lu.settle(fua(c.CDB))
}

// orWrite is ORWRITE(16) (SBC-3 5.17): each block becomes the bitwise OR
// of what the medium holds and the Data-Out buffer. Like COMPARE AND
// WRITE the read-modify-write excludes every other write.
func (lu *LogicalUnit) orWrite(c *Command, r *Result) error {
	lba, n := lbaAndLength(c.CDB)
	if err := lu.checkTransfer(c.CDB, lba, n); err != nil {
		return err
	}
	size := uint64(n) << lu.shift
	r.Wanted = int(size)
	data, err := lu.dataOut(c, size)
	if err != nil || len(data) == 0 {
		return err
	}
	bp := chunkPool.Get().(*[]byte)
	defer chunkPool.Put(bp)
	lu.lockExclusive()
	defer lu.unlockExclusive()
	for off := 0; off < len(data); {
		buf := (*bp)[:min(len(*bp), len(data)-off)]
		at := int64(lba<<lu.shift) + int64(off)
		if _, err := lu.dev.ReadAt(buf, at); err != nil {
			return diskError(err, lba, false)
		}
		for i := range buf {
			buf[i] |= data[off+i]
		}
		if _, err := lu.dev.WriteAt(buf, at); err != nil {
			return diskError(err, lba, true)
		}
		off += len(buf)
	}
	return lu.settle(fua(c.CDB))
}
