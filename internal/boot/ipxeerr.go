package boot

import (
	"fmt"
	"strconv"
	"strings"
)

// ipxePOSIX names iPXE's POSIX error codes, bits 30-24 of its error
// numbers (iPXE's include/errno.h, "Bits 30-24 : POSIX error code"):
// its own numbering, not Linux's. The messages are the ones iPXE prints.
var ipxePOSIX = map[uint32]string{
	0x01: "Argument list too long", 0x02: "Permission denied", 0x03: "Address already in use",
	0x04: "Address not available", 0x05: "Address family not supported", 0x06: "Resource temporarily unavailable",
	0x07: "Connection already in progress", 0x08: "Bad file descriptor", 0x09: "Bad message",
	0x0a: "Device or resource busy", 0x0b: "Operation canceled", 0x0d: "Connection aborted",
	0x0e: "Connection refused", 0x0f: "Connection reset", 0x14: "File exists", 0x16: "File too large",
	0x17: "Host is unreachable", 0x1a: "Operation in progress", 0x1b: "Interrupted function call",
	0x1c: "Invalid argument", 0x1d: "Input/output error", 0x1f: "Is a directory",
	0x23: "Message too long", 0x25: "Filename too long", 0x26: "Network is down",
	0x27: "Connection aborted by network", 0x28: "Network unreachable", 0x2a: "No buffer space available",
	0x2c: "No such device", 0x2d: "No such file or directory", 0x2e: "Exec format error",
	0x31: "Not enough space", 0x33: "Protocol not available", 0x34: "No space left on device",
	0x37: "Function not implemented", 0x38: "The socket is not connected", 0x3c: "Operation not supported",
	0x3e: "No such device or address", 0x3f: "Operation not supported on socket",
	0x40: "Value too large to be stored in data type", 0x41: "Operation not permitted", 0x43: "Protocol error",
	0x44: "Protocol not supported", 0x46: "Result too large", 0x47: "Read-only file system",
	0x4b: "Timer expired", 0x4c: "Connection timed out", 0x7f: "Platform-generated error",
}

// IPXEError describes one of iPXE's error numbers (the ${errno} setting,
// "0x0216eb3c" or "0216eb3c") the way iPXE prints it: "Permission denied
// (https://ipxe.org/0216eb3c)". ok is false when code is not a number.
func IPXEError(code string) (string, bool) {
	code = strings.TrimPrefix(strings.ToLower(strings.TrimSpace(code)), "0x")
	n, err := strconv.ParseUint(code, 16, 32)
	if err != nil || code == "" {
		return "", false
	}
	v := uint32(n)
	if v == 0 {
		return "no error number (iPXE recorded none)", true
	}
	msg, known := ipxePOSIX[(v>>24)&0x7f]
	if !known {
		msg = "Error"
	}
	return fmt.Sprintf("%s (https://ipxe.org/%08x)", msg, v), true
}
