package tftp

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"strings"
	"sync"
	"time"
)

// maxBackoff caps the doubling retransmission timeout, unless the client
// negotiated a longer one.
const maxBackoff = 10 * time.Second

// maxStreamWindow bounds the bytes a streamed transfer (netascii, or a
// file without ReadAt) buffers: windowsize is reduced to fit.
const maxStreamWindow = 256 << 10

// transfer is one RRQ being served. It is owned by one goroutine.
type transfer struct {
	s       *Server
	slot    *slot
	ctx     context.Context // ends with the transfer's slot: shutdown, preemption, time limit
	acked1  bool            // the client acknowledged something; slot told
	reqConn net.PacketConn  // the request port: refusals before a socket exists
	conn    net.PacketConn  // this transfer's own socket (its TID)
	peer    net.Addr
	req     Request
	file    fs.File
	src     blockSource
	info    TransferInfo

	refused  bool // info.Err is a refusal sent to the client
	panicked bool

	timeout time.Duration // first retransmission timeout
	pkt     []byte        // DATA packet being built: 4 + blksize bytes
	rbuf    []byte

	// Window state, in absolute block numbers (1 is the first DATA).
	acked   int64 // blocks 1..acked are acknowledged
	sent    int64 // highest block sent so far
	last    int64 // the final block, 0 until it has been read
	lastLen int   // its length

	// deadlineMu orders SetReadDeadline calls with the cancellation that
	// forces the deadline into the past, so that one never undoes the other.
	deadlineMu sync.Mutex
	cancelled  bool
}

func (t *transfer) close() {
	if t.conn != nil {
		t.conn.Close()
	}
	if t.file != nil {
		t.file.Close()
	}
}

// refuse answers the request with an ERROR from the request port and
// returns it as the transfer's outcome.
func (t *transfer) refuse(e *Error) error {
	t.refused = true
	t.s.send(t.reqConn, t.peer, e.AppendBinary(nil))
	return e
}

// run serves the request and returns nil once the client acknowledged the
// last block.
func (t *transfer) run(ctx context.Context) error {
	t.ctx = ctx
	mode := strings.ToLower(t.req.Mode)
	if mode != "octet" && mode != "netascii" {
		// "mail" is obsolete (RFC 1350 section 1) and meaningless for reads.
		return t.refuse(errBadMode)
	}
	f, size, refusal := openFile(t.s.fsys, t.req.Filename)
	if refusal != nil {
		return t.refuse(refusal)
	}
	t.file = f
	t.info.Size = size
	if mode == "netascii" {
		// The converted length is unknown without reading the whole file,
		// so tsize is not offered (negotiate leaves it out for size -1).
		size = -1
	}
	_, canReadAt := f.(io.ReaderAt)
	streaming := mode == "netascii" || !canReadAt
	cfg := &t.s.cfg
	neg := negotiate(t.req.Options, size, cfg.MaxBlockSize, cfg.MaxWindowSize, cfg.MaxTimeout)
	if streaming && neg.windowSize*neg.blockSize > maxStreamWindow {
		// A streamed file keeps its unacknowledged window in memory: offer
		// a smaller window rather than hold megabytes per client.
		neg = negotiate(t.req.Options, size, cfg.MaxBlockSize, max(1, maxStreamWindow/neg.blockSize), cfg.MaxTimeout)
	}
	if neg.timeoutIgnored {
		t.s.stats.timeoutIgnored.Add(1)
	}
	t.info.BlockSize, t.info.WindowSize = neg.blockSize, neg.windowSize
	t.timeout = t.s.cfg.Timeout
	if neg.timeout > 0 {
		t.timeout = neg.timeout
	}
	t.info.Timeout = t.timeout
	bs := int64(neg.blockSize)
	switch {
	case !streaming:
		t.src = &atSource{r: f.(io.ReaderAt), size: t.info.Size, blockSize: bs}
	case mode == "octet":
		t.src = &streamSource{r: io.LimitReader(f, t.info.Size), blockSize: bs, window: int64(neg.windowSize)}
	default:
		t.src = &streamSource{r: newNetasciiReader(f), blockSize: bs, window: int64(neg.windowSize)}
	}

	conn, err := t.s.cfg.ListenTransfer(t.reqConn.LocalAddr())
	if err != nil {
		t.s.send(t.reqConn, t.peer, errInternal.AppendBinary(nil))
		return fmt.Errorf("tftp: open transfer socket: %w", err)
	}
	t.conn = conn
	stop := context.AfterFunc(ctx, func() {
		t.deadlineMu.Lock()
		t.cancelled = true
		t.conn.SetReadDeadline(time.Unix(1, 0))
		t.deadlineMu.Unlock()
	})
	defer stop()

	t.pkt = make([]byte, 4+neg.blockSize)
	t.rbuf = make([]byte, 1024)

	if len(neg.oack) > 0 {
		// RFC 2347: the OACK is acknowledged by ACK 0, after which DATA 1
		// follows. The client may instead refuse with ERROR 8.
		oack := (&OAck{Options: neg.oack}).AppendBinary(nil)
		err := t.exchange(func(retry bool) error {
			t.sendPacket(oack, retry)
			return nil
		}, func(block uint16) bool { return block == 0 })
		if err != nil {
			return err
		}
	}
	for {
		err := t.exchange(t.sendWindow, t.ackWindow)
		if err != nil {
			return err
		}
		t.src.release(t.acked)
		t.info.Bytes = t.acked * bs
		if t.last != 0 && t.acked == t.last {
			t.info.Bytes = (t.last-1)*bs + int64(t.lastLen)
			return nil
		}
	}
}

