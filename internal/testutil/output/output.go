// Package output collects what test and benchmark processes print (and
// what servers under test log), for waiting on a marker and for failure
// messages.
package output

import (
	"bytes"
	"sync"
)

// Output collects output and wakes waiters on every write. The zero value
// is ready to use and keeps everything; it is safe for concurrent use.
type Output struct {
	// Max, when positive, bounds what is kept: past Max bytes, the
	// oldest are dropped down to Max/2 before the next write.
	Max int

	mu      sync.Mutex
	b       bytes.Buffer
	changed chan struct{} // closed at the next write; nil while nobody waits
}

func (o *Output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.Max > 0 && o.b.Len() > o.Max {
		o.b.Next(o.b.Len() - o.Max/2)
	}
	o.b.Write(p)
	if o.changed != nil {
		close(o.changed)
		o.changed = nil
	}
	return len(p), nil
}

// String returns the output kept so far.
func (o *Output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.String()
}

// Changes returns a channel closed at the next write.
func (o *Output) Changes() <-chan struct{} {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.changed == nil {
		o.changed = make(chan struct{})
	}
	return o.changed
}

// Tail returns the last n bytes of s, marked when cut, for failure messages.
func Tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}
