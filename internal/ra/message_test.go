package ra

import (
	"encoding/hex"
	"errors"
	"net"
	"testing"
)

func TestRouterAdvertisementGolden(t *testing.T) {
	hw, _ := net.ParseMAC("52:54:00:12:34:56")
	cases := []struct {
		name string
		ra   RouterAdvertisement
		want string
	}{
		// What the server sends: no flags, lifetime 0, SLLA option.
		{"server", RouterAdvertisement{SourceLinkAddr: hw},
			"86000000" + "00000000" + "00000000" + "00000000" + "0101525400123456"},
		{"no-options", RouterAdvertisement{}, "86000000" + "00000000" + "00000000" + "00000000"},
		{"fields", RouterAdvertisement{CurHopLimit: 64, Managed: true, Other: true, RouterLifetime: 1800, ReachableTime: 30000, RetransTimer: 1000},
			"86000000" + "40c00708" + "00007530" + "000003e8"},
	}
	for _, tc := range cases {
		got := hex.EncodeToString(tc.ra.AppendBinary(nil))
		if got != tc.want {
			t.Errorf("%s: got %s want %s", tc.name, got, tc.want)
		}
	}
}

func TestParseRouterSolicitation(t *testing.T) {
	mac := "525400abcdef"
	cases := []struct {
		name, hex string
		mac       string
		err       error
	}{
		// As iPXE sends it (src/net/ndp.c ndp_tx_router_solicitation).
		{"with-slla", "85000000" + "00000000" + "0101" + mac, mac, nil},
		{"bare", "85000000" + "00000000", "", nil},
		{"unknown-option-skipped", "85000000" + "00000000" + "0e01000000000000" + "0101" + mac, mac, nil},
		{"short", "850000", "", ErrShort},
		{"not-rs", "86000000" + "00000000", "", ErrNotRS},
		{"bad-code", "85010000" + "00000000", "", ErrNotRS},
		{"zero-length-option", "85000000" + "00000000" + "0100" + mac, "", ErrBadOption},
		{"option-past-end", "85000000" + "00000000" + "0102" + mac, "", ErrBadOption},
		{"one-byte-option", "85000000" + "00000000" + "01", "", ErrBadOption},
	}
	for _, tc := range cases {
		b, _ := hex.DecodeString(tc.hex)
		rs, err := ParseRouterSolicitation(b)
		if !errors.Is(err, tc.err) {
			t.Errorf("%s: err %v want %v", tc.name, err, tc.err)
			continue
		}
		if got := hex.EncodeToString(rs.SourceLinkAddr); err == nil && got != tc.mac {
			t.Errorf("%s: slla %s want %s", tc.name, got, tc.mac)
		}
	}
}

func FuzzParseRouterSolicitation(f *testing.F) {
	for _, s := range []string{
		"85000000000000000101525400123456",
		"8500000000000000",
		"85000000000000000e010000000000000101525400abcdef",
	} {
		b, _ := hex.DecodeString(s)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		rs, err := ParseRouterSolicitation(b)
		if err == nil && len(rs.SourceLinkAddr) > len(b) {
			t.Fatalf("option longer than the message")
		}
	})
}
