package pdu

// Text format of Login and Text data segments (RFC 7143 section 6.1):
//
//	key=value\0key=value\0...\0[\0...]
//
// Every pair, the last one included, is terminated by one NUL; the data
// segment may end in padding NULs. A key is at most 63 bytes; a value is at
// most 255 bytes, except the large binary values of CHAP (CHAP_C, CHAP_R),
// which RFC 7143 section 12.1.3 allows up to 1024 decoded bytes.

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
)

// KV is one key=value pair of a text data segment.
type KV struct{ Key, Value string }

// Limits of the text format.
const (
	// TextMaxKeyLen is the longest key (RFC 7143 6.1: "MUST NOT exceed 63").
	TextMaxKeyLen = 63
	// TextMaxValueLen is the longest value (RFC 7143 6.1: 255 bytes).
	TextMaxValueLen = 255
	// TextMaxLargeValueLen is the longest encoded CHAP_C or CHAP_R: 1024
	// binary bytes (RFC 7143 12.1.3) are 2+2048 hex digits; leave room for
	// a base64 or leading-zero encoding.
	TextMaxLargeValueLen = 8192
	// TextMaxLen caps the text data of one negotiation sequence (all the
	// PDUs of a C-bit continued request together). RFC 7143 6.1 requires
	// at least 8192 bytes; nothing legitimate comes near 64 KiB.
	TextMaxLen = 64 << 10
	// TextMaxPairs caps the number of pairs in one sequence.
	TextMaxPairs = 1024
)

// Reserved values (RFC 7143 6.2) and common literals.
const (
	ValueYes           = "Yes"
	ValueNo            = "No"
	ValueNone          = "None"
	ValueReject        = "Reject"
	ValueIrrelevant    = "Irrelevant"
	ValueNotUnderstood = "NotUnderstood"
)

// Errors of the text codec; TextError wraps one of them, and each wraps
// ErrMalformed or ErrTooLong.
var (
	ErrTextTooLong       = fmt.Errorf("%w: text data", ErrTooLong)
	ErrTextTooManyPairs  = fmt.Errorf("%w: too many key=value pairs", ErrMalformed)
	ErrTextUnterminated  = fmt.Errorf("%w: key=value pair not NUL-terminated", ErrMalformed)
	ErrTextNoSeparator   = fmt.Errorf("%w: text pair without '='", ErrMalformed)
	ErrTextKey           = fmt.Errorf("%w: invalid text key", ErrMalformed)
	ErrTextValueTooLong  = fmt.Errorf("%w: text value too long", ErrMalformed)
	ErrTextValue         = fmt.Errorf("%w: invalid text value", ErrMalformed)
	ErrTextValueTooLarge = fmt.Errorf("%w: binary value too large", ErrMalformed)
)

// TextError reports where a text data segment is malformed.
type TextError struct {
	Offset int    // byte offset of the offending pair
	Key    string // its key when one was found (at most TextMaxKeyLen bytes)
	Err    error  // one of the ErrText* errors
}

func (e *TextError) Error() string {
	if e.Key != "" {
		return fmt.Sprintf("pdu: text at offset %d, key %q: %v", e.Offset, e.Key, e.Err)
	}
	return fmt.Sprintf("pdu: text at offset %d: %v", e.Offset, e.Err)
}

func (e *TextError) Unwrap() error { return e.Err }

// ParseText decodes a Login or Text data segment into its key=value pairs,
// in order (RFC 7143 6.1). Empty strings between pairs and trailing padding
// NULs are skipped. Values are not interpreted: the negotiation and login
// code decide what a value means. Keys may repeat; detecting that is the
// negotiation's business (RFC 7143 6.3).
func ParseText(data []byte) ([]KV, error) {
	if len(data) > TextMaxLen {
		return nil, &TextError{Err: ErrTextTooLong}
	}
	n := min(bytes.Count(data, []byte{0}), TextMaxPairs)
	kvs := make([]KV, 0, n)
	for off := 0; off < len(data); {
		if data[off] == 0 {
			off++
			continue
		}
		end := bytes.IndexByte(data[off:], 0)
		if end < 0 {
			// RFC 7143 6.1: every pair, the last one included, is
			// followed by a NUL. A split pair is the caller's job to
			// reassemble from C-bit continued PDUs first.
			return nil, &TextError{Offset: off, Err: ErrTextUnterminated}
		}
		pair := data[off : off+end]
		eq := bytes.IndexByte(pair, '=')
		if eq < 0 {
			return nil, &TextError{Offset: off, Key: clip(pair), Err: ErrTextNoSeparator}
		}
		key, val := pair[:eq], pair[eq+1:]
		if !validKey(key) {
			return nil, &TextError{Offset: off, Key: clip(key), Err: ErrTextKey}
		}
		if len(val) > maxValueLen(key) {
			return nil, &TextError{Offset: off, Key: string(key), Err: ErrTextValueTooLong}
		}
		if len(kvs) == TextMaxPairs {
			return nil, &TextError{Offset: off, Err: ErrTextTooManyPairs}
		}
		kvs = append(kvs, KV{Key: string(key), Value: string(val)})
		off += end + 1
	}
	return kvs, nil
}

