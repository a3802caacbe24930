package imagefmt

import (
	"errors"
	"fmt"
)

// ErrNotInstalled is wrapped by the errors of every operation that needs
// qemu-img when it is not on PATH.
var ErrNotInstalled = errors.New("qemu-img is not installed (apt-get install qemu-utils)")

// ErrMalformed is wrapped by the errors for images whose metadata
// contradicts itself or the file (offsets outside the file, unaligned
// tables, impossible sizes).
var ErrMalformed = errors.New("malformed image")

// UnsupportedError reports a well-formed image that uses a feature diskless
// refuses to read, such as a backing file or encryption.
type UnsupportedError struct {
	Format  Format
	Feature string // what the image uses, e.g. "a backing file"
	Hint    string // what the admin can do about it; may be empty
}

func (e *UnsupportedError) Error() string {
	s := fmt.Sprintf("%s image uses %s, which diskless does not read", e.Format, e.Feature)
	if e.Hint != "" {
		s += ": " + e.Hint
	}
	return s
}
