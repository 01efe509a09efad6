"""Security and consistency rules for netverdict's rendered manifests.

`check_objects` takes the objects one overlay renders to (plain dicts, as
`kubectl kustomize` prints them) and returns every broken rule as a message that
names the object and the field. The rules:

- RBAC: roles only get, list and watch the kinds netverdict reads (namespaces,
  pods, services, nodes, endpointslices, networkpolicies, the
  policy.networking.k8s.io adminnetworkpolicies, baselineadminnetworkpolicies
  and clusternetworkpolicies, and replicasets and jobs for pods' workloads); no wildcard, no
  non-resource URL, no aggregation; bindings only refer to roles defined here
  and only bind the service accounts of the components that use the Kubernetes
  API; every other workload mounts no service account token. (Exactly which
  verbs and kinds each component needs is cli/tests/rbac.rs's test: it records
  what the real processes ask.)
- Workloads: no privileged container (unless the overlay opts in, and then only
  the collector), no privilege escalation, a read-only root filesystem, ALL
  capabilities dropped and only the collector's eBPF ones added, requests and
  limits, a RuntimeDefault seccomp profile, non-root except the collector, host
  networking and host paths only for the collector (and only its kernel paths).
- netverdict's own containers: a known subcommand and only its known flags, each
  flag with a value unless it is a switch, and every `$(VAR)` in the arguments
  defined in the container's env (Kubernetes leaves undefined ones as literal
  text).
- No plaintext listener off loopback: a netverdict gRPC server (`api --listen`,
  `collector --observer-listen`, both not loopback by default) has a
  certificate, a key and a client CA (mutual TLS); the collector exports over
  https with a CA, certificate and key; `--insecure` never appears; a
  `--clickhouse` URL in plain http only names a Service of the same manifests
  (else the password crosses the network in clear). The `--metrics-listen` HTTP
  ports are plain on purpose: counters and probes, no flows.
- Secrets: every Secret a workload references (volume, projected volume, env,
  envFrom), and each key it names, exists: a Secret object, a cert-manager
  Certificate's secretName (tls.crt, tls.key, ca.crt), or one of
  `EXTERNAL_SECRETS`, which the README has the user create; a Secret volume is
  never mounted with subPath (it would not see renewals); a CA's Secret (its
  private key) is mounted by no workload.
- NetworkPolicies: every workload off the host network is isolated for ingress
  by a policy of its namespace; every policy selects a workload of the
  manifests; no ingress rule admits every source (no `from`, an empty peer, an
  empty namespaceSelector alone, or an ipBlock of every address) or every port;
  every port a rule names is a port of the pods it selects (a moved port
  leaves no stale hole or broken rule). Whether the peers mean what they should
  (AND, not OR) is checked by running `netverdict lint` and `netverdict
  verdicts` on the manifests (test_deploy.py).
- cert-manager objects (no schema ships for them): known fields only, a
  secretName, an issuerRef naming an Issuer of the manifests.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Iterator
from urllib.parse import urlparse

READ_VERBS = {"get", "list", "watch"}

# (API group, resource) pairs the collector and the API server read.
READ_RESOURCES = {
    ("", "namespaces"),
    ("", "pods"),
    ("", "services"),
    ("", "nodes"),
    ("discovery.k8s.io", "endpointslices"),
    ("networking.k8s.io", "networkpolicies"),
    ("policy.networking.k8s.io", "adminnetworkpolicies"),
    ("policy.networking.k8s.io", "baselineadminnetworkpolicies"),
    ("policy.networking.k8s.io", "clusternetworkpolicies"),
    ("apps", "replicasets"),
    ("batch", "jobs"),
}

# The flags of each `netverdict` subcommand the manifests may use. All take a
# value except the SWITCHES.
TLS_SERVER_FLAGS = {"--tls-cert", "--tls-key", "--tls-client-ca"}
TLS_CLIENT_FLAGS = {"--tls-ca", "--tls-cert", "--tls-key", "--tls-server-name"}
FLAGS = {
    "collector": {"--node-name", "--export", "--observer-listen", "--metrics-listen", "--insecure"}
    | TLS_SERVER_FLAGS
    | TLS_CLIENT_FLAGS,
    "api": {
        "--kubernetes",
        "--listen",
        "--metrics-listen",
        "--insecure",
        "--clickhouse",
        "--clickhouse-database",
        "--clickhouse-cluster",
        "--clickhouse-user",
        "--clickhouse-ca",
        "--spool-dir",
        "--retention-days",
    }
    | TLS_SERVER_FLAGS,
}
SWITCHES = {"--kubernetes", "--insecure"}
REQUIRED_FLAGS = {
    "collector": {"--node-name", "--export"},
    "api": {"--listen"},
}
# Flags the manifests use that the `netverdict` binary does not have yet: the
# test that compares FLAGS with the binary's --help excuses them only while the
# binary lacks them (empty: every flag the manifests use exists).
PENDING_FLAGS: set[str] = set()

# The gRPC listener of each netverdict server and its address when the flag is
# absent (the binary's default, not loopback).
LISTEN_FLAGS = {"api": ("--listen", "0.0.0.0:4255"), "collector": ("--observer-listen", "0.0.0.0:4254")}

# Components that use the Kubernetes API: (kind, name) of their workload. Any
# other workload mounts no service account token and is bound to no role.
API_CLIENTS = {("DaemonSet", "netverdict-collector"), ("Deployment", "netverdict-api")}

# Secrets the user creates before applying (README, "Install on a cluster"),
# with the keys the manifests may read (None: keys named after the nodes).
EXTERNAL_SECRETS: dict[str, set[str] | None] = {
    "netverdict-clickhouse": {"password", "grafana-password"},
    "netverdict-api-tls": {"tls.crt", "tls.key", "ca.crt"},
    "netverdict-collector-tls": None,
}
# The keys cert-manager writes into a Certificate's Secret.
CERTIFICATE_KEYS = {"tls.crt", "tls.key", "ca.crt"}

# Cilium Hubble's ports (agent Observer and metrics, hubble-relay): on a Cilium
# cluster the collector shares the host network with them.
HUBBLE_PORTS = {4244, 4245, 9965}

COLLECTOR = ("DaemonSet", "netverdict-collector", "collector")
# Capabilities the collector needs for the eBPF probes (Kubernetes spells them
# without the CAP_ prefix).
COLLECTOR_CAPABILITIES = {"BPF", "PERFMON", "SYS_RESOURCE"}
# Host paths the collector may mount, and whether it may write to them.
COLLECTOR_HOST_PATHS = {
    "/sys/kernel/btf": False,
    "/sys/kernel/tracing": False,
    "/sys/kernel/debug": False,
    "/sys/fs/bpf": True,
}

WORKLOAD_KINDS = {"Pod", "Deployment", "DaemonSet", "StatefulSet", "ReplicaSet", "Job", "CronJob"}
RBAC_ROLE_KINDS = {"ClusterRole", "Role"}
RBAC_BINDING_KINDS = {"ClusterRoleBinding", "RoleBinding"}

VAR_REF = re.compile(r"(?<!\$)\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def describe(obj: dict[str, Any]) -> str:
    """`Kind namespace/name` (or `Kind name` for cluster-scoped objects)."""
    meta = obj.get("metadata") or {}
    name = meta.get("name", "<unnamed>")
    ns = meta.get("namespace")
    return f"{obj.get('kind', '<no kind>')} {ns + '/' if ns else ''}{name}"


def check_objects(
    objects: list[dict[str, Any]],
    allow_privileged: bool = False,
    external_secrets: dict[str, set[str] | None] | None = None,
) -> list[str]:
    """Every rule the objects break, as `object: field: problem` messages.

    `external_secrets` are the Secrets the user creates (default
    `EXTERNAL_SECRETS`)."""
    if external_secrets is None:
        external_secrets = EXTERNAL_SECRETS
    errors: list[str] = []
    roles = {(o.get("kind"), (o.get("metadata") or {}).get("name")) for o in objects if o.get("kind") in RBAC_ROLE_KINDS}
    for obj in objects:
        kind = obj.get("kind")
        if kind in RBAC_ROLE_KINDS:
            errors += _check_role(obj)
        elif kind in RBAC_BINDING_KINDS:
            errors += _check_binding(obj, roles, objects)
        elif kind in WORKLOAD_KINDS:
            errors += _check_workload(obj, allow_privileged, objects)
        elif str(obj.get("apiVersion", "")).startswith("cert-manager.io/"):
            errors += _check_cert_manager(obj, objects)
    errors += _check_secret_refs(objects, external_secrets)
    errors += _check_network_policies(objects)
    return errors


def _check_role(obj: dict[str, Any]) -> list[str]:
    who = describe(obj)
    errors = []
    if obj.get("aggregationRule"):
        errors.append(f"{who}: aggregationRule: aggregated roles are not allowed")
    for i, rule in enumerate(obj.get("rules") or []):
        at = f"{who}: rules[{i}]"
        if rule.get("nonResourceURLs"):
            errors.append(f"{at}.nonResourceURLs: not allowed (read only the API objects netverdict needs)")
        for verb in rule.get("verbs") or []:
            if verb not in READ_VERBS:
                errors.append(f"{at}.verbs: {verb!r} is not one of get, list, watch")
        for group in rule.get("apiGroups") or []:
            for resource in rule.get("resources") or []:
                if (group, resource) not in READ_RESOURCES:
                    shown = f"{group}/{resource}" if group else resource
                    errors.append(f"{at}.resources: {shown!r} is not a kind netverdict reads")
        if not rule.get("apiGroups") and not rule.get("nonResourceURLs"):
            errors.append(f"{at}.apiGroups: missing")
    return errors


def _check_binding(obj: dict[str, Any], roles: set[tuple[Any, Any]], objects: list[dict[str, Any]]) -> list[str]:
    ref = obj.get("roleRef") or {}
    errors = []
    if (ref.get("kind"), ref.get("name")) not in roles:
        errors.append(
            f"{describe(obj)}: roleRef: {ref.get('kind')} {ref.get('name')!r} is not one of the "
            "roles defined here (built-in roles grant more than netverdict reads)"
        )
    users = _api_client_accounts(objects)
    for i, subject in enumerate(obj.get("subjects") or []):
        account = (subject.get("namespace"), subject.get("name"))
        if subject.get("kind") != "ServiceAccount" or account not in users:
            errors.append(
                f"{describe(obj)}: subjects[{i}]: {subject.get('kind')} {'/'.join(str(a) for a in account)} "
                "is not the service account of a component that uses the Kubernetes API"
            )
    return errors


def _api_client_accounts(objects: list[dict[str, Any]]) -> set[tuple[Any, Any]]:
    """(namespace, service account) of the workloads in `API_CLIENTS`."""
    out = set()
    for obj in objects:
        meta = obj.get("metadata") or {}
        if (obj.get("kind"), meta.get("name")) in API_CLIENTS:
            _, pod = _pod_spec(obj)
            out.add((meta.get("namespace"), pod.get("serviceAccountName", "default")))
    return out


def _pod_spec(obj: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    kind = obj.get("kind")
    spec = obj.get("spec") or {}
    if kind == "Pod":
        return "spec", spec
    if kind == "CronJob":
        return "spec.jobTemplate.spec.template.spec", (
            (((spec.get("jobTemplate") or {}).get("spec") or {}).get("template") or {}).get("spec") or {}
        )
    return "spec.template.spec", ((spec.get("template") or {}).get("spec") or {})


def _containers(pod: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for field in ("initContainers", "containers"):
        for i, c in enumerate(pod.get(field) or []):
            yield f"{field}[{i}]", c


def _check_workload(obj: dict[str, Any], allow_privileged: bool, objects: list[dict[str, Any]]) -> list[str]:
    who = describe(obj)
    base, pod = _pod_spec(obj)
    name = (obj.get("metadata") or {}).get("name")
    is_collector_workload = (obj.get("kind"), name) == COLLECTOR[:2]
    errors = []
    if (obj.get("kind"), name) not in API_CLIENTS and pod.get("automountServiceAccountToken") is not False:
        errors.append(
            f"{who}: {base}.automountServiceAccountToken: must be false (it does not use the Kubernetes API)"
        )
    secret_volumes = {
        v.get("name")
        for v in pod.get("volumes") or []
        if "secret" in v or any("secret" in src for src in ((v.get("projected") or {}).get("sources") or []))
    }
    for flag in ("hostPID", "hostIPC"):
        if pod.get(flag):
            errors.append(f"{who}: {base}.{flag}: not allowed")
    if pod.get("hostNetwork") and not is_collector_workload:
        errors.append(f"{who}: {base}.hostNetwork: only the collector uses the host network")
    host_paths = {}
    for i, vol in enumerate(pod.get("volumes") or []):
        if "hostPath" in vol:
            path = (vol["hostPath"] or {}).get("path", "")
            host_paths[vol.get("name")] = path
            if not is_collector_workload or path not in COLLECTOR_HOST_PATHS:
                errors.append(f"{who}: {base}.volumes[{i}].hostPath.path: {path!r} is not allowed here")
    pod_sc = pod.get("securityContext") or {}
    for at, c in _containers(pod):
        cat = f"{who}: {base}.{at}"
        is_collector = is_collector_workload and c.get("name") == COLLECTOR[2]
        errors += _check_container(cat, c, pod_sc, is_collector, allow_privileged and is_collector)
        for j, mount in enumerate(c.get("volumeMounts") or []):
            path = host_paths.get(mount.get("name"))
            if path in COLLECTOR_HOST_PATHS and not COLLECTOR_HOST_PATHS[path] and not mount.get("readOnly"):
                errors.append(f"{cat}.volumeMounts[{j}].readOnly: host path {path} must be mounted read-only")
            if mount.get("name") in secret_volumes and mount.get("subPath"):
                errors.append(
                    f"{cat}.volumeMounts[{j}].subPath: Secret volume {mount.get('name')!r} mounted with subPath "
                    "never sees the Secret's updates (renewed certificates)"
                )
        errors += _check_args(cat, c, objects)
    return errors


def _check_container(
    at: str, c: dict[str, Any], pod_sc: dict[str, Any], is_collector: bool, may_be_privileged: bool
) -> list[str]:
    errors = []
    sc = c.get("securityContext") or {}
    if sc.get("privileged"):
        if not may_be_privileged:
            errors.append(f"{at}.securityContext.privileged: privileged containers are not allowed here")
        if sc.get("allowPrivilegeEscalation") is False:
            # The API server refuses this combination (schemas do not say so).
            errors.append(f"{at}.securityContext.allowPrivilegeEscalation: cannot be false when privileged")
    elif sc.get("allowPrivilegeEscalation") is not False:
        errors.append(f"{at}.securityContext.allowPrivilegeEscalation: must be false")
    if sc.get("readOnlyRootFilesystem") is not True:
        errors.append(f"{at}.securityContext.readOnlyRootFilesystem: must be true")
    caps = sc.get("capabilities") or {}
    if "ALL" not in (caps.get("drop") or []):
        errors.append(f"{at}.securityContext.capabilities.drop: must drop ALL")
    allowed = COLLECTOR_CAPABILITIES if is_collector else set()
    for cap in caps.get("add") or []:
        if cap.removeprefix("CAP_") not in allowed:
            errors.append(f"{at}.securityContext.capabilities.add: {cap!r} is not allowed here")
    seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
    if seccomp not in ("RuntimeDefault", "Localhost") and not (may_be_privileged and seccomp == "Unconfined"):
        errors.append(f"{at}.securityContext.seccompProfile: {seccomp or 'unset'} (want RuntimeDefault)")
    non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
    if not is_collector and non_root is not True:
        errors.append(f"{at}.securityContext.runAsNonRoot: must be true (only the collector runs as root)")
    resources = c.get("resources") or {}
    for part in ("requests", "limits"):
        for res in ("cpu", "memory"):
            if res not in (resources.get(part) or {}):
                errors.append(f"{at}.resources.{part}.{res}: missing")
    return errors


def _check_args(at: str, c: dict[str, Any], objects: list[dict[str, Any]]) -> list[str]:
    """netverdict's own containers: known subcommand, flags and `$(VAR)`s, and TLS."""
    image = c.get("image", "")
    repo = image.rsplit("/", 1)[-1].split(":", 1)[0].split("@", 1)[0]
    if repo != "netverdict":
        return _check_var_refs(at, c)
    errors = _check_var_refs(at, c)
    if c.get("command"):
        errors.append(f"{at}.command: must be unset (the image's entrypoint is netverdict)")
    args = [str(a) for a in c.get("args") or []]
    if not args or args[0] not in FLAGS:
        got = args[0] if args else "nothing"
        return errors + [f"{at}.args[0]: {got!r} is not a netverdict subcommand ({', '.join(sorted(FLAGS))})"]
    sub, known = args[0], FLAGS[args[0]]
    seen = set()
    i = 1
    while i < len(args):
        arg = args[i]
        flag, eq, _ = arg.partition("=")
        if not flag.startswith("--"):
            errors.append(f"{at}.args[{i}]: unexpected argument {arg!r} (flags of `netverdict {sub}` take one value)")
            i += 1
            continue
        if flag not in known:
            errors.append(f"{at}.args[{i}]: `netverdict {sub}` has no flag {flag}")
        if flag in seen:
            errors.append(f"{at}.args[{i}]: {flag} given twice")
        seen.add(flag)
        if flag in SWITCHES:
            if eq:
                errors.append(f"{at}.args[{i}]: {flag} is a switch: it takes no value")
            i += 1
        elif eq:
            i += 1
        elif i + 1 >= len(args) or args[i + 1].startswith("--"):
            errors.append(f"{at}.args[{i}]: {flag} needs a value")
            i += 1
        else:
            i += 2
    for flag in sorted(REQUIRED_FLAGS[sub] - seen):
        errors.append(f"{at}.args: `netverdict {sub}` needs {flag}")
    return errors + _check_tls(at, sub, args, c, objects)


