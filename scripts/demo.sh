#!/usr/bin/env bash
# The main job on one machine (as root): `netverdict demo`, the seed guide's
# scenario on the one-machine lab with the collector (real eBPF probes) and the
# API server (embedded store) in one process. Extra arguments go to the demo,
# e.g. `-o json` or `--clickhouse http://127.0.0.1:8123`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
[ "$(id -u)" = 0 ] || { echo "demo.sh: the lab and the eBPF probes need root (run with sudo)" >&2; exit 1; }
cargo build --release --locked -p netverdict
exec target/release/netverdict demo "$@"
