//go:build linux

package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/diskless-boot/diskless/internal/testutil/proc"
)

// The machine's floor: the same plan, hosts and loopback addresses, with
// everything a target and an initiator do beyond moving the bytes taken
// away. The null responder answers each 48-byte request (an iSCSI basic
// header's size) with 48 bytes plus the READ's data from memory, or takes
// a WRITE's data and answers 48 bytes; the null client sends the request
// and reads the answer, one command at a time. What this costs in CPU and
// time on this machine, no server and initiator pair can beat here: it
// says whether a goal is out of the machine's reach rather than the
// server's.

const nullHeader = 48

// nullRequest is the floor's request: byte 0 is 1 for a WRITE (its data
// follows), bytes 4-7 the data length, big-endian.
func nullRequest(b []byte, write bool, n int) {
	clear(b[:nullHeader])
	if write {
		b[0] = 1
	}
	binary.BigEndian.PutUint32(b[4:8], uint32(n))
}

// serveNull answers null requests on l until it is closed. Lengths over
// maxBytes end the connection.
func serveNull(l net.Listener, maxBytes int) error {
	data := make([]byte, nullHeader+maxBytes) // one READ answer's worth, shared: nobody looks at it
	for {
		c, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		go func() {
			defer c.Close()
			req := make([]byte, nullHeader)
			sink := make([]byte, maxBytes)
			for {
				if _, err := io.ReadFull(c, req); err != nil {
					return
				}
				n := int(binary.BigEndian.Uint32(req[4:8]))
				if n > maxBytes {
					return
				}
				answer := data[:nullHeader+n]
				if req[0] == 1 {
					if _, err := io.ReadFull(c, sink[:n]); err != nil {
						return
					}
					answer = data[:nullHeader]
				}
				if _, err := c.Write(answer); err != nil {
					return
				}
			}
		}()
	}
}

// runNull is -role null: the null responder on addr, until killed.
func runNull(addr string, maxBytes int) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	fmt.Println("null responder listening")
	return serveNull(l, maxBytes)
}

// startNull runs this program as the null responder (a process of its
// own, so that its CPU is measured apart from the clients').
func startNull(maxBytes int) (*proc.Proc, string, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, "", err
	}
	port, err := freePort()
	if err != nil {
		return nil, "", err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	p, err := startProc("null responder", syscall.SIGKILL, self, "-role", "null", "-listen", addr, "-max-bytes", fmt.Sprint(maxBytes))
	if err != nil {
		return nil, "", err
	}
	if _, _, err := p.WaitFor(30*time.Second, "null responder listening"); err != nil {
		p.Stop()
		return nil, "", err
	}
	return p, addr, nil
}

// replayNullOne is replayOne's floor: one host's plan against the null
// responder at addr, from local.
func replayNullOne(ctx context.Context, p *plan, addr string, local *net.TCPAddr, gaps bool, start time.Time) error {
	d := net.Dialer{LocalAddr: local}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	buf := make([]byte, nullHeader+p.maxBytes)
	for i, st := range p.steps {
		if err := waitStep(ctx, st, gaps, start); err != nil {
			return err
		}
		n := int(st.blocks) * p.blockSize
		nullRequest(buf, st.write, n)
		out, in := buf[:nullHeader], buf[:nullHeader+n]
		if st.write {
			out, in = buf[:nullHeader+n], buf[:nullHeader]
		}
		if _, err := c.Write(out); err != nil {
			return fmt.Errorf("command %d of %d: %w", i+1, len(p.steps), err)
		}
		if _, err := io.ReadFull(c, in); err != nil {
			return fmt.Errorf("command %d of %d: %w", i+1, len(p.steps), err)
		}
	}
	return nil
}
