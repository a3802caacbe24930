package scsi

import (
	"bytes"
	"sync"
)

// READ, WRITE, VERIFY and WRITE AND VERIFY (SBC-3 5.8-5.13, 5.33-5.44).
//
// Transfer length and iSCSI ExpectedDataTransferLength may disagree
// (RFC 7143 11.4.5.1). Data-In: the blocks asked for are read, as much as
// fits is sent, and Wanted tells the transport the residual. Data-Out:
// surplus bytes are ignored (underflow); with fewer bytes the whole blocks
// received are written (overflow), and a partial block is refused as
// INVALID FIELD IN COMMAND INFORMATION UNIT before anything is written
// (libiscsi test_write_residuals, SAM-5 5.4.2).

// lengthField is the CDB byte of the TRANSFER LENGTH field, for the field
// pointer.
func lengthField(op byte) int {
	switch cdbLen(op) {
	case 6:
		return 4
	case 10:
		return 7
	case 12:
		return 6
	}
	return 10
}

// checkTransfer validates LBA range and transfer length of a block command.
func (lu *LogicalUnit) checkTransfer(cdb []byte, lba uint64, n uint32) error {
	if err := lu.checkRange(lba, uint64(n)); err != nil {
		return err
	}
	if n > lu.maxXfer {
		return invalidCDB(lengthField(cdb[0]), -1)
	}
	return nil
}

// fua reports FUA or FUA_NV in byte 1 of a 10/12/16-byte read or write:
// the data must come from, or reach, the medium (SBC-3 5.11). FUA_NV
// allows a non-volatile cache, which a page cache is not.
func fua(cdb []byte) bool {
	return cdbLen(cdb[0]) != 6 && cdb[1]&0x0a != 0
}

func (lu *LogicalUnit) read(c *Command, r *Result) error {
	lba, n := lbaAndLength(c.CDB)
	if err := lu.checkTransfer(c.CDB, lba, n); err != nil {
		return err
	}
	size := uint64(n) << lu.shift
	r.Wanted = int(size)
	if fua(c.CDB) && lu.wce.Load() {
		// Cached writes reach the medium first, so what is read is what
		// the medium holds.
		if err := lu.flush(); err != nil {
			return err
		}
	}
	dst := c.DataIn
	if uint64(len(dst)) > size {
		dst = dst[:size]
	}
	if lu.extenter != nil && c.FileDataIn && len(dst) > 0 && lu.files.enter() {
		fr, err := lu.extenter.FileExtent(int64(lba<<lu.shift), int64(len(dst)))
		if err == nil && fr.Len == int64(len(dst)) {
			r.File, r.N, r.Release = fr, len(dst), lu.files.leave
			return nil
		}
		lu.files.leave()
	}
	if lu.async != nil && c.Done != nil && len(dst) > 0 {
		lu.readAsync(c.Done, c.LentDataIn, dst, lba, r.Wanted)
		return errPending
	}
	if lu.lender != nil && c.LentDataIn && len(dst) > 0 {
		// Held shared for the read only: the lent bytes are a copy the
		// device made, which no later write changes.
		lu.ioMu.RLock()
		data, release, err := lu.lender.ReadLent(dst, int64(lba<<lu.shift))
		lu.ioMu.RUnlock()
		if err != nil {
			return diskError(err, lba, false)
		}
		if release != nil {
			r.Lent, r.Release = data, release
		}
		r.N = len(dst)
		return nil
	}
	if len(dst) > 0 {
		if err := lu.readBlocks(dst, lba); err != nil {
			return err
		}
	}
	r.N = len(dst)
	return nil
}

// readAsync starts reading dst at lba on the device and ends the command
// through done (Command.Done) when the device completes it; lend as
// Command.LentDataIn. ioMu is held shared until then, as readBlocks holds
// it. (Not the Command itself: captured here it would escape to the heap
// on every caller's path, the page-cache reads included.)
func (lu *LogicalUnit) readAsync(done func(Result), lend bool, dst []byte, lba uint64, wanted int) {
	lu.ioMu.RLock()
	lu.async.ReadAsync(dst, int64(lba<<lu.shift), lend, func(data []byte, release func(), err error) {
		lu.ioMu.RUnlock()
		r := Result{Wanted: wanted}
		if err != nil {
			done(r.fail(diskError(err, lba, false)))
			return
		}
		r.N = len(dst)
		if release != nil {
			r.Lent, r.Release = data, release
		}
		done(r)
	})
}

// readBlocks reads len(p) bytes at lba with ioMu held shared, so a read
// sees a WRITE ATOMIC, COMPARE AND WRITE or ORWRITE whole or not at all
// (SBC-4: an atomic write is indivisible for every other command).
func (lu *LogicalUnit) readBlocks(p []byte, lba uint64) error {
	lu.ioMu.RLock()
	_, err := lu.dev.ReadAt(p, int64(lba<<lu.shift))
	lu.ioMu.RUnlock()
	if err != nil {
		return diskError(err, lba, false)
	}
	return nil
}

// writeBlocks writes whole blocks at lba with ioMu held shared (see ioMu),
// leaving durability to the caller.
func (lu *LogicalUnit) writeBlocks(p []byte, lba uint64) error {
	lu.ioMu.RLock()
	_, err := lu.dev.WriteAt(p, int64(lba<<lu.shift))
	lu.ioMu.RUnlock()
	if err != nil {
		return diskError(err, lba, true)
	}
	return nil
}

