//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/diskless-boot/diskless/internal/iscsi/pdu"
	"github.com/diskless-boot/diskless/internal/testutil/iscsiclient"
)

// idleConns opens n TCP connections to the portal from addrs (round
// robin) and sends nothing. A connection the server closes is opened
// again after a backoff, so the slots stay taken as long as the server
// lets them.
func idleConns(ctx context.Context, a *attacker, n int, addrs []netip.Addr) {
	var held, started atomic.Int64
	sem := make(chan struct{}, 256)
	var wg sync.WaitGroup
	initial := func() {
		if started.Add(1) == int64(n) {
			go settled(ctx, &held, func(h int64) {
				a.set("held when in place", h)
				a.ready("held=%d", h)
			})
		}
	}
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			local := addrs[i%len(addrs)]
			var b backoff
			for first := true; ctx.Err() == nil; first = false {
				sem <- struct{}{}
				c, err := dialTCP(ctx, local, a.portal())
				<-sem
				if first {
					initial()
				}
				if err != nil {
					if ctx.Err() == nil {
						a.count("connects failed", 1)
						a.note("connect: %v", err)
					}
					if !b.wait(ctx, 0) {
						return
					}
					continue
				}
				a.count("connections opened", 1)
				a.gauge("held at most", held.Add(1))
				start := time.Now()
				if !holdOpen(ctx, c, nil) {
					return // stopped: still held
				}
				held.Add(-1)
				life := time.Since(start)
				a.count(closeKind(life), 1)
				if !b.wait(ctx, life) {
					return
				}
			}
		}()
	}
	<-ctx.Done()
	a.set("held at the end", held.Load())
	wg.Wait()
}

// loginText is the text of a first Login Request.
func loginText(initiator, target, auth string) []byte {
	return pdu.AppendText(nil, pdu.KV{Key: "InitiatorName", Value: initiator}, pdu.KV{Key: "SessionType", Value: "Normal"},
		pdu.KV{Key: "TargetName", Value: target}, pdu.KV{Key: "AuthMethod", Value: auth})
}

// loginPDU frames a Login Request of the security stage; transit asks for
// the full feature phase at once.
func loginPDU(isid uint64, tsih uint16, text []byte, transit bool) []byte {
	m := pdu.LoginRequest{Transit: transit, CSG: pdu.StageSecurity, ISID: isid, TSIH: tsih, ITT: 1, CmdSN: 1}
	if transit {
		m.NSG = pdu.StageFullFeature
	}
	p := pdu.PDU{Data: text}
	m.Marshal(&p.BHS)
	var b bytes.Buffer
	p.WriteTo(&b, false, false)
	return b.Bytes()
}

func randomISID() uint64 { return 0x80<<40 | rand.Uint64()&(1<<40-1) }

// heldLogins holds logins that stop half way - half in the middle of the
// first PDU, half after the target answered the first step - and idle
// discovery sessions (which need no authentication), all re-opened after
// a backoff when the server closes them.
func heldLogins(ctx context.Context, a *attacker) {
	n, m := a.sz.heldLogins, a.sz.discovery
	var held, started atomic.Int64
	sem := make(chan struct{}, 128)
	var wg sync.WaitGroup
	initial := func() {
		if started.Add(1) == int64(n+m) {
			go settled(ctx, &held, func(h int64) {
				a.set("held when in place", h)
				a.ready("held=%d", h)
			})
		}
	}
	for i := range n + m {
		wg.Add(1)
		go func() {
			defer wg.Done()
			local := a.addrs[i%len(a.addrs)]
			kind := "login stopped in its first PDU"
			switch {
			case i >= n:
				kind = "idle discovery session"
			case i%2 == 1:
				kind = "login stopped after its first step"
			}
			var b backoff
			for first := true; ctx.Err() == nil; first = false {
				sem <- struct{}{}
				hold, err := openHeld(ctx, a, local, kind)
				<-sem
				if first {
					initial()
				}
				if err != nil {
					if ctx.Err() == nil {
						a.count(kind+": failed", 1)
						a.note("%s: %v", kind, err)
					}
					if !b.wait(ctx, 0) {
						return
					}
					continue
				}
				a.count(kind+": opened", 1)
				a.gauge("held at most", held.Add(1))
				start := time.Now()
				if !hold() {
					return
				}
				held.Add(-1)
				life := time.Since(start)
				a.count(kind+": "+closeKind(life), 1)
				if !b.wait(ctx, life) {
					return
				}
			}
		}()
	}
	<-ctx.Done()
	a.set("held at the end", held.Load())
	wg.Wait()
}

