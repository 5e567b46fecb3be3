#!/usr/bin/env bash
# Start rigd on its demo rig, show inventory and telemetry through rigctl, then keep it running
# until Ctrl-C (or for DEMO_SECONDS seconds). Leaves no process behind.
set -uo pipefail
workdir=$(mktemp -d "${TMPDIR:-/tmp}/rigd-demo.XXXXXX")
socket="$workdir/rigd.sock"
rigd --demo --unix-socket "$socket" --log-format console 2>"$workdir/rigd.log" &
rigd_pid=$!

stop() {
    trap - INT TERM EXIT
    if kill -0 "$rigd_pid" 2>/dev/null; then
        kill -TERM "$rigd_pid" 2>/dev/null
        wait "$rigd_pid"
    fi
    rm -rf "$workdir"
}
trap 'echo; echo "stopping rigd..."; stop; exit 0' INT TERM
trap stop EXIT

for _ in $(seq 1 600); do
    [ -S "$socket" ] && rigctl --socket "$socket" --timeout 2 inventory >/dev/null 2>&1 && break
    if ! kill -0 "$rigd_pid" 2>/dev/null; then
        echo "rigd exited during start-up:" >&2; cat "$workdir/rigd.log" >&2; exit 1
    fi
    sleep 0.2
done
sleep "${DEMO_SETTLE_SECONDS:-10}"  # let the simulated devices and the miner produce readings

echo "== rigctl inventory"
rigctl --socket "$socket" inventory
echo
echo "== rigctl telemetry"
rigctl --socket "$socket" telemetry
echo
echo "rigd is serving the demo rig on $socket (log: $workdir/rigd.log)."
echo "Try: RIGD_SOCKET=$socket $(command -v rigctl) telemetry --watch"
if [ -n "${DEMO_SECONDS:-}" ]; then
    sleep "$DEMO_SECONDS"
else
    echo "Press Ctrl-C to stop."
    wait "$rigd_pid"
fi
