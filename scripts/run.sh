#!/usr/bin/env bash
# Set up and run diskless on a fresh Debian 12 machine: build the binary,
# create a sparse 1 GiB image if there is none, and serve it as LUN 0 of an
# iSCSI target until Ctrl-C.
#
# Environment: LISTEN (127.0.0.1:3260), IQN, IMAGE (./var/disk0.img),
# SIZE (1G), and any extra flags as arguments (e.g. --chap user:secret).
set -euo pipefail
cd "$(dirname "$0")/.."
listen=${LISTEN:-127.0.0.1:3260}
iqn=${IQN:-iqn.2026-11.org.example:disk0}
image=${IMAGE:-var/disk0.img}
command -v go >/dev/null || { echo "run.sh: Go 1.26 is needed (https://go.dev/dl)" >&2; exit 1; }
go build -o diskless ./cmd/diskless
mkdir -p "$(dirname "$image")"
[ -e "$image" ] || truncate -s "${SIZE:-1G}" "$image"
echo "serving $image as iscsi://$listen/$iqn/0 (Ctrl-C stops)" >&2
exec ./diskless target --listen "$listen" --iqn "$iqn" --lun "0=$image" "$@"