def _is_loopback(addr: str) -> bool:
    """Whether a listen address `host:port` (or `[v6]:port`) is on loopback."""
    host = addr.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        # A `$(VAR)` or a name: not provably loopback.
        return False


def _check_tls(at: str, sub: str, args: list[str], c: dict[str, Any], objects: list[dict[str, Any]]) -> list[str]:
    """No plaintext gRPC off loopback, no plaintext ClickHouse password off the cluster."""
    errors = []
    if "--insecure" in args:
        errors.append(f"{at}.args: --insecure: the deploy never allows plaintext gRPC off loopback")
    flag, default = LISTEN_FLAGS[sub]
    listen = flag_value(args, flag) or default
    if not _is_loopback(listen):
        missing = sorted(f for f in TLS_SERVER_FLAGS if flag_value(args, f) is None)
        if missing:
            errors.append(
                f"{at}.args: `netverdict {sub}` listens on {listen} ({flag}) without mutual TLS: "
                f"missing {', '.join(missing)}"
            )
    export = flag_value(args, "--export")
    if export is not None:
        if urlparse(export).scheme != "https":
            errors.append(f"{at}.args: --export {export}: flows go over plaintext (want https://)")
        missing = sorted(f for f in ("--tls-ca", "--tls-cert", "--tls-key") if flag_value(args, f) is None)
        if missing:
            errors.append(f"{at}.args: --export without {', '.join(missing)} (the server's CA and the node's identity)")
    clickhouse = flag_value(args, "--clickhouse")
    if clickhouse is not None:
        url = urlparse(_resolve(clickhouse, c, objects))
        # A Service of these manifests, by any of its in-cluster names.
        in_cluster = set()
        for o in objects:
            if o.get("kind") == "Service":
                name, ns = (o.get("metadata") or {}).get("name"), (o.get("metadata") or {}).get("namespace")
                in_cluster |= {name, f"{name}.{ns}", f"{name}.{ns}.svc", f"{name}.{ns}.svc.cluster.local"}
        if url.scheme != "https" and url.hostname not in in_cluster:
            errors.append(
                f"{at}.args: --clickhouse {url.geturl()}: the ClickHouse password would cross the network in "
                "plaintext (use https:// for a ClickHouse outside these manifests)"
            )
    return errors


