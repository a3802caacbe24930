package disk

// Check verifies every layer of an open overlay as CheckLayer does, the
// writable top included: CheckLayer refuses a top an overlay holds, since
// its log may be growing, so here the overlay's flushes and compactions
// wait while the layers are read. `diskless host check` of a host the
// server serves goes through it.
func (o *Overlay) Check() ([]LayerInfo, error) {
	o.fmu.Lock()
	defer o.fmu.Unlock()
	if o.closed.Load() {
		return nil, errClosed
	}
	lower, top := o.Layers()
	out := make([]LayerInfo, 0, len(lower)+1)
	for _, dir := range append(lower, top) {
		info, err := checkLayer(dir, false)
		if err != nil {
			return out, err
		}
		out = append(out, info)
	}
	return out, nil
}
