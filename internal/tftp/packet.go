package tftp

// Packet codec (RFC 1350 section 5, RFC 2347 section 2). All fields are
// big-endian; strings are netascii terminated by a zero byte.
//
//	RRQ/WRQ  | 01/02 | filename | 0 | mode | 0 | opt1 | 0 | value1 | 0 | ... |
//	DATA     | 03    | block#  (2) | data (0..blksize bytes)                  |
//	ACK      | 04    | block#  (2) |
//	ERROR    | 05    | code    (2) | message | 0 |
//	OACK     | 06    | opt1 | 0 | value1 | 0 | ... |
//
// The parsers only read: they never log, never allocate more than the
// packet they are given allows (and at most MaxOptions options), and
// never panic.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// Opcode is the first field of every packet (RFC 1350 section 5, RFC 2347).
type Opcode uint16

const (
	OpRRQ   Opcode = 1 // read request
	OpWRQ   Opcode = 2 // write request
	OpDATA  Opcode = 3
	OpACK   Opcode = 4
	OpERROR Opcode = 5
	OpOACK  Opcode = 6 // option acknowledgement (RFC 2347)
)

func (o Opcode) String() string {
	switch o {
	case OpRRQ:
		return "RRQ"
	case OpWRQ:
		return "WRQ"
	case OpDATA:
		return "DATA"
	case OpACK:
		return "ACK"
	case OpERROR:
		return "ERROR"
	case OpOACK:
		return "OACK"
	}
	return fmt.Sprintf("opcode(%d)", uint16(o))
}

// ErrorCode is the code of an ERROR packet (RFC 1350 appendix, RFC 2347).
type ErrorCode uint16

const (
	ErrCodeNotDefined       ErrorCode = 0 // see the message
	ErrCodeFileNotFound     ErrorCode = 1
	ErrCodeAccessViolation  ErrorCode = 2
	ErrCodeDiskFull         ErrorCode = 3
	ErrCodeIllegalOperation ErrorCode = 4
	ErrCodeUnknownTID       ErrorCode = 5
	ErrCodeFileExists       ErrorCode = 6
	ErrCodeNoSuchUser       ErrorCode = 7
	ErrCodeOptionRefused    ErrorCode = 8 // RFC 2347: client refuses the OACK
)

// Limits of the wire format.
const (
	// MaxRequestLen bounds a request packet. RFC 2347 keeps requests within
	// 512 bytes; a few clients exceed that with long paths, none by this much.
	MaxRequestLen = 2048
	// MaxOptions is how many options a request or OACK may carry; further
	// options are ignored (RFC 2347 defines five, real clients send <= 5).
	MaxOptions = 16
	// MinBlockSize and MaxBlockSize are the blksize bounds of RFC 2348.
	MinBlockSize = 8
	MaxBlockSize = 65464
	// DefaultBlockSize is the block size without a blksize option (RFC 1350).
	DefaultBlockSize = 512
)

// Parse errors. They say why a packet was dropped; the server counts them.
var (
	ErrShort       = errors.New("tftp: short packet")
	ErrTooLong     = errors.New("tftp: packet too long")
	ErrWrongOpcode = errors.New("tftp: unexpected opcode")
	ErrMalformed   = errors.New("tftp: malformed packet")
)

// PeekOpcode returns the opcode of packet b without parsing the rest.
func PeekOpcode(b []byte) (Opcode, error) {
	if len(b) < 2 {
		return 0, ErrShort
	}
	return Opcode(binary.BigEndian.Uint16(b)), nil
}

// Option is one RFC 2347 option: a name (case-insensitive on the wire) and
// its value, both as sent.
type Option struct {
	Name, Value string
}

// Request is a read or write request (RFC 1350 section 5, with the RFC 2347
// option extension).
type Request struct {
	Op       Opcode // OpRRQ or OpWRQ
	Filename string
	Mode     string   // as sent; compare case-insensitively
	Options  []Option // in the order sent, at most MaxOptions
}

// ParseRequest decodes an RRQ or WRQ.
//
// Filename and mode must be present and zero-terminated (RFC 1350). The
// options area is read leniently, as deployed servers do: an option whose
// name or value is cut off by the end of the packet is ignored, and so is
// zero padding after the last option (some PXE ROMs pad requests).
func ParseRequest(b []byte) (Request, error) {
	op, err := PeekOpcode(b)
	if err != nil {
		return Request{}, err
	}
	if op != OpRRQ && op != OpWRQ {
		return Request{}, ErrWrongOpcode
	}
	if len(b) > MaxRequestLen {
		return Request{}, ErrTooLong
	}
	rest := b[2:]
	filename, rest, ok := cutString(rest)
	if !ok {
		return Request{}, fmt.Errorf("%w: filename not terminated", ErrMalformed)
	}
	if filename == "" {
		return Request{}, fmt.Errorf("%w: empty filename", ErrMalformed)
	}
	mode, rest, ok := cutString(rest)
	if !ok {
		return Request{}, fmt.Errorf("%w: mode not terminated", ErrMalformed)
	}
	if mode == "" {
		return Request{}, fmt.Errorf("%w: empty mode", ErrMalformed)
	}
	return Request{Op: op, Filename: filename, Mode: mode, Options: parseOptions(rest)}, nil
}

// AppendBinary appends the encoded request to b.
func (r *Request) AppendBinary(b []byte) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(r.Op))
	b = appendString(b, r.Filename)
	b = appendString(b, r.Mode)
	return appendOptions(b, r.Options)
}

