package api

import (
	"strings"
	"testing"
)

// A bad value inside a field with its own decoding still names the field.
func TestDecodeNamesTheField(t *testing.T) {
	for body, field := range map[string]string{
		`{"name":"x","size":"abc"}`: "size",
		`{"name":"x","size":"5K"}`:  "size",
		`{"name":"x","size":[1]}`:   "size",
	} {
		var req CreateImageRequest
		fe, ok := decodeJSON(strings.NewReader(body), &req).(*fieldError)
		if !ok || fe.field != field {
			t.Errorf("%s: %v, want an error naming %s", body, fe, field)
		}
	}
	var h AddHostRequest
	if fe, ok := decodeJSON(strings.NewReader(`{"name":"x","chap":"yes"}`), &h).(*fieldError); !ok || fe.field != "chap" {
		t.Errorf("chap: %v", fe)
	}
}
