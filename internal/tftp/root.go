package tftp

import (
	"errors"
	"io/fs"
	"path"
	"strings"
)

// Refusals sent for requests that cannot be served. Messages are fixed
// strings: they never echo what the client sent nor reveal server paths.
var (
	errNotFound    = &Error{ErrCodeFileNotFound, "file not found"}
	errAccess      = &Error{ErrCodeAccessViolation, "access violation"}
	errNotRegular  = &Error{ErrCodeAccessViolation, "not a regular file"}
	errReadOnly    = &Error{ErrCodeAccessViolation, "read-only server"}
	errBadMode     = &Error{ErrCodeIllegalOperation, "unsupported transfer mode"}
	errBusy        = &Error{ErrCodeNotDefined, "server busy, try again later"}
	errSourceBusy  = &Error{ErrCodeNotDefined, "too many transfers from your address, try again later"}
	errPreempted   = &Error{ErrCodeNotDefined, "no ACK received, transfer slot given to another client"}
	errExpired     = &Error{ErrCodeNotDefined, "transfer time limit reached"}
	errInternal    = &Error{ErrCodeNotDefined, "server error"}
	errTimedOut    = &Error{ErrCodeNotDefined, "timed out"}
	errShutdown    = &Error{ErrCodeNotDefined, "server shutting down"}
	errUnknownTID  = &Error{ErrCodeUnknownTID, "unknown transfer ID"}
	errFileChanged = &Error{ErrCodeNotDefined, "file changed during transfer"}
)

// cleanName turns a requested filename into a path for fs.FS, or reports
// that the name tries to leave the root.
//
// Refused: absolute names ("/etc/passwd") and any ".." element. "./a" and
// "a//b" are cleaned to "a" and "a/b". A backslash is an ordinary character
// (fs.FS never treats it as a separator). Symlinks are the FS's business:
// os.Root refuses those that point outside it.
func cleanName(name string) (string, bool) {
	if name == "" || strings.HasPrefix(name, "/") || strings.Contains(name, "\x00") {
		return "", false
	}
	for elem := range strings.SplitSeq(name, "/") {
		if elem == ".." {
			return "", false
		}
	}
	clean := path.Clean(name)
	if !fs.ValidPath(clean) || clean == "." {
		return "", false
	}
	return clean, true
}

// openFile opens a regular file for a request and returns it with its
// size, or the ERROR to send.
func openFile(fsys fs.FS, name string) (fs.File, int64, *Error) {
	clean, ok := cleanName(name)
	if !ok {
		return nil, 0, errAccess
	}
	// Stat before Open: opening a FIFO or a device could block or have
	// side effects, so only regular files are opened.
	fi, err := fs.Stat(fsys, clean)
	if err != nil {
		return nil, 0, openError(err)
	}
	if !fi.Mode().IsRegular() {
		return nil, 0, errNotRegular
	}
	f, err := fsys.Open(clean)
	if err != nil {
		return nil, 0, openError(err)
	}
	fi, err = f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, 0, errNotRegular
	}
	return f, fi.Size(), nil
}

// openError maps an open error to the ERROR sent. Anything but "does not
// exist" is an access violation, including os.Root's "path escapes from
// parent" for a symlink that leads out of the root.
func openError(err error) *Error {
	if errors.Is(err, fs.ErrNotExist) {
		return errNotFound
	}
	return errAccess
}
