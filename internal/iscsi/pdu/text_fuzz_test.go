package pdu

import (
	"bytes"
	"reflect"
	"testing"
)

// FuzzParseText checks that ParseText never panics, that whatever it accepts
// obeys the RFC 7143 6.1 limits, and that AppendText reproduces it.
func FuzzParseText(f *testing.F) {
	for _, d := range realLoginData() {
		f.Add(d)
		f.Add(padded(d))
	}
	f.Add([]byte("A=1\x00B"))
	f.Add([]byte("=\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		kvs, err := ParseText(data)
		if err != nil {
			return
		}
		for _, kv := range kvs {
			if !validKey([]byte(kv.Key)) || len(kv.Value) > TextMaxLargeValueLen {
				t.Fatalf("accepted bad pair %q", kv)
			}
			if bytes.IndexByte([]byte(kv.Value), 0) >= 0 {
				t.Fatalf("NUL inside value %q", kv)
			}
		}
		again, err := ParseText(AppendText(nil, kvs...))
		if err != nil {
			t.Fatalf("re-parse: %v", err)
		}
		if len(kvs) == 0 && len(again) == 0 {
			return
		}
		if !reflect.DeepEqual(kvs, again) {
			t.Fatalf("round trip: %q != %q", kvs, again)
		}
	})
}