def _resolve(value: str, c: dict[str, Any], objects: list[dict[str, Any]]) -> str:
    """`value` with each `$(VAR)` replaced by the container's env value (literal
    or from a ConfigMap of the manifests); unknown ones stay as they are."""
    env = {e.get("name"): e for e in c.get("env") or []}

    def one(m: re.Match[str]) -> str:
        e = env.get(m.group(1)) or {}
        if "value" in e:
            return str(e["value"])
        ref = (e.get("valueFrom") or {}).get("configMapKeyRef") or {}
        for o in objects:
            if o.get("kind") == "ConfigMap" and (o.get("metadata") or {}).get("name") == ref.get("name"):
                return str((o.get("data") or {}).get(ref.get("key"), m.group(0)))
        return m.group(0)

    return VAR_REF.sub(one, value)


def _workloads(objects: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], str, dict[str, Any]]]:
    for obj in objects:
        if obj.get("kind") in WORKLOAD_KINDS:
            base, pod = _pod_spec(obj)
            yield obj, base, pod


def _check_secret_refs(objects: list[dict[str, Any]], external: dict[str, set[str] | None]) -> list[str]:
    """Every referenced Secret (and key) exists; no CA key is mounted."""
    available: dict[str, set[str] | None] = dict(external)
    ca_secrets = set()
    for o in objects:
        name = (o.get("metadata") or {}).get("name")
        if o.get("kind") == "Secret":
            available[name] = set(o.get("data") or {}) | set(o.get("stringData") or {})
        elif o.get("kind") == "Certificate" and str(o.get("apiVersion", "")).startswith("cert-manager.io/"):
            spec = o.get("spec") or {}
            available[spec.get("secretName")] = CERTIFICATE_KEYS
            if spec.get("isCA"):
                ca_secrets.add(spec.get("secretName"))
    errors = []

    def need(who: str, field: str, name: Any, keys: list[Any]) -> None:
        if name in ca_secrets:
            errors.append(f"{who}: {field}: Secret {name!r} holds a CA's private key: no workload may mount it")
        if name not in available:
            errors.append(
                f"{who}: {field}: Secret {name!r} is neither in these manifests nor one the README has you "
                f"create ({', '.join(sorted(external))})"
            )
            return
        known = available[name]
        for key in keys:
            if known is not None and key not in known:
                errors.append(f"{who}: {field}: Secret {name!r} has no key {key!r} ({', '.join(sorted(known))})")

    for obj, base, pod in _workloads(objects):
        who = describe(obj)
        for i, vol in enumerate(pod.get("volumes") or []):
            if "secret" in vol:
                sec = vol["secret"] or {}
                keys = [item.get("key") for item in sec.get("items") or []]
                need(who, f"{base}.volumes[{i}].secret.secretName", sec.get("secretName"), keys)
            for j, src in enumerate(((vol.get("projected") or {}).get("sources")) or []):
                if "secret" in src:
                    sec = src["secret"] or {}
                    keys = [item.get("key") for item in sec.get("items") or []]
                    need(who, f"{base}.volumes[{i}].projected.sources[{j}].secret.name", sec.get("name"), keys)
        for at, c in _containers(pod):
            for k, e in enumerate(c.get("env") or []):
                ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                if ref:
                    need(who, f"{base}.{at}.env[{k}].valueFrom.secretKeyRef", ref.get("name"), [ref.get("key")])
            for k, e in enumerate(c.get("envFrom") or []):
                if "secretRef" in e:
                    need(who, f"{base}.{at}.envFrom[{k}].secretRef", (e["secretRef"] or {}).get("name"), [])
    return errors


