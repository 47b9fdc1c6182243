"""Services and EndpointSlices validated into the little plan() needs to decide Service VIPs.

A Service names its VIPs (status.loadBalancer.ingress[].ip of a LoadBalancer, spec.externalIPs
of any type) and its externalTrafficPolicy; an EndpointSlice (discovery.k8s.io/v1) says on which
nodes the Service has ready endpoints. Both are hostile until read here, like Nodes
(agent.cluster.nodes): a bad value is refused with a reason, and nothing here raises.

What is kept is small on purpose (5,000 Services and 100,000 endpoints must stay cheap): a
Service is its key, age, policy and VIP addresses; an EndpointSlice is the set of node names
with a ready (and with a serving) endpoint, not the endpoints. Which VIPs a node may announce
(pools, policies, nodes' readiness) is plan()'s business (agent.plan.services); here a VIP only
has to be an IP address.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from agent import validate
from agent.cluster.nodes import IPAddress, Refusal, value_at
from agent.cluster.pod_index import namespace_name, object_name

log = logging.getLogger(__name__)

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
# A Node label (any value): Kubernetes keeps such a node out of every load balancer.
EXCLUDE_LB_LABEL = "node.kubernetes.io/exclude-from-external-load-balancers"
DISCOVERY_V1 = "discovery.k8s.io/v1"
POLICIES = ("Cluster", "Local")
# A LoadBalancer gets one ingress IP per family, externalIPs a few: 16 is generous. A Service
# naming more (1,000 externalIPs) is refused whole, before its list is read.
MAX_VIPS_PER_SERVICE = 16
MAX_ENDPOINTS_PER_SLICE = 1000  # the API server's own limit
# A Service name is a DNS-1035 label (the API server's rule): a letter first.
_DNS1035_LABEL_RE = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
MAX_TIMESTAMP = 64


@dataclass(frozen=True, slots=True)
class Service:
    namespace: str
    name: str
    created: str  # creationTimestamp; orders VIPs when the route tables are short
    policy: str  # spec.externalTrafficPolicy: Cluster | Local
    vips: tuple[IPAddress, ...]  # LoadBalancer ingress IPs, then externalIPs; each once

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class EndpointSlice:
    namespace: str
    name: str
    service: str  # its kubernetes.io/service-name label
    ready_nodes: frozenset[str]  # nodes with at least one ready endpoint
    serving_nodes: frozenset[str]  # nodes with at least one serving endpoint (terminating too)

    @property
    def service_key(self) -> str:
        return f"{self.namespace}/{self.service}"


@dataclass(frozen=True)
class ServiceState:
    """Every Service (by key, in key order), per Service key the nodes with a ready endpoint in
    any of its slices, and what was refused."""

    services: tuple[Service, ...] = ()
    ready_nodes: Mapping[str, frozenset[str]] = field(default_factory=dict)
    refusals: tuple[Refusal, ...] = ()


NO_SERVICES = ServiceState()


def service_name(value: object) -> str:
    if not isinstance(value, str) or len(value) > 63 or not _DNS1035_LABEL_RE.fullmatch(value):
        raise ValueError(f"Service name {validate.printable(value)} is not a DNS-1035 label")
    return value


def vip_address(value: object) -> IPAddress:
    """An IP address as written (canonicalised); what it may be used for is plan()'s rule."""
    if not isinstance(value, str) or "%" in value:
        raise ValueError(f"{validate.printable(value)} is not an IP address")
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"{validate.printable(value)} is not an IP address") from None


def _identity(obj: Any, kind: str, name_of: Any) -> tuple[str, str] | Refusal:
    raw_ns, raw_name = value_at(obj, "metadata", "namespace"), value_at(obj, "metadata", "name")
    try:
        return namespace_name(raw_ns), name_of(raw_name)
    except ValueError as exc:
        subject = f"{validate.printable(raw_ns, 40)}/{validate.printable(raw_name, 60)}"
        return Refusal(kind, subject, str(exc))


