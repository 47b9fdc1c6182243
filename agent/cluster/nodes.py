"""Cluster state: Kubernetes Node objects turned into validated records, or refused with a reason.

The informers keep raw dicts; this module is the only place that reads them. A Node that fails
validation is refused as a whole when its identity is in doubt (name), and field by field where
the rest of it is still trustworthy (one bad CIDR does not take down the node's other prefix).
"""

from __future__ import annotations

import ipaddress
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agent import validate
from agent.vocabulary import (
    FLANNEL_PREFIX,
    ROUTING_ANNOTATION,
    ROUTING_MODES,
    SWITCH_PORT_ANNOTATION,
)

log = logging.getLogger(__name__)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class Refusal:
    """Something from the cluster or the config the agent will not act on, and why."""

    kind: str  # "node", "attachment", "prefix", "port", ...
    name: str  # printable name of the object (already escaped)
    reason: str

    def __str__(self) -> str:
        return f"{self.kind} {self.name}: {self.reason}"


@dataclass(frozen=True)
class SwitchPort:
    switch: str
    port: str


@dataclass(frozen=True)
class FlannelVxlan:
    """What flannel's VXLAN backend publishes about a node (flannel.alpha.coreos.com/*)."""

    vni: int
    vtep_mac: str
    public_ip: IPAddress


@dataclass(frozen=True)
class Node:
    name: str
    created: str  # RFC 3339 creationTimestamp; orders claims (older wins)
    pod_cidrs: tuple[IPNetwork, ...]
    internal_ips: tuple[IPAddress, ...]
    unschedulable: bool
    routing: str | None  # from the annotation; None = the config's default
    switch_port: SwitchPort | None  # from the annotation
    flannel: FlannelVxlan | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    # status.conditions Ready is "True". Absent or Unknown is not ready, as Kubernetes' service
    # controller decides which nodes may carry load-balanced traffic.
    ready: bool = False


def value_at(obj: Any, *path: str) -> Any:
    """obj[path[0]][path[1]]... of a hostile Kubernetes object; None where the path breaks."""
    for key in path:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


def str_map(value: Any) -> dict[str, str]:
    """A labels/annotations map with only its str -> str entries."""
    if not isinstance(value, Mapping):
        return {}
    return {k: v for k, v in value.items() if isinstance(k, str) and isinstance(v, str)}


MAX_POD_CIDRS_READ = 8  # the API server allows 2; a few more are read to be refused by name
MAX_BACKEND_DATA = 1024


def parse_node(obj: Any) -> tuple[Node | None, list[Refusal]]:
    """One Node dict -> a Node (or None if it must be ignored entirely) and the refusals."""
    raw_name = value_at(obj, "metadata", "name")
    try:
        name = validate.node_name(raw_name)
    except ValueError as exc:
        return None, [Refusal("node", validate.printable(raw_name), str(exc))]

    refusals: list[Refusal] = []
    annotations = str_map(value_at(obj, "metadata", "annotations"))

    raw_cidrs = value_at(obj, "spec", "podCIDRs")
    if raw_cidrs is None:
        single = value_at(obj, "spec", "podCIDR")
        raw_cidrs = [single] if single is not None else []
    if not isinstance(raw_cidrs, list):
        refusals.append(Refusal("node", name, "spec.podCIDRs is not a list"))
        raw_cidrs = []
    cidrs: list[IPNetwork] = []
    for raw in raw_cidrs[:MAX_POD_CIDRS_READ]:
        try:
            net = validate.cidr(raw)
        except ValueError as exc:
            refusals.append(Refusal("prefix", f"{name} {validate.printable(raw)}", str(exc)))
            continue
        # The API server allows one pod CIDR per family; more (a hand-made object, a file) would
        # each cost the leaf routes and FRR lines: the first of each family is kept.
        if any(c.version == net.version for c in cidrs):
            refusals.append(Refusal("prefix", f"{name} {net}", "a pod CIDR of this family is "
                                    "already listed (one per family)"))
            continue
        cidrs.append(net)
    if len(raw_cidrs) > MAX_POD_CIDRS_READ:
        refusals.append(Refusal("node", name, f"spec.podCIDRs has {len(raw_cidrs)} entries; "
                                f"only the first {MAX_POD_CIDRS_READ} were read"))

    internal_ips: list[IPAddress] = []
    addresses = value_at(obj, "status", "addresses")
    for entry in addresses if isinstance(addresses, list) else []:
        if value_at(entry, "type") != "InternalIP":
            continue
        try:
            addr = validate.host_address(value_at(entry, "address"))
        except ValueError as exc:
            refusals.append(Refusal("node", name, f"InternalIP: {exc}"))
            continue
        # One per family, the first one, as the kubelet orders them.
        if all(a.version != addr.version for a in internal_ips):
            internal_ips.append(addr)

    unschedulable = value_at(obj, "spec", "unschedulable") is True
    ready = node_ready(value_at(obj, "status", "conditions"))

    routing = annotations.get(ROUTING_ANNOTATION)
    if routing is not None and routing not in ROUTING_MODES:
        refusals.append(
            Refusal(
                "node",
                name,
                f"annotation {ROUTING_ANNOTATION}={validate.printable(routing)} is not one of "
                f"{', '.join(ROUTING_MODES)}; using the default",
            )
        )
        routing = None
    if routing is None and annotations.get(FLANNEL_PREFIX + "backend-type") == "vxlan":
        routing = "vxlan"

    switch_port = None
    raw_sp = annotations.get(SWITCH_PORT_ANNOTATION)
    if raw_sp is not None:
        try:
            switch_port = parse_switch_port(raw_sp)
        except ValueError as exc:
            refusals.append(Refusal("node", name, f"annotation {SWITCH_PORT_ANNOTATION}: {exc}"))

    flannel = None
    if annotations.get(FLANNEL_PREFIX + "backend-type") == "vxlan":
        try:
            flannel = parse_flannel(annotations)
        except ValueError as exc:
            refusals.append(Refusal("node", name, f"flannel annotations: {exc}"))

    created = value_at(obj, "metadata", "creationTimestamp")
    node = Node(
        name=name,
        created=created if isinstance(created, str) else "",
        pod_cidrs=tuple(cidrs),
        internal_ips=tuple(internal_ips),
        unschedulable=unschedulable,
        routing=routing,
        switch_port=switch_port,
        flannel=flannel,
        labels=str_map(value_at(obj, "metadata", "labels")),
        ready=ready,
    )
    return node, refusals


