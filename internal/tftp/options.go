package tftp

import (
	"strconv"
	"strings"
	"time"
)

// Option names (RFC 2348, 2349, 7440).
const (
	optBlksize    = "blksize"
	optTimeout    = "timeout"
	optTsize      = "tsize"
	optWindowsize = "windowsize"
)

// MaxWindowSize is the largest windowsize the server agrees to. RFC 7440
// allows 65535; more than 64 blocks in flight gains nothing measurable and
// would let one client hold 4 MiB of read-ahead at the largest block size.
const MaxWindowSize = 64

// negotiated are the parameters of one transfer after option negotiation.
type negotiated struct {
	blockSize  int           // bytes per DATA packet
	windowSize int           // DATA packets sent per ACK
	timeout    time.Duration // client's timeout option, 0 if none or ignored
	// timeoutIgnored is set when the client asked for a timeout above the
	// server's cap: the option was left out of the OACK.
	timeoutIgnored bool
	// oack lists the accepted options with the values the server uses, in
	// the order the client sent them. Empty means no OACK: the transfer
	// starts with DATA 1 (RFC 2347: a server that accepts no option
	// answers as an RFC 1350 server would).
	oack []Option
}

// negotiate applies RFC 2347 option negotiation to an RRQ. size is the
// number of bytes the transfer will carry, or -1 when unknown (netascii).
// maxBlock, maxWindow and maxTimeout are the server's caps.
//
// Options the server does not know, repeats of an option, and values that
// are not canonical decimal numbers in range are left out of the OACK, which
// RFC 2347 allows ("the server may ignore an option"); the client then uses
// the RFC 1350 default for them.
func negotiate(opts []Option, size int64, maxBlock, maxWindow int, maxTimeout time.Duration) negotiated {
	n := negotiated{blockSize: DefaultBlockSize, windowSize: 1}
	seen := map[string]bool{}
	for _, o := range opts {
		name := strings.ToLower(o.Name)
		if seen[name] {
			continue
		}
		seen[name] = true
		switch name {
		case optBlksize:
			// RFC 2348: 8..65464; the server may answer with a smaller
			// value, which the client must then use.
			v, ok := parseDecimal(o.Value, 1<<31-1)
			if !ok || v < MinBlockSize {
				continue
			}
			n.blockSize = min(v, MaxBlockSize, maxBlock)
			n.oack = append(n.oack, Option{optBlksize, strconv.Itoa(n.blockSize)})
		case optTimeout:
			// RFC 2349: 1..255 seconds; the server may not change the value,
			// only accept it or ignore it. EDK2 enforces that: its OACK check
			// (Mtftp4RrqOackValid) fails the transfer when the timeout differs
			// from the one it asked for. So a timeout above the server's cap
			// is ignored, not lowered: the client keeps its own retransmission
			// timer and the server uses Config.Timeout. Without the cap, 256
			// requests asking for 255 s and never answering would hold every
			// transfer slot for 6 x 255 s.
			v, ok := parseDecimal(o.Value, 255)
			if !ok || v < 1 {
				continue
			}
			if time.Duration(v)*time.Second > maxTimeout {
				n.timeoutIgnored = true
				continue
			}
			n.timeout = time.Duration(v) * time.Second
			n.oack = append(n.oack, Option{optTimeout, strconv.Itoa(v)})
		case optTsize:
			// RFC 2349: in an RRQ the client sends 0 and the server answers
			// with the size. Unknown size: leave the option out.
			if _, ok := parseDecimal(o.Value, 1<<62); !ok || size < 0 {
				continue
			}
			n.oack = append(n.oack, Option{optTsize, strconv.FormatInt(size, 10)})
		case optWindowsize:
			// RFC 7440: 1..65535; the server may answer with a smaller value.
			v, ok := parseDecimal(o.Value, 65535)
			if !ok || v < 1 {
				continue
			}
			n.windowSize = min(v, maxWindow)
			n.oack = append(n.oack, Option{optWindowsize, strconv.Itoa(n.windowSize)})
		}
	}
	return n
}

// parseDecimal accepts what RFC 2347 calls a numeric value: ASCII digits,
// no sign, no spaces, at most limit. Leading zeros are tolerated.
func parseDecimal(s string, limit int64) (int, bool) {
	if s == "" || len(s) > 20 {
		return 0, false
	}
	var v int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + int64(c-'0')
		if v > limit {
			return 0, false
		}
	}
	return int(v), true
}
