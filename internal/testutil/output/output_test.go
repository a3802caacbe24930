package output

import (
	"strings"
	"testing"
)

func TestOutput(t *testing.T) {
	var o Output
	ch := o.Changes()
	o.Write([]byte("hello "))
	select {
	case <-ch:
	default:
		t.Fatal("a write did not wake the waiter")
	}
	o.Write([]byte("world"))
	if o.String() != "hello world" {
		t.Fatalf("%q", o.String())
	}

	capped := Output{Max: 8}
	for range 10 {
		capped.Write([]byte("0123"))
	}
	if s := capped.String(); len(s) > 12 || !strings.HasSuffix(s, "0123") {
		t.Fatalf("capped output %q", s)
	}
	if Tail("abcdef", 3) != "…def" || Tail("ab", 3) != "ab" {
		t.Fatal(Tail("abcdef", 3))
	}
}
