package boot

import "testing"

func TestIPXEError(t *testing.T) {
	for code, want := range map[string]string{
		"0x0216eb3c": "Permission denied (https://ipxe.org/0216eb3c)",
		"2e008081":   "Exec format error (https://ipxe.org/2e008081)",
		"0x4c126035": "Connection timed out (https://ipxe.org/4c126035)",
		"0x00000000": "no error number (iPXE recorded none)",
	} {
		if got, ok := IPXEError(code); !ok || got != want {
			t.Errorf("%s: %q %v, want %q", code, got, ok, want)
		}
	}
	for _, bad := range []string{"", "0x", "xyz", "0x1ffffffff"} {
		if _, ok := IPXEError(bad); ok {
			t.Errorf("%q parsed", bad)
		}
	}
}
