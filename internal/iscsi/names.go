package iscsi

import (
	"errors"
	"fmt"
	"strings"
)

// MaxNameLen is the longest iSCSI name (RFC 7143 4.2.7.1).
const MaxNameLen = 223

// CheckName checks an iSCSI name in its normalized form (RFC 7143 4.2.7,
// RFC 3722 maps names to lowercase): iqn.YYYY-MM.reverse.domain[:unique],
// eui. and 16 hex digits, or naa. and 16 or 32 hex digits. The error says
// what is wrong in words a user can act on.
func CheckName(s string) error {
	if len(s) > MaxNameLen {
		return fmt.Errorf("longer than %d bytes", MaxNameLen)
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == ':') {
			return errors.New("use lowercase letters, digits, '.', '-' and ':' only")
		}
	}
	switch {
	case strings.HasPrefix(s, "iqn."):
		if len(s) > 12 && s[8] == '-' && s[11] == '.' && allIn(s[4:8], "0123456789") && allIn(s[9:11], "0123456789") {
			return nil
		}
		return errors.New("want iqn.YYYY-MM.reverse.domain[:unique]")
	case strings.HasPrefix(s, "eui."):
		if len(s) == 20 && allIn(s[4:], "0123456789abcdef") {
			return nil
		}
		return errors.New("want eui. and 16 hex digits")
	case strings.HasPrefix(s, "naa."):
		if (len(s) == 20 || len(s) == 36) && allIn(s[4:], "0123456789abcdef") {
			return nil
		}
		return errors.New("want naa. and 16 or 32 hex digits")
	}
	return errors.New("want an iqn., eui. or naa. name")
}

func allIn(s, set string) bool {
	for _, r := range s {
		if !strings.ContainsRune(set, r) {
			return false
		}
	}
	return s != ""
}