def _selects(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """Whether a label selector (matchLabels and matchExpressions) matches `labels`."""
    selector = selector or {}
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def _isolates_ingress(policy: dict[str, Any]) -> bool:
    spec = policy.get("spec") or {}
    types = spec.get("policyTypes")
    return "Ingress" in types if types else True


def _check_network_policies(objects: list[dict[str, Any]]) -> list[str]:
    policies = [o for o in objects if o.get("kind") == "NetworkPolicy"]
    pods = []  # (workload, namespace, labels, pod spec) of pods on the pod network
    for obj, _, pod in _workloads(objects):
        if pod.get("hostNetwork"):
            continue
        template = obj.get("spec", {}).get("template", {}) if obj.get("kind") != "Pod" else obj
        labels = (template.get("metadata") or {}).get("labels") or {}
        pods.append((obj, (obj.get("metadata") or {}).get("namespace"), labels, pod))
    errors = []
    for obj, ns, labels, _ in pods:
        if not any(
            (p.get("metadata") or {}).get("namespace") == ns
            and _isolates_ingress(p)
            and _selects((p.get("spec") or {}).get("podSelector"), labels)
            for p in policies
        ):
            errors.append(f"{describe(obj)}: no NetworkPolicy isolates its pods for ingress: any pod can reach them")
    for policy in policies:
        who = describe(policy)
        ns = (policy.get("metadata") or {}).get("namespace")
        spec = policy.get("spec") or {}
        selected = [
            pod for _, pns, labels, pod in pods if pns == ns and _selects(spec.get("podSelector"), labels)
        ]
        if not selected:
            errors.append(f"{who}: spec.podSelector: selects no workload of these manifests")
        ports = {(p.get("protocol", "TCP"), p.get("containerPort")) for pod in selected for _, c in _containers(pod) for p in c.get("ports") or []}
        names = {(p.get("protocol", "TCP"), p.get("name")) for pod in selected for _, c in _containers(pod) for p in c.get("ports") or []}
        for i, rule in enumerate(spec.get("ingress") or []):
            at = f"{who}: spec.ingress[{i}]"
            peers = rule.get("from")
            if not peers:
                errors.append(f"{at}.from: missing: the rule admits every source")
            for j, peer in enumerate(peers or []):
                if not peer:
                    errors.append(f"{at}.from[{j}]: an empty peer admits every source")
                elif "namespaceSelector" in peer and not peer["namespaceSelector"] and "podSelector" not in peer:
                    errors.append(f"{at}.from[{j}].namespaceSelector: empty, alone: admits every pod of every namespace")
                cidr = (peer.get("ipBlock") or {}).get("cidr")
                if cidr is not None:
                    try:
                        everything = ipaddress.ip_network(cidr, strict=False).prefixlen == 0
                    except ValueError:
                        everything = False
                    if everything:
                        errors.append(f"{at}.from[{j}].ipBlock.cidr: {cidr} admits every address")
            if not rule.get("ports"):
                errors.append(f"{at}.ports: missing: the rule admits every port")
            for k, port in enumerate(rule.get("ports") or []):
                key = (port.get("protocol", "TCP"), port.get("port"))
                if key not in ports and key not in names:
                    errors.append(
                        f"{at}.ports[{k}]: {key[0]}/{key[1]} is not a port of the pods the policy selects "
                        "(moved? the rule would admit nothing, or a stale port)"
                    )
    return errors


# The spec fields netverdict's cert-manager objects may use (cert-manager.io/v1).
CERT_MANAGER_FIELDS = {
    "Certificate": {
        "secretName",
        "commonName",
        "dnsNames",
        "ipAddresses",
        "uris",
        "subject",
        "usages",
        "duration",
        "renewBefore",
        "privateKey",
        "issuerRef",
        "isCA",
        "secretTemplate",
    },
    "Issuer": {"selfSigned", "ca"},
}


def _check_cert_manager(obj: dict[str, Any], objects: list[dict[str, Any]]) -> list[str]:
    """Structural checks of the cert-manager objects (no JSON schema for them here)."""
    who = describe(obj)
    kind = obj.get("kind")
    if obj.get("apiVersion") != "cert-manager.io/v1" or kind not in CERT_MANAGER_FIELDS:
        return [f"{who}: apiVersion/kind: {obj.get('apiVersion')} {kind} is not one netverdict uses"]
    spec = obj.get("spec") or {}
    errors = [f"{who}: spec.{f}: unknown field" for f in sorted(set(spec) - CERT_MANAGER_FIELDS[kind])]
    if kind == "Issuer":
        if len(set(spec) & {"selfSigned", "ca"}) != 1:
            errors.append(f"{who}: spec: exactly one of selfSigned or ca")
        return errors
    if not spec.get("secretName"):
        errors.append(f"{who}: spec.secretName: missing")
    ref = spec.get("issuerRef") or {}
    ns = (obj.get("metadata") or {}).get("namespace")
    if not any(
        o.get("kind") == ref.get("kind", "Issuer")
        and (o.get("metadata") or {}).get("name") == ref.get("name")
        and (o.get("metadata") or {}).get("namespace") == ns
        for o in objects
    ):
        errors.append(f"{who}: spec.issuerRef: {ref.get('kind', 'Issuer')} {ref.get('name')!r} is not in these manifests")
    return errors


def _check_var_refs(at: str, c: dict[str, Any]) -> list[str]:
    defined = {e.get("name") for e in c.get("env") or []}
    errors = []
    for field in ("command", "args"):
        for i, arg in enumerate(c.get(field) or []):
            for var in VAR_REF.findall(str(arg)):
                if var not in defined:
                    errors.append(f"{at}.{field}[{i}]: $({var}) is not defined in env (it would stay literal)")
    return errors


def flag_value(args: list[str], flag: str) -> str | None:
    """The value given to `flag` in a container's args, if any."""
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None
