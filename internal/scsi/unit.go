package scsi

// REQUEST SENSE (SPC-4 6.39), START STOP UNIT (SBC-3 5.25) and PREVENT
// ALLOW MEDIUM REMOVAL (SBC-3 5.14). TEST UNIT READY needs no handler:
// the generic NOT READY check is the whole command.

// requestSense reports the LU's state as sense data. Unit attentions stay
// queued: SAM-5 5.14 lets REQUEST SENSE report other sense data and keep
// them for the next command.
func (lu *LogicalUnit) requestSense(c *Command, r *Result) error {
	e := lu.notReady()
	if e == nil {
		e = senseErr(SenseNoSense, ascNoAdditionalSense)
	}
	return requestSenseData(c, r, e)
}

// notReady is why medium access fails now, or nil when the medium is
// ready: NOT READY, MEDIUM NOT PRESENT while a removable medium is out,
// INITIALIZING COMMAND REQUIRED while the LU is stopped.
func (lu *LogicalUnit) notReady() *SenseError {
	switch {
	case lu.ejected.Load():
		return senseErr(SenseNotReady, ascMediumNotPresent)
	case lu.stopped.Load():
		return senseErr(SenseNotReady, ascNotReadyInitRequired)
	}
	return nil
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
// until a START). Stopping writes cached data first unless NO_FLUSH. With
// LOEJ, a removable medium is ejected (START=0) or loaded (START=1), unless
// an I_T nexus prevents its removal; the CDB check refuses LOEJ on a fixed
// medium (usage). There are no power conditions.
func (lu *LogicalUnit) startStop(c *Command) error {
	b4 := c.CDB[4]
	start, loej, noFlush := b4&0x01 != 0, b4&0x02 != 0, b4&0x04 != 0
	if loej {
		lu.mu.Lock()
		defer lu.mu.Unlock()
		// Checked under mu, so a PREVENT from another nexus cannot
		// slip in between the check and the move.
		if len(lu.prevents) > 0 {
			return senseErr(SenseIllegalRequest, ascMediumRemovalPrevented)
		}
	}
	if start {
		if loej {
			lu.ejected.Store(false)
		}
		lu.stopped.Store(false)
		return nil
	}
	if !noFlush && lu.notReady() == nil {
		if err := lu.flush(); err != nil {
			return err
		}
	}
	lu.stopped.Store(true)
	if loej {
		lu.ejected.Store(true)
	}
	return nil
}

// preventAllow records PREVENT per I_T nexus (SBC-3 5.14); removal is
// prevented while any nexus prevents it. SBC-3 clears the state on logical
// unit reset, I_T nexus loss and ALLOW. A fixed medium keeps the state
// too: it has no other effect there.
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