// AppendText appends kvs in text format to b, each pair NUL-terminated, and
// returns the extended slice. It adds no padding: that belongs to the PDU.
func AppendText(b []byte, kvs ...KV) []byte {
	for _, kv := range kvs {
		b = append(b, kv.Key...)
		b = append(b, '=')
		b = append(b, kv.Value...)
		b = append(b, 0)
	}
	return b
}

// validKey reports whether k is a key-name of RFC 7143 6.1: 1 to 63 of
// letters, digits, '.', '-', '+', '@', '_'. The RFC also asks for an
// initial capital, which its own iSCSIProtocolLevel (13.24) breaks, so it is
// not enforced; '#' is allowed for public extension keys ("X#...", 13.22).
func validKey(k []byte) bool {
	if len(k) == 0 || len(k) > TextMaxKeyLen {
		return false
	}
	for _, c := range k {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '.', c == '-', c == '+', c == '@', c == '_', c == '#':
		default:
			return false
		}
	}
	return true
}

// maxValueLen is 255 (RFC 7143 6.1) except for the large binary values of
// CHAP (12.1.3).
func maxValueLen(key []byte) int {
	switch string(key) {
	case "CHAP_C", "CHAP_R":
		return TextMaxLargeValueLen
	}
	return TextMaxValueLen
}

// clip returns at most TextMaxKeyLen bytes of b for error messages.
func clip(b []byte) string {
	if len(b) > TextMaxKeyLen {
		b = b[:TextMaxKeyLen]
	}
	return string(b)
}

// ParseNumericalValue decodes a numerical-value (RFC 7143 6.1): a
// decimal-constant or a hex-constant ("0x" or "0X" prefix), below 2^64.
// Signs, spaces and base64-constants are not numerical values.
func ParseNumericalValue(s string) (uint64, error) {
	if len(s) > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X') {
		v, err := strconv.ParseUint(s[2:], 16, 64)
		if err != nil {
			return 0, ErrTextValue
		}
		return v, nil
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, ErrTextValue
	}
	return v, nil
}

// DecodeBinaryValue decodes a binary value encoded as a hex-constant
// ("0x..." or "0X...", an odd digit count meaning a leading zero nibble) or
// a base64-constant ("0b..." or "0B...", RFC 4648 alphabet, padding
// optional), RFC 7143 6.1. A value that would decode to more than maxLen
// bytes is refused before anything is allocated.
func DecodeBinaryValue(s string, maxLen int) ([]byte, error) {
	if len(s) < 3 || s[0] != '0' {
		return nil, ErrTextValue
	}
	body := s[2:]
	switch s[1] {
	case 'x', 'X':
		if (len(body)+1)/2 > maxLen {
			return nil, ErrTextValueTooLarge
		}
		if len(body)%2 == 1 {
			body = "0" + body
		}
		b, err := hex.DecodeString(body)
		if err != nil {
			return nil, ErrTextValue
		}
		return b, nil
	case 'b', 'B':
		body = strings.TrimSuffix(body, "=")
		body = strings.TrimSuffix(body, "=")
		if body == "" {
			return nil, ErrTextValue
		}
		if base64.RawStdEncoding.DecodedLen(len(body)) > maxLen {
			return nil, ErrTextValueTooLarge
		}
		b, err := base64.RawStdEncoding.DecodeString(body)
		if err != nil {
			return nil, ErrTextValue
		}
		return b, nil
	}
	return nil, ErrTextValue
}

// EncodeHexValue encodes b as a hex-constant, "0x" and lower-case digits
// (RFC 7143 6.1), the form every initiator decodes.
func EncodeHexValue(b []byte) string {
	return "0x" + hex.EncodeToString(b)
}
