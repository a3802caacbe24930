package dhcp

import (
	"sync/atomic"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// Packet kinds counted, by DHCP message type.
const (
	kindInvalid = iota // did not decode
	kindBOOTP          // no option 53
	kindDiscover
	kindRequest
	kindDecline
	kindRelease
	kindInform
	kindOther // a server's message type, or an unknown one
	numKinds
)

var kindNames = [numKinds]string{"INVALID", "BOOTP", "DISCOVER", "REQUEST", "DECLINE", "RELEASE", "INFORM", "OTHER"}

func kindOf(mt dhcpv4.MessageType) int {
	switch mt {
	case 0:
		return kindBOOTP
	case dhcpv4.MessageTypeDiscover:
		return kindDiscover
	case dhcpv4.MessageTypeRequest:
		return kindRequest
	case dhcpv4.MessageTypeDecline:
		return kindDecline
	case dhcpv4.MessageTypeRelease:
		return kindRelease
	case dhcpv4.MessageTypeInform:
		return kindInform
	}
	return kindOther
}

// Outcome is what became of a received packet.
type outcome int

const (
	outAnswered    outcome = iota // a reply was sent
	outDone                       // handled, no reply due (RELEASE, DECLINE)
	outMalformed                  // does not decode or breaks the protocol
	outNotPXE                     // proxy mode: not a PXE/HTTP boot client
	outIgnored                    // not for us: another server's client, a policy refusal, BOOTP, server messages
	outNoAddress                  // full mode: no address left to offer
	outError                      // our failure: lease file, socket
	outRateLimited                // full mode: a new client beyond NewLeasesPerSecond, not answered
	outLeaseLimit                 // full mode: a new client beyond MaxLeases, not answered
	outNoOffer                    // full mode: a new client's REQUEST not answering our offer: NAK or silence
	outSuperseded                 // full mode: an ACK replaced, before the lease file was written, by the client's next request
	numOutcomes
)

var outcomeNames = [numOutcomes]string{"answered", "done", "malformed", "not_pxe", "ignored", "no_address", "error",
	"rate_limited", "lease_limit", "no_offer", "superseded"}

// Stats counts received packets. The zero counts are left out of ByType.
// Requests from new clients refused by the bounds of issue 13 are counted
// by reason: RateLimited, LeaseLimit, NoOffer.
type Stats struct {
	Received    uint64
	Answered    uint64 // a reply (OFFER, ACK, NAK) went out
	Done        uint64 // handled, no reply due (RELEASE, DECLINE)
	Malformed   uint64 // dropped: not a valid DHCP request
	NotPXE      uint64 // dropped in proxy mode: not a network-boot client
	Ignored     uint64 // dropped: not for this server or refused by the boot policy
	NoAddress   uint64 // dropped in full mode: pool exhausted
	RateLimited uint64 // dropped in full mode: a new client beyond NewLeasesPerSecond
	LeaseLimit  uint64 // dropped in full mode: a new client beyond MaxLeases
	NoOffer     uint64 // refused in full mode: a new client's REQUEST for an address not offered to it (NAK or silence)
	Superseded  uint64 // ACKs not sent: the client asked again before the lease file was written
	Errors      uint64 // dropped: lease file or socket failure
	Panics      uint64 // handler panics recovered (also counted as Errors)
	LeaseWrites uint64 // lease file writes (each covers every change before it)
	// Shed counts packets dropped unread in full mode because every worker
	// was busy and 256 packets of clients without a record were waiting
	// already (not in Received: their type was never read).
	Shed uint64
	// ByType[type][outcome] splits the counts by message type ("DISCOVER",
	// "REQUEST", "DECLINE", "RELEASE", "INFORM", "BOOTP", "OTHER",
	// "INVALID") and outcome ("answered", "done", "malformed", "not_pxe",
	// "ignored", "no_address", "error", "rate_limited", "lease_limit",
	// "no_offer", "superseded"): the labels of
	// diskless_dhcp_packets_total{type,result}.
	ByType map[string]map[string]uint64
}

type counters struct {
	n      [numKinds][numOutcomes]atomic.Uint64
	panics atomic.Uint64
}

func (c *counters) add(kind int, o outcome) { c.n[kind][o].Add(1) }

func (c *counters) snapshot() Stats {
	st := Stats{ByType: map[string]map[string]uint64{}, Panics: c.panics.Load()}
	for k := range numKinds {
		for o := range numOutcomes {
			v := c.n[k][o].Load()
			if v == 0 {
				continue
			}
			st.Received += v
			switch outcome(o) {
			case outAnswered:
				st.Answered += v
			case outDone:
				st.Done += v
			case outMalformed:
				st.Malformed += v
			case outNotPXE:
				st.NotPXE += v
			case outIgnored:
				st.Ignored += v
			case outNoAddress:
				st.NoAddress += v
			case outError:
				st.Errors += v
			case outRateLimited:
				st.RateLimited += v
			case outLeaseLimit:
				st.LeaseLimit += v
			case outNoOffer:
				st.NoOffer += v
			case outSuperseded:
				st.Superseded += v
			}
			m := st.ByType[kindNames[k]]
			if m == nil {
				m = map[string]uint64{}
				st.ByType[kindNames[k]] = m
			}
			m[outcomeNames[o]] = v
		}
	}
	return st
}