// exchange sends with send(false), then waits for an ACK that ack accepts
// (a step forward). Until then it ignores duplicate and stale ACKs - never
// answering them, which is what prevents the Sorcerer's Apprentice
// syndrome (RFC 1123 section 4.2.3.1) - and retransmits with send(true)
// when the timeout expires, doubling the timeout each time, at most
// Retries times.
func (t *transfer) exchange(send func(retry bool) error, ack func(block uint16) bool) error {
	if err := send(false); err != nil {
		return err
	}
	for attempt := 0; ; {
		wait := min(t.timeout<<attempt, max(t.timeout, maxBackoff))
		if err := t.setDeadline(time.Now().Add(wait)); err != nil {
			return err
		}
		progress, err := t.readUntil(ack)
		if progress {
			return nil
		}
		if err != nil {
			if !isTimeout(err) {
				return err
			}
			if t.isCancelled() {
				return t.stopped()
			}
			attempt++
			if attempt > t.s.cfg.Retries {
				t.s.send(t.conn, t.peer, errTimedOut.AppendBinary(nil))
				return fmt.Errorf("%w: no ACK after %d retransmissions", ErrTimeout, t.s.cfg.Retries)
			}
			if err := send(true); err != nil {
				return err
			}
		}
	}
}

// readUntil reads packets until one is an ACK that ack accepts (progress),
// the deadline passes, or the client sends an ERROR.
func (t *transfer) readUntil(ack func(block uint16) bool) (progress bool, err error) {
	for {
		n, from, err := t.conn.ReadFrom(t.rbuf)
		if err != nil {
			return false, err
		}
		b := t.rbuf[:n]
		if !sameAddr(from, t.peer) {
			// RFC 1350 section 4: answer a stranger with ERROR 5 and go on.
			t.s.stats.unknownTID.Add(1)
			t.s.send(t.conn, from, errUnknownTID.AppendBinary(nil))
			continue
		}
		op, _ := PeekOpcode(b)
		switch op {
		case OpACK:
			a, err := ParseAck(b)
			if err != nil {
				t.s.dropMalformed(from, err, op)
				continue
			}
			if ack(a.Block) {
				if !t.acked1 {
					t.acked1 = true
					t.s.acknowledged(t.slot)
				}
				return true, nil
			}
		case OpERROR:
			e, err := ParseError(b)
			if err != nil {
				t.s.dropMalformed(from, err, op)
				continue
			}
			return false, fmt.Errorf("%w: %w", ErrClientAbort, &e)
		default:
			// A client never sends anything else on a read transfer. Drop it
			// rather than end the transfer: it may be a stray duplicate RRQ.
			var perr error
			if op == 0 {
				perr = ErrShort
			}
			t.s.dropMalformed(from, perr, op)
		}
	}
}

