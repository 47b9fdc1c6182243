"""Pod visibility: which pod has which IP, on which node, behind which port.

Pods come from one informer per attached node (`pod_field_selector(node)`): a leaf serves a few
dozen nodes of a cluster that may have 5,000, so watching every Pod would cost memory and API
server load in proportion to the whole cluster; a field selector per node keeps both in
proportion to this leaf. (Field selectors have no OR, hence one watch per node, as kubelet
does.) Terminal pods are filtered out at the server: their IPs are already given to others.

Everything in a Pod is hostile until validated here, exactly like Nodes (agent/cluster/nodes.py):
names must be DNS-1123, IPs must parse, a pod must be on the node whose watch delivered it, and a
hostNetwork pod's IPs are its node's and are never indexed as pod IPs (a pod IP lookup must not
answer "kube-proxy-x7" for a node address). The index keeps small PodInfo records, not the
informer's raw dicts.

agent.status.locate answers fabricctl's `locate Q` from the index and the attachments.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from agent import validate
from agent.cluster.nodes import Refusal, value_at
from agent.events import Event

PODS_PATH = "/api/v1/pods"
POD_PHASES = ("Pending", "Running", "Succeeded", "Failed", "Unknown")
# Terminal pods have released their IPs (the CNI may already have handed them to a new pod).
TERMINAL_PHASES = ("Succeeded", "Failed")
# When several live pods claim one IP (an IP reused while the old pod is still reported), the
# one most likely to own it now wins: Running before Pending before Unknown, then the newest.
_PHASE_RANK = {"Running": 0, "Pending": 1, "Unknown": 2}
DEFAULT_MAX_PODS_PER_NODE = 1000  # kubelet's max-pods is 110 by default, 250 at most in practice

# fullmatch, never `$`: in Python `$` also matches before a trailing newline, so "a\n" would
# pass a `^...$` pattern.
_DNS1123_LABEL_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1123_SUBDOMAIN_RE = re.compile(
    r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
)
_RFC3339_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)")
MAX_QUERY_LENGTH = 320  # namespace (63) + "/" + name (253), with room


@dataclass(frozen=True)
class PodInfo:
    """A validated Pod, as much as the status service needs (cluster.pod_index builds it)."""

    namespace: str
    name: str
    node: str
    ips: tuple[str, ...] = ()  # canonical; empty for pods without an IP yet
    phase: str = "Unknown"
    host_network: bool = False  # its IPs are the node's: never indexed as pod IPs
    created: str = ""  # creationTimestamp, RFC 3339; orders IP conflicts (newest wins)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def namespace_name(value: object) -> str:
    if not isinstance(value, str) or len(value) > 63 or not _DNS1123_LABEL_RE.fullmatch(value):
        raise ValueError(f"namespace {validate.printable(value)} is not a DNS-1123 label")
    return value


def object_name(value: object, what: str = "name") -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= 253:
        raise ValueError(f"{what} {validate.printable(value)} is not a DNS-1123 subdomain")
    if not _DNS1123_SUBDOMAIN_RE.fullmatch(value):
        raise ValueError(f"{what} {validate.printable(value)} is not a DNS-1123 subdomain")
    return value


def pod_ip(value: object) -> str:
    """A unicast pod address in canonical form. Scoped (fe80::1%eth0) and loopback, multicast
    or unspecified addresses are no pod's address."""
    if not isinstance(value, str) or "%" in value:
        raise ValueError(f"pod IP {validate.printable(value)} is not an IP address")
    try:
        addr = validate.ip_address(value)
    except ValueError:
        raise ValueError(f"pod IP {validate.printable(value)} is not a usable address") from None
    if addr.is_link_local:
        raise ValueError(f"pod IP {addr} is link-local")
    return str(addr)


def pod_field_selector(node: str, *, include_terminal: bool = False) -> str:
    """The fieldSelector of the per-node Pod watch: `spec.nodeName=<node>` (plus, by default,
    leaving out Succeeded and Failed pods, which hold no IP). The node name is validated, so it
    needs none of fieldSelector's escapes (`\\,` `\\=` `\\\\`)."""
    selector = f"spec.nodeName={object_name(node, 'node name')}"
    if not include_terminal:
        selector += "".join(f",status.phase!={phase}" for phase in TERMINAL_PHASES)
    return selector


