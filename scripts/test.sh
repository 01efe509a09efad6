#!/usr/bin/env bash
# The test command: installs what the tests need, starts ClickHouse, and runs the
# whole workspace's tests (unit, integration and privileged ones: run as root).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/start-clickhouse.sh
if [ "$(id -u)" != 0 ]; then
    echo "test.sh: the eBPF and lab tests need root (run with sudo)" >&2
    exit 1
fi
cargo test --workspace --locked
# Every lab a test made must be gone, even those of tests that failed.
leftover=$(ip netns list | grep -E '^nv\.' || true)
if [ -n "$leftover" ]; then
    echo "test.sh: lab namespaces left behind by the tests:" >&2
    echo "$leftover" >&2
    exit 1
fi
if nft list tables 2>/dev/null | grep -q 'netverdict'; then
    echo "test.sh: nftables tables left behind in the root namespace" >&2
    exit 1
fi
# The manifests in deploy/ and the Dockerfile.
scripts/test-deploy.sh
