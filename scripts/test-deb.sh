#!/usr/bin/env bash
# The package's test (CI: scripts/test.sh; needs root, ~40 s): build the
# .deb, install it with dpkg, check its units with systemd-analyze, run the
# installed binary - once refusing the default configuration (no interface
# set), once for real in a network namespace of its own, with only the
# capabilities the unit keeps, telling a fake service manager READY=1,
# reloading on SIGHUP and stopping on SIGTERM - then remove and purge it
# and check that nothing is left running or installed. Nothing is served
# outside the namespace.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/local/go/bin

if [ "$(id -u)" != 0 ]; then
	echo "test-deb: skipped: needs root (dpkg -i, a network namespace)" >&2
	exit 0
fi
if dpkg-query -W -f='${Status}' diskless 2>/dev/null | grep -q 'install ok'; then
	echo "test-deb: diskless is installed on this machine already; not replacing it" >&2
	exit 1
fi
start=$(date +%s)
tmp=$(mktemp -d)
ns=diskless-deb-$$
pid=
fail() {
	echo "test-deb: FAIL: $*" >&2
	[ -f "$tmp/serve.log" ] && tail -n 30 "$tmp/serve.log" >&2
	exit 1
}
cleanup() {
	set +e # every step, whatever failed before
	[ -n "$pid" ] && kill "$pid" 2>/dev/null
	[ -n "${mgr:-}" ] && kill "$mgr" 2>/dev/null
	ip netns del "$ns" 2>/dev/null
	if dpkg-query -W -f='${Status}' diskless 2>/dev/null | grep -q 'install ok\|config-files'; then
		dpkg --purge diskless >/dev/null 2>&1
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT

deb=$(./scripts/build-deb.sh "$tmp" | tail -n 1)
[ -f "$deb" ] || fail "no package built"
echo "test-deb: built $(basename "$deb"), $(stat -c %s "$deb") bytes"
dpkg -i "$deb" >"$tmp/install.log" 2>&1 || { cat "$tmp/install.log"; fail "dpkg -i"; }
grep -q "the service is not started" "$tmp/install.log" || fail "postinst does not say the service waits for an interface"
for f in /usr/bin/diskless /lib/systemd/system/diskless.service /lib/systemd/system/diskless.socket \
	/etc/diskless/diskless.yaml /usr/share/doc/diskless/service.md /var/lib/diskless; do
	[ -e "$f" ] || fail "$f not installed"
done
dpkg-query -W -f='${Conffiles}' diskless | grep -q /etc/diskless/diskless.yaml || fail "diskless.yaml is not a conffile"
[ -e /etc/systemd/system/multi-user.target.wants/diskless.service ] && fail "installing enabled the service"

# The units as installed. The exposure threshold keeps the hardening from
# quietly eroding (2.3 when written; 10 is a root service with none).
systemd-analyze verify /lib/systemd/system/diskless.service /lib/systemd/system/diskless.socket ||
	fail "systemd-analyze verify"
systemd-analyze security --offline=true --threshold=30 /lib/systemd/system/diskless.service >"$tmp/security.log" 2>&1 ||
	{ tail -n 3 "$tmp/security.log"; fail "the unit's exposure went above 3.0"; }
grep -o 'Overall exposure level.*' "$tmp/security.log" || true

/usr/bin/diskless --version | grep -q . || fail "diskless --version"
if out=$(/usr/bin/diskless serve --config /etc/diskless/diskless.yaml 2>&1); then
	fail "serve started on the default configuration, with no interface"
fi
echo "$out" | grep -q 'diskless.yaml:[0-9]*: interface: required' || fail "serve on the default configuration: $out"

# A real run in a namespace: a veth pair for DHCP (proxy), TFTP, HTTP,
# iSCSI and the RA answerer, the capabilities the unit keeps and no other.
caps=$(sed -n 's/^CapabilityBoundingSet=//p' /lib/systemd/system/diskless.service)
bounding="-all"
for c in $caps; do bounding+=",+$(echo "${c#CAP_}" | tr 'A-Z' 'a-z')"; done
ip netns add "$ns"
ip -n "$ns" link set lo up
ip -n "$ns" link add dl0 type veth peer name dl1
ip -n "$ns" addr add 10.99.0.1/24 dev dl0
ip -n "$ns" link set dl0 up
ip -n "$ns" link set dl1 up
sed -e 's/^interface: ""/interface: dl0/' -e "s|^data_dir: .*|data_dir: $tmp/state|" \
	/etc/diskless/diskless.yaml >"$tmp/diskless.yaml"
# The service manager's side of sd_notify: one line per datagram.
python3 - "$tmp/notify" >"$tmp/notify.log" 2>&1 <<'PY' &
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
while True:
    print(s.recv(4096).decode().replace("\n", " "), flush=True)
PY
mgr=$!
for _ in $(seq 50); do [ -S "$tmp/notify" ] && break; sleep 0.1; done
waitfor() { # waitfor FILE PATTERN SECONDS
	for _ in $(seq $(($3 * 10))); do grep -q "$2" "$1" && return 0; sleep 0.1; done
	return 1
}
NOTIFY_SOCKET=$tmp/notify ip netns exec "$ns" setpriv --bounding-set="$bounding" --inh-caps=-all --no-new-privs \
	/usr/bin/diskless serve --config "$tmp/diskless.yaml" >"$tmp/serve.log" 2>&1 &
pid=$!
waitfor "$tmp/notify.log" '^READY=1' 10 || fail "no READY=1 from serve"
for what in 'msg=serving' 'dhcp: serving' 'tftp server listening' 'ra: answering IPv6'; do
	grep -q "$what" "$tmp/serve.log" || fail "serve with $caps only: no '$what'"
done
kill -HUP "$pid"
waitfor "$tmp/notify.log" 'configuration reloaded' 10 || fail "no READY=1 after SIGHUP"
grep -q '^RELOADING=1' "$tmp/notify.log" || fail "no RELOADING=1 on SIGHUP"
kill -TERM "$pid"
for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
kill -0 "$pid" 2>/dev/null && fail "serve still running 15 s after SIGTERM"
wait "$pid" || fail "serve exited with $? after SIGTERM"
pid=
grep -q '^STOPPING=1' "$tmp/notify.log" || fail "no STOPPING=1 on SIGTERM"

dpkg -r diskless >/dev/null
[ -e /usr/bin/diskless ] && fail "dpkg -r left /usr/bin/diskless"
[ -e /etc/diskless/diskless.yaml ] || fail "dpkg -r removed the admin's configuration"
dpkg --purge diskless >/dev/null
for f in /etc/diskless /lib/systemd/system/diskless.service /usr/share/doc/diskless; do
	[ -e "$f" ] && fail "purge left $f"
done
pgrep -f /usr/bin/diskless >/dev/null && fail "a diskless process is left running"
echo "test-deb: ok ($(($(date +%s) - start)) s)"
