#!/usr/bin/env bash
# The deployment's tests (deploy/test): renders every kustomize overlay with
# kubectl, validates every object against the Kubernetes schemas (kubernetes-validate,
# strict), checks RBAC, privileges, capabilities, container flags, TLS, Secrets and
# NetworkPolicies (their meaning with the workspace's own `netverdict lint` and
# `netverdict verdicts`), the ClickHouse users in a real clickhouse-server, and the
# Dockerfile. Needs kubectl, clickhouse-server, cargo and the venv
# scripts/install-deps.sh makes.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v kubectl >/dev/null; then
    echo "test-deploy: kubectl is missing: install kubectl >= 1.27 (kustomize v5 built in) from" \
        "https://kubernetes.io/docs/tasks/tools/ (Debian's kubernetes-client is too old)" >&2
    exit 1
fi
venv=${NETVERDICT_VENV:-$PWD/.venv}
if ! "$venv/bin/python" -c 'import kubernetes_validate, yaml' 2>/dev/null; then
    echo "test-deploy: $venv has no kubernetes-validate: run scripts/install-deps.sh" >&2
    exit 1
fi
# The binary the tests run (lint, verdicts, --help, the API server against
# ClickHouse): the workspace's own, up to date.
cargo build --locked --quiet -p netverdict
exec "$venv/bin/python" -m unittest discover --start-directory deploy/test --pattern 'test_*.py' -v
