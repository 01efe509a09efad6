#!/usr/bin/env bash
# A tour of the lab and the policy commands (as root): the seed guide's scenario on the
# one-machine lab. Pods are network namespaces, NetworkPolicy is enforced by
# nftables; netverdict probes like `kubectl exec -- nc -vz`, explains every
# denial with the responsible policy, shows what the kernel saw, and compares the
# lab's reachability with the policy engine. The lab is torn down at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --release --locked -p netverdict
nv=$PWD/target/release/netverdict
seed=lab/examples/seed
lab=demo
[ "$(id -u)" = 0 ] || { echo "demo.sh: the lab needs root (run with sudo)" >&2; exit 1; }
trap '$nv lab down --name $lab >/dev/null 2>&1 || true' EXIT

cluster=(--cluster $seed/cluster.yaml)
step() { printf '\n\033[1m== %s\033[0m\n' "$1"; }
run() { printf '$ %s\n' "$*"; "$@" || true; }

step "1. The cluster, no policy yet: everything is reachable, DNS works"
run $nv lab up --name $lab "${cluster[@]}"
run $nv lab dns --name $lab --from default/np-client kubernetes.default.svc.cluster.local
run $nv lab probe --name $lab --from default/np-client --to api.default --port 8080

step "2. Roll out default-deny (ingress and egress) in namespace default"
run $nv lab apply --name $lab $seed/policies/default-deny.yaml
cluster+=(--cluster $seed/policies/default-deny.yaml)
run $nv lab dns --name $lab --from default/np-client kubernetes.default.svc.cluster.local
echo "-- DNS broke first, as the guide warns. What the kernel saw (eBPF) while the client retried:"
$nv capture --seconds 3 -o compact > /tmp/netverdict-demo-capture.txt 2>/dev/null &
capture=$!
sleep 0.5
$nv lab dns --name $lab --from default/np-client api.default.svc.cluster.local >/dev/null 2>&1 || true
wait $capture || true
grep -E "10\.(244|96)\." /tmp/netverdict-demo-capture.txt | head -8 || echo "(no events captured)"
echo "-- Why (policy engine):"
run $nv explain "${cluster[@]}" --from default/np-client --to kube-system/coredns --port 53 --protocol UDP
echo "-- The linter would have said so before the rollout:"
run $nv lint "${cluster[@]}"

step "3. Allow DNS egress to kube-system on UDP and TCP 53: DNS recovers"
run $nv lab apply --name $lab $seed/policies/allow-dns-egress.yaml
cluster+=(--cluster $seed/policies/allow-dns-egress.yaml)
run $nv lab dns --name $lab --from default/np-client kubernetes.default.svc.cluster.local

step "4. api-from-web: frontends of team=web namespaces may call the API on 8080"
run $nv lab apply --name $lab $seed/policies/api-from-web.yaml
cluster+=(--cluster $seed/policies/api-from-web.yaml)
run $nv lab probe --name $lab --from shop/np-client --to api.default --port 8080
run $nv explain "${cluster[@]}" --from shop/np-client --to default/api --port 8080
run $nv lab probe --name $lab --from default/np-client --to api.default --port 8080
run $nv explain "${cluster[@]}" --from default/np-client --to default/api --port 8080

step "5. The lab's reachability on 8080 against the policy engine's verdicts"
run $nv lab matrix --name $lab --port 8080 --expect

step "6. Debugging step 1, 'does the CNI enforce NetworkPolicy?': leave default unenforced"
run $nv lab unenforce --name $lab --namespace default
run $nv lab matrix --name $lab --port 5432 --expect

step "7. Tear down"
run $nv lab down --name $lab
trap - EXIT