def watched_nodes_diff(
    watching: Iterable[str], attached: Iterable[str]
) -> tuple[list[str], list[str]]:
    """(start, stop): the per-node Pod watches to start and to stop so that exactly the
    attached nodes are watched. Sorted, for stable logs and tests."""
    current, wanted = set(watching), set(attached)
    return sorted(wanted - current), sorted(current - wanted)


# What parse_pod reads; everything else in a Pod (managedFields, containers, volumes, status
# conditions: typically 5-15 KB of JSON per pod) is dead weight in the informer's store.
_KEPT_FIELDS = {
    "metadata": ("name", "namespace", "creationTimestamp", "resourceVersion", "uid"),
    "spec": ("nodeName", "hostNetwork"),
    "status": ("phase", "podIP", "podIPs"),
}


def slim_pod(obj: Any) -> Any:
    """The Pod reduced to what the index and the informer need (keys, resourceVersion),
    for an informer that can transform objects before storing them (as client-go's
    SetTransform): ~50 pods per node x 48 ports of full Pods would cost tens of MB of a
    256 MB budget. Anything that is not a Pod-shaped dict is returned as it is, so the
    validation in parse_pod still sees (and refuses) it."""
    if not isinstance(obj, Mapping):
        return obj
    slim: dict[str, Any] = {k: obj[k] for k in ("kind", "apiVersion") if k in obj}
    for section, keys in _KEPT_FIELDS.items():
        part = obj.get(section)
        if isinstance(part, Mapping):
            slim[section] = {k: part[k] for k in keys if k in part}
        elif section in obj:
            slim[section] = part
    return slim


def parse_pod(obj: Any) -> tuple[PodInfo | None, list[Refusal]]:
    """One Pod dict -> PodInfo (None when its identity is in doubt) and the refusals. A bad IP
    refuses that IP only; a bad name, namespace or node refuses the pod."""
    raw_ns, raw_name = value_at(obj, "metadata", "namespace"), value_at(obj, "metadata", "name")
    try:
        namespace = namespace_name(raw_ns)
        name = object_name(raw_name, "pod name")
    except ValueError as exc:
        subject = f"{validate.printable(raw_ns, 40)}/{validate.printable(raw_name, 60)}"
        return None, [Refusal("pod", subject, str(exc))]
    key = f"{namespace}/{name}"
    raw_node = value_at(obj, "spec", "nodeName")
    if raw_node is None or raw_node == "":
        return None, []  # not scheduled yet: nothing to locate, nothing wrong
    try:
        node = object_name(raw_node, "spec.nodeName")
    except ValueError as exc:
        return None, [Refusal("pod", key, str(exc))]

    refusals: list[Refusal] = []
    phase = value_at(obj, "status", "phase")
    if phase is None:
        phase = "Pending"  # the API server fills it in; absent means nothing reported yet
    elif phase not in POD_PHASES:
        refusals.append(Refusal("pod", key, f"status.phase {validate.printable(phase)} is not "
                                "a pod phase; treated as Unknown"))
        phase = "Unknown"
    host_network = value_at(obj, "spec", "hostNetwork") is True

    # status.podIPs is the truth on dual-stack clusters; status.podIP is its first entry and
    # the only field older clusters fill in.
    raw_ips: list[Any] = []
    pod_ips = value_at(obj, "status", "podIPs")
    if isinstance(pod_ips, list) and pod_ips:
        for entry in pod_ips:
            raw_ips.append(entry.get("ip") if isinstance(entry, Mapping) else entry)
    elif pod_ips is not None and not isinstance(pod_ips, list):
        refusals.append(Refusal("pod", key, "status.podIPs is not a list"))
    if not raw_ips:
        single = value_at(obj, "status", "podIP")
        if single not in (None, ""):
            raw_ips.append(single)
    ips: list[str] = []
    for raw in raw_ips[:2]:  # at most one per family, as the API server enforces
        try:
            ip = pod_ip(raw)
        except ValueError as exc:
            refusals.append(Refusal("pod", key, str(exc)))
            continue
        if ip not in ips:
            ips.append(ip)
    if len(raw_ips) > 2:
        refusals.append(Refusal("pod", key, f"{len(raw_ips)} pod IPs; only the first 2 used"))

    created = value_at(obj, "metadata", "creationTimestamp")
    created = created if isinstance(created, str) and _RFC3339_RE.fullmatch(created) else ""
    return PodInfo(namespace, name, node, tuple(ips), phase, host_network, created), refusals