def parse_service(obj: Any) -> tuple[Service | None, list[Refusal]]:
    """One Service dict -> a Service (None: nothing of it may be used) and the refusals. A bad
    VIP refuses that VIP; a bad identity, policy or too many VIPs refuse the Service."""
    identity = _identity(obj, "service", service_name)
    if isinstance(identity, Refusal):
        return None, [identity]
    namespace, name = identity
    key = f"{namespace}/{name}"

    raw_policy = value_at(obj, "spec", "externalTrafficPolicy")
    policy = "Cluster" if raw_policy in (None, "") else raw_policy
    if policy not in POLICIES:
        # Guessing either way is wrong: Cluster would let every node attract it, Local would
        # drop it from nodes that serve it.
        return None, [Refusal("service", key, f"spec.externalTrafficPolicy "
                              f"{validate.printable(raw_policy)} is not Cluster or Local")]

    refusals: list[Refusal] = []
    sources: list[tuple[str, list[Any]]] = []
    is_lb = value_at(obj, "spec", "type") == "LoadBalancer"
    ingress = value_at(obj, "status", "loadBalancer", "ingress") if is_lb else None
    external = value_at(obj, "spec", "externalIPs")
    for path, raw in (("status.loadBalancer.ingress", ingress), ("spec.externalIPs", external)):
        if raw is None:
            continue
        if not isinstance(raw, list):
            refusals.append(Refusal("service", key, f"{path} is not a list"))
            continue
        sources.append((path, raw))
    named = sum(len(raw) for _, raw in sources)
    if named > MAX_VIPS_PER_SERVICE:
        return None, [*refusals, Refusal("service", key, f"names {named} VIPs (at most "
                                         f"{MAX_VIPS_PER_SERVICE} per Service); none is used")]

    vips: list[IPAddress] = []
    for path, raw in sources:
        for index, entry in enumerate(raw):
            if path == "spec.externalIPs":
                text, where = entry, f"{path}[{index}]"
            elif isinstance(entry, Mapping):
                if "ip" not in entry:
                    continue  # a hostname-only ingress (a cloud's DNS name): no VIP here
                text, where = entry["ip"], f"{path}[{index}].ip"
            else:
                refusals.append(Refusal("service", key, f"{path}[{index}] is not an object"))
                continue
            try:
                addr = vip_address(text)
            except ValueError as exc:
                refusals.append(Refusal("service", key, f"{where}: {exc}"))
                continue
            if addr not in vips:
                vips.append(addr)

    created = value_at(obj, "metadata", "creationTimestamp")
    created = created if isinstance(created, str) and len(created) <= MAX_TIMESTAMP else ""
    return Service(namespace, name, created, policy, tuple(vips)), refusals


def parse_endpoint_slice(obj: Any) -> tuple[EndpointSlice | None, list[Refusal]]:
    """One EndpointSlice dict -> the nodes where its Service has ready and serving endpoints.
    A slice of no Service (no kubernetes.io/service-name label) is not ours to read."""
    identity = _identity(obj, "endpointslice", object_name)
    if isinstance(identity, Refusal):
        return None, [identity]
    namespace, name = identity
    key = f"{namespace}/{name}"
    api_version = value_at(obj, "apiVersion")
    if api_version is not None and api_version != DISCOVERY_V1:
        return None, [Refusal("endpointslice", key, f"apiVersion "
                              f"{validate.printable(api_version)} is not {DISCOVERY_V1}")]
    labels = value_at(obj, "metadata", "labels")
    raw_service = value_at(labels, SERVICE_NAME_LABEL)
    if raw_service is None:
        return None, []
    try:
        service = service_name(raw_service)
    except ValueError as exc:
        return None, [Refusal("endpointslice", key, f"label {SERVICE_NAME_LABEL}: {exc}")]

    endpoints = value_at(obj, "endpoints")
    if endpoints is None:
        endpoints = []  # the API sends null for a slice without endpoints
    if not isinstance(endpoints, list):
        return None, [Refusal("endpointslice", key, "endpoints is not a list")]
    if len(endpoints) > MAX_ENDPOINTS_PER_SLICE:
        return None, [Refusal("endpointslice", key, f"{len(endpoints)} endpoints (the API "
                              f"allows {MAX_ENDPOINTS_PER_SLICE}); none is used")]
    ready: set[str] = set()
    serving: set[str] = set()
    bad: list[Any] = []
    for entry in endpoints:
        # Up to 1,000 per slice, 100,000 in a cluster: plain dict access, not value_at.
        if not isinstance(entry, Mapping):
            continue
        node = entry.get("nodeName")
        if node is None:
            continue  # not on a node (an external endpoint): no node serves it
        conditions = entry.get("conditions")
        # Kubernetes: ready nil = unknown, interpret as ready; serving nil = defer to ready.
        # A value that is not a boolean (hostile) counts as not ready.
        is_ready = _condition(conditions, "ready", True)
        is_serving = _condition(conditions, "serving", is_ready)
        if not (is_ready or is_serving):
            continue
        if not isinstance(node, str) or (node not in ready and node not in serving
                                          and not _valid_node_name(node)):
            bad.append(node)
            continue
        if is_ready:
            ready.add(node)
        if is_serving:
            serving.add(node)
    refusals = []
    if bad:
        refusals.append(Refusal("endpointslice", key, f"{len(bad)} endpoint(s) with a nodeName "
                                f"that is no node name, e.g. {validate.printable(bad[0])}; "
                                "ignored"))
    ready_set = frozenset(ready)
    serving_set = ready_set if serving == ready else frozenset(serving)  # one set when equal
    return EndpointSlice(namespace, name, service, ready_set, serving_set), refusals