// openHeld opens one held login or discovery session of kind; hold then
// keeps it until the server closes it (true) or ctx ends (false).
func openHeld(ctx context.Context, a *attacker, local netip.Addr, kind string) (hold func() bool, err error) {
	if kind == "idle discovery session" {
		// Discovery needs no name the target knows.
		initiator := fmt.Sprintf("iqn.2026-12.example.attacker:%08x", rand.Uint32())
		r, err := iscsiclient.DialRaw(ctx, iscsiclient.Config{Addr: a.portal(), LocalAddr: &net.TCPAddr{IP: local.AsSlice()},
			Initiator: initiator, Timeout: 10 * time.Second})
		if err != nil {
			return nil, err
		}
		return func() bool { return answerPings(ctx, r, nil) }, nil
	}
	c, err := dialTCP(ctx, local, a.portal())
	if err != nil {
		return nil, err
	}
	// pc1's initiator name, which its script shows (issue 13): the
	// target accepts the first step of a login for pc1's disk only
	// from that name.
	b := loginPDU(randomISID(), 0, loginText(a.site.Boot.InitiatorIQN, a.site.Boot.TargetIQN, "CHAP,None"), false)
	if kind == "login stopped in its first PDU" {
		b = b[:pdu.BHSLen+(len(b)-pdu.BHSLen)/2]
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(b); err != nil {
		c.Close()
		return nil, err
	}
	if kind == "login stopped after its first step" {
		rd := pdu.Reader{R: bufio.NewReader(c), MaxData: 8192}
		var p pdu.PDU
		if err := rd.ReadPDU(&p); err != nil {
			c.Close()
			return nil, fmt.Errorf("first step: %w", err)
		}
		if r, err := pdu.ParseLoginResponse(&p.BHS); err != nil || r.Status != pdu.LoginSuccess {
			c.Close()
			return nil, fmt.Errorf("first step answered with %s status %#04x", p.BHS.Opcode(), r.Status)
		}
	}
	c.SetDeadline(time.Time{})
	return func() bool { return holdOpen(ctx, c, nil) }, nil
}

// answerPings reads the target's PDUs on a raw session until it ends
// (true) or ctx does (false), answering NOP-In pings as a live initiator
// would and handing every other PDU to other when not nil (on this
// goroutine; wmu, when not nil, serializes the answers with the caller's
// own writes).
func answerPings(ctx context.Context, r *iscsiclient.Raw, other func(*pdu.PDU), wmu ...*sync.Mutex) bool {
	stop := context.AfterFunc(ctx, func() { r.Close() })
	defer stop()
	var p pdu.PDU
	for {
		if err := r.ReadPDU(&p); err != nil {
			r.Close()
			return ctx.Err() == nil
		}
		if p.BHS.Opcode() == pdu.OpNOPIn {
			m, _ := pdu.ParseNOPIn(&p.BHS)
			if m.TTT != pdu.ReservedTag {
				out := pdu.NOPOut{Immediate: true, LUN: m.LUN, ITT: pdu.ReservedTag, TTT: m.TTT, CmdSN: m.ExpCmdSN, ExpStatSN: m.StatSN + 1}
				q := pdu.PDU{Data: bytes.Clone(p.Data)}
				out.Marshal(&q.BHS)
				for _, mu := range wmu {
					mu.Lock()
				}
				err := r.WritePDU(&q)
				for _, mu := range wmu {
					mu.Unlock()
				}
				if err != nil {
					r.Close()
					return ctx.Err() == nil
				}
				continue
			}
		}
		if other != nil {
			other(&p)
		}
	}
}

// writeNoData logs in sessions of host writer with its credentials and
// sends WRITEs whose Data-Out never comes, as many as the CmdSN window
// allows: half wait for data the target asks for with R2T, half (when
// InitialR2T=No) for unsolicited data the command promised (F=0). NOP-In
// pings are answered. A WRITE refused as too long (ILLEGAL REQUEST) halves
// the size; one refused for want of room (TASK SET FULL, BUSY) delays the
// next by 200 ms; a session the server ends is logged in again.
func writeNoData(ctx context.Context, a *attacker) {
	var wg sync.WaitGroup
	var logged atomic.Int64
	for range a.sz.writeSessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var size atomic.Uint32
			size.Store(uint32(a.sz.writeKiB) << 10)
			for ctx.Err() == nil {
				w := a.site.Writer
				r, err := iscsiclient.DialRaw(ctx, iscsiclient.Config{Addr: a.portal(), Initiator: w.InitiatorIQN, Target: w.TargetIQN,
					CHAPUser: w.CHAPUser, CHAPSecret: w.CHAPSecret, MutualUser: w.MutualUser, MutualSecret: w.MutualSecret,
					Timeout: 10 * time.Second})
				if err != nil {
					if ctx.Err() == nil {
						a.count("logins failed", 1)
						a.note("login: %v", err)
						sleepCtx(ctx, time.Second)
					}
					continue
				}
				a.count("logins", 1)
				if logged.Add(1) == int64(a.sz.writeSessions) {
					// In place once every session has had a moment
					// to fill its window.
					go func() {
						if sleepCtx(ctx, 2*time.Second) {
							a.ready("sessions=%d", a.sz.writeSessions)
						}
					}()
				}
				start := time.Now()
				if !stuckWrites(ctx, a, r, &size) {
					return
				}
				a.count("sessions "+closeKind(time.Since(start)), 1)
				sleepCtx(ctx, time.Second)
			}
		}()
	}
	wg.Wait()
}

