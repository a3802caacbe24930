# Shell helpers the benchmark scripts share (sourced, not run): free ports,
# waiting for a listener, random images, and Debian's tgtd started and
# stopped on a private control port. The sourcing script sets `set -euo
# pipefail` and its own cleanup trap, which calls tgt_stop.

# free_port prints a TCP port of 127.0.0.1 that was free a moment ago.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# wait_port PORT PID [NETNS]: until something listens on PORT (in network
# namespace NETNS, if given), while process PID lives. It looks (ss) rather
# than connects: iperf3 would count a probe as its client.
wait_port() {
	local ns=()
	[ -n "${3:-}" ] && ns=(ip netns exec "$3")
	for _ in $(seq 100); do
		[ -n "$("${ns[@]}" ss -Hltn "sport = :$1")" ] && return 0
		kill -0 "$2" 2>/dev/null || { echo "bench: process $2 died" >&2; return 1; }
		sleep 0.1
	done
	echo "bench: nothing listens on port $1" >&2
	return 1
}

# random_image PATH BYTES writes BYTES of random data. Written data, not
# holes or fallocated extents: diskless reports those deallocated (GET LBA
# STATUS, LBPRZ=1) and QEMU then skips reading them, measuring nothing.
random_image() { head -c "$(numfmt --from=iec "$2")" /dev/urandom >"$1"; }

# tgt_start PORT LOG starts tgtd on 127.0.0.1:PORT with a control port of
# its own (sets tgt_pid and tgt_ctl) and waits until it answers tgtadm.
# tgt_adm ARGS... runs tgtadm on it.
tgt_pid="" tgt_ctl=""
tgt_start() {
	tgt_ctl=$((1 + $1 % 32767))
	tgtd -f -C "$tgt_ctl" --iscsi "portal=127.0.0.1:$1" >"$2" 2>&1 &
	tgt_pid=$!
	for _ in $(seq 100); do tgt_adm --op show --mode target >/dev/null 2>&1 && return 0; sleep 0.1; done
	echo "bench: tgtd does not answer on control port $tgt_ctl" >&2
	return 1
}
tgt_adm() { tgtadm -C "$tgt_ctl" "$@"; }

# tgt_stop stops tgtd, if started. It ignores SIGTERM: take the targets
# down, then the daemon, then SIGKILL what is left.
tgt_stop() {
	[ -n "$tgt_pid" ] || return 0
	tgt_adm --lld iscsi --op delete --mode target --tid 1 --force >/dev/null 2>&1
	tgt_adm --op delete --mode system >/dev/null 2>&1
	for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$tgt_pid" 2>/dev/null || break; sleep 0.2; done
	kill -KILL "$tgt_pid" 2>/dev/null
	wait "$tgt_pid" 2>/dev/null
	rm -f "/var/run/tgtd/socket.$tgt_ctl" "/var/run/tgtd/socket.$tgt_ctl.lock"
	tgt_pid=""
}
