package scsi

// REQUEST SENSE (SPC-4 6.39), START STOP UNIT (SBC-3 5.25) and PREVENT
// ALLOW MEDIUM REMOVAL (SBC-3 5.14). TEST UNIT READY needs no handler:
// the generic NOT READY check is the whole command.

// requestSense reports the LU's state as sense data. Unit attentions stay
// queued: SAM-5 5.14 lets REQUEST SENSE report other sense data and keep
// them for the next command.
func (lu *LogicalUnit) requestSense(c *Command, r *Result) error {
	e := senseErr(SenseNoSense, ascNoAdditionalSense)
	if lu.stopped.Load() {
		e = senseErr(SenseNotReady, ascNotReadyInitRequired)
	}
	return requestSenseData(c, r, e)
}

// requestSenseData returns e as REQUEST SENSE parameter data, fixed or
// descriptor format as DESC asks.
func requestSenseData(c *Command, r *Result, e *SenseError) error {
	var data []byte
	if c.CDB[1]&0x01 != 0 {
		data = e.AppendDescriptor(nil)
	} else {
		data = e.AppendFixed(nil)
	}
	putAllocated(c, r, data, int(c.CDB[4]))
	return nil
}

// startStop moves the LU between active (START=1) and stopped (START=0;
// medium access then fails with NOT READY, INITIALIZING COMMAND REQUIRED
// until a START). Stopping writes cached data first unless NO_FLUSH. The
// medium is not removable (LOEJ) and there are no power conditions; the
// CDB check refuses both.
func (lu *LogicalUnit) startStop(c *Command) error {
	b4 := c.CDB[4]
	if b4&0x01 != 0 {
		lu.stopped.Store(false)
		return nil
	}
	if b4&0x04 == 0 && !lu.stopped.Load() {
		if err := lu.flush(); err != nil {
			return err
		}
	}
	lu.stopped.Store(true)
	return nil
}

// preventAllow records PREVENT per I_T nexus (SBC-3 5.14). The medium is
// not removable, so the state only has to be kept and cleared as SBC-3
// says (logical unit reset, I_T nexus loss, ALLOW).
func (lu *LogicalUnit) preventAllow(c *Command) error {
	prevent := c.CDB[4] & 0x03
	if prevent > 1 {
		return invalidCDB(4, 1) // 10b and 11b are obsolete
	}
	lu.mu.Lock()
	defer lu.mu.Unlock()
	if prevent == 1 {
		lu.prevents[c.Nexus] = true
	} else {
		delete(lu.prevents, c.Nexus)
	}
	return nil
}
