"""Tests of deploy/, dashboards/kustomization.yaml and the Dockerfile.

Every overlay is rendered with the real `kubectl kustomize` from the repository as
it is (nothing is faked: the dashboards ConfigMap needs the dashboard files
themselves), every rendered object is validated strictly with kubernetes-validate
against fixed Kubernetes versions, and `manifest_checks` holds them to the
security rules. `CheckerTest` shows each rule failing on a bad manifest.

Run with scripts/test-deploy.sh (which scripts/test.sh calls).
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
import unittest
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
    "privileged-collector": DEPLOY / "overlays" / "privileged-collector",
}

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


def schema_errors(objects: list[dict[str, Any]]) -> list[str]:
    errors = []
    for version in KUBERNETES_VERSIONS:
        for obj in objects:
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
        # Read-only RBAC bound to both service accounts.
        binding = one(objects, "ClusterRoleBinding", "netverdict-reader")
        self.assertEqual(
            {("ServiceAccount", "netverdict-collector", "netverdict"), ("ServiceAccount", "netverdict-api", "netverdict")},
            {(s["kind"], s["name"], s["namespace"]) for s in binding["subjects"]},
        )
        role = one(objects, "ClusterRole", "netverdict-reader")
        granted = {(g, r) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]}
        self.assertEqual(mc.READ_RESOURCES, granted, "the role grants exactly the kinds netverdict reads")
        # The collector: node name from the downward API, exports to the API Service.
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
        svc = one(objects, "Service", export.hostname)
        self.assertIn(export.port, [p["port"] for p in svc["spec"]["ports"]])
        mounts = {m["mountPath"] for m in c["volumeMounts"]}
        self.assertTrue({"/sys/kernel/btf", "/sys/kernel/tracing", "/sys/fs/bpf"} <= mounts, mounts)
        # The API server listens where its Service points.
        api = container(one(objects, "Deployment", "netverdict-api"), "api")
        self.assertEqual("0.0.0.0:4245", mc.flag_value(api["args"], "--listen"))
        self.assertEqual([4245, 9966], [p["port"] for p in one(objects, "Service", "netverdict-api")["spec"]["ports"]])

    def clickhouse_config(self, objects: list[dict[str, Any]]) -> dict[str, str]:
        """The netverdict-clickhouse ConfigMap the API server's env reads."""
        api = container(one(objects, "Deployment", "netverdict-api"), "api")
        env = {e["name"]: e for e in api["env"]}
        ref = env["CLICKHOUSE_URL"]["valueFrom"]["configMapKeyRef"]["name"]
        self.assertTrue(ref.startswith("netverdict-clickhouse"), ref)
        for var in ("CLICKHOUSE_DATABASE", "RETENTION_DAYS"):
            self.assertEqual(ref, env[var]["valueFrom"]["configMapKeyRef"]["name"])
        self.assertEqual("$(CLICKHOUSE_URL)", mc.flag_value(api["args"], "--clickhouse"))
        self.assertEqual("/var/lib/netverdict/spool", mc.flag_value(api["args"], "--spool-dir"))
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
        self.assertEqual("7", config["retention-days"])
        sts = one(objects, "StatefulSet", "clickhouse")
        self.assertEqual(["data"], [t["metadata"]["name"] for t in sts["spec"]["volumeClaimTemplates"]])
        ch = container(sts, "clickhouse")
        self.assertIn("/var/lib/clickhouse", {m["mountPath"] for m in ch["volumeMounts"]})
        # The database the API server is told to use is the one ClickHouse creates.
        self.assertIn("CREATE DATABASE IF NOT EXISTS netverdict", " ".join(ch["lifecycle"]["postStart"]["exec"]["command"]))
        netpol = one(objects, "NetworkPolicy", "clickhouse")
        self.assertEqual(sts["spec"]["template"]["metadata"]["labels"], netpol["spec"]["podSelector"]["matchLabels"])
        self.assert_grafana_provisioning(objects, f"{url.hostname}.netverdict.svc")

    def test_external_clickhouse(self) -> None:
        objects = self.assert_overlay_sound("external-clickhouse")
        self.assert_not_privileged(objects)
        config = self.clickhouse_config(objects)
        self.assertEqual("http://clickhouse.example.svc.cluster.local:8123", config["url"])
        self.assertEqual([], find(objects, "StatefulSet"), "no ClickHouse of our own")
        self.assertEqual([], find(objects, "Service", "clickhouse"))
        self.assert_grafana_provisioning(objects, "clickhouse.example.svc.cluster.local")

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


def good_objects() -> list[dict[str, Any]]:
    """A copy of the base's objects, for the checker's tests to break."""
    return copy.deepcopy(render("base"))


class CheckerTest(unittest.TestCase):
    """Each rule catches the manifest that breaks it."""

    def broken(self, edit, allow_privileged: bool = False) -> list[str]:
        objects = good_objects()
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
        return one(objects, "ClusterRole", "netverdict-reader")

    def test_write_verb(self) -> None:
        errors = self.broken(lambda o: self.role(o)["rules"][0]["verbs"].append("create"))
        self.assert_caught(errors, "ClusterRole netverdict-reader: rules[0].verbs: 'create'")

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
        errors = self.broken(lambda o: one(o, "ClusterRoleBinding", "netverdict-reader")["roleRef"].update(name="view"))
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

    def test_strict_schema_validation_rejects_a_typo(self) -> None:
        objects = good_objects()
        self.assertEqual([], schema_errors(objects))
        container(self.collector(objects), "collector")["securityContext"]["privilegd"] = False
        one(objects, "Service", "netverdict-api")["spec"]["ports"][0]["port"] = "4245"
        errors = schema_errors(objects)
        self.assert_caught(errors, "DaemonSet netverdict/netverdict-collector", "privilegd", "Service netverdict/netverdict-api")


if __name__ == "__main__":
    unittest.main()