MAX_CONDITIONS_READ = 16  # kubelets report 5; the informer keeps 16


def node_ready(conditions: Any) -> bool:
    """Whether the first Ready condition (as Kubernetes reads them) says "True"; anything
    else, a missing or malformed list included, is not ready."""
    if not isinstance(conditions, list):
        return False
    for entry in conditions[:MAX_CONDITIONS_READ]:
        if value_at(entry, "type") == "Ready":
            return value_at(entry, "status") == "True"
    return False


def parse_flannel(annotations: Mapping[str, str]) -> FlannelVxlan:
    """flannel's backend-data ({"VNI": 1, "VtepMAC": "..."}) and public-ip (public-ip-overwrite
    wins, as in flannel)."""
    raw = annotations.get(FLANNEL_PREFIX + "backend-data")
    if raw is None:
        raise ValueError("backend-data is missing")
    if len(raw) > MAX_BACKEND_DATA:  # flannel writes ~60 bytes; bound before parsing
        raise ValueError(f"backend-data is {len(raw)} bytes (at most {MAX_BACKEND_DATA})")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: '[' nested thousands deep
        raise ValueError(f"backend-data {validate.printable(raw)} is not JSON") from None
    if not isinstance(data, dict):
        raise ValueError("backend-data is not a JSON object")
    vni = data.get("VNI", 1)
    if isinstance(vni, bool) or not isinstance(vni, int) or not 1 <= vni <= 16777215:
        raise ValueError(f"VNI {validate.printable(vni)} is out of range")
    mac = validate.unicast_mac(data.get("VtepMAC"))
    ip_text = annotations.get(FLANNEL_PREFIX + "public-ip-overwrite") or annotations.get(
        FLANNEL_PREFIX + "public-ip"
    )
    if ip_text is None:
        raise ValueError("public-ip is missing")
    return FlannelVxlan(vni, mac, validate.host_address(ip_text))


def parse_switch_port(value: str) -> SwitchPort:
    switch, sep, port = value.partition("/")
    if not sep:
        raise ValueError(f"{validate.printable(value)} is not <switch hostname>/<port>")
    try:
        return SwitchPort(validate.hostname(switch), validate.interface_name(port))
    except ValueError as exc:
        raise ValueError(f"{validate.printable(value)}: {exc}") from None


@dataclass(frozen=True)
class ClusterState:
    nodes: tuple[Node, ...]
    refusals: tuple[Refusal, ...]

    def by_name(self) -> dict[str, Node]:
        return {n.name: n for n in self.nodes}


def parse_checked(obj: Any) -> tuple[Node | None, tuple[Refusal, ...]]:
    """parse_node(), where a parser bug costs that one Node (refused with the error), never the
    agent."""
    try:
        node, why = parse_node(obj)
    except Exception as exc:
        log.exception("Node object not parsed")
        raw_name = value_at(obj, "metadata", "name")
        try:
            name = validate.node_name(raw_name)
        except ValueError:
            name = validate.printable(raw_name)
        return None, (Refusal("node", name, f"could not be parsed: {exc!r}"[:200]),)
    return node, tuple(why)


def duplicate(name: str) -> Refusal:
    return Refusal("node", name, "appears more than once; first one kept")


def cluster_state(node_objects: Iterable[Any]) -> ClusterState:
    nodes: dict[str, Node] = {}
    refusals: list[Refusal] = []
    for obj in node_objects:
        node, why = parse_checked(obj)
        refusals.extend(why)
        if node is None:
            continue
        if node.name in nodes:  # cannot happen with a real API server; a file may do it
            refusals.append(duplicate(node.name))
            continue
        nodes[node.name] = node
    ordered = tuple(sorted(nodes.values(), key=lambda n: n.name))
    return ClusterState(ordered, tuple(refusals))
