package tftp

import (
	"bufio"
	"io"
)

// netasciiReader converts a Unix text file to netascii (RFC 1350 section 1,
// which takes the Telnet NVT rules of RFC 764): a line feed is sent as
// CR LF and a bare carriage return as CR NUL. Every other byte passes
// unchanged; the conversion never fails on binary input.
type netasciiReader struct {
	r       *bufio.Reader
	pending byte // second byte of a pair that did not fit in p
	has     bool
}

func newNetasciiReader(r io.Reader) *netasciiReader {
	return &netasciiReader{r: bufio.NewReaderSize(r, 4096)}
}

func (n *netasciiReader) Read(p []byte) (int, error) {
	i := 0
	if n.has && len(p) > 0 {
		p[0] = n.pending
		n.has = false
		i = 1
	}
	for i < len(p) {
		c, err := n.r.ReadByte()
		if err != nil {
			if i > 0 && err == io.EOF {
				return i, nil
			}
			return i, err
		}
		var second byte
		switch c {
		case '\n':
			c, second = '\r', '\n'
		case '\r':
			second = 0
		default:
			p[i] = c
			i++
			continue
		}
		p[i] = c
		i++
		if i < len(p) {
			p[i] = second
			i++
		} else {
			n.pending, n.has = second, true
		}
	}
	return i, nil
}
