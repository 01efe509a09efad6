"""Tests of deploy/, dashboards/kustomization.yaml and the Dockerfile.

Every overlay is rendered with the real `kubectl kustomize` from the repository as
it is (nothing is faked: the dashboards ConfigMap needs the dashboard files
themselves), every rendered object is validated strictly with kubernetes-validate
against fixed Kubernetes versions (cert-manager's objects, which have no schema
there, by `manifest_checks`), and `manifest_checks` holds them to the security
rules. `CheckerTest` shows each rule failing on a bad manifest.

The NetworkPolicies are also checked for what they mean: the workspace's own
`netverdict lint` and `netverdict verdicts` (target/debug/netverdict, which
scripts/test-deploy.sh builds) run on the rendered manifests plus pods made
from their workload templates, a Grafana, an impostor and clients
(`PolicySemanticsTest`), and on broken variants of them. `FlagsTest` compares
the flags the rules accept with the binary's `--help`. The ClickHouse users
file runs in a real clickhouse-server (`ClickHouseUsersTest`).

Run with scripts/test-deploy.sh (which scripts/test.sh calls).
"""

from __future__ import annotations

import copy
import json
import os
import queue
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import kubernetes_validate
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import manifest_checks as mc  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"

# The oldest Kubernetes the manifests support and the one the Rust code's
# k8s-openapi targets. Validation is strict: unknown fields are errors.
KUBERNETES_VERSIONS = ["1.28.0", "1.33.0"]

OVERLAYS = {
    "base": DEPLOY / "base",
    "standalone": DEPLOY / "overlays" / "standalone",
    "external-clickhouse": DEPLOY / "overlays" / "external-clickhouse",
    "external-clickhouse-cluster": DEPLOY / "overlays" / "external-clickhouse-cluster",
    "privileged-collector": DEPLOY / "overlays" / "privileged-collector",
    "cert-manager": DEPLOY / "overlays" / "cert-manager",
}

# The workspace's binary: its flags, and `lint` / `verdicts` on the manifests.
NETVERDICT = ROOT / "target" / "debug" / "netverdict"

# The files dashboards/kustomization.yaml turns into the dashboards ConfigMap.
EXPECTED_DASHBOARDS = {"denied-flows.json", "dns-health.json", "enforcement.json", "netverdict-self.json"}

_rendered: dict[str, list[dict[str, Any]]] = {}


