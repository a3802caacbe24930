package tftp

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"sync"
	"time"
)

// A small TFTP client for the tests: RFC 1350 with RFC 2347 options and an
// RFC 7440 receiver (ACK each full window, ACK the last in-order block when
// a block is missing or on timeout).

type getOpts struct {
	Options  []Option
	Mode     string        // default "octet"
	Timeout  time.Duration // re-ACK / re-RRQ interval (default 200 ms)
	Dally    time.Duration // keep re-ACKing the final block this long
	DupAcks  bool          // send every ACK twice
	MaxBytes int           // refuse to grow beyond this (default 64 MiB)
	// Conn replaces the client's socket (e.g. a lossyConn).
	Conn net.PacketConn
}

type getResult struct {
	Data      []byte
	OACK      map[string]string // nil when the server sent no OACK
	DataPkts  int               // DATA packets received from the server
	Stale     int               // DATA packets that were not the next block
	ServerTID *net.UDPAddr
}

func tftpGet(server *net.UDPAddr, file string, o getOpts) (res getResult, err error) {
	if o.Mode == "" {
		o.Mode = "octet"
	}
	if o.Timeout == 0 {
		o.Timeout = 200 * time.Millisecond
	}
	if o.MaxBytes == 0 {
		o.MaxBytes = 64 << 20
	}
	conn := o.Conn
	if conn == nil {
		c, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			return res, err
		}
		defer c.Close()
		conn = c
	}
	rrq := (&Request{Op: OpRRQ, Filename: file, Mode: o.Mode, Options: o.Options}).AppendBinary(nil)
	send := func(to net.Addr, b []byte) error {
		n := 1
		if o.DupAcks {
			n = 2
		}
		for range n {
			if _, err := conn.WriteTo(b, to); err != nil {
				return err
			}
		}
		return nil
	}
	ack := func(block int64) error {
		return send(res.ServerTID, (&Ack{Block: uint16(block)}).AppendBinary(nil))
	}
	if err := send(server, rrq); err != nil {
		return res, err
	}
	blksize, window := DefaultBlockSize, 1
	next := int64(1) // absolute number of the block expected
	inWindow := 0    // in-order blocks since the last ACK
	gapAcked := false
	timeouts := 0
	buf := make([]byte, 70000)
	for {
		conn.SetReadDeadline(time.Now().Add(o.Timeout))
		n, from, err := conn.ReadFrom(buf)
		if err != nil {
			if !isTimeout(err) {
				return res, err
			}
			if timeouts++; timeouts > 40 {
				return res, fmt.Errorf("client: gave up at block %d", next)
			}
			if res.ServerTID == nil {
				err = send(server, rrq)
			} else {
				err = ack(next - 1)
			}
			if err != nil {
				return res, err
			}
			continue
		}
		ua := from.(*net.UDPAddr)
		if res.ServerTID != nil && !sameAddr(ua, res.ServerTID) {
			continue // another TID: ignore (RFC 1350 would answer ERROR 5)
		}
		b := buf[:n]
		op, _ := PeekOpcode(b)
		switch op {
		case OpERROR:
			e, err := ParseError(b)
			if err != nil {
				return res, err
			}
			return res, &e
		case OpOACK:
			if next != 1 {
				continue
			}
			res.ServerTID = ua
			oack, err := ParseOAck(b)
			if err != nil {
				return res, err
			}
			res.OACK = map[string]string{}
			for _, opt := range oack.Options {
				res.OACK[opt.Name] = opt.Value
			}
			if v, ok := res.OACK["blksize"]; ok {
				blksize, _ = strconv.Atoi(v)
			}
			if v, ok := res.OACK["windowsize"]; ok {
				window, _ = strconv.Atoi(v)
			}
			timeouts = 0
			if err := ack(0); err != nil {
				return res, err
			}
		case OpDATA:
			d, err := ParseData(b)
			if err != nil {
				return res, err
			}
			res.ServerTID = ua
			res.DataPkts++
			if d.Block != uint16(next) {
				res.Stale++
				if window > 1 && !gapAcked {
					// A block is missing: ACK the last one in order so the
					// server restarts the window from there (RFC 7440).
					gapAcked = true
					inWindow = 0
					if err := ack(next - 1); err != nil {
						return res, err
					}
				} else if window == 1 && d.Block == uint16(next-1) {
					// Classic RFC 1350 receiver: re-ACK a duplicate.
					if err := ack(next - 1); err != nil {
						return res, err
					}
				}
				continue
			}
			if len(d.Payload) > blksize {
				return res, fmt.Errorf("client: block %d has %d bytes, blksize %d", next, len(d.Payload), blksize)
			}
			if len(res.Data)+len(d.Payload) > o.MaxBytes {
				return res, errors.New("client: file too large")
			}
			res.Data = append(res.Data, d.Payload...)
			next++
			inWindow++
			gapAcked = false
			timeouts = 0
			if len(d.Payload) < blksize {
				if err := ack(next - 1); err != nil {
					return res, err
				}
				return res, dally(conn, res.ServerTID, next-1, o.Dally)
			}
			if inWindow >= window {
				inWindow = 0
				if err := ack(next - 1); err != nil {
					return res, err
				}
			}
		default:
			return res, fmt.Errorf("client: unexpected %v", op)
		}
	}
}

// dally re-ACKs the final block when the server retransmits it (our ACK
// was lost), as RFC 1350 section 6 suggests.
func dally(conn net.PacketConn, server *net.UDPAddr, last int64, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	end := time.Now().Add(d)
	buf := make([]byte, 70000)
	for time.Now().Before(end) {
		conn.SetReadDeadline(end)
		n, from, err := conn.ReadFrom(buf)
		if err != nil {
			if isTimeout(err) {
				return nil
			}
			return err
		}
		if !sameAddr(from, server) {
			continue
		}
		if op, _ := PeekOpcode(buf[:n]); op == OpDATA {
			conn.WriteTo((&Ack{Block: uint16(last)}).AppendBinary(nil), server)
		}
	}
	return nil
}

// lossyConn drops a fraction of the packets written and read, with a
// deterministic sequence.
type lossyConn struct {
	net.PacketConn
	mu      sync.Mutex
	rng     *rand.Rand
	loss    float64
	dropped int
}

func newLossyConn(c net.PacketConn, loss float64, seed uint64) *lossyConn {
	return &lossyConn{PacketConn: c, loss: loss, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
}

func (l *lossyConn) drop() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.rng.Float64() < l.loss {
		l.dropped++
		return true
	}
	return false
}

func (l *lossyConn) Dropped() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.dropped
}

func (l *lossyConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	if l.drop() {
		return len(p), nil
	}
	return l.PacketConn.WriteTo(p, addr)
}

func (l *lossyConn) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		n, addr, err := l.PacketConn.ReadFrom(p)
		if err != nil || !l.drop() {
			return n, addr, err
		}
	}
}

// writeFile creates dir/name with n deterministic pseudo-random bytes and
// returns them.
func writeFile(dir, name string, n int, seed uint64) ([]byte, error) {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, 1))
	for i := 0; i < n; i += 8 {
		v := r.Uint64()
		for j := 0; j < 8 && i+j < n; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b, os.WriteFile(dir+"/"+name, b, 0o644)
}
