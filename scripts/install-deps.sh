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