// Option returns the value of the first option named name (compared
// case-insensitively, RFC 2347) and whether it is present.
func (r *Request) Option(name string) (string, bool) {
	return findOption(r.Options, name)
}

// Data is a DATA packet (RFC 1350 section 5). Payload aliases the parsed
// buffer.
type Data struct {
	Block   uint16
	Payload []byte
}

// ParseData decodes a DATA packet.
func ParseData(b []byte) (Data, error) {
	op, err := PeekOpcode(b)
	if err != nil {
		return Data{}, err
	}
	if op != OpDATA {
		return Data{}, ErrWrongOpcode
	}
	if len(b) < 4 {
		return Data{}, ErrShort
	}
	if len(b)-4 > MaxBlockSize {
		return Data{}, ErrTooLong
	}
	return Data{Block: binary.BigEndian.Uint16(b[2:]), Payload: b[4:]}, nil
}

// AppendBinary appends the encoded packet to b.
func (d *Data) AppendBinary(b []byte) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(OpDATA))
	b = binary.BigEndian.AppendUint16(b, d.Block)
	return append(b, d.Payload...)
}

// Ack is an ACK packet (RFC 1350 section 5). Block 0 acknowledges an OACK
// (RFC 2347).
type Ack struct {
	Block uint16
}

// ParseAck decodes an ACK. Bytes after the block number are ignored: some
// PXE stacks pad short frames and the padding reaches the UDP payload.
func ParseAck(b []byte) (Ack, error) {
	op, err := PeekOpcode(b)
	if err != nil {
		return Ack{}, err
	}
	if op != OpACK {
		return Ack{}, ErrWrongOpcode
	}
	if len(b) < 4 {
		return Ack{}, ErrShort
	}
	return Ack{Block: binary.BigEndian.Uint16(b[2:])}, nil
}

// AppendBinary appends the encoded packet to b.
func (a *Ack) AppendBinary(b []byte) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(OpACK))
	return binary.BigEndian.AppendUint16(b, a.Block)
}

// Error is an ERROR packet (RFC 1350 section 5). It is also a Go error, so
// that a refusal or a client's abort can be returned as one.
type Error struct {
	Code    ErrorCode
	Message string
}

func (e *Error) Error() string {
	return fmt.Sprintf("tftp error %d: %s", e.Code, e.Message)
}

// maxErrorMessage bounds the message kept from a peer's ERROR packet.
const maxErrorMessage = 256

// ParseError decodes an ERROR packet. A missing terminator is tolerated
// (the message then runs to the end of the packet); messages are cut to
// 256 bytes.
func ParseError(b []byte) (Error, error) {
	op, err := PeekOpcode(b)
	if err != nil {
		return Error{}, err
	}
	if op != OpERROR {
		return Error{}, ErrWrongOpcode
	}
	if len(b) < 4 {
		return Error{}, ErrShort
	}
	msg := b[4:]
	if i := bytes.IndexByte(msg, 0); i >= 0 {
		msg = msg[:i]
	}
	if len(msg) > maxErrorMessage {
		msg = msg[:maxErrorMessage]
	}
	return Error{Code: ErrorCode(binary.BigEndian.Uint16(b[2:])), Message: string(msg)}, nil
}

// AppendBinary appends the encoded packet to b.
func (e *Error) AppendBinary(b []byte) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(OpERROR))
	b = binary.BigEndian.AppendUint16(b, uint16(e.Code))
	return appendString(b, e.Message)
}

// OAck is an option acknowledgement (RFC 2347): the options the server
// accepted, with the values it will use.
type OAck struct {
	Options []Option
}

// ParseOAck decodes an OACK, as leniently as ParseRequest reads options.
func ParseOAck(b []byte) (OAck, error) {
	op, err := PeekOpcode(b)
	if err != nil {
		return OAck{}, err
	}
	if op != OpOACK {
		return OAck{}, ErrWrongOpcode
	}
	if len(b) > MaxRequestLen {
		return OAck{}, ErrTooLong
	}
	return OAck{Options: parseOptions(b[2:])}, nil
}

// AppendBinary appends the encoded packet to b.
func (o *OAck) AppendBinary(b []byte) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(OpOACK))
	return appendOptions(b, o.Options)
}

// Option returns the value of the option named name and whether it is present.
func (o *OAck) Option(name string) (string, bool) {
	return findOption(o.Options, name)
}

// cutString splits b at the first zero byte. ok is false when there is none.
func cutString(b []byte) (s string, rest []byte, ok bool) {
	i := bytes.IndexByte(b, 0)
	if i < 0 {
		return "", nil, false
	}
	return string(b[:i]), b[i+1:], true
}

// parseOptions reads name/value pairs. An empty name ends the list: it is
// either zero padding or garbage, and RFC 2347 has no empty option names.
func parseOptions(b []byte) []Option {
	var opts []Option
	for len(b) > 0 && len(opts) < MaxOptions {
		name, rest, ok := cutString(b)
		if !ok || name == "" {
			break
		}
		value, rest, ok := cutString(rest)
		if !ok {
			break
		}
		opts = append(opts, Option{Name: name, Value: value})
		b = rest
	}
	return opts
}

func appendString(b []byte, s string) []byte {
	b = append(b, s...)
	return append(b, 0)
}

func appendOptions(b []byte, opts []Option) []byte {
	for _, o := range opts {
		b = appendString(b, o.Name)
		b = appendString(b, o.Value)
	}
	return b
}

func findOption(opts []Option, name string) (string, bool) {
	for _, o := range opts {
		if strings.EqualFold(o.Name, name) {
			return o.Value, true
		}
	}
	return "", false
}
