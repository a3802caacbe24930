package storage

import (
	"log/slog"
	"time"
)

// RBDOptions configures OpenRBD (storage.backend rbd).
type RBDOptions struct {
	// Pool holds the versions and host disks (required).
	Pool string
	// Namespace is the RBD namespace in Pool (default none: the pool's
	// default namespace); sites or tests sharing a pool use different
	// ones.
	Namespace string
	// CephConf is the Ceph configuration file (default
	// /etc/ceph/ceph.conf).
	CephConf string
	// User is the cephx user without "client." (default "diskless").
	User string
	// Keyring is the file with its key (default: what CephConf says).
	Keyring string
	// OpTimeout bounds every call into the cluster (default 30s): it is
	// set as rados_osd_op_timeout, rados_mon_op_timeout and
	// client_mount_timeout, which make librados fail a call with
	// ETIMEDOUT instead of waiting for a full or degraded cluster.
	OpTimeout time.Duration
	// DataDir keeps each server's copies of the versions' boot files
	// (kernel, initrd), fetched from the pool when first served.
	DataDir string
	// MayBreakLock is asked when another client holds the exclusive lock
	// of host's disk that OpenDisk needs: owner is its lock-owner
	// identity (what ClientID returns on that server). It says whether
	// that owner is dead and why; only then is its lock broken (and the
	// owner blocklisted by Ceph). Nil: never break, OpenDisk fails with
	// ErrDiskLocked.
	MayBreakLock func(host, owner string) (bool, string)
	// OnFenced is called once, from its own goroutine, when an open host
	// disk lost its lock (another server broke it): the disk refuses
	// every I/O from then on (disk.ErrFenced) and the caller should drop
	// the host's sessions. Nil: only logged.
	OnFenced func(host string, err error)
	// Logger receives what happens (default: discarded).
	Logger *slog.Logger
}
