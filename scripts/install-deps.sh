#!/usr/bin/env bash
# Installs every system package netverdict's build, tests and demo need on a
# Debian (bookworm) machine, as root. Rust itself (cargo >= 1.89) must already be
# installed (rustup); Debian's own cargo is too old for this workspace.
set -euo pipefail

packages=(
    clang llvm libbpf-dev bpftool      # eBPF probes: C compiled with clang -target bpf, CO-RE headers
    nftables iproute2 dnsmasq-base     # the lab: netns pods, enforcement, cluster DNS
    clickhouse-server clickhouse-client curl  # the flow store and its tests
    linux-perf                         # profiling the benchmarks (optional but cheap)
)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    if [ "$(id -u)" != 0 ]; then
        echo "install-deps: need root to install: ${missing[*]}" >&2
        exit 1
    fi
    echo "install-deps: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null; then
    echo "install-deps: cargo not found: install Rust >= 1.89 with rustup" >&2
    exit 1
fi
