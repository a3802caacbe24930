package scsi

import "encoding/binary"

// GET LBA STATUS (SBC-3 5.6): the provisioning status of the blocks from
// STARTING LOGICAL BLOCK ADDRESS, as extents the device reports.

const (
	lbaMapped      = 0x0
	lbaDeallocated = 0x1
	maxLBAStatus   = 64 // descriptors per response
)

func (lu *LogicalUnit) getLBAStatus(c *Command, r *Result) error {
	lba, alloc := be64(c.CDB[2:]), int(be32(c.CDB[10:]))
	blocks := lu.blocks.Load()
	if lba >= blocks {
		return lbaOutOfRange()
	}
	if alloc == 0 {
		return nil
	}
	want := min(max((alloc-8)/16, 1), maxLBAStatus)
	data := make([]byte, 8, 8+16*want)
	for i := 0; i < want && lba < blocks; i++ {
		mapped, nbytes, err := lu.alloc.Mapped(int64(lba << lu.shift))
		if err != nil {
			return diskError(err, lba, false)
		}
		// Extents come in bytes; a block holding any mapped byte is
		// mapped, so mapped extents round up and holes round down.
		end := uint64(int64(lba<<lu.shift) + nbytes)
		last := end >> lu.shift
		if mapped {
			last = (end + lu.bs - 1) >> lu.shift
		}
		if last <= lba {
			mapped, last = true, lba+1
		}
		n := min(last, blocks) - lba
		n = min(n, 0xffffffff)
		status := byte(lbaMapped)
		if !mapped {
			status = lbaDeallocated
		}
		var d [16]byte
		binary.BigEndian.PutUint64(d[0:], lba)
		binary.BigEndian.PutUint32(d[8:], uint32(n))
		d[12] = status
		data = append(data, d[:]...)
		lba += n
	}
	binary.BigEndian.PutUint32(data, uint32(len(data)-4))
	putAllocated(c, r, data, alloc)
	return nil
}
