//go:build !ceph

package storage

import (
	"strings"
	"testing"
)

// The plain build says why rbd is refused and which binary has it.
func TestOpenRBDWithoutCeph(t *testing.T) {
	_, err := OpenRBD(RBDOptions{Pool: "p"})
	if err == nil || !strings.Contains(err.Error(), "built without Ceph support") {
		t.Fatalf("OpenRBD in the plain build: %v", err)
	}
}
