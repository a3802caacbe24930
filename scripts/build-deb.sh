#!/usr/bin/env bash
# Build diskless_<version>_amd64.deb: the static binary (CGO_ENABLED=0,
# its version from git describe), packed with the systemd units, the
# default configuration and the docs by scripts/mkdeb (nfpm as a library).
# Beside it, OUTDIR/diskless-ceph: the same server with the Ceph RBD storage
# backend (cgo, -tags ceph,pacific; needs librbd1 and librados2 at run time,
# librbd-dev, librados-dev, libradospp-dev and g++ to build). The package
# ships the static one.
#   scripts/build-deb.sh [OUTDIR]     (default: dist/)
# Prints the path of the package.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/local/go/bin
out=${1:-dist}
mkdir -p "$out"

# git describe: v1.2.3 -> 1.2.3, v1.2.3-4-gabc1234 -> 1.2.3+git4.abc1234;
# with no release tag yet 0.0.0~git<commit date>.<hash>. A dirty tree says
# so. The binary's `diskless --version` is git describe itself.
describe=$(git describe --tags --always --dirty 2>/dev/null || echo unknown)
commit_time=$(git log -1 --format=%ct 2>/dev/null || date +%s)
if tag=$(git describe --tags --match 'v[0-9]*' 2>/dev/null) &&
	[[ $tag =~ ^v([0-9]+(\.[0-9]+)*([~+][0-9A-Za-z.]+)?)(-([0-9]+)-g([0-9a-f]+))?$ ]]; then
	version=${BASH_REMATCH[1]}
	[ -n "${BASH_REMATCH[5]}" ] && version+="+git${BASH_REMATCH[5]}.${BASH_REMATCH[6]}"
else
	version="0.0.0~git$(date -u -d "@$commit_time" +%Y%m%d).$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
fi
[[ $describe == *-dirty ]] && version+=".dirty"

bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
# Both builds at once: on a cold cache most of the time is compiling, and
# the two share little (nfpm's modules, the server's).
(cd scripts/mkdeb && go build -o "$bin/mkdeb" .) &
mkdeb=$!
CGO_ENABLED=0 GOOS=linux GOARCH=amd64 go build -trimpath \
	-ldflags "-s -w -X main.version=$describe" -o "$bin/diskless" ./cmd/diskless
wait "$mkdeb"
CGO_ENABLED=1 GOOS=linux GOARCH=amd64 go build -trimpath -tags ceph,pacific \
	-ldflags "-s -w -X main.version=$describe" -o "$out/diskless-ceph" ./cmd/diskless
"$bin/mkdeb" --repo . --binary "$bin/diskless" --version "$version" --arch amd64 \
	--mtime "$commit_time" --out "$out"
