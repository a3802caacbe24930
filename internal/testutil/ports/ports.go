// Package ports finds free loopback ports for tests that start servers in
// other processes (or with addresses in a configuration), where a listener
// cannot be handed over. It is for tests only; production code must not
// import it.
package ports

import (
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
)

// Ports are drawn below Linux's default ephemeral range (32768-60999):
// between the moment FreeTCP closes its probe and the moment the caller
// binds, an outgoing connection of any test in the same run (an initiator,
// an etcd client) could otherwise be given the very port - the kernel
// picks those from the ephemeral range, never from here.
const (
	lowest  = 20000
	highest = 32767
)

var (
	mu     sync.Mutex
	handed = map[int]bool{} // never the same port twice in one process
)

// FreeTCP returns a TCP port of 127.0.0.1 that was free a moment ago,
// outside the ephemeral range and not handed out before by this process.
// Another process may still take it before the caller binds it; the tests
// that use it bind at once.
func FreeTCP(tb testing.TB) int {
	tb.Helper()
	mu.Lock()
	defer mu.Unlock()
	for range 200 {
		p := lowest + rand.IntN(highest-lowest+1)
		if handed[p] {
			continue
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		l.Close()
		handed[p] = true
		return p
	}
	tb.Fatalf("ports: no free TCP port of 127.0.0.1 in %d-%d", lowest, highest)
	return 0
}