// stuckWrites runs one session of writeNoData until the server ends it
// (true) or ctx does (false).
func stuckWrites(ctx context.Context, a *attacker, r *iscsiclient.Raw, size *atomic.Uint32) bool {
	var (
		mu       sync.Mutex
		maxCmdSN = r.MaxCmdSN
		statSN   = r.ExpStatSN
		moved    = make(chan struct{}, 1)
		wmu      sync.Mutex
		// full: the target refused a WRITE for want of room; the
		// next waits a moment, so the attack pins memory instead of
		// becoming a command flood.
		full atomic.Bool
	)
	readerDone := make(chan bool, 1)
	go func() {
		readerDone <- answerPings(ctx, r, func(p *pdu.PDU) {
			h := &p.BHS
			op := h.Opcode()
			if op != pdu.OpLoginResp {
				exp, mx := binary.BigEndian.Uint32(h[28:32]), binary.BigEndian.Uint32(h[32:36])
				mu.Lock()
				if int32(mx-(exp-1)) >= 0 && int32(mx-maxCmdSN) > 0 {
					maxCmdSN = mx
				}
				statSN = binary.BigEndian.Uint32(h[24:28]) + 1
				mu.Unlock()
				select {
				case moved <- struct{}{}:
				default:
				}
			}
			switch op {
			case pdu.OpR2T:
				a.count("R2Ts (Data-Out asked for, never sent)", 1)
			case pdu.OpSCSIResponse:
				m, _ := pdu.ParseSCSIResponse(h)
				switch m.Status {
				case 0x00:
					a.count("WRITEs answered GOOD", 1)
				case 0x28:
					a.count("WRITEs answered TASK SET FULL", 1)
					full.Store(true)
				case 0x08:
					a.count("WRITEs answered BUSY", 1)
					full.Store(true)
				case 0x02:
					key, asc := senseKey(p.Data)
					switch key {
					case 0x6: // the unit attention of a new nexus
						a.count("WRITEs answered UNIT ATTENTION", 1)
					case 0x5:
						a.count("WRITEs answered ILLEGAL REQUEST", 1)
						if sz := size.Load(); sz > 64<<10 && size.CompareAndSwap(sz, sz/2) {
							a.note("a WRITE was refused as ILLEGAL REQUEST (ASC %#04x): WRITEs of %d KiB from then on", asc, sz/2>>10)
						}
					default:
						a.count(fmt.Sprintf("WRITEs answered CHECK CONDITION key %#x ASC %#04x", key, asc), 1)
					}
				default:
					a.count(fmt.Sprintf("WRITEs answered status %#02x", m.Status), 1)
				}
			case pdu.OpReject:
				a.count("Rejects", 1)
			case pdu.OpAsyncMessage:
				a.count("asynchronous messages", 1)
			default:
				a.count("other PDUs: "+op.String(), 1)
			}
		}, &wmu)
	}()
	blocks := a.site.BigBlocks
	cmdSN := r.CmdSN
	for k := uint64(0); ; k++ {
		// Wait for room in the CmdSN window (RFC 7143 4.2.2.1).
		for {
			mu.Lock()
			room := int32(maxCmdSN-cmdSN) >= 0
			mu.Unlock()
			if room {
				break
			}
			select {
			case ok := <-readerDone:
				return ok
			case <-moved:
			case <-time.After(time.Second):
			}
		}
		if full.Swap(false) {
			select {
			case ok := <-readerDone:
				return ok
			case <-time.After(200 * time.Millisecond):
			}
		}
		n := size.Load() / 512
		lba := (k * uint64(n)) % (blocks - uint64(n))
		mu.Lock()
		exp := statSN
		mu.Unlock()
		cmd := pdu.SCSICommand{Final: k%2 == 0 || r.InitialR2T, Write: true, Attr: pdu.AttrSimple, ITT: uint32(k + 1),
			ExpectedDataTransferLength: n * 512, CmdSN: cmdSN, ExpStatSN: exp}
		cmd.CDB[0] = 0x8a // WRITE(16)
		binary.BigEndian.PutUint64(cmd.CDB[2:], lba)
		binary.BigEndian.PutUint32(cmd.CDB[10:], n)
		var p pdu.PDU
		cmd.Marshal(&p)
		wmu.Lock()
		err := r.WritePDU(&p)
		wmu.Unlock()
		if err != nil {
			r.Close()
			return <-readerDone
		}
		cmdSN++
		a.count("WRITEs sent without their data", 1)
		a.count("MiB promised and never sent", int64(n)>>11)
	}
}

