"""Security and consistency rules for netverdict's rendered manifests.

`check_objects` takes the objects one overlay renders to (plain dicts, as
`kubectl kustomize` prints them) and returns every broken rule as a message that
names the object and the field. The rules:

- RBAC: roles only get, list and watch the kinds netverdict reads (namespaces,
  pods, services, nodes, endpointslices, networkpolicies, and the
  policy.networking.k8s.io adminnetworkpolicies, baselineadminnetworkpolicies
  and clusternetworkpolicies); no wildcard, no
  non-resource URL, no aggregation; bindings only refer to roles defined here.
- Workloads: no privileged container (unless the overlay opts in, and then only
  the collector), no privilege escalation, a read-only root filesystem, ALL
  capabilities dropped and only the collector's eBPF ones added, requests and
  limits, a RuntimeDefault seccomp profile, non-root except the collector, host
  networking and host paths only for the collector (and only its kernel paths).
- netverdict's own containers: a known subcommand and only its known flags, each
  with a value, and every `$(VAR)` in the arguments defined in the container's env
  (Kubernetes leaves undefined ones as literal text).
"""

from __future__ import annotations

import re
from typing import Any, Iterator

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
}

# The flags of each `netverdict` subcommand the manifests may use (all take a value).
FLAGS = {
    "collector": {"--node-name", "--export", "--observer-listen", "--metrics-listen"},
    "api": {
        "--listen",
        "--metrics-listen",
        "--clickhouse",
        "--clickhouse-database",
        "--spool-dir",
        "--retention-days",
    },
}
REQUIRED_FLAGS = {
    "collector": {"--node-name", "--export"},
    "api": {"--listen"},
}

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


def check_objects(objects: list[dict[str, Any]], allow_privileged: bool = False) -> list[str]:
    """Every rule the objects break, as `object: field: problem` messages."""
    errors: list[str] = []
    roles = {(o.get("kind"), (o.get("metadata") or {}).get("name")) for o in objects if o.get("kind") in RBAC_ROLE_KINDS}
    for obj in objects:
        kind = obj.get("kind")
        if kind in RBAC_ROLE_KINDS:
            errors += _check_role(obj)
        elif kind in RBAC_BINDING_KINDS:
            errors += _check_binding(obj, roles)
        elif kind in WORKLOAD_KINDS:
            errors += _check_workload(obj, allow_privileged)
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


def _check_binding(obj: dict[str, Any], roles: set[tuple[Any, Any]]) -> list[str]:
    ref = obj.get("roleRef") or {}
    if (ref.get("kind"), ref.get("name")) not in roles:
        return [
            f"{describe(obj)}: roleRef: {ref.get('kind')} {ref.get('name')!r} is not one of the "
            "roles defined here (built-in roles grant more than netverdict reads)"
        ]
    return []


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


def _check_workload(obj: dict[str, Any], allow_privileged: bool) -> list[str]:
    who = describe(obj)
    base, pod = _pod_spec(obj)
    name = (obj.get("metadata") or {}).get("name")
    is_collector_workload = (obj.get("kind"), name) == COLLECTOR[:2]
    errors = []
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
        errors += _check_args(cat, c)
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


def _check_args(at: str, c: dict[str, Any]) -> list[str]:
    """netverdict's own containers: known subcommand, flags and `$(VAR)`s."""
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
        if eq:
            i += 1
        elif i + 1 >= len(args) or args[i + 1].startswith("--"):
            errors.append(f"{at}.args[{i}]: {flag} needs a value")
            i += 1
        else:
            i += 2
    for flag in sorted(REQUIRED_FLAGS[sub] - seen):
        errors.append(f"{at}.args: `netverdict {sub}` needs {flag}")
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
