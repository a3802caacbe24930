package api

import (
	"context"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/diskless-boot/diskless/internal/httplimit"
)

// The API on its own listener has the boot server's bounds: a client over
// its request rate gets 429 while another address is still answered, and
// the refusals are counted.
func TestServerLimits(t *testing.T) {
	a := newTestAPI(t)
	srv := NewServer(a.h, ServerConfig{Limits: httplimit.Config{RequestsPerSecond: 0.001, Burst: 3}})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	call := func(from string) int {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
		c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: d.DialContext}}
		req, _ := http.NewRequest("GET", "http://"+ln.Addr().String()+Prefix+"/images", nil)
		req.Header.Set("Authorization", "Bearer "+a.token)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	for i := range 3 {
		if code := call("127.0.0.2"); code != 200 {
			t.Fatalf("request %d: %d", i, code)
		}
	}
	if code := call("127.0.0.2"); code != http.StatusTooManyRequests {
		t.Fatalf("over the burst: %d", code)
	}
	if code := call("127.0.0.3"); code != 200 {
		t.Fatalf("another address: %d", code)
	}
	if st := srv.Stats(); st.RateLimited != 1 || st.Accepted < 2 {
		t.Errorf("stats %+v", st)
	}
}