// senseKey returns the sense key and ASC/ASCQ of a SCSI Response's sense
// segment (2-byte length, fixed or descriptor format sense; SPC-4 4.5).
func senseKey(seg []byte) (byte, uint16) {
	if len(seg) < 4 {
		return 0, 0
	}
	s := seg[2:]
	switch s[0] & 0x7f {
	case 0x70, 0x71:
		if len(s) >= 14 {
			return s[2] & 0x0f, uint16(s[12])<<8 | uint16(s[13])
		}
	case 0x72, 0x73:
		if len(s) >= 4 {
			return s[1] & 0x0f, uint16(s[2])<<8 | uint16(s[3])
		}
	}
	return 0, 0
}

// victim is a host the impersonation attack pretends to be.
type victim struct {
	h hostInfo
	// isid and tsih of its session, once known.
	isid uint64
	tsih uint16
}

// impersonate tries, round robin at -impersonate-rate, to be pc1 or other
// without their secrets: fetch pc1's iPXE script by its MAC from an
// attacker address (and use a CHAP secret found in it), log in with the
// victim's initiator name and no CHAP, with CHAP and a wrong secret on the
// victim's ISID, and with its ISID and TSIH (a connection
// reinstatement). Every login must be refused and the victim's session
// must carry on.
func impersonate(ctx context.Context, a *attacker) {
	boot := &victim{h: a.site.Boot}
	other := &victim{h: a.site.Other}
	if isid, tsih, ok := parseSession(a.otherSession); ok {
		other.isid, other.tsih = isid, tsih
	}
	var mu sync.Mutex
	go func() {
		for s := range a.sessions {
			if isid, tsih, ok := parseSession(s); ok {
				mu.Lock()
				boot.isid, boot.tsih = isid, tsih
				mu.Unlock()
				a.count("sessions of pc1 learnt", 1)
			}
		}
	}()
	a.ready("")
	var leaked string
	tick := time.NewTicker(time.Second / time.Duration(max(a.sz.impersonateRate, 1)))
	defer tick.Stop()
	for k := 0; ; k++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		local := a.addrs[k%len(a.addrs)]
		v := boot
		if k/5%2 == 1 {
			v = other
		}
		mu.Lock()
		isid, tsih := v.isid, v.tsih
		mu.Unlock()
		switch k % 5 {
		case 0:
			if s := fetchScript(ctx, a, local); s != "" && leaked == "" {
				leaked = s
			}
		case 1:
			a.tryLogin(ctx, v, "no CHAP", iscsiclient.Config{ISID: randomISID()}, local)
		case 2:
			if isid == 0 {
				isid = randomISID()
			}
			a.tryLogin(ctx, v, "a wrong CHAP secret on its ISID", iscsiclient.Config{ISID: isid, CHAPUser: v.h.CHAPUser,
				CHAPSecret: fmt.Sprintf("not-the-secret-%08x", rand.Uint32())}, local)
		case 3:
			if isid == 0 || tsih == 0 {
				a.count("reinstatement attempts skipped (session not known yet)", 1)
				continue
			}
			a.tryReinstate(ctx, v, isid, tsih, local)
		case 4:
			if leaked != "" && v == boot {
				a.tryLogin(ctx, v, "the CHAP secret its script leaked", iscsiclient.Config{ISID: randomISID(), CHAPUser: v.h.CHAPUser, CHAPSecret: leaked}, local)
			}
		}
	}
}