// dataOut returns the Data-Out bytes a command uses: at most want bytes,
// and only whole blocks when fewer arrived (see the file comment).
func (lu *LogicalUnit) dataOut(c *Command, want uint64) ([]byte, error) {
	data := c.DataOut
	if uint64(len(data)) >= want {
		return data[:want], nil
	}
	if uint64(len(data))&(lu.bs-1) != 0 {
		return nil, senseErr(SenseIllegalRequest, ascInvalidFieldInCmdIU)
	}
	return data, nil
}

func (lu *LogicalUnit) write(c *Command, r *Result) error {
	lba, n := lbaAndLength(c.CDB)
	if err := lu.checkTransfer(c.CDB, lba, n); err != nil {
		return err
	}
	size := uint64(n) << lu.shift
	r.Wanted = int(size)
	data, err := lu.dataOut(c, size)
	if err != nil {
		return err
	}
	return lu.writeAt(data, lba, fua(c.CDB))
}

// writeAt writes whole blocks at lba. With force (FUA) or the write cache
// disabled (WCE=0) the data is durable before GOOD.
func (lu *LogicalUnit) writeAt(data []byte, lba uint64, force bool) error {
	if len(data) == 0 {
		return nil
	}
	if err := lu.writeBlocks(data, lba); err != nil {
		return err
	}
	return lu.settle(force)
}

// settle makes completed writes durable when force (FUA) asks for it or
// the write cache is disabled (WCE=0); otherwise they stay cached.
func (lu *LogicalUnit) settle(force bool) error {
	if force || !lu.wce.Load() {
		return lu.flush()
	}
	return nil
}

// chunkPool holds the buffers VERIFY and WRITE SAME stream through.
var chunkPool = sync.Pool{New: func() any { b := make([]byte, patternChunk); return &b }}

// chunkBlocks is how many blocks fit in one pooled chunk.
func (lu *LogicalUnit) chunkBlocks() uint64 { return patternChunk >> lu.shift }

// compare reads n blocks at lba and compares them with want (one block
// repeated when single). It returns MISCOMPARE with the Data-Out offset of
// the first differing byte in INFORMATION, or a read error.
func (lu *LogicalUnit) compare(lba, n uint64, want []byte, single bool) error {
	bp := chunkPool.Get().(*[]byte)
	defer chunkPool.Put(bp)
	per := lu.chunkBlocks()
	for done := uint64(0); done < n; {
		k := min(per, n-done)
		buf := (*bp)[:k<<lu.shift]
		if err := lu.readBlocks(buf, lba+done); err != nil {
			return err
		}
		for i := uint64(0); i < k; i++ {
			got := buf[i<<lu.shift : (i+1)<<lu.shift]
			exp := want[:lu.bs]
			if !single {
				exp = want[(done+i)<<lu.shift : (done+i+1)<<lu.shift]
			}
			if !bytes.Equal(got, exp) {
				off := (done+i)<<lu.shift + uint64(firstDiff(got, exp))
				return &SenseError{Key: SenseMiscompare, Code: ascMiscompareDuringVerify,
					Info: off, InfoValid: true}
			}
		}
		done += k
	}
	return nil
}

func firstDiff(a, b []byte) int {
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return len(a)
}

// readCheck reads n blocks at lba to prove they are readable.
func (lu *LogicalUnit) readCheck(lba, n uint64) error {
	bp := chunkPool.Get().(*[]byte)
	defer chunkPool.Put(bp)
	per := lu.chunkBlocks()
	for done := uint64(0); done < n; {
		k := min(per, n-done)
		if _, err := lu.dev.ReadAt((*bp)[:k<<lu.shift], int64((lba+done)<<lu.shift)); err != nil {
			return diskError(err, lba+done, false)
		}
		done += k
	}
	return nil
}

// verify is VERIFY(10/12/16). BYTCHK 00b checks the blocks are readable,
// 01b compares them with the Data-Out buffer, 11b compares each with the
// one block sent (SBC-4 5.31); 10b is reserved.
func (lu *LogicalUnit) verify(c *Command, r *Result) error {
	lba, n := lbaAndLength(c.CDB)
	bytchk := c.CDB[1] >> 1 & 3
	if bytchk == 2 {
		return invalidCDB(1, 2)
	}
	if err := lu.checkTransfer(c.CDB, lba, n); err != nil {
		return err
	}
	switch bytchk {
	case 0:
		return lu.readCheck(lba, uint64(n))
	case 1:
		size := uint64(n) << lu.shift
		r.Wanted = int(size)
		data, err := lu.dataOut(c, size)
		if err != nil {
			return err
		}
		return lu.compare(lba, uint64(len(data))>>lu.shift, data, false)
	}
	r.Wanted = int(lu.bs)
	if n == 0 {
		return nil
	}
	if uint64(len(c.DataOut)) < lu.bs {
		return senseErr(SenseIllegalRequest, ascInvalidFieldInCmdIU)
	}
	return lu.compare(lba, uint64(n), c.DataOut[:lu.bs], true)
}

// writeVerify is WRITE AND VERIFY(10/12/16): write, make durable, then
// read back and, with BYTCHK, compare (SBC-3 5.41).
func (lu *LogicalUnit) writeVerify(c *Command, r *Result) error {
	lba, n := lbaAndLength(c.CDB)
	if err := lu.checkTransfer(c.CDB, lba, n); err != nil {
		return err
	}
	size := uint64(n) << lu.shift
	r.Wanted = int(size)
	data, err := lu.dataOut(c, size)
	if err != nil {
		return err
	}
	if len(data) == 0 {
		return nil
	}
	if err := lu.writeAt(data, lba, true); err != nil {
		return err
	}
	if c.CDB[1]&0x02 != 0 {
		return lu.compare(lba, uint64(len(data))>>lu.shift, data, false)
	}
	return lu.readCheck(lba, uint64(len(data))>>lu.shift)
}
