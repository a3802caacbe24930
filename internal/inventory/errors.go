package inventory

import (
	"errors"
	"fmt"
)

// Kind classifies an Error the way an API client must react to it.
type Kind int

const (
	// Invalid: the request is wrong (a bad name, size, mode); Field names
	// what to fix.
	Invalid Kind = iota + 1
	// NotFound: the image, version, host or snapshot does not exist.
	NotFound
	// Conflict: the request is fine but the state forbids it now (the
	// host is online, the version is in use, the name is taken, the
	// host is declared in the YAML file).
	Conflict
)

// Error is a refusal by the model's rules. Its message says what to do and
// never holds a secret.
type Error struct {
	Kind  Kind
	Field string // the request field at fault (Invalid), or ""
	Msg   string
}

func (e *Error) Error() string {
	if e.Field != "" {
		return e.Field + ": " + e.Msg
	}
	return e.Msg
}

func invalid(field, format string, args ...any) error {
	return &Error{Kind: Invalid, Field: field, Msg: fmt.Sprintf(format, args...)}
}

func notFound(format string, args ...any) error {
	return &Error{Kind: NotFound, Msg: fmt.Sprintf(format, args...)}
}

func conflict(format string, args ...any) error {
	return &Error{Kind: Conflict, Msg: fmt.Sprintf(format, args...)}
}

// KindOf returns the Kind of err, 0 for errors that are not refusals
// (I/O failures and the like).
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return 0
}