def _condition(conditions: Any, name: str, absent: bool) -> bool:
    if not isinstance(conditions, Mapping):
        return absent if conditions is None else False
    value = conditions.get(name)
    return absent if value is None else value is True


def _valid_node_name(value: str) -> bool:
    try:
        validate.node_name(value)
    except ValueError:
        return False
    return True


_T = TypeVar("_T")


def _checked(parse: Callable[[Any], tuple[_T | None, list[Refusal]]], kind: str,
             obj: Any) -> tuple[_T | None, tuple[Refusal, ...]]:
    """A parser, where a bug in it costs that one object (refused with the error), never the
    agent."""
    try:
        parsed, why = parse(obj)
    except Exception as exc:
        log.exception("%s object not parsed", kind)
        name = validate.printable(value_at(obj, "metadata", "name"))
        return None, (Refusal(kind, name, f"could not be parsed: {exc!r}"[:200]),)
    return parsed, tuple(why)


def parse_service_checked(obj: Any) -> tuple[Service | None, tuple[Refusal, ...]]:
    return _checked(parse_service, "service", obj)


def parse_slice_checked(obj: Any) -> tuple[EndpointSlice | None, tuple[Refusal, ...]]:
    return _checked(parse_endpoint_slice, "endpointslice", obj)


ParsedService = tuple[Service | None, tuple[Refusal, ...]]
ParsedSlice = tuple[EndpointSlice | None, tuple[Refusal, ...]]


def assemble(services: Iterable[ParsedService], slices: Iterable[ParsedSlice]) -> ServiceState:
    """The ServiceState of parsed objects, in input order (refusals keep it)."""
    by_key: dict[str, Service] = {}
    refusals: list[Refusal] = []
    for service, why in services:
        refusals.extend(why)
        if service is None:
            continue
        if service.key in by_key:  # cannot happen with a real API server; a file may do it
            refusals.append(Refusal("service", service.key, "appears more than once; first "
                                    "one kept"))
            continue
        by_key[service.key] = service
    ready: dict[str, set[str]] = {}
    seen: set[str] = set()
    for endpoint_slice, why in slices:
        refusals.extend(why)
        if endpoint_slice is None:
            continue
        slice_key = f"{endpoint_slice.namespace}/{endpoint_slice.name}"
        if slice_key in seen:
            refusals.append(Refusal("endpointslice", slice_key, "appears more than once; first "
                                    "one kept"))
            continue
        seen.add(slice_key)
        if endpoint_slice.ready_nodes:
            ready.setdefault(endpoint_slice.service_key, set()).update(endpoint_slice.ready_nodes)
    return ServiceState(
        services=tuple(by_key[k] for k in sorted(by_key)),
        ready_nodes={k: frozenset(v) for k, v in ready.items()},
        refusals=tuple(refusals),
    )


def service_state(service_objects: Iterable[Any], slice_objects: Iterable[Any]) -> ServiceState:
    """Services and EndpointSlices as plan() reads them, from scratch."""
    return assemble((parse_service_checked(o) for o in service_objects),
                    (parse_slice_checked(o) for o in slice_objects))
