package activation

import (
	"bufio"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/diskless-boot/diskless/internal/testutil/proc"
)

// The child half of the tests below: a process started by the socket
// activation protocol takes its socket and answers one connection.
func TestMain(m *testing.M) {
	if addr := os.Getenv("ACTIVATION_TEST_CHILD"); addr != "" {
		child(addr)
		return
	}
	os.Exit(m.Run())
}

func child(addr string) {
	s, err := FromEnv()
	if err != nil {
		println("child: FromEnv:", err.Error())
		os.Exit(2)
	}
	l, inherited, err := s.Listen(addr)
	if err != nil {
		println("child: Listen:", err.Error())
		os.Exit(2)
	}
	c, err := l.Accept()
	if err != nil {
		os.Exit(2)
	}
	// What the child saw: whether the socket was handed over, and that
	// the protocol's variables are gone (children must not take them).
	env := os.Getenv("LISTEN_PID") + os.Getenv("LISTEN_FDS")
	c.Write([]byte("inherited=" + map[bool]string{true: "yes", false: "no"}[inherited] + " env=" + env + "\n"))
	c.Close()
	os.Exit(0)
}

// handedOver is a listening socket on loopback and the descriptor a child
// gets of it.
func handedOver(t *testing.T) (*net.TCPListener, *os.File) {
	t.Helper()
	l, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	f, err := l.File()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return l, f
}

// startChild starts the test binary as a child that is handed f by socket
// activation and takes the socket for listenAddr.
func startChild(t *testing.T, f *os.File, listenAddr string) *proc.Proc {
	t.Helper()
	p, err := proc.Start(t, proc.Config{Name: "child", ListenFDs: []*os.File{f},
		Env: []string{"ACTIVATION_TEST_CHILD=" + listenAddr}}, os.Args[0], "-test.run=^$")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// answer reads the child's line from c.
func answer(t *testing.T, c net.Conn, p *proc.Proc) string {
	t.Helper()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("no answer from the child: %v\n%s", err, p.Output())
	}
	return strings.TrimSpace(line)
}

// A connection made before the child even runs waits on the handed-over
// socket and is served by the child: what a restart under systemd's
// socket activation gives an initiator that reconnects meanwhile.
func TestHandedOverSocketServes(t *testing.T) {
	l, f := handedOver(t)
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p := startChild(t, f, l.Addr().String())
	if got := answer(t, c, p); got != "inherited=yes env=" {
		t.Errorf("child said %q, want the socket handed over and the variables gone", got)
	}
}

// A handed-over socket bound to another address is not taken for this
// one: the child listens on its address itself.
func TestOtherAddressNotTaken(t *testing.T) {
	_, f := handedOver(t)
	other, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	addr := other.Addr().String()
	other.Close() // a free port, for the child
	p := startChild(t, f, addr)
	var c net.Conn
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err = net.Dial("tcp", addr); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		t.Fatalf("the child did not listen on %s itself: %v\n%s", addr, err, p.Output())
	}
	defer c.Close()
	if got := answer(t, c, p); got != "inherited=no env=" {
		t.Errorf("child said %q, want its own socket", got)
	}
}

// Sockets meant for another process (LISTEN_PID not ours) are left alone.
func TestOtherPIDIgnored(t *testing.T) {
	t.Setenv("LISTEN_PID", "1")
	t.Setenv("LISTEN_FDS", "1")
	s, err := FromEnv()
	if err != nil || len(s.listeners) != 0 {
		t.Fatalf("FromEnv took sockets of pid 1: %v %v", s, err)
	}
	if os.Getenv("LISTEN_FDS") != "" {
		t.Errorf("LISTEN_FDS still set")
	}
}

// A descriptor that is not a listening socket is a clear error.
func TestNotASocket(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "x")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p := startChild(t, f, "127.0.0.1:1")
	p.Wait()
	if out := p.Output(); !strings.Contains(out, "descriptor 3 is not a listening TCP socket") {
		t.Errorf("child said %q", out)
	}
}

// listenNotify is a service manager's notification socket at name (a path,
// or '@' and an abstract name) with NOTIFY_SOCKET set to it.
func listenNotify(t *testing.T, name string) *net.UnixConn {
	t.Helper()
	addr := name
	if addr[0] == '@' {
		addr = "\x00" + addr[1:]
	}
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	t.Setenv("NOTIFY_SOCKET", name)
	return c
}

// received is the next datagram on c.
func received(t *testing.T, c *net.UnixConn) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, 4096)
	n, err := c.Read(b)
	if err != nil {
		t.Fatalf("no notification: %v", err)
	}
	return string(b[:n])
}

// Each state reaches the manager as one datagram, on a path socket and on
// an abstract one (systemd uses the latter for some units), and the
// variable stays for the next notification.
func TestNotify(t *testing.T) {
	for _, name := range []string{filepath.Join(t.TempDir(), "notify"), "@diskless-test-" + strconv.Itoa(os.Getpid())} {
		c := listenNotify(t, name)
		for _, state := range []string{"READY=1", "RELOADING=1\nSTATUS=reading the configuration", "STOPPING=1"} {
			if err := Notify(state); err != nil {
				t.Fatalf("%s: Notify(%q): %v", name, state, err)
			}
			if got := received(t, c); got != state {
				t.Errorf("%s: manager got %q, want %q", name, got, state)
			}
		}
	}
}

// Without a manager Notify is a no-op; a manager that went away is an
// error the caller can log.
func TestNotifyWithoutManager(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	if err := Notify("READY=1"); err != nil {
		t.Errorf("Notify without NOTIFY_SOCKET: %v", err)
	}
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "gone"))
	if err := Notify("READY=1"); err == nil {
		t.Error("Notify to a socket nobody listens on said nil")
	}
	t.Setenv("NOTIFY_SOCKET", "relative")
	if err := Notify("READY=1"); err == nil || !strings.Contains(err.Error(), "neither a path") {
		t.Errorf("Notify to %q: %v", "relative", err)
	}
}
