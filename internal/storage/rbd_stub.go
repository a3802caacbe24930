//go:build !ceph

package storage

import "errors"

// RBD is the Ceph RBD backend; this binary was built without it.
type RBD struct{ Backend }

// OpenRBD fails: the Ceph backend needs cgo and librbd, and is only in
// binaries built with -tags ceph,pacific (diskless-ceph).
func OpenRBD(opts RBDOptions) (*RBD, error) {
	return nil, errors.New("storage.backend rbd: this diskless was built without Ceph support; use the diskless-ceph binary (go build -tags ceph,pacific)")
}

// ClientID is this server's identity as an RBD lock owner.
func (*RBD) ClientID() string { return "" }

// Close releases the cluster connection.
func (*RBD) Close() error { return nil }
