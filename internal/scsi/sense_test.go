package scsi

import "testing"

// The key comes back out of both formats the target builds, and data that
// is neither gives no key.
func TestSenseKeyOf(t *testing.T) {
	e := &SenseError{Key: SenseMediumError, Code: ascUnrecoveredReadError, Info: 7, InfoValid: true}
	cases := []struct {
		name  string
		sense []byte
		key   SenseKey
		ok    bool
	}{
		{"fixed", e.AppendFixed(nil), SenseMediumError, true},
		{"descriptor", e.AppendDescriptor(nil), SenseMediumError, true},
		{"deferred fixed", []byte{0x71, 0, byte(SenseUnitAttention), 0}, SenseUnitAttention, true},
		{"short", []byte{0x70, 0}, 0, false},
		{"not sense", []byte{0x00, 0x05, 0x05}, 0, false},
	}
	for _, tc := range cases {
		k, ok := SenseKeyOf(tc.sense)
		if k != tc.key || ok != tc.ok {
			t.Errorf("%s: %v %v, want %v %v", tc.name, k, ok, tc.key, tc.ok)
		}
	}
}

func TestSenseKeyNames(t *testing.T) {
	seen := map[string]bool{}
	for k := range SenseKey(16) {
		n := k.String()
		if n == "" || seen[n] {
			t.Errorf("key %#x: name %q empty or taken", byte(k), n)
		}
		seen[n] = true
	}
	if SenseIllegalRequest.String() != "ILLEGAL_REQUEST" || SenseAbortedCommand.String() != "ABORTED_COMMAND" {
		t.Errorf("names do not follow SPC-4 table 27: %v %v", SenseIllegalRequest, SenseAbortedCommand)
	}
}
