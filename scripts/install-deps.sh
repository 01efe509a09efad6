#!/usr/bin/env bash
# Installs every system package netverdict's build, tests and demo need on a
# Debian (bookworm) machine, as root. Rust itself (cargo >= 1.89) must already be
# installed (rustup); Debian's own cargo is too old for this workspace.
#
# `install-deps.sh --fuzz` installs only what scripts/fuzz.sh needs instead: the
# nightly toolchain (rustup) and cargo-fuzz. The tests and CI do not need them
# (the fuzz targets' seeds run as unit tests on stable).
set -euo pipefail

if [ "${1:-}" = --fuzz ]; then
    if ! command -v rustup >/dev/null; then
        echo "install-deps: rustup is not installed: install it, then run me again" >&2
        exit 1
    fi
    if ! cargo +nightly --version >/dev/null 2>&1; then
        echo "install-deps: installing the nightly Rust toolchain (for cargo-fuzz)"
        rustup toolchain install nightly --profile minimal
    fi
    if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
        echo "install-deps: installing cargo-fuzz"
        cargo install cargo-fuzz --locked
    fi
    exit 0
fi

packages=(
    clang llvm libbpf-dev bpftool      # eBPF probes: C compiled with clang -target bpf, CO-RE headers
    nftables iproute2 dnsmasq-base     # the lab: netns pods, enforcement, cluster DNS
    clickhouse-server clickhouse-client curl  # the flow store and its tests
    zookeeper                          # the ClickHouse cluster test (scripts/start-clickhouse-cluster.sh)
    linux-perf                         # profiling the benchmarks (optional but cheap)
    python3 python3-venv               # the deployment tests (deploy/test, kubernetes-validate)
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
if ! command -v kubectl >/dev/null; then
    echo "install-deps: kubectl is missing (the deployment tests render deploy/ with it):" \
        "install kubectl >= 1.27 from https://kubernetes.io/docs/tasks/tools/" \
        "(Debian's kubernetes-client is too old for kustomize components)" >&2
    exit 1
fi
# The deployment tests' Python packages, pinned, in a venv of their own.
venv=${NETVERDICT_VENV:-$(cd "$(dirname "$0")/.." && pwd)/.venv}
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    -r "$(dirname "$0")/../deploy/test/requirements.txt"
