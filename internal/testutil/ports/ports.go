// Package ports finds free loopback ports for tests that start servers in
// other processes (or with addresses in a configuration), where a listener
// cannot be handed over. It is for tests only; production code must not
// import it.
package ports

import (
	"net"
	"testing"
)

// FreeTCP returns a TCP port of 127.0.0.1 that was free a moment ago.
// Another process may take it before the caller binds it; the tests that
// use it bind at once.
func FreeTCP(tb testing.TB) int {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
