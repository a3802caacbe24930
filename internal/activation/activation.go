// Package activation speaks systemd's service-manager protocols and
// nothing else: it takes over the listening sockets the manager opened for
// diskless (socket activation, sd_listen_fds(3)) and tells the manager the
// service's state (Notify, sd_notify(3)).
//
// Socket activation: while diskless restarts, the kernel keeps such a
// socket listening and queues the connections that arrive, so an
// initiator that reconnects during the restart is served as soon as the
// new process runs, instead of being refused and waiting for its next
// retry (open-iscsi waits 3 s). LISTEN_PID is the pid of the process the
// sockets are for, LISTEN_FDS how many there are, from file descriptor 3
// on; LISTEN_FDNAMES (optional) names them. The variables are removed once
// read, so child processes do not take them as their own.
package activation

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// firstFD is SD_LISTEN_FDS_START.
const firstFD = 3

// Set is the sockets handed over to this process.
type Set struct {
	listeners []net.Listener // nil once taken
	// Freebind makes the sockets Listen opens itself bindable to an
	// address the machine does not hold yet (IP_FREEBIND): a cluster's
	// floating address, which comes and goes with the election.
	Freebind bool
}

// FromEnv takes the sockets the environment announces for this process:
// none when LISTEN_PID is not this process's pid. Every passed descriptor
// must be a listening stream socket; UDP services open their own.
func FromEnv() (*Set, error) {
	pid, fds := os.Getenv("LISTEN_PID"), os.Getenv("LISTEN_FDS")
	os.Unsetenv("LISTEN_PID")
	os.Unsetenv("LISTEN_FDS")
	os.Unsetenv("LISTEN_FDNAMES")
	s := &Set{}
	if pid == "" || fds == "" || pid != strconv.Itoa(os.Getpid()) {
		return s, nil
	}
	n, err := strconv.Atoi(fds)
	if err != nil || n < 0 || n > 64 {
		return nil, fmt.Errorf("socket activation: LISTEN_FDS=%q is not a count of sockets", fds)
	}
	for fd := firstFD; fd < firstFD+n; fd++ {
		syscall.CloseOnExec(fd)
		f := os.NewFile(uintptr(fd), "listen-fd-"+strconv.Itoa(fd))
		l, err := net.FileListener(f) // dups the descriptor
		f.Close()
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("socket activation: descriptor %d is not a listening TCP socket: %w", fd, err)
		}
		s.listeners = append(s.listeners, l)
	}
	return s, nil
}

// Listen returns the handed-over listener bound to addr (host:port as in
// the configuration; a host left out or unspecified matches an unspecified
// bind) and whether it was handed over; without one it listens on addr
// itself.
func (s *Set) Listen(addr string) (l net.Listener, inherited bool, err error) {
	want, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		return nil, false, err
	}
	for i, l := range s.listeners {
		if l != nil && sameAddr(want, l.Addr()) {
			s.listeners[i] = nil
			return l, true, nil
		}
	}
	lc := net.ListenConfig{}
	if s.Freebind {
		lc.Control = FreebindControl
	}
	l, err = lc.Listen(context.Background(), "tcp", addr)
	return l, false, err
}

// FreebindControl sets IP_FREEBIND on a socket before it is bound (a
// net.ListenConfig's Control).
func FreebindControl(_, _ string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_FREEBIND, 1)
	}); err != nil {
		return err
	}
	return serr
}

func sameAddr(want *net.TCPAddr, a net.Addr) bool {
	got, ok := a.(*net.TCPAddr)
	if !ok || got.Port != want.Port {
		return false
	}
	if want.IP == nil || want.IP.IsUnspecified() {
		return got.IP.IsUnspecified()
	}
	return got.IP.Equal(want.IP)
}

// Unused closes the handed-over sockets nothing took and returns their
// addresses, for a warning: a unit that opens a socket the configuration
// does not listen on is a mistake worth saying.
func (s *Set) Unused() []string {
	var addrs []string
	for i, l := range s.listeners {
		if l != nil {
			addrs = append(addrs, l.Addr().String())
			l.Close()
			s.listeners[i] = nil
		}
	}
	return addrs
}

// Close closes every socket not taken yet.
func (s *Set) Close() error {
	var errs []error
	for i, l := range s.listeners {
		if l != nil {
			errs = append(errs, l.Close())
			s.listeners[i] = nil
		}
	}
	return errors.Join(errs...)
}