@dataclass(frozen=True)
class PodDiff:
    """What replace_node() / drop_node() changed: for pod_added / pod_removed events. A pod
    whose IPs or phase changed is in `added` with its new state."""

    added: tuple[PodInfo, ...] = ()
    removed: tuple[PodInfo, ...] = ()

    def events(self, now: float) -> list[Event]:
        """pod_added / pod_removed events for the EventLog."""
        out = [Event("pod_removed", now, p.key, f"from {p.node}") for p in self.removed]
        for p in self.added:
            ips = " ".join(p.ips) if p.ips and not p.host_network else "no pod IP"
            out.append(Event("pod_added", now, p.key, f"on {p.node}, {ips} ({p.phase})"))
        return out


class PodIndex:
    """Pods of the attached nodes by key, by node and by IP.

    Fed one node at a time from that node's informer store (`replace_node`), because the
    informer's on_change does not say what changed and a node holds ~100 pods: replacing a
    node's set is cheap and cannot drift. Each node's set is authoritative for that node; a key
    briefly on two nodes (a pod deleted on one and recreated on another before the first watch
    caught up) or an IP claimed twice is resolved at lookup, so updates stay O(pods of one
    node)."""

    def __init__(self, *, max_pods_per_node: int = DEFAULT_MAX_PODS_PER_NODE) -> None:
        self.max_pods_per_node = max_pods_per_node
        self._by_node: dict[str, dict[str, PodInfo]] = {}
        self._by_ip: dict[str, set[tuple[str, str]]] = {}  # ip -> {(node, key)}
        self._by_key: dict[str, set[str]] = {}  # key -> {node}
        self._refusals: dict[str, list[Refusal]] = {}  # per node
        self._node_ips: frozenset[str] = frozenset()

    def __len__(self) -> int:
        return len(self._by_key)

    def set_node_ips(self, ips: Iterable[str]) -> None:
        """The InternalIPs of all known Nodes: an address in here is a node's, whatever a pod
        claims (a non-hostNetwork pod reporting it is refused at lookup)."""
        canonical = set()
        for ip in ips:
            try:
                canonical.add(str(ipaddress.ip_address(ip)))
            except ValueError:
                continue
        self._node_ips = frozenset(canonical)

    def replace_node(self, node: str, objects: Iterable[Any]) -> PodDiff:
        """Make the index hold exactly these Pod objects for `node` (its informer's store)."""
        node = object_name(node, "node name")
        fresh: dict[str, PodInfo] = {}
        refusals: list[Refusal] = []
        for obj in objects:
            pod, why = parse_pod(obj)
            refusals.extend(why)
            if pod is None:
                continue
            if pod.node != node:
                # The watch's field selector guarantees this on an honest server; a pod
                # claiming another node here would be indexed behind the wrong port.
                refusals.append(Refusal("pod", pod.key, f"spec.nodeName {pod.node} arrived on "
                                        f"the watch of node {node}"))
                continue
            if pod.phase in TERMINAL_PHASES:
                continue
            fresh[pod.key] = pod
        if len(fresh) > self.max_pods_per_node:
            keep = sorted(fresh)[: self.max_pods_per_node]
            refusals.append(Refusal("node", node, f"{len(fresh)} pods; only the first "
                                    f"{self.max_pods_per_node} (by namespace/name) are indexed"))
            fresh = {k: fresh[k] for k in keep}

        old = self._by_node.get(node, {})
        removed = tuple(old[k] for k in sorted(old.keys() - fresh.keys()))
        added = tuple(fresh[k] for k in sorted(fresh) if old.get(k) != fresh[k])
        for pod in removed:
            self._forget(pod)
        for pod in added:
            previous = old.get(pod.key)
            if previous is not None:
                self._forget(previous)
            self._remember(pod)
        if fresh:
            self._by_node[node] = fresh
        else:
            self._by_node.pop(node, None)
        if refusals:
            self._refusals[node] = refusals
        else:
            self._refusals.pop(node, None)
        return PodDiff(added, removed)

    def drop_node(self, node: str) -> PodDiff:
        """Forget a node's pods (it was detached and its watch stopped)."""
        old = self._by_node.pop(node, {})
        for pod in old.values():
            self._forget(pod)
        self._refusals.pop(node, None)
        return PodDiff(removed=tuple(old[k] for k in sorted(old)))

    def _remember(self, pod: PodInfo) -> None:
        self._by_key.setdefault(pod.key, set()).add(pod.node)
        if pod.host_network:
            return  # its IPs are the node's
        for ip in pod.ips:
            self._by_ip.setdefault(ip, set()).add((pod.node, pod.key))

    def _forget(self, pod: PodInfo) -> None:
        nodes = self._by_key.get(pod.key)
        if nodes is not None:
            nodes.discard(pod.node)
            if not nodes:
                del self._by_key[pod.key]
        for ip in pod.ips:
            claims = self._by_ip.get(ip)
            if claims is not None:
                claims.discard((pod.node, pod.key))
                if not claims:
                    del self._by_ip[ip]

    @staticmethod
    def _rank(pods: Iterable[PodInfo]) -> list[PodInfo]:
        """Most likely current owner first: Running, then Pending, then Unknown; within a
        phase the newest (RFC 3339 UTC timestamps sort as strings); then by key and node."""
        ranked = sorted(pods, key=lambda p: (p.key, p.node))
        ranked.sort(key=lambda p: p.created, reverse=True)
        ranked.sort(key=lambda p: _PHASE_RANK.get(p.phase, 3))
        return ranked

    def _claimants(self, ip: str) -> list[PodInfo]:
        return self._rank(self._by_node[n][k] for n, k in self._by_ip.get(ip, ()))

    def by_ip(self, ip: str) -> PodInfo | None:
        try:
            ip = str(ipaddress.ip_address(ip))
        except ValueError:
            return None
        if ip in self._node_ips:
            return None
        claimants = self._claimants(ip)
        return claimants[0] if claimants else None

    def get(self, namespace: str, name: str) -> PodInfo | None:
        key = f"{namespace}/{name}"
        pods = self._rank(self._by_node[n][key] for n in self._by_key.get(key, ()))
        return pods[0] if pods else None

    def named(self, name: str) -> list[PodInfo]:
        """Pods with this name in any namespace (for `locate NAME` without a namespace)."""
        found = []
        for key in sorted(self._by_key):
            namespace, _, pod_name = key.partition("/")
            if pod_name == name:
                pod = self.get(namespace, pod_name)
                if pod is not None:
                    found.append(pod)
        return found

    def on_node(self, node: str) -> tuple[PodInfo, ...]:
        pods = self._by_node.get(node, {})
        return tuple(pods[k] for k in sorted(pods))

    def count(self, node: str) -> int:
        return len(self._by_node.get(node, ()))

    def nodes(self) -> list[str]:
        return sorted(self._by_node)

    def refusals(self) -> tuple[Refusal, ...]:
        """Current refusals: per-pod validation problems, node IPs claimed by ordinary pods,
        and IPs or names claimed by several pods (the winner is named)."""
        out: list[Refusal] = []
        for node in sorted(self._refusals):
            out.extend(self._refusals[node])
        for ip in sorted(self._by_ip):
            claimants = self._claimants(ip)
            if ip in self._node_ips:
                out.extend(Refusal("pod", p.key, f"IP {ip} is a node's InternalIP; not indexed")
                           for p in claimants)
            elif len(claimants) > 1:
                others = ", ".join(f"{p.key} on {p.node}" for p in claimants[1:])
                winner = claimants[0]
                out.append(Refusal("pod", winner.key, f"IP {ip} also claimed by {others}; "
                                   f"{winner.key} on {winner.node} wins ({winner.phase})"))
        for key in sorted(self._by_key):
            if len(self._by_key[key]) > 1:
                nodes = ", ".join(sorted(self._by_key[key]))
                out.append(Refusal("pod", key, f"reported on several nodes ({nodes})"))
        return tuple(out)
