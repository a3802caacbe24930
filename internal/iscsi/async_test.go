package iscsi

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/diskless-boot/diskless/internal/disk"
	"github.com/diskless-boot/diskless/internal/iscsi/pdu"
)

// asyncFile completes every read on a goroutine of its own
// (disk.AsyncReader), as librbd completes reads on its threads; while held
// it keeps them waiting.
type asyncFile struct {
	*disk.File
	mu        sync.Mutex
	held      bool
	waiting   []func()
	started   atomic.Int32
	completed atomic.Int32
}

// Remote: its reads are not page-cache hits to run inline (disk.Remote).
func (d *asyncFile) Remote() bool { return true }

func (d *asyncFile) ReadAsync(p []byte, off int64, lend bool, done func([]byte, func(), error)) {
	d.started.Add(1)
	run := func() {
		go func() {
			_, err := d.File.ReadAt(p, off)
			d.completed.Add(1)
			if err != nil {
				done(nil, nil, err)
				return
			}
			done(p, nil, nil)
		}()
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.held {
		d.waiting = append(d.waiting, run)
		return
	}
	run()
}

func (d *asyncFile) hold() {
	d.mu.Lock()
	d.held = true
	d.mu.Unlock()
}

func (d *asyncFile) release() {
	d.mu.Lock()
	d.held = false
	w := d.waiting
	d.waiting = nil
	d.mu.Unlock()
	for _, run := range w {
		run()
	}
}

// sendRead sends a READ(10) of blocks at lba without waiting for it.
func (in *testInitiator) sendRead(lba uint32, blocks uint16) uint32 {
	in.t.Helper()
	in.itt++
	m := pdu.SCSICommand{Final: true, Read: true, Attr: pdu.AttrSimple, LUN: encodeLUN(0), ITT: in.itt,
		CmdSN: in.cmdSN, ExpStatSN: in.expStatSN, ExpectedDataTransferLength: uint32(blocks) * 512}
	in.cmdSN++
	copy(m.CDB[:], rw10(0x28, lba, blocks))
	var p pdu.PDU
	m.Marshal(&p)
	in.sendPDU(&p)
	return in.itt
}

// READs of a device that reads asynchronously are handed to it from the
// connection's reader and answered from its completions: many at once
// each get their own data (digests on), and a connection that ends while
// reads are still with the device waits for them without harm - the
// target then serves the next login.
func TestAsyncRead(t *testing.T) {
	dev := &asyncFile{File: newTestDisk(t)}
	_, addr := startTarget(t, func(tg *Target) { tg.SCSI = scsiTargetOf(t, testIQN, "async0", dev) })
	login := func() *testInitiator {
		in := dialInitiator(t, addr)
		ops := []pdu.KV{{Key: "HeaderDigest", Value: "CRC32C"}, {Key: "DataDigest", Value: "CRC32C"}}
		if st := in.login(loginOpts{initiator: testInitiator1, target: testIQN, ops: ops}); st != 0 {
			t.Fatalf("login 0x%04x", st)
		}
		in.clearUnitAttention()
		return in
	}
	in := login()
	data := make([]byte, 1<<20)
	rand.Read(data)
	if st, sense, _ := in.command(0, rw10(0x2a, 0, 2048), data, 0); st != 0 {
		t.Fatalf("WRITE: %#x %x", st, sense)
	}

	// 32 READs of 16 KiB at once; the responses come in any order.
	const n, blocks = 32, 32
	want := map[uint32][]byte{}
	for i := range n {
		lba := uint32(i * 61 % (2048 - blocks))
		want[in.sendRead(lba, blocks)] = data[lba*512 : (lba+blocks)*512]
	}
	got := map[uint32][]byte{}
	for len(want) > 0 {
		r := in.readPDU()
		if r.BHS.Opcode() != pdu.OpDataIn {
			t.Fatalf("unexpected %s", r.BHS.Opcode())
		}
		d, _ := pdu.ParseDataIn(&r.BHS)
		got[d.ITT] = append(got[d.ITT], r.Data...)
		if !d.HasStatus {
			continue
		}
		in.expStatSN = d.StatSN + 1
		if d.Status != 0 || !bytes.Equal(got[d.ITT], want[d.ITT]) {
			t.Fatalf("READ ITT %d: status %#x, %d bytes, equal %v", d.ITT, d.Status, len(got[d.ITT]), bytes.Equal(got[d.ITT], want[d.ITT]))
		}
		delete(want, d.ITT)
	}
	if s := dev.started.Load(); s != n {
		t.Fatalf("%d READs went to the device asynchronously, want %d", s, n)
	}

	// The initiator goes while 8 READs are with the device.
	dev.hold()
	for i := range 8 {
		in.sendRead(uint32(i*blocks), blocks)
	}
	deadline := time.Now().Add(5 * time.Second)
	for dev.started.Load() != n+8 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if s := dev.started.Load(); s != n+8 {
		t.Fatalf("%d of 8 held READs reached the device", s-n)
	}
	in.nc.Close()
	time.Sleep(50 * time.Millisecond)
	dev.release()
	for dev.completed.Load() != n+8 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}

	in = login()
	if st, sense, got := in.command(0, rw10(0x28, 100, 8), nil, 4096); st != 0 || !bytes.Equal(got, data[100*512:108*512]) {
		t.Fatalf("READ after the reconnect: status %#x sense %x", st, sense)
	}
}

