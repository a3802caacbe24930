package activation

import (
	"fmt"
	"net"
	"os"
	"time"
)

// Notify sends state to the service manager (systemd's sd_notify(3)
// protocol): one datagram of newline-separated VAR=VALUE assignments to
// the unix datagram socket named by $NOTIFY_SOCKET, a path or, with a
// leading '@', a name in the abstract namespace. "READY=1" tells a
// Type=notify unit that the service is up, "STOPPING=1" that it is going
// down, "RELOADING=1" that it is re-reading its configuration.
//
// Without NOTIFY_SOCKET (not started by a service manager that asks for
// it) Notify does nothing and returns nil. Unlike the listening sockets,
// the variable is kept: a process notifies more than once in its life.
// Safe for concurrent use.
func Notify(state string) error {
	name := os.Getenv("NOTIFY_SOCKET")
	if name == "" {
		return nil
	}
	if name[0] != '/' && name[0] != '@' {
		return fmt.Errorf("sd_notify: NOTIFY_SOCKET=%q is neither a path nor an abstract name", name)
	}
	if name[0] == '@' {
		name = "\x00" + name[1:] // Go's spelling of the abstract namespace
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	defer c.Close()
	// The manager reads its socket at once; a full queue means it is
	// stuck, and the service must not hang with it.
	c.SetWriteDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte(state)); err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	return nil
}