// sendWindow sends blocks acked+1 .. acked+windowsize, stopping at the
// last block (RFC 7440 section 4: after an ACK the next window starts
// right after the acknowledged block, also when the ACK is for a block in
// the middle of the previous window).
func (t *transfer) sendWindow(retry bool) error {
	bs := int64(t.info.BlockSize)
	for b := t.acked + 1; b <= t.acked+int64(t.info.WindowSize); b++ {
		if t.last != 0 && b > t.last {
			break
		}
		n, err := t.src.readBlock(b-1, t.pkt[4:])
		if err != nil {
			t.s.send(t.conn, t.peer, errFileChanged.AppendBinary(nil))
			return fmt.Errorf("tftp: read %s block %d: %w", t.req.Filename, b, err)
		}
		// The block number wraps from 65535 to 0, as iPXE, tftp-hpa and
		// curl expect for files of more than 65535 blocks.
		// The payload was read in place after the header: only the
		// header is written (the layout of Data.AppendBinary).
		binary.BigEndian.PutUint16(t.pkt[0:], uint16(OpDATA))
		binary.BigEndian.PutUint16(t.pkt[2:], uint16(b))
		pkt := t.pkt[:4+n]
		t.sendPacket(pkt, b <= t.sent)
		t.sent = max(t.sent, b)
		if int64(n) < bs {
			t.last, t.lastLen = b, n
			break
		}
	}
	return nil
}

// ackWindow accepts an ACK that moves the window forward. ACK numbers are
// 16 bits: the distance from the last acknowledged block tells which
// block is meant, which is unambiguous because at most 64 blocks are in
// flight. A distance of 0 is a duplicate; one beyond what was sent is a
// stale ACK from before a wrap or a confused client.
func (t *transfer) ackWindow(block uint16) bool {
	delta := int64(block - uint16(t.acked))
	if delta == 0 || delta > t.sent-t.acked {
		return false
	}
	t.acked += delta
	return true
}

func (t *transfer) sendPacket(pkt []byte, retry bool) {
	if retry {
		t.info.Retransmits++
	}
	t.s.send(t.conn, t.peer, pkt)
}

func (t *transfer) setDeadline(d time.Time) error {
	t.deadlineMu.Lock()
	defer t.deadlineMu.Unlock()
	if t.cancelled {
		return t.stopped()
	}
	return t.conn.SetReadDeadline(d)
}

// stopped tells the client why its transfer ends before its time and
// returns that as the outcome: the slot went to another client, the time
// limit was reached, or the server shuts down.
func (t *transfer) stopped() error {
	cause := context.Cause(t.ctx)
	switch {
	case errors.Is(cause, ErrPreempted):
		t.s.send(t.conn, t.peer, errPreempted.AppendBinary(nil))
		return ErrPreempted
	case errors.Is(cause, ErrExpired):
		t.s.send(t.conn, t.peer, errExpired.AppendBinary(nil))
		return fmt.Errorf("%w (%v)", ErrExpired, t.s.cfg.MaxTransferTime)
	}
	t.s.send(t.conn, t.peer, errShutdown.AppendBinary(nil))
	return ErrShutdown
}

func (t *transfer) isCancelled() bool {
	t.deadlineMu.Lock()
	defer t.deadlineMu.Unlock()
	return t.cancelled
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
