//go:build linux

package harness

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// TFTPGet reads file from server like a PXE ROM (RFC 1350 with RFC 2347
// options): RRQ with blksize and tsize 0, lock-step ACKs, the last packet
// sent again after 1 s of silence, 5 tries, from a socket on local.
func TFTPGet(local, server netip.Addr, file string, blksize int, deadline time.Time) ([]byte, error) {
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: local.AsSlice()})
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	rrq := []byte{0, 1}
	rrq = append(append(rrq, file...), 0)
	rrq = append(append(rrq, "octet"...), 0)
	rrq = append(append(rrq, "blksize"...), 0)
	rrq = append(append(rrq, strconv.Itoa(blksize)...), 0)
	rrq = append(append(rrq, "tsize"...), 0)
	rrq = append(append(rrq, '0'), 0)
	dst := &net.UDPAddr{IP: server.AsSlice(), Port: 69}
	last := rrq
	var peer *net.UDPAddr
	var data []byte
	size := 512
	expect := uint16(1)
	buf := make([]byte, 65536)
	tries := 0
	send := func() error {
		to := dst
		if peer != nil {
			to = peer
		}
		_, err := conn.WriteToUDP(last, to)
		return err
	}
	if err := send(); err != nil {
		return nil, err
	}
	for {
		rd := time.Now().Add(time.Second)
		if rd.After(deadline) {
			rd = deadline
		}
		conn.SetReadDeadline(rd)
		n, from, err := conn.ReadFromUDP(buf)
		if err != nil {
			if time.Now().After(deadline) || tries >= 5 {
				return nil, fmt.Errorf("timeout at block %d", expect)
			}
			tries++
			send()
			continue
		}
		if peer != nil && (from.Port != peer.Port || !from.IP.Equal(peer.IP)) {
			continue
		}
		if n < 4 {
			continue
		}
		p := buf[:n]
		switch binary.BigEndian.Uint16(p) {
		case 6: // OACK
			if peer != nil || expect != 1 {
				continue
			}
			peer = from
			opts := bytes.Split(p[2:], []byte{0})
			for i := 0; i+1 < len(opts); i += 2 {
				if strings.EqualFold(string(opts[i]), "blksize") {
					size, _ = strconv.Atoi(string(opts[i+1]))
				}
			}
			last = []byte{0, 4, 0, 0}
		case 3: // DATA
			if peer == nil {
				peer = from
			}
			blk := binary.BigEndian.Uint16(p[2:])
			if blk != expect {
				if blk == expect-1 {
					send()
				}
				continue
			}
			data = append(data, p[4:]...)
			last = []byte{0, 4, byte(blk >> 8), byte(blk)}
			expect++
			if len(p)-4 < size {
				conn.WriteToUDP(last, peer)
				return data, nil
			}
		case 5:
			return nil, fmt.Errorf("error %q", bytes.TrimRight(p[4:], "\x00"))
		default:
			continue
		}
		tries = 0
		if err := send(); err != nil {
			return nil, err
		}
	}
}