def render(overlay: str) -> list[dict[str, Any]]:
    """The overlay's objects as `kubectl kustomize` renders them (cached)."""
    if overlay not in _rendered:
        kubectl = shutil.which("kubectl")
        if kubectl is None:
            raise AssertionError("kubectl is missing: install kubectl >= 1.27 (kustomize v5 built in)")
        proc = subprocess.run(
            [kubectl, "kustomize", str(OVERLAYS[overlay])], capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            raise AssertionError(f"kubectl kustomize {OVERLAYS[overlay].relative_to(ROOT)} failed:\n{proc.stderr}")
        _rendered[overlay] = [d for d in yaml.safe_load_all(proc.stdout) if d]
    return _rendered[overlay]


def find(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [
        o
        for o in objects
        if o.get("kind") == kind and (name is None or o["metadata"]["name"] == name)
    ]


def one(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = find(objects, kind, name)
    if len(found) != 1:
        raise AssertionError(f"want exactly one {kind} {name}, found {len(found)}")
    return found[0]


def container(workload: dict[str, Any], name: str) -> dict[str, Any]:
    for c in workload["spec"]["template"]["spec"]["containers"]:
        if c["name"] == name:
            return c
    raise AssertionError(f"{mc.describe(workload)} has no container {name}")


def clickhouse_users(objects: list[dict[str, Any]]) -> ET.Element:
    """The ClickHouse users file the StatefulSet mounts into users.d, parsed."""
    sts = one(objects, "StatefulSet", "clickhouse")
    mounts = {m["name"]: m for m in container(sts, "clickhouse")["volumeMounts"]}
    (name,) = [n for n, m in mounts.items() if m["mountPath"].startswith("/etc/clickhouse-server/users.d/")]
    (volume,) = [v for v in sts["spec"]["template"]["spec"]["volumes"] if v["name"] == name]
    cm = one(objects, "ConfigMap", volume["configMap"]["name"])
    return ET.fromstring(cm["data"][mounts[name]["subPath"]])


def schema_errors(objects: list[dict[str, Any]]) -> list[str]:
    errors = []
    for version in KUBERNETES_VERSIONS:
        for obj in objects:
            if str(obj.get("apiVersion", "")).startswith("cert-manager.io/"):
                continue  # no schema here: manifest_checks checks their structure
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                path = ".".join(str(p) for p in e.path)
                errors.append(f"Kubernetes {version}: {mc.describe(obj)}: {path}: {e.message}")
            except kubernetes_validate.SchemaNotFoundError as e:
                errors.append(f"Kubernetes {version}: {mc.describe(obj)}: no schema: {e}")
    return errors


class OverlayTest(unittest.TestCase):
    """Each overlay renders, validates and passes the security rules."""

    def assert_overlay_sound(self, overlay: str, allow_privileged: bool = False) -> list[dict[str, Any]]:
        objects = render(overlay)
        self.assertGreater(len(objects), 0)
        self.assertEqual([], schema_errors(objects), f"schema errors in {overlay}")
        self.assertEqual([], mc.check_objects(objects, allow_privileged), f"rule violations in {overlay}")
        for obj in objects:
            if obj["kind"] not in ("Namespace", "ClusterRole", "ClusterRoleBinding"):
                self.assertEqual("netverdict", obj["metadata"].get("namespace"), mc.describe(obj))
        self.assert_common(objects)
        return objects

    def assert_common(self, objects: list[dict[str, Any]]) -> None:
        # One role per component, each bound to its service account only (what
        # each grants exactly is cli/tests/rbac.rs's test).
        for name in ("netverdict-collector", "netverdict-api"):
            binding = one(objects, "ClusterRoleBinding", name)
            self.assertEqual({"kind": "ClusterRole", "name": name}, {k: binding["roleRef"][k] for k in ("kind", "name")})
            self.assertEqual(
                [("ServiceAccount", name, "netverdict")],
                [(s["kind"], s["name"], s["namespace"]) for s in binding["subjects"]],
            )
        granted = lambda name: {  # noqa: E731
            (g, r) for rule in one(objects, "ClusterRole", name)["rules"] for g in rule["apiGroups"] for r in rule["resources"]
        }
        self.assertEqual(mc.READ_RESOURCES, granted("netverdict-collector"))
        self.assertEqual(
            mc.READ_RESOURCES - {("discovery.k8s.io", "endpointslices"), ("apps", "replicasets"), ("batch", "jobs")},
            granted("netverdict-api"),
        )
        # The collector: node name from the downward API, exports over TLS to the API Service.
        ds = one(objects, "DaemonSet", "netverdict-collector")
        pod = ds["spec"]["template"]["spec"]
        self.assertTrue(pod["hostNetwork"])
        self.assertEqual("ClusterFirstWithHostNet", pod["dnsPolicy"], "hostNetwork pods need it to resolve Services")
        self.assertFalse(pod.get("hostPID", False))
        c = container(ds, "collector")
        env = {e["name"]: e for e in c["env"]}
        self.assertEqual("spec.nodeName", env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"])
        self.assertEqual("$(NODE_NAME)", mc.flag_value(c["args"], "--node-name"))
        export = urlparse(mc.flag_value(c["args"], "--export"))
        self.assertEqual("https", export.scheme)
        svc = one(objects, "Service", export.hostname)
        self.assertIn(export.port, [p["port"] for p in svc["spec"]["ports"]])
        # The node's own certificate and key, the CA: files of the tls volume.
        tls_mount = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}["tls"]
        self.assertEqual(f"{tls_mount}/$(NODE_NAME).crt", mc.flag_value(c["args"], "--tls-cert"))
        self.assertEqual(f"{tls_mount}/$(NODE_NAME).key", mc.flag_value(c["args"], "--tls-key"))
        self.assertEqual(f"{tls_mount}/ca.crt", mc.flag_value(c["args"], "--tls-ca"))
        mounts = {m["mountPath"] for m in c["volumeMounts"]}
        self.assertTrue({"/sys/kernel/btf", "/sys/kernel/tracing", "/sys/fs/bpf"} <= mounts, mounts)
        self.assert_probes(c, liveness="/healthz")
        # The API server listens where its Service points, with its certificate.
        api_workload = one(objects, "Deployment", "netverdict-api")
        api = container(api_workload, "api")
        self.assertEqual("0.0.0.0:4255", mc.flag_value(api["args"], "--listen"))
        self.assertIn("--kubernetes", api["args"], "the DNS report's policy gaps need the cluster state")
        self.assertEqual([4255, 9966], [p["port"] for p in one(objects, "Service", "netverdict-api")["spec"]["ports"]])
        volumes = {v["name"]: v for v in api_workload["spec"]["template"]["spec"]["volumes"]}
        self.assertEqual("netverdict-api-tls", volumes["tls"]["secret"]["secretName"])
        tls_mount = {m["name"]: m["mountPath"] for m in api["volumeMounts"]}["tls"]
        for flag, file in (("--tls-cert", "tls.crt"), ("--tls-key", "tls.key"), ("--tls-client-ca", "ca.crt")):
            self.assertEqual(f"{tls_mount}/{file}", mc.flag_value(api["args"], flag))
        self.assert_probes(api, liveness="/healthz", readiness="/readyz")
        # Nothing on Cilium Hubble's ports (the collector shares the host network with it).
        used = set()
        for o in objects:
            if o["kind"] == "Service":
                used |= {p["port"] for p in o["spec"]["ports"]}
            if o["kind"] in mc.WORKLOAD_KINDS:
                for _, cont in mc._containers(mc._pod_spec(o)[1]):
                    used |= {p["containerPort"] for p in cont.get("ports") or []}
                    used |= {int(a.rsplit(":", 1)[1]) for a in cont.get("args") or [] if re.fullmatch(r"[0-9.]+:\d+", a)}
        self.assertEqual(set(), used & mc.HUBBLE_PORTS)
        self.assertIsNotNone(one(objects, "NetworkPolicy", "netverdict-api"))

    def assert_probes(self, c: dict[str, Any], liveness: str, readiness: str | None = None) -> None:
        """Liveness (and readiness) are HTTP GETs of these paths on the metrics port."""
        metrics = {p["name"]: p["containerPort"] for p in c["ports"]}["metrics"]
        for probe, path in (("livenessProbe", liveness), ("readinessProbe", readiness)):
            if path is not None:
                get = c[probe]["httpGet"]
                self.assertEqual(path, get["path"], probe)
                self.assertIn(get["port"], ("metrics", metrics), probe)

    def clickhouse_config(self, objects: list[dict[str, Any]]) -> dict[str, str]:
        """The netverdict-clickhouse ConfigMap the API server's env reads."""
        workload = one(objects, "Deployment", "netverdict-api")
        api = container(workload, "api")
        env = {e["name"]: e for e in api["env"]}
        ref = env["CLICKHOUSE_URL"]["valueFrom"]["configMapKeyRef"]["name"]
        self.assertTrue(ref.startswith("netverdict-clickhouse"), ref)
        for var in ("CLICKHOUSE_DATABASE", "CLICKHOUSE_USER", "RETENTION_DAYS"):
            self.assertEqual(ref, env[var]["valueFrom"]["configMapKeyRef"]["name"])
        self.assertEqual("$(CLICKHOUSE_URL)", mc.flag_value(api["args"], "--clickhouse"))
        self.assertEqual("$(CLICKHOUSE_USER)", mc.flag_value(api["args"], "--clickhouse-user"))
        # The password: from the Secret, in the environment variable the binary reads.
        self.assertEqual(
            {"name": "netverdict-clickhouse", "key": "password"},
            env["NETVERDICT_CLICKHOUSE_PASSWORD"]["valueFrom"]["secretKeyRef"],
        )
        # The spool on a claim: one claim with a strategy that lets the old
        # pod release it, or (several API servers) a claim made with each pod.
        self.assertEqual("/var/lib/netverdict/spool", mc.flag_value(api["args"], "--spool-dir"))
        spool = {m["name"]: m["mountPath"] for m in api["volumeMounts"]}
        volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"]["volumes"]}
        (name,) = [n for n, path in spool.items() if "/var/lib/netverdict/spool".startswith(path)]
        if "ephemeral" in volumes[name]:
            template = volumes[name]["ephemeral"]["volumeClaimTemplate"]
            self.assertEqual(["ReadWriteOnce"], template["spec"]["accessModes"])
        else:
            claim = volumes[name]["persistentVolumeClaim"]["claimName"]
            self.assertEqual(["ReadWriteOnce"], one(objects, "PersistentVolumeClaim", claim)["spec"]["accessModes"])
            self.assertEqual(1, workload["spec"]["replicas"], "one pod per claim")
            self.assertEqual("Recreate", workload["spec"]["strategy"]["type"])
        return one(objects, "ConfigMap", ref)["data"]

    def assert_not_privileged(self, objects: list[dict[str, Any]]) -> None:
        c = container(one(objects, "DaemonSet", "netverdict-collector"), "collector")
        self.assertFalse(c["securityContext"].get("privileged", False))
        self.assertEqual(["BPF", "PERFMON", "SYS_RESOURCE"], sorted(c["securityContext"]["capabilities"]["add"]))

    def assert_grafana_provisioning(self, objects: list[dict[str, Any]], clickhouse_host: str) -> None:
        ds_cm = one(objects, "ConfigMap", "netverdict-grafana-datasource")
        (text,) = ds_cm["data"].values()
        (source,) = yaml.safe_load(text)["datasources"]
        self.assertEqual("grafana-clickhouse-datasource", source["type"])
        self.assertEqual("netverdict-clickhouse", source["uid"])
        self.assertEqual(clickhouse_host, source["jsonData"]["host"])
        self.assertEqual("netverdict", source["jsonData"]["defaultDatabase"])
        # Grafana's own read-only user; the password from Grafana's environment.
        self.assertEqual("grafana", source["jsonData"]["username"])
        self.assertEqual({"password": "$NETVERDICT_CLICKHOUSE_GRAFANA_PASSWORD"}, source["secureJsonData"])
        provider_cm = one(objects, "ConfigMap", "netverdict-grafana-dashboard-provider")
        (text,) = provider_cm["data"].values()
        (provider,) = yaml.safe_load(text)["providers"]
        self.assertEqual("file", provider["type"])
        dashboards = one(objects, "ConfigMap", "netverdict-grafana-dashboards")
        self.assertEqual("1", dashboards["metadata"]["labels"]["grafana_dashboard"])
        self.assertEqual(EXPECTED_DASHBOARDS, set(dashboards["data"]))
        for name, text in dashboards["data"].items():
            dash = json.loads(text)
            self.assertTrue(dash.get("uid"), f"{name} has no uid")

    def test_base(self) -> None:
        objects = self.assert_overlay_sound("base")
        self.assert_not_privileged(objects)
        api = container(one(objects, "Deployment", "netverdict-api"), "api")
        self.assertIsNone(mc.flag_value(api["args"], "--clickhouse"), "the base keeps flows in memory")
        self.assertEqual([], find(objects, "StatefulSet"))

    def test_standalone(self) -> None:
        objects = self.assert_overlay_sound("standalone")
        self.assert_not_privileged(objects)
        config = self.clickhouse_config(objects)
        url = urlparse(config["url"])
        svc = one(objects, "Service", url.hostname)
        self.assertIn(url.port, [p["port"] for p in svc["spec"]["ports"]])
        self.assertEqual("netverdict", config["database"])
        self.assertEqual("netverdict", config["user"])
        self.assertEqual("7", config["retention-days"])
        sts = one(objects, "StatefulSet", "clickhouse")
        self.assertEqual(["data"], [t["metadata"]["name"] for t in sts["spec"]["volumeClaimTemplates"]])
        ch = container(sts, "clickhouse")
        self.assertIn("/var/lib/clickhouse", {m["mountPath"] for m in ch["volumeMounts"]})
        # The database the API server is told to use is the one ClickHouse creates.
        self.assertIn("CREATE DATABASE IF NOT EXISTS netverdict", " ".join(ch["lifecycle"]["postStart"]["exec"]["command"]))
        # The users file: each user's password from an environment variable the
        # StatefulSet sets from the netverdict-clickhouse Secret.
        users = clickhouse_users(objects)
        env = {e["name"]: e for e in ch["env"]}
        for user, key in (("netverdict", "password"), ("grafana", "grafana-password")):
            var = users.find(f"users/{user}/password").get("from_env")
            self.assertEqual({"name": "netverdict-clickhouse", "key": key}, env[var]["valueFrom"]["secretKeyRef"], user)
            self.assertEqual(["netverdict"], [d.text for d in users.findall(f"users/{user}/allow_databases/database")])
        grafana_profile = users.find("users/grafana/profile").text
        self.assertEqual("1", users.find(f"profiles/{grafana_profile}/readonly").text, "Grafana's user is read-only")
        self.assertEqual(["::1", "127.0.0.1"], [ip.text for ip in users.findall("users/default/networks/ip")])
        # The NetworkPolicy selects the ClickHouse pods; Grafana is one peer with
        # both selectors (what it means is PolicySemanticsTest's).
        netpol = one(objects, "NetworkPolicy", "clickhouse")
        self.assertEqual(sts["spec"]["template"]["metadata"]["labels"], netpol["spec"]["podSelector"]["matchLabels"])
        (grafana,) = [p for p in netpol["spec"]["ingress"][0]["from"] if "namespaceSelector" in p]
        self.assertEqual({"app.kubernetes.io/name": "grafana"}, grafana["podSelector"]["matchLabels"])
        self.assert_grafana_provisioning(objects, f"{url.hostname}.netverdict.svc")

    def test_external_clickhouse(self) -> None:
        objects = self.assert_overlay_sound("external-clickhouse")
        self.assert_not_privileged(objects)
        config = self.clickhouse_config(objects)
        self.assertEqual("https://clickhouse.example.com:8443", config["url"])
        self.assertEqual([], find(objects, "StatefulSet"), "no ClickHouse of our own")
        self.assertEqual([], find(objects, "Service", "clickhouse"))
        self.assert_grafana_provisioning(objects, "clickhouse.example.com")

    def test_external_clickhouse_cluster(self) -> None:
        objects = self.assert_overlay_sound("external-clickhouse-cluster")
        self.assert_not_privileged(objects)
        config = self.clickhouse_config(objects)
        self.assertEqual("netverdict", config["cluster"])
        api = one(objects, "Deployment", "netverdict-api")
        self.assertGreaterEqual(api["spec"]["replicas"], 2)
        self.assertEqual("RollingUpdate", api["spec"]["strategy"]["type"])
        args = container(api, "api")["args"]
        self.assertEqual("$(CLICKHOUSE_CLUSTER)", args[args.index("--clickhouse-cluster") + 1])
        env = {e["name"]: e for e in container(api, "api")["env"]}
        self.assertEqual("cluster", env["CLICKHOUSE_CLUSTER"]["valueFrom"]["configMapKeyRef"]["key"])
        # Each API server has a spool of its own: no claim two pods would share.
        (spool,) = [v for v in api["spec"]["template"]["spec"]["volumes"] if v["name"] == "spool"]
        self.assertNotIn("persistentVolumeClaim", spool)
        self.assertIn("volumeClaimTemplate", spool["ephemeral"])
        self.assertEqual([], find(objects, "PersistentVolumeClaim"))
        self.assertEqual([], find(objects, "StatefulSet"), "no ClickHouse of our own")

    def test_cert_manager(self) -> None:
        objects = self.assert_overlay_sound("cert-manager")
        self.assert_not_privileged(objects)
        # Every TLS Secret comes from cert-manager: only the ClickHouse
        # passwords are yours to create.
        external = {"netverdict-clickhouse": mc.EXTERNAL_SECRETS["netverdict-clickhouse"]}
        self.assertEqual([], mc.check_objects(objects, external_secrets=external))
        certs = {c["metadata"]["name"]: c["spec"] for c in find(objects, "Certificate")}
        # The API server's names include the one collectors dial.
        api = certs["netverdict-api"]
        self.assertEqual("netverdict-api-tls", api["secretName"])
        export = urlparse(mc.flag_value(container(one(objects, "DaemonSet", "netverdict-collector"), "collector")["args"], "--export"))
        self.assertIn(export.hostname, api["dnsNames"])
        self.assertIn("server auth", api["usages"])
        reader = certs["netverdict-reader"]
        self.assertEqual(["netverdict:readers"], reader["subject"]["organizations"])
        # One identity per node: CN = the node, group netverdict:collectors.
        nodes = {name.removeprefix("netverdict-collector-"): spec for name, spec in certs.items() if name.startswith("netverdict-collector-")}
        self.assertEqual({"node-a", "node-b"}, set(nodes))
        for node, spec in nodes.items():
            self.assertEqual(node, spec["commonName"])
            self.assertEqual([node], spec["dnsNames"])
            self.assertEqual(["netverdict:collectors"], spec["subject"]["organizations"])
            self.assertEqual({"client auth", "server auth"}, set(spec["usages"]) & {"client auth", "server auth"})
            self.assertEqual(f"netverdict-collector-{node}", spec["secretName"])
        # Each collector finds its node's files where its flags say.
        ds = one(objects, "DaemonSet", "netverdict-collector")
        (tls,) = [v for v in ds["spec"]["template"]["spec"]["volumes"] if v["name"] == "tls"]
        self.assertNotIn("secret", tls)
        paths = {item["path"] for src in tls["projected"]["sources"] for item in src["secret"]["items"]}
        self.assertEqual({"ca.crt", "node-a.crt", "node-a.key", "node-b.crt", "node-b.key"}, paths)
        # The CA: self-signed, its Secret mounted by no pod (manifest_checks).
        self.assertTrue(certs["netverdict-ca"]["isCA"])

    def test_privileged_collector(self) -> None:
        objects = render("privileged-collector")
        self.assertNotEqual([], mc.check_objects(objects), "without the opt-in the checker refuses it")
        self.assert_overlay_sound("privileged-collector", allow_privileged=True)
        c = container(one(objects, "DaemonSet", "netverdict-collector"), "collector")
        self.assertTrue(c["securityContext"]["privileged"])
        # Only the collector differs from the standalone install.
        standalone = render("standalone")
        self.assertEqual(
            [o for o in standalone if o["kind"] != "DaemonSet"], [o for o in objects if o["kind"] != "DaemonSet"]
        )


def netverdict(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Runs the workspace's `netverdict` binary (built by scripts/test-deploy.sh)."""
    if not NETVERDICT.is_file():
        raise AssertionError(f"{NETVERDICT} is missing: build it with `cargo build --locked -p netverdict`")
    return subprocess.run([str(NETVERDICT), *args], input=stdin, capture_output=True, text=True, check=False)


# The nodes of the cluster the policies are checked on: inside the API server
# policy's default node CIDR (kind's), and the pod network outside it.
NODES = {"node-a": "172.18.0.2", "node-b": "172.18.0.3"}
# Pods besides netverdict's own: (namespace, name, labels, IP).
SCENARIO_PODS = [
    ("monitoring", "grafana-0", {"app.kubernetes.io/name": "grafana"}, "10.244.1.5"),
    ("monitoring", "prometheus-0", {"app.kubernetes.io/name": "prometheus"}, "10.244.1.6"),
    ("monitoring", "other", {"app": "other"}, "10.244.1.7"),
    ("shop", "grafana", {"app.kubernetes.io/name": "grafana"}, "10.244.2.5"),
    ("shop", "client", {"app": "client"}, "10.244.2.6"),
    ("netverdict", "grafana", {"app.kubernetes.io/name": "grafana"}, "10.244.0.20"),
    ("netverdict", "cli", {"app": "netverdict-cli"}, "10.244.0.21"),
]
CLICKHOUSE = "netverdict/clickhouse-0"
API = "netverdict/netverdict-api-0"
# What each policy must mean: (source, destination, port, verdict). A node's
# address stands for a collector (host network) on another node than the API
# server's.
EXPECTED_VERDICTS = [
    ("netverdict/netverdict-api-0", CLICKHOUSE, 8123, "allow"),
    ("monitoring/grafana-0", CLICKHOUSE, 8123, "allow"),
    ("shop/grafana", CLICKHOUSE, 8123, "deny"),  # the label, in another namespace
    ("netverdict/grafana", CLICKHOUSE, 8123, "deny"),  # the label, in the policy's namespace
    ("monitoring/other", CLICKHOUSE, 8123, "deny"),  # Grafana's namespace, another label
    ("netverdict/cli", CLICKHOUSE, 8123, "deny"),
    (NODES["node-b"], API, 4255, "allow"),  # ingest from a node
    ("netverdict/cli", API, 4255, "allow"),  # queries from the netverdict namespace
    ("shop/client", API, 4255, "deny"),
    ("monitoring/grafana-0", API, 4255, "deny"),
    ("monitoring/prometheus-0", API, 9966, "allow"),
    ("monitoring/other", API, 9966, "deny"),
    ("shop/client", API, 9966, "deny"),
    (NODES["node-b"], API, 9966, "deny"),
]


def pod_manifest(namespace: str, name: str, labels: dict[str, str], ip: str, node: str, pod_spec: dict[str, Any] | None = None) -> dict[str, Any]:
    spec = {"nodeName": node, "containers": [{"name": "app", "image": "app"}]}
    if pod_spec is not None:
        spec["hostNetwork"] = bool(pod_spec.get("hostNetwork"))
        spec["containers"] = [
            {"name": c["name"], "image": c.get("image", "x"), "ports": c.get("ports") or []} for c in pod_spec["containers"]
        ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"namespace": namespace, "name": name, "labels": labels},
        "spec": spec,
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
    }


def policy_cluster(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rendered objects, plus what a cluster would run from them: a pod per
    workload (labels and ports from its template; collectors on the host
    network, one per node), nodes, and the scenario's other namespaces and pods."""
    out = list(objects)
    out += [
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": n}, "status": {"addresses": [{"type": "InternalIP", "address": ip}]}}
        for n, ip in NODES.items()
    ]
    out += [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}} for ns in ("monitoring", "shop")]
    next_ip = iter(f"10.244.0.{i}" for i in range(10, 20))
    for obj in objects:
        if obj["kind"] not in ("Deployment", "StatefulSet", "DaemonSet"):
            continue
        template = obj["spec"]["template"]
        labels = template["metadata"]["labels"]
        ns, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
        if obj["kind"] == "DaemonSet":
            for node, ip in NODES.items():
                out.append(pod_manifest(ns, f"{name}-{node}", labels, ip, node, template["spec"]))
        else:
            out.append(pod_manifest(ns, f"{name}-0", labels, next(next_ip), "node-a", template["spec"]))
    for ns, name, labels, ip in SCENARIO_PODS:
        out.append(pod_manifest(ns, name, labels, ip, "node-b"))
    return out


def policy_problems(objects: list[dict[str, Any]], expected=EXPECTED_VERDICTS) -> list[str]:
    """What `netverdict lint` finds in the manifests' NetworkPolicies, and every
    verdict of `netverdict verdicts` on the policy cluster that differs from
    `expected`."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cluster.json"
        path.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": policy_cluster(objects)}))
        problems = []
        lint = netverdict("lint", "--cluster", str(path), "-o", "json")
        if lint.returncode not in (0, 1):
            raise AssertionError(f"netverdict lint failed ({lint.returncode}): {lint.stderr}")
        for finding in json.loads(lint.stdout or "[]"):
            if str(finding.get("policy", "")).startswith("netverdict/"):
                problems.append(f"lint: {finding['code']} {finding['policy']} {finding.get('field')}: {finding['message']}")
        flows = "".join(json.dumps({"src": s, "dst": d, "port": p, "protocol": "TCP"}) + "\n" for s, d, p, _ in expected)
        run = netverdict("verdicts", "--cluster", str(path), stdin=flows)
        if run.returncode != 0:
            raise AssertionError(f"netverdict verdicts failed ({run.returncode}): {run.stderr}")
        answers = [json.loads(line) for line in run.stdout.splitlines()]
        if len(answers) != len(expected):
            raise AssertionError(f"netverdict verdicts answered {len(answers)} lines for {len(expected)}: {run.stdout}")
        for (src, dst, port, want), got in zip(expected, answers):
            if "error" in got:
                raise AssertionError(f"{src} -> {dst}: {got['error']}")
            if got["verdict"] != want:
                problems.append(f"verdicts: {src} -> {dst} TCP/{port}: {got['verdict']}, want {want} ({got['reason']})")
        return problems


class PolicySemanticsTest(unittest.TestCase):
    """The NetworkPolicies mean what they should, by netverdict's own engine;
    each way of getting the Grafana peer or the ingest rule wrong is caught."""

    @staticmethod
    def clickhouse_policy(objects):
        return one(objects, "NetworkPolicy", "clickhouse")

    def grafana_peers(self, objects) -> list[dict[str, Any]]:
        return self.clickhouse_policy(objects)["spec"]["ingress"][0]["from"]

    def test_rendered_policies(self) -> None:
        for overlay in ("standalone", "cert-manager"):
            self.assertEqual([], policy_problems(render(overlay)), overlay)

    def test_or_instead_of_and_is_caught(self) -> None:
        objects = good_objects("standalone")
        peers = self.grafana_peers(objects)
        (grafana,) = [p for p in peers if "namespaceSelector" in p]
        peers.remove(grafana)
        peers += [{"namespaceSelector": grafana["namespaceSelector"]}, {"podSelector": grafana["podSelector"]}]
        problems = "\n".join(policy_problems(objects))
        self.assertIn("lint: peers-or-not-and netverdict/clickhouse", problems)
        self.assertIn("verdicts: monitoring/other -> netverdict/clickhouse-0 TCP/8123: allow, want deny", problems)
        self.assertIn("verdicts: netverdict/grafana -> netverdict/clickhouse-0 TCP/8123: allow, want deny", problems)

    def test_any_namespace_is_caught(self) -> None:
        # The manifest before this check: the label, from every namespace.
        objects = good_objects("standalone")
        (grafana,) = [p for p in self.grafana_peers(objects) if "namespaceSelector" in p]
        grafana["namespaceSelector"] = {}
        problems = "\n".join(policy_problems(objects))
        self.assertIn("verdicts: shop/grafana -> netverdict/clickhouse-0 TCP/8123: allow, want deny", problems)

    def test_a_namespace_nobody_has_is_caught(self) -> None:
        objects = good_objects("standalone")
        (grafana,) = [p for p in self.grafana_peers(objects) if "namespaceSelector" in p]
        grafana["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] = "monitoing"
        problems = "\n".join(policy_problems(objects))
        self.assertIn("lint: unknown-namespace-label netverdict/clickhouse", problems)
        self.assertIn("verdicts: monitoring/grafana-0 -> netverdict/clickhouse-0 TCP/8123: deny, want allow", problems)

    def test_ingest_from_more_than_the_nodes_is_caught(self) -> None:
        objects = good_objects("standalone")
        ingest = one(objects, "NetworkPolicy", "netverdict-api")["spec"]["ingress"][0]
        ingest["from"][0]["ipBlock"]["cidr"] = "10.0.0.0/8"  # the pod network too
        problems = "\n".join(policy_problems(objects))
        self.assertIn("verdicts: shop/client -> netverdict/netverdict-api-0 TCP/4255: allow, want deny", problems)
        self.assertIn(f"verdicts: {NODES['node-b']} -> netverdict/netverdict-api-0 TCP/4255: deny, want allow", problems)



class FlagsTest(unittest.TestCase):
    """The flags the rules accept are the binary's (switches included), except
    those in `PENDING_FLAGS` while the binary lacks them."""

    @staticmethod
    def help_flags(sub: str) -> dict[str, bool]:
        """Each flag of `netverdict SUB --help` and whether it takes a value."""
        run = netverdict(sub, "--help")
        if run.returncode != 0:
            raise AssertionError(f"netverdict {sub} --help: {run.stderr}")
        flags = {}
        for m in re.finditer(r"^\s+(?:-\w, )?(--[a-z0-9][a-z0-9-]*)( <[^>]+>)?", run.stdout, re.M):
            flags[m.group(1)] = m.group(2) is not None
        return flags

    def test_known_flags_are_the_binarys(self) -> None:
        for sub, known in mc.FLAGS.items():
            flags = self.help_flags(sub)
            self.assertIn("--help", flags)
            for flag in sorted(known):
                if flag in flags:
                    self.assertEqual(flag not in mc.SWITCHES, flags[flag], f"netverdict {sub} {flag}: takes a value?")
                else:
                    self.assertIn(flag, mc.PENDING_FLAGS, f"`netverdict {sub}` has no flag {flag}")
            for flag in mc.REQUIRED_FLAGS[sub]:
                self.assertIn(flag, flags)


class ReadmeTest(unittest.TestCase):
    """The Secrets you create are documented, with the keys the manifests read,
    and the manifests' ports are the README's."""

    def setUp(self) -> None:
        self.readme = (ROOT / "README.md").read_text()

    def test_external_secrets_are_documented(self) -> None:
        for name, keys in mc.EXTERNAL_SECRETS.items():
            m = re.search(rf"kubectl -n netverdict create secret generic {re.escape(name)}((?:[^\n]*\\\n)*[^\n]*)", self.readme)
            self.assertIsNotNone(m, f"README has no `kubectl -n netverdict create secret generic {name}` step")
            for key in sorted(keys or ()):
                self.assertRegex(m.group(1), rf"--from-(?:literal|file)={re.escape(key)}=", f"{name}: key {key}")

    def test_ports(self) -> None:
        for port in (4254, 4255, 9967, 9966):
            self.assertTrue(re.search(rf"\b{port}\b", self.readme), f"README does not mention port {port}")


class CollectorCertificatesScriptTest(unittest.TestCase):
    """deploy/overlays/cert-manager/collector-certificates.sh wrote the
    committed per-node files (for node-a and node-b), and refuses a name that
    is not a DNS subdomain."""

    SCRIPT = DEPLOY / "overlays" / "cert-manager" / "collector-certificates.sh"
    FILES = ("collector-certificates.yaml", "collector-tls.yaml")

    def run_in_copy(self, *nodes: str) -> tuple[subprocess.CompletedProcess[str], Path]:
        tmp = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, tmp)
        script = tmp / self.SCRIPT.name
        shutil.copy2(self.SCRIPT, script)
        return subprocess.run(["bash", str(script), *nodes], capture_output=True, text=True, check=False), tmp

    def test_committed_files_are_the_scripts(self) -> None:
        run, tmp = self.run_in_copy("node-b", "node-a", "node-a")
        self.assertEqual(0, run.returncode, run.stderr)
        for name in self.FILES:
            self.assertEqual((self.SCRIPT.parent / name).read_text(), (tmp / name).read_text(), name)

    def test_bad_node_name(self) -> None:
        run, tmp = self.run_in_copy("node-a", "Node_B: {x}")
        self.assertNotEqual(0, run.returncode)
        self.assertIn("is not a DNS subdomain", run.stderr)
        self.assertFalse((tmp / "collector-tls.yaml").exists())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ClickHouseServer:
    """A clickhouse-server of the test's own (Debian's 18.16), with the users
    file given in users.d; stopped by `stop`."""

    def __init__(self, users_xml: str, env: dict[str, str]) -> None:
        binary = shutil.which("clickhouse-server")
        if binary is None:
            raise AssertionError("clickhouse-server is not installed: run scripts/install-deps.sh")
        self.dir = Path(tempfile.mkdtemp())
        for sub in ("data", "tmp", "user_files", "format_schemas", "log", "users.d"):
            (self.dir / sub).mkdir()
        self.port = free_port()
        d = str(self.dir)
        config = Path("/etc/clickhouse-server/config.xml").read_text()
        for old, new in (
            ("<http_port>8123</http_port>", f"<http_port>{self.port}</http_port>"),
            ("<tcp_port>9000</tcp_port>", f"<tcp_port>{free_port()}</tcp_port>"),
            ("<interserver_http_port>9009</interserver_http_port>", f"<interserver_http_port>{free_port()}</interserver_http_port>"),
            ("<listen_host>::1</listen_host>", ""),
            ("/var/lib/clickhouse/tmp/", f"{d}/tmp/"),
            ("/var/lib/clickhouse/user_files/", f"{d}/user_files/"),
            ("/var/lib/clickhouse/format_schemas/", f"{d}/format_schemas/"),
            ("<path>/var/lib/clickhouse/</path>", f"<path>{d}/data/</path>"),
            ("/var/log/clickhouse-server/", f"{d}/log/"),
        ):
            config = config.replace(old, new)
        (self.dir / "config.xml").write_text(config)
        shutil.copy("/etc/clickhouse-server/users.xml", self.dir / "users.xml")
        (self.dir / "users.d" / "netverdict.xml").write_text(users_xml)
        self.process = subprocess.Popen(
            [binary, f"--config-file={self.dir / 'config.xml'}"],
            cwd=self.dir,
            env={**os.environ, **env},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while self.query("default", "", "SELECT 1")[0] != 200:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"clickhouse-server did not answer on port {self.port}: see {d}/log")
            time.sleep(0.1)

    def query(self, user: str, password: str, sql: str) -> tuple[int, str]:
        """Runs `sql` as `user` over HTTP: (status, body); 0 when nothing answers."""
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/?" + urllib.parse.urlencode({"user": user, "password": password}),
            data=sql.encode(),
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
        except OSError:
            return 0, ""

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class ClickHouseUsersTest(unittest.TestCase):
    """The standalone overlay's ClickHouse users file in a real
    clickhouse-server: passwords from the environment variables the
    StatefulSet sets, the API server (the real binary) applies its schema as
    `netverdict` and becomes ready, Grafana's user reads but cannot write,
    create or change settings, and neither reaches another database.

    Debian's server is 18.16, older than settings constraints: the profile's
    `<constraints>` (which lets Grafana's plugin set its query timeout on
    24.8, the deployed image) are left out here."""

    def test_users(self) -> None:
        objects = render("standalone")
        users = clickhouse_users(objects)
        profile = users.find(f"profiles/{users.find('users/grafana/profile').text}")
        constraints = profile.find("constraints")
        self.assertIsNotNone(constraints.find("max_execution_time/changeable_in_readonly"))
        profile.remove(constraints)
        env_of = {u: users.find(f"users/{u}/password").get("from_env") for u in ("netverdict", "grafana")}
        passwords = {u: secrets.token_hex(16) for u in env_of}
        server = ClickHouseServer(ET.tostring(users, encoding="unicode"), {env_of[u]: passwords[u] for u in env_of})
        self.addCleanup(server.stop)

        # The API server, with the password in the environment only.
        with tempfile.TemporaryDirectory() as spool:
            api = subprocess.Popen(
                [str(NETVERDICT), "api", "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
                 "--clickhouse", f"http://127.0.0.1:{server.port}", "--clickhouse-user", "netverdict",
                 "--clickhouse-database", "netverdict", "--spool-dir", spool],
                env={**os.environ, "NETVERDICT_CLICKHOUSE_PASSWORD": passwords["netverdict"], "RUST_LOG": "warn"},
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            )
            # Its stderr is read on a thread, so that waiting has a deadline.
            lines: queue.Queue[str | None] = queue.Queue()
            threading.Thread(target=lambda: [lines.put(x) for x in api.stderr] + [lines.put(None)], daemon=True).start()
            try:
                metrics = None
                deadline = time.monotonic() + 60
                seen = []
                while metrics is None and time.monotonic() < deadline:
                    try:
                        line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
                    except queue.Empty:
                        break
                    if line is None:
                        break
                    seen.append(line)
                    m = re.search(r"metrics on http://([^/]+)/metrics", line)
                    metrics = m and m.group(1)
                self.assertIsNotNone(metrics, "netverdict api did not start:\n" + "".join(seen))
                ready = None
                while time.monotonic() < deadline:
                    try:
                        with urllib.request.urlopen(f"http://{metrics}/readyz", timeout=5) as resp:
                            ready = resp.status
                            break
                    except urllib.error.HTTPError as e:
                        ready = e.read().decode()
                    time.sleep(0.2)
                self.assertEqual(200, ready, "the API server never became ready as user netverdict")
            finally:
                api.kill()
                api.wait()

        q = server.query
        self.assertEqual((200, "0\n"), q("grafana", passwords["grafana"], "SELECT count() FROM netverdict.flows"))
        for sql in (
            "INSERT INTO netverdict.flows (id) VALUES ('x')",
            "CREATE TABLE netverdict.t (x UInt8) ENGINE = Memory",
            "DROP TABLE netverdict.flows",
            "SELECT 1 SETTINGS readonly = 0",
        ):
            status, body = q("grafana", passwords["grafana"], sql)
            self.assertNotEqual(200, status, sql)
            self.assertIn("readonly mode", body, sql)
        self.assertIn("Wrong password", q("grafana", passwords["netverdict"], "SELECT 1")[1])
        # Neither user reaches another database.
        self.assertEqual(200, q("default", "", "CREATE TABLE default.other (x UInt8) ENGINE = Memory")[0])
        for user in ("grafana", "netverdict"):
            status, body = q(user, passwords[user], "SELECT * FROM default.other")
            self.assertIn("Access denied to database default", body, user)
        self.assertEqual(200, q("default", "", "SELECT 1")[0], "the default user, from inside the pod")



class DashboardsTest(unittest.TestCase):
    """dashboards/kustomization.yaml generates the ConfigMap from the expected files."""

    def test_generator_lists_the_dashboards_and_they_exist(self) -> None:
        kustomization = yaml.safe_load((ROOT / "dashboards" / "kustomization.yaml").read_text())
        (generator,) = kustomization["configMapGenerator"]
        self.assertEqual("netverdict-grafana-dashboards", generator["name"])
        self.assertEqual(EXPECTED_DASHBOARDS, set(generator["files"]))
        missing = sorted(f for f in EXPECTED_DASHBOARDS if not (ROOT / "dashboards" / f).is_file())
        self.assertEqual([], missing, "dashboard files the Grafana provisioning needs are missing from dashboards/")


class DockerfileTest(unittest.TestCase):
    """The Dockerfile builds the one binary the manifests run."""

    def setUp(self) -> None:
        self.text = (ROOT / "Dockerfile").read_text()
        self.stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", self.text, re.M | re.I)

    def test_builder_builds_the_cli_package(self) -> None:
        self.assertEqual("rust:1.95-bookworm", self.stages[0][0])
        cli = (ROOT / "cli" / "Cargo.toml").read_text()
        package = re.search(r'^\[package\]\s*\nname\s*=\s*"([^"]+)"', cli, re.M).group(1)
        self.assertIn(f"cargo build --release --locked -p {package}", self.text)
        # The eBPF probes' build needs what scripts/install-deps.sh installs for them.
        for pkg in ("clang", "llvm", "libbpf-dev"):
            self.assertRegex(self.text, rf"apt-get install[^\n]*(\\\n[^\n]*)*\b{re.escape(pkg)}\b")

    def test_runtime_stage(self) -> None:
        self.assertEqual("debian:bookworm-slim", self.stages[-1][0])
        self.assertIn("ca-certificates", self.text)
        self.assertRegex(self.text, r'ENTRYPOINT \["/usr/local/bin/netverdict"\]')
        user = re.findall(r"^USER\s+(\d+)", self.text, re.M)
        api = container(one(render("base"), "Deployment", "netverdict-api"), "api")
        pod_sc = one(render("base"), "Deployment", "netverdict-api")["spec"]["template"]["spec"]["securityContext"]
        self.assertEqual([str(pod_sc["runAsUser"])], user, "the image's user is the API server's runAsUser")
        self.assertNotIn("runAsUser", api["securityContext"])

    def test_dockerignore_keeps_build_output_out(self) -> None:
        lines = (ROOT / ".dockerignore").read_text().split()
        for entry in ("target", ".git"):
            self.assertTrue(any(line.strip("/*") == entry for line in lines), entry)


def good_objects(overlay: str = "base") -> list[dict[str, Any]]:
    """A copy of an overlay's objects, for the checker's tests to break."""
    return copy.deepcopy(render(overlay))


class CheckerTest(unittest.TestCase):
    """Each rule catches the manifest that breaks it."""

    def broken(self, edit, allow_privileged: bool = False, overlay: str = "base") -> list[str]:
        objects = good_objects(overlay)
        self.assertEqual([], mc.check_objects(objects))
        edit(objects)
        return mc.check_objects(objects, allow_privileged)

    def assert_caught(self, errors: list[str], *fragments: str) -> None:
        self.assertTrue(errors, "the checker let a bad manifest through")
        joined = "\n".join(errors)
        for f in fragments:
            self.assertIn(f, joined)

    @staticmethod
    def collector(objects):
        return one(objects, "DaemonSet", "netverdict-collector")

    @staticmethod
    def role(objects):
        return one(objects, "ClusterRole", "netverdict-collector")

    def test_write_verb(self) -> None:
        errors = self.broken(lambda o: self.role(o)["rules"][0]["verbs"].append("create"))
        self.assert_caught(errors, "ClusterRole netverdict-collector: rules[0].verbs: 'create'")

    def test_wildcard_verb(self) -> None:
        errors = self.broken(lambda o: self.role(o)["rules"][1].update(verbs=["*"]))
        self.assert_caught(errors, "rules[1].verbs: '*'")

    def test_secrets(self) -> None:
        errors = self.broken(lambda o: self.role(o)["rules"][0]["resources"].append("secrets"))
        self.assert_caught(errors, "rules[0].resources: 'secrets'")

    def test_resource_in_wrong_group(self) -> None:
        errors = self.broken(lambda o: self.role(o)["rules"][1].update(apiGroups=["apps"]))
        self.assert_caught(errors, "'apps/endpointslices'")

    def test_wildcard_resource_and_non_resource_url(self) -> None:
        appended_at = []

        def edit(o):
            rules = self.role(o)["rules"]
            appended_at.append(len(rules))
            rules.append({"apiGroups": ["*"], "resources": ["*"], "verbs": ["get"]})
            rules.append({"nonResourceURLs": ["/metrics"], "verbs": ["get"]})

        errors = self.broken(edit)
        n = appended_at[0]
        self.assert_caught(errors, f"rules[{n}].resources: '*/*'", f"rules[{n + 1}].nonResourceURLs")

    def test_binding_to_builtin_role(self) -> None:
        errors = self.broken(lambda o: one(o, "ClusterRoleBinding", "netverdict-collector")["roleRef"].update(name="view"))
        self.assert_caught(errors, "roleRef: ClusterRole 'view'")

    def test_privileged_collector_without_opt_in(self) -> None:
        def edit(o):
            container(self.collector(o), "collector")["securityContext"]["privileged"] = True

        self.assert_caught(self.broken(edit), "containers[0].securityContext.privileged")
        # The API server would refuse it anyway while escalation is disallowed.
        self.assert_caught(self.broken(edit, allow_privileged=True), "cannot be false when privileged")

        def allowed(o):
            edit(o)
            container(self.collector(o), "collector")["securityContext"]["allowPrivilegeEscalation"] = True

        self.assertEqual([], self.broken(allowed, allow_privileged=True))

    def test_privileged_api_even_with_opt_in(self) -> None:
        def edit(o):
            container(one(o, "Deployment", "netverdict-api"), "api")["securityContext"]["privileged"] = True

        self.assert_caught(self.broken(edit, allow_privileged=True), "Deployment netverdict/netverdict-api")

    def test_extra_capability(self) -> None:
        def edit(o):
            container(self.collector(o), "collector")["securityContext"]["capabilities"]["add"].append("SYS_ADMIN")

        self.assert_caught(self.broken(edit), "capabilities.add: 'SYS_ADMIN'")

    def test_capability_on_api(self) -> None:
        def edit(o):
            container(one(o, "Deployment", "netverdict-api"), "api")["securityContext"]["capabilities"]["add"] = ["BPF"]

        self.assert_caught(self.broken(edit), "netverdict-api", "capabilities.add: 'BPF'")

    def test_capabilities_not_dropped(self) -> None:
        def edit(o):
            del container(self.collector(o), "collector")["securityContext"]["capabilities"]["drop"]

        self.assert_caught(self.broken(edit), "capabilities.drop: must drop ALL")

    def test_writable_root_and_escalation(self) -> None:
        def edit(o):
            sc = container(one(o, "Deployment", "netverdict-api"), "api")["securityContext"]
            sc["readOnlyRootFilesystem"] = False
            del sc["allowPrivilegeEscalation"]

        self.assert_caught(self.broken(edit), "readOnlyRootFilesystem: must be true", "allowPrivilegeEscalation")

    def test_api_as_root(self) -> None:
        def edit(o):
            one(o, "Deployment", "netverdict-api")["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] = False

        self.assert_caught(self.broken(edit), "runAsNonRoot: must be true")

    def test_unconfined_seccomp_and_missing_limits(self) -> None:
        def edit(o):
            api = container(one(o, "Deployment", "netverdict-api"), "api")
            api["securityContext"]["seccompProfile"] = {"type": "Unconfined"}
            del api["resources"]["limits"]

        self.assert_caught(self.broken(edit), "seccompProfile: Unconfined", "resources.limits.memory: missing")

    def test_host_paths_and_namespaces(self) -> None:
        def edit(o):
            pod = self.collector(o)["spec"]["template"]["spec"]
            pod["hostPID"] = True
            pod["volumes"].append({"name": "etc", "hostPath": {"path": "/etc"}})
            container(self.collector(o), "collector")["volumeMounts"][0]["readOnly"] = False

        self.assert_caught(
            self.broken(edit), "hostPID: not allowed", "hostPath.path: '/etc'", "host path /sys/kernel/btf must be mounted read-only"
        )

    def test_host_network_on_api(self) -> None:
        def edit(o):
            one(o, "Deployment", "netverdict-api")["spec"]["template"]["spec"]["hostNetwork"] = True

        self.assert_caught(self.broken(edit), "hostNetwork: only the collector")

    def test_unknown_flag_and_subcommand(self) -> None:
        def edit(o):
            container(self.collector(o), "collector")["args"] += ["--privileged-mode", "yes"]
            container(one(o, "Deployment", "netverdict-api"), "api")["args"][0] = "server"

        self.assert_caught(self.broken(edit), "has no flag --privileged-mode", "'server' is not a netverdict subcommand")

    def test_flag_without_value_and_missing_required_flag(self) -> None:
        def edit(o):
            c = container(self.collector(o), "collector")
            c["args"] = ["collector", "--node-name", "--export", "http://netverdict-api:4245"]

        self.assert_caught(self.broken(edit), "--node-name needs a value")

        def edit2(o):
            container(self.collector(o), "collector")["args"] = ["collector", "--export", "http://x:1"]

        self.assert_caught(self.broken(edit2), "needs --node-name")

    def test_undefined_variable(self) -> None:
        def edit(o):
            c = container(self.collector(o), "collector")
            c["env"] = [e for e in c["env"] if e["name"] != "NODE_NAME"]

        self.assert_caught(self.broken(edit), "$(NODE_NAME) is not defined in env")

    @staticmethod
    def api(objects):
        return container(one(objects, "Deployment", "netverdict-api"), "api")

    @staticmethod
    def without(args: list[str], flag: str) -> None:
        """Removes `flag` and its value from `args`."""
        i = args.index(flag)
        del args[i : i + 2]

    def test_switch_with_a_value(self) -> None:
        def edit(o):
            args = self.api(o)["args"]
            args[args.index("--kubernetes")] = "--kubernetes=yes"

        self.assert_caught(self.broken(edit), "--kubernetes is a switch")

    # No plaintext listener off loopback.

    def test_server_without_client_certificates(self) -> None:
        errors = self.broken(lambda o: self.without(self.api(o)["args"], "--tls-client-ca"))
        self.assert_caught(errors, "`netverdict api` listens on 0.0.0.0:4255 (--listen) without mutual TLS: missing --tls-client-ca")

    def test_collector_observer_without_tls(self) -> None:
        def edit(o):
            args = container(self.collector(o), "collector")["args"]
            self.without(args, "--tls-client-ca")
            self.without(args, "--observer-listen")

        # Absent, the Observer listens on its default address: not loopback.
        self.assert_caught(self.broken(edit), "listens on 0.0.0.0:4254 (--observer-listen) without mutual TLS")

    def test_loopback_listener_needs_no_tls(self) -> None:
        def edit(o):
            args = self.api(o)["args"]
            for flag in sorted(mc.TLS_SERVER_FLAGS):
                self.without(args, flag)
            args[args.index("--listen") + 1] = "127.0.0.1:4255"

        self.assertEqual([], [e for e in self.broken(edit) if "TLS" in e])

    def test_insecure(self) -> None:
        errors = self.broken(lambda o: self.api(o)["args"].append("--insecure"))
        self.assert_caught(errors, "--insecure: the deploy never allows plaintext")

    def test_plaintext_export(self) -> None:
        def edit(o):
            args = container(self.collector(o), "collector")["args"]
            args[args.index("--export") + 1] = "http://netverdict-api:4255"
            self.without(args, "--tls-ca")

        self.assert_caught(self.broken(edit), "flows go over plaintext (want https://)", "--export without --tls-ca")

    def test_plaintext_clickhouse_off_the_cluster(self) -> None:
        def edit(o):
            (cm,) = [c for c in find(o, "ConfigMap") if c["metadata"]["name"].startswith("netverdict-clickhouse")]
            cm["data"]["url"] = "http://clickhouse.example.com:8123"

        self.assert_caught(
            self.broken(edit, overlay="standalone"),
            "--clickhouse http://clickhouse.example.com:8123: the ClickHouse password would cross the network in plaintext",
        )

    # Every referenced Secret exists.

    def test_unknown_secret(self) -> None:
        def edit(o):
            (tls,) = [v for v in one(o, "Deployment", "netverdict-api")["spec"]["template"]["spec"]["volumes"] if v["name"] == "tls"]
            tls["secret"]["secretName"] = "netverdict-api-tsl"

        self.assert_caught(self.broken(edit), "volumes[0].secret.secretName: Secret 'netverdict-api-tsl' is neither in these manifests")

    def test_unknown_secret_key(self) -> None:
        def edit(o):
            env = {e["name"]: e for e in self.api(o)["env"]}
            env["NETVERDICT_CLICKHOUSE_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"] = "pasword"

        self.assert_caught(self.broken(edit, overlay="standalone"), "Secret 'netverdict-clickhouse' has no key 'pasword'")

    def test_unknown_projected_secret(self) -> None:
        def edit(o):
            for cert in find(o, "Certificate"):
                if cert["metadata"]["name"] == "netverdict-collector-node-b":
                    o.remove(cert)

        self.assert_caught(
            self.broken(edit, overlay="cert-manager"),
            "projected.sources[1].secret.name: Secret 'netverdict-collector-node-b' is neither",
        )

    def test_ca_key_mounted(self) -> None:
        def edit(o):
            pod = one(o, "Deployment", "netverdict-api")["spec"]["template"]["spec"]
            pod["volumes"].append({"name": "ca", "secret": {"secretName": "netverdict-ca"}})

        self.assert_caught(self.broken(edit, overlay="cert-manager"), "Secret 'netverdict-ca' holds a CA's private key")

    def test_secret_mounted_with_sub_path(self) -> None:
        def edit(o):
            (mount,) = [m for m in self.api(o)["volumeMounts"] if m["name"] == "tls"]
            mount["subPath"] = "tls.crt"

        self.assert_caught(self.broken(edit), "Secret volume 'tls' mounted with subPath never sees the Secret's updates")

    # The NetworkPolicies are in place.

    @staticmethod
    def api_policy(objects):
        return one(objects, "NetworkPolicy", "netverdict-api")

    def test_workload_without_policy(self) -> None:
        errors = self.broken(lambda o: o.remove(self.api_policy(o)))
        self.assert_caught(errors, "Deployment netverdict/netverdict-api: no NetworkPolicy isolates its pods for ingress")

    def test_open_ingress_rules(self) -> None:
        def edit(o):
            rules = self.api_policy(o)["spec"]["ingress"]
            rules.append({"ports": [{"protocol": "TCP", "port": 4255}]})
            rules.append({"from": [{}], "ports": [{"protocol": "TCP", "port": 4255}]})
            rules.append({"from": [{"namespaceSelector": {}}], "ports": [{"protocol": "TCP", "port": 4255}]})
            rules.append({"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]})

        self.assert_caught(
            self.broken(edit),
            "spec.ingress[3].from: missing: the rule admits every source",
            "spec.ingress[4].from[0]: an empty peer admits every source",
            "spec.ingress[5].from[0].namespaceSelector: empty, alone",
            "spec.ingress[6].from[0].ipBlock.cidr: 0.0.0.0/0 admits every address",
            "spec.ingress[6].ports: missing: the rule admits every port",
        )

    def test_policy_port_the_pods_do_not_have(self) -> None:
        # The port moved off Hubble's; a rule still naming the old one is caught.
        errors = self.broken(lambda o: self.api_policy(o)["spec"]["ingress"][0]["ports"][0].update(port=4245))
        self.assert_caught(errors, "spec.ingress[0].ports[0]: TCP/4245 is not a port of the pods the policy selects")

    def test_policy_selecting_nothing(self) -> None:
        def edit(o):
            self.api_policy(o)["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] = "apiserver"

        self.assert_caught(
            self.broken(edit),
            "NetworkPolicy netverdict/netverdict-api: spec.podSelector: selects no workload",
            "Deployment netverdict/netverdict-api: no NetworkPolicy isolates",
        )

    # Service account tokens and bindings only where the Kubernetes API is used.

    def test_token_mounted_where_unused(self) -> None:
        def edit(o):
            del one(o, "StatefulSet", "clickhouse")["spec"]["template"]["spec"]["automountServiceAccountToken"]

        self.assert_caught(self.broken(edit, overlay="standalone"), "StatefulSet netverdict/clickhouse: spec.template.spec.automountServiceAccountToken")

    def test_binding_to_another_account(self) -> None:
        def edit(o):
            one(o, "ClusterRoleBinding", "netverdict-api")["subjects"].append(
                {"kind": "ServiceAccount", "name": "default", "namespace": "netverdict"}
            )

        self.assert_caught(self.broken(edit), "subjects[1]: ServiceAccount netverdict/default is not the service account")

    # cert-manager objects.

    def test_cert_manager_structure(self) -> None:
        def edit(o):
            certs = {c["metadata"]["name"]: c for c in find(o, "Certificate")}
            certs["netverdict-api"]["spec"]["dnsName"] = ["typo"]
            certs["netverdict-reader"]["spec"]["issuerRef"]["name"] = "letsencrypt"
            del certs["netverdict-collector-node-a"]["spec"]["secretName"]
            one(o, "Issuer", "netverdict-ca")["spec"]["selfSigned"] = {}

        self.assert_caught(
            self.broken(edit, overlay="cert-manager"),
            "Certificate netverdict/netverdict-api: spec.dnsName: unknown field",
            "Certificate netverdict/netverdict-reader: spec.issuerRef: Issuer 'letsencrypt' is not in these manifests",
            "Certificate netverdict/netverdict-collector-node-a: spec.secretName: missing",
            "Issuer netverdict/netverdict-ca: spec: exactly one of selfSigned or ca",
        )

    def test_strict_schema_validation_rejects_a_typo(self) -> None:
        objects = good_objects()
        self.assertEqual([], schema_errors(objects))
        container(self.collector(objects), "collector")["securityContext"]["privilegd"] = False
        one(objects, "Service", "netverdict-api")["spec"]["ports"][0]["port"] = "4245"
        errors = schema_errors(objects)
        self.assert_caught(errors, "DaemonSet netverdict/netverdict-collector", "privilegd", "Service netverdict/netverdict-api")


if __name__ == "__main__":
    unittest.main()
