package scsi

// WRITE ATOMIC(16) (SBC-4, atomic write operations): the blocks are written as one
// indivisible operation. The write happens under ioMu held exclusively,
// and every read and write of the medium holds ioMu shared, so no other
// command sees part of it. The Data-Out buffer must hold every block: an
// atomic write is never cut down to the blocks that arrived.
//
// Atomicity is with respect to other commands. Against a crash or a
// device error in the middle, the write is as atomic as one WriteAt of
// the back end (for a file, a pwrite), which the LU cannot make stronger.
//
// The Block Limits VPD page reports no alignment or granularity
// constraint (ATOMIC ALIGNMENT and ATOMIC TRANSFER LENGTH GRANULARITY 0)
// and no atomic boundaries (MAXIMUM ATOMIC BOUNDARY SIZE 0: the CDB check
// refuses a non-zero ATOMIC BOUNDARY).

// maxAtomicBytes bounds what one WRITE ATOMIC writes while every other
// command on the LU waits.
const maxAtomicBytes = 1 << 20

// maxAtomicBlocks is the MAXIMUM ATOMIC TRANSFER LENGTH in blocks, at
// most the MAXIMUM TRANSFER LENGTH.
func (lu *LogicalUnit) maxAtomicBlocks() uint32 {
	return min(uint32(maxAtomicBytes>>lu.shift), lu.maxXfer)
}

func (lu *LogicalUnit) writeAtomic(c *Command, r *Result) error {
	lba, n := be64(c.CDB[2:]), uint64(be16(c.CDB[12:]))
	if err := lu.checkRange(lba, n); err != nil {
		return err
	}
	if n > uint64(lu.maxAtomicBlocks()) {
		return invalidCDB(12, -1)
	}
	size := n << lu.shift
	r.Wanted = int(size)
	if uint64(len(c.DataOut)) < size {
		return senseErr(SenseIllegalRequest, ascInvalidFieldInCmdIU)
	}
	if n == 0 {
		return nil
	}
	lu.lockExclusive()
	_, err := lu.dev.WriteAt(c.DataOut[:size], int64(lba<<lu.shift))
	lu.unlockExclusive()
	if err != nil {
		return diskError(err, lba, true)
	}
	return lu.settle(fua(c.CDB))
}
