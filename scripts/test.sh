#!/usr/bin/env bash
# The test command (README): install what the tests need, then check
# formatting and vet (with and without -tags ceph), and run every test with
# the race detector (the Ceph RBD backend's in a second run), including
# the interop tests against real initiators (test/interop), and the .deb
# (scripts/test-deb.sh: built, installed, run, purged); then fuzz the
# stateful servers for a short while each (FUZZTIME, default 10s; 0 skips).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/local/go/bin
./scripts/ci-deps.sh
unformatted=$(gofmt -l $(git ls-files '*.go'))
if [ -n "$unformatted" ]; then
	echo "gofmt would change: $unformatted" >&2
	exit 1
fi
go vet ./...
go vet -tags ceph,pacific ./...
(cd scripts/mkdeb && go vet ./...)
./scripts/test-deb.sh
go test -race -count=1 -timeout 28m ./...
# The Ceph RBD backend (cgo, -tags ceph) against a real one-node Ceph that
# its tests start (internal/testutil/ceph); here a missing Ceph is a failure:
# the backend itself, serve against a degraded cluster, and the failover of
# two servers under a QEMU Debian guest (issue 14's proof).
export DISKLESS_REQUIRE_CEPH=1
go test -race -count=1 -timeout 10m -tags ceph,pacific ./internal/storage/
go test -race -count=1 -p 1 -timeout 20m -tags ceph,pacific -run '^(TestDegradedCluster|TestFailoverRBD)$' ./internal/app/ ./test/pxe/
if [ "${FUZZTIME:-10s}" != 0 ]; then
	./scripts/fuzz.sh -t "${FUZZTIME:-10s}" '^(FuzzSession|FuzzTransfers|FuzzHandler|FuzzAPI)$'
fi
