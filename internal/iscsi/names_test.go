package iscsi

import "testing"

func TestCheckName(t *testing.T) {
	for _, ok := range []string{
		"iqn.2026-11.org.example:disk1", "iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test",
		"eui.02004567a425678d", "naa.52004567ba64678d", "naa.62004567ba64678d0123456789abcdef",
	} {
		if err := CheckName(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{
		"", "disk1", "iqn.26-11.org.example", "iqn.2026-1.org.example", "iqn.2026-11org", "IQN.2026-11.org.example",
		"iqn.2026-11.org.example:Disk", "iqn.2026-11.org.example disk", "eui.02004567A425678D", "eui.0200", "naa.123",
		"iqn.2026-11.org.example:" + string(make([]byte, 300)),
	} {
		if CheckName(bad) == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