// A completion's response never waits for a full writer queue: a
// goroutine of its own, counted in running, adds it once there is room.
func TestEnqueueNeverWaits(t *testing.T) {
	c := &conn{out: make(chan *outItem, 1)}
	c.running.Add(1) // the count finish holds while it enqueues
	first, second := &outItem{}, &outItem{}
	c.enqueue(first)
	returned := make(chan struct{})
	go func() {
		c.enqueue(second)
		close(returned)
	}()
	select {
	case <-returned:
	case <-time.After(5 * time.Second):
		t.Fatal("enqueue waited for room in the queue")
	}
	c.running.Done()
	waited := make(chan struct{})
	go func() {
		c.running.Wait()
		close(waited)
	}()
	select {
	case <-waited:
		t.Fatal("running reached zero with a response still to be queued")
	case <-time.After(50 * time.Millisecond):
	}
	for _, want := range []*outItem{first, second} {
		select {
		case got := <-c.out:
			if got != want {
				t.Fatal("responses queued out of order")
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a response never reached the queue")
		}
	}
	<-waited
	if n := c.queuedItems.Load(); n != 2 {
		t.Fatalf("queuedItems %d, want 2", n)
	}
}

// A completion writes its response itself when nothing else is queued,
// and never waits for the socket: what a full socket does not take, or
// what is beyond one writev's buffers (IOV_MAX), is sent by the writer
// before anything queued after it. Responses reach the initiator whole,
// with their digests, in order, with StatSN in that order, and every item
// is released once.
func TestEnqueueWritesWithoutWaiting(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	server.(*net.TCPConn).SetWriteBuffer(16 << 10)
	rc, err := server.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	c := &conn{srv: &Server{cfg: Config{WriteTimeout: 30 * time.Second}}, nc: server, rawConn: rc,
		params: Params{HeaderDigest: true, DataDigest: true},
		closed: make(chan struct{}), out: make(chan *outItem, 64), writerDone: make(chan struct{})}
	go c.writeLoop()

	// Item i is Data-In whose data is i repeated, the last PDU with
	// status. Item 1 is 1500 PDUs of 13 bytes (4500 buffers with their
	// digests and padding, more than one writev takes); item 2 is far
	// larger than the socket's buffers.
	const items = 24
	var released [items]atomic.Int32
	item := func(i int) *outItem {
		size, pdus := 4096, 1
		switch i {
		case 1:
			size, pdus = 13, 1500
		case 2:
			size = 4 << 20
		}
		it := &outItem{release: func() { released[i].Add(1) }}
		for k := range pdus {
			last := k == pdus-1
			op := outPDU{data: bytes.Repeat([]byte{byte(i)}, size), sn: snNone}
			m := pdu.DataIn{Final: last, HasStatus: last, ITT: uint32(i), TTT: pdu.ReservedTag, DataSN: uint32(k)}
			if last {
				op.sn = snAdvance
			}
			m.Marshal(&op.bhs)
			it.pdus = append(it.pdus, op)
		}
		return it
	}
	complete := func(i int) { // as a device completion does (finish)
		c.running.Add(1)
		defer c.running.Done()
		returned := make(chan struct{})
		go func() {
			c.enqueue(item(i))
			close(returned)
		}()
		select {
		case <-returned:
		case <-time.After(5 * time.Second):
			t.Fatalf("enqueue of response %d waited for the socket", i)
		}
	}
	complete(0)
	if released[0].Load() != 1 {
		t.Fatal("the first response, with nothing queued, was not written by its completion")
	}
	complete(1) // one writev takes part of it: the writer has the rest
	complete(2) // the socket takes part of it, or all is queued
	if released[2].Load() != 0 {
		t.Fatal("a response was released before all of it was written")
	}
	for i := 3; i < items; i++ {
		if i%3 == 0 {
			c.send(item(i)) // a command's goroutine answering meanwhile
			continue
		}
		complete(i)
	}

	rd := pdu.Reader{R: bufio.NewReader(client), MaxData: 8 << 20, HeaderDigest: true, DataDigest: true}
	client.SetReadDeadline(time.Now().Add(30 * time.Second))
	for i := range items {
		for {
			var p pdu.PDU
			if err := rd.ReadPDU(&p); err != nil {
				t.Fatalf("response %d: %v", i, err)
			}
			d, _ := pdu.ParseDataIn(&p.BHS)
			if d.ITT != uint32(i) {
				t.Fatalf("response %d: a PDU of ITT %d", i, d.ITT)
			}
			if len(p.Data) == 0 || !bytes.Equal(p.Data, bytes.Repeat([]byte{byte(i)}, len(p.Data))) {
				t.Fatalf("response %d: data of %d bytes not its own", i, len(p.Data))
			}
			if d.HasStatus {
				if d.StatSN != uint32(i) {
					t.Fatalf("response %d came with StatSN %d", i, d.StatSN)
				}
				break
			}
		}
	}
	c.running.Wait()
	close(c.out)
	<-c.writerDone
	for i := range items {
		if n := released[i].Load(); n != 1 {
			t.Fatalf("response %d released %d times", i, n)
		}
	}
	if c.rest != nil || c.restItems != nil || c.queuedItems.Load() != 0 {
		t.Fatalf("left behind: rest %d buffers, %d items, %d queued", len(c.rest), len(c.restItems), c.queuedItems.Load())
	}
}

// A completion whose write fails (the initiator reset the connection)
// releases its response, does not wait, and the connection is aborted
// with that error; later responses are released unwritten.
func TestEnqueueWriteFails(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	client.(*net.TCPConn).SetLinger(0)
	client.Close() // an RST: the next write fails
	time.Sleep(50 * time.Millisecond)
	rc, err := server.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	c := &conn{srv: &Server{cfg: Config{WriteTimeout: 30 * time.Second}}, nc: server, rawConn: rc,
		closed: make(chan struct{}), out: make(chan *outItem, 4), writerDone: make(chan struct{})}
	var released atomic.Int32
	item := func() *outItem {
		op := outPDU{data: make([]byte, 4096), sn: snAdvance}
		m := pdu.DataIn{Final: true, HasStatus: true, TTT: pdu.ReservedTag}
		m.Marshal(&op.bhs)
		return &outItem{pdus: []outPDU{op}, release: func() { released.Add(1) }}
	}
	c.enqueue(item())
	select {
	case <-c.closed:
	case <-time.After(5 * time.Second):
		t.Fatal("a failed write did not abort the connection")
	}
	c.mu.Lock()
	why := c.closeErr
	c.mu.Unlock()
	if why == nil {
		t.Fatal("aborted without the write's error")
	}
	c.enqueue(item())
	if n := released.Load(); n != 2 {
		t.Fatalf("%d of 2 responses released", n)
	}
	t.Logf("aborted: %v", why)
}
