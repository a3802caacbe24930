package scsi

import "sync"

// fileGate keeps READ data handed to the transport as a file range
// (Command.FileDataIn, sent later with sendfile) out of the way of the
// commands that must look indivisible. Such data is read by the kernel
// when it is sent, after the READ has returned and outside ioMu, so an
// exclusive writer first closes the gate - no new file ranges are handed
// out; READs copy under ioMu instead - and waits until every range out is
// released, then takes ioMu. It is safe for concurrent use.
type fileGate struct {
	mu      sync.Mutex
	drained sync.Cond // signalled when out drops to 0
	out     int       // file ranges handed out and not yet released
	closed  int       // exclusive writers waiting or running
}

// enter reports whether a file range may be handed out; if so, leave must
// be called once it has been sent or dropped.
func (g *fileGate) enter() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed > 0 {
		return false
	}
	g.out++
	return true
}

func (g *fileGate) leave() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.out--; g.out == 0 && g.drained.L != nil {
		g.drained.Broadcast()
	}
}

// close stops new file ranges and waits for those out to be released.
func (g *fileGate) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.drained.L == nil {
		g.drained.L = &g.mu
	}
	g.closed++
	for g.out > 0 {
		g.drained.Wait()
	}
}

func (g *fileGate) open() {
	g.mu.Lock()
	g.closed--
	g.mu.Unlock()
}

// lockExclusive takes ioMu exclusively for a command no other may see half
// done, once no READ data is still to be sent from the file.
func (lu *LogicalUnit) lockExclusive() {
	lu.files.close()
	lu.ioMu.Lock()
}

func (lu *LogicalUnit) unlockExclusive() {
	lu.ioMu.Unlock()
	lu.files.open()
}
