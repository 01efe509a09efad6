#!/usr/bin/env bash
# Stops what scripts/start-clickhouse-cluster.sh started under a directory
# (first argument, else ${NETVERDICT_CLUSTER_DIR:-/tmp/netverdict-clickhouse-cluster}):
# every server, then ZooKeeper; `stop-clickhouse-cluster.sh <dir> <name>` stops
# the one server or `zookeeper` named (as a failure would: SIGKILL with
# `--kill`). Each process is stopped by the id recorded in <dir>/<name>/pid,
# never by name, and waited for (SIGTERM to all at once, SIGKILL after 30 s).
set -euo pipefail

dir=${1:-${NETVERDICT_CLUSTER_DIR:-/tmp/netverdict-clickhouse-cluster}}
shift || true
signal=TERM
if [ "${1:-}" = --kill ]; then
    signal=KILL
    shift
fi

# Whether process $1 runs (a zombie nobody reaped yet has ended).
running() {
    [ -e "/proc/$1" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null
}

# Signals the processes named, then waits for them all (SIGKILL after 30 s).
stop() {
    local name pid pids=()
    for name in "$@"; do
        [ -f "$dir/$name/pid" ] || continue
        pid=$(cat "$dir/$name/pid")
        kill -s "$signal" "$pid" 2>/dev/null || true
        pids+=("$pid")
        rm -f "$dir/$name/pid"
    done
    for _ in $(seq 1 300); do
        local alive=0
        for pid in "${pids[@]}"; do running "$pid" && alive=1; done
        [ $alive = 0 ] && return 0
        sleep 0.1
    done
    for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
}

if [ $# -gt 0 ]; then
    stop "$@"
    exit 0
fi
stop s1r1 s1r2 s2r1 s2r2
stop zookeeper
