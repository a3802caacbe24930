package scsi

// SYNCHRONIZE CACHE(10/16) and PRE-FETCH(10/16) (SBC-3 5.18-5.19,
// 5.22-5.23).

// cacheRange decodes LBA and NUMBER OF LOGICAL BLOCKS of these commands;
// zero blocks means "to the end of the medium".
func (lu *LogicalUnit) cacheRange(cdb []byte) (lba, n uint64, err error) {
	l, k := lbaAndLength(cdb)
	lba, n = l, uint64(k)
	if err := lu.checkRange(lba, n); err != nil {
		return 0, 0, err
	}
	if n == 0 {
		n = lu.blocks.Load() - lba
	}
	return lba, n, nil
}

// syncCache makes every completed write durable. The device cannot sync a
// range, so the whole device is flushed; IMMED is honoured by finishing
// before status, which it allows.
func (lu *LogicalUnit) syncCache(c *Command) error {
	if _, _, err := lu.cacheRange(c.CDB); err != nil {
		return err
	}
	return lu.flush()
}

// prefetch asks the device to read the range into its cache. GOOD, not
// CONDITION MET: the page cache makes no promise to keep the blocks.
func (lu *LogicalUnit) prefetch(c *Command) error {
	lba, n, err := lu.cacheRange(c.CDB)
	if err != nil || n == 0 {
		return err
	}
	if err := lu.prefetcher.Prefetch(int64(lba<<lu.shift), int64(n<<lu.shift)); err != nil {
		return diskError(err, lba, false)
	}
	return nil
}