func parseSession(s string) (uint64, uint16, bool) {
	is, ts, ok := strings.Cut(s, "/")
	isid, err1 := strconv.ParseUint(strings.TrimPrefix(is, "0x"), 16, 64)
	tsih, err2 := strconv.ParseUint(ts, 10, 16)
	return isid, uint16(tsih), ok && err1 == nil && err2 == nil && isid != 0
}

// tryLogin logs in as v with cfg's ISID and credentials from local.
func (a *attacker) tryLogin(ctx context.Context, v *victim, how string, cfg iscsiclient.Config, local netip.Addr) {
	cfg.Addr, cfg.Initiator, cfg.Target, cfg.Timeout = a.portal(), v.h.InitiatorIQN, v.h.TargetIQN, 5*time.Second
	cfg.LocalAddr = &net.TCPAddr{IP: local.AsSlice()}
	a.count("logins tried as "+v.h.Name+" with "+how, 1)
	s, err := iscsiclient.Dial(ctx, cfg)
	var le *iscsiclient.LoginError
	switch {
	case err == nil:
		s.Close()
		a.breach("logged in as %s with %s", v.h.Name, how)
	case errors.As(err, &le):
		a.count(fmt.Sprintf("refused: status %#04x", le.Status()), 1)
	case ctx.Err() == nil:
		a.count("login errors", 1)
		a.note("login as %s with %s: %v", v.h.Name, how, err)
	}
}

// tryReinstate sends a Login Request with v's ISID and TSIH asking for the
// full feature phase without authentication (RFC 7143 6.3.5: a
// connection reinstatement): it must be refused and must not end v's
// session.
func (a *attacker) tryReinstate(ctx context.Context, v *victim, isid uint64, tsih uint16, local netip.Addr) {
	a.count("reinstatements tried as "+v.h.Name, 1)
	c, err := dialTCP(ctx, local, a.portal())
	if err != nil {
		a.count("login errors", 1)
		return
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(loginPDU(isid, tsih, loginText(v.h.InitiatorIQN, v.h.TargetIQN, "None"), true)); err != nil {
		a.count("login errors", 1)
		return
	}
	rd := pdu.Reader{R: bufio.NewReader(c), MaxData: 8192}
	var p pdu.PDU
	if err := rd.ReadPDU(&p); err != nil {
		if !errors.Is(err, io.EOF) {
			a.note("reinstatement as %s: %v", v.h.Name, err)
		}
		a.count("reinstatements: connection closed without an answer", 1)
		return
	}
	r, err := pdu.ParseLoginResponse(&p.BHS)
	switch {
	case err != nil:
		a.count("reinstatements answered with "+p.BHS.Opcode().String(), 1)
	case r.Status == pdu.LoginSuccess && r.Transit && r.NSG == pdu.StageFullFeature:
		a.breach("reinstated a connection of %s with its ISID and TSIH, without authentication", v.h.Name)
	default:
		a.count(fmt.Sprintf("reinstatements refused: status %#04x", r.Status), 1)
	}
}
