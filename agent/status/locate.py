"""fabricctl's `locate Q`: a pure function of the pod index, the attachments, the routes and
the Service VIPs.

Q is a pod IP, namespace/pod, a node name, a node IP or a Service VIP; the answer names the
node, its port and the route that carries the address. For a VIP, it names the Services, every
node permitted to serve it with its port and whether the leaf forwards to it, and, in `node`
and `port`, the first node that announces it (else the first permitted).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence

from agent import validate
from agent.cluster.pod_index import (
    MAX_QUERY_LENGTH,
    PodIndex,
    PodInfo,
    namespace_name,
    object_name,
)
from agent.status.model import (
    AttachmentInfo,
    InvalidQuery,
    LocateResult,
    NotFound,
    RouteInfo,
    ServiceInfo,
)


def _network(prefix: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(prefix, strict=False)
    except ValueError:
        return None


def _best_route(
    addr: ipaddress.IPv4Address | ipaddress.IPv6Address,
    attachment: AttachmentInfo,
    routes: Sequence[RouteInfo],
) -> tuple[str, str]:
    """(route prefix, next hop) for an address of this node: the longest desired route of the
    node that contains it, else the longest of the node's admitted prefixes."""
    best: tuple[int, str, str] | None = None
    for route in routes:
        if route.owner != attachment.node or not route.desired:
            continue
        net = _network(route.prefix)
        if net is not None and addr in net and (best is None or net.prefixlen > best[0]):
            best = (net.prefixlen, route.prefix, route.next_hop)
    if best is not None:
        return best[1], best[2]
    for prefix in attachment.prefixes:
        net = _network(prefix)
        if net is not None and addr in net and (best is None or net.prefixlen > best[0]):
            best = (net.prefixlen, prefix, "")
    if best is None:
        return "", ""
    # BGP unnumbered: the next hop is the node's link-local address on the port.
    return best[1], (attachment.port if attachment.routing == "bgp" else "")


def _answer(
    query: str,
    matched: str,
    att: AttachmentInfo,
    routes: Sequence[RouteInfo],
    addr: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None,
    pod: PodInfo | None = None,
) -> LocateResult:
    prefix, next_hop = _best_route(addr, att, routes) if addr is not None else ("", "")
    return LocateResult(
        query=query,
        matched=matched,
        node=att.node,
        port=att.port,
        routing=att.routing,
        route_prefix=prefix,
        next_hop=next_hop,
        vtep=att.vtep if att.routing == "vxlan" else None,
        pod=pod,
        node_ips=att.node_ips,
        node_prefixes=att.prefixes,
        bgp_state=att.bgp_state,
    )


def _answer_vip(query: str, info: ServiceInfo,
                by_node: Mapping[str, AttachmentInfo]) -> LocateResult:
    announcing = info.nodes_announcing or ()
    serving = [n for n in announcing if n in info.nodes_permitted]
    node = next(iter([*serving, *announcing, *info.nodes_permitted]), "")
    att = by_node.get(node)
    return LocateResult(
        query=query,
        matched="service_vip",
        node=node,
        port=att.port if att else info.ports.get(node, ""),
        routing=att.routing if att else "unknown",
        route_prefix=info.prefix,
        node_ips=att.node_ips if att else (),
        bgp_state=att.bgp_state if att else "unknown",
        service=info,
    )


def _locate_pod(
    query: str,
    pod: PodInfo,
    by_node: Mapping[str, AttachmentInfo],
    routes: Sequence[RouteInfo],
    matched: str,
    addr: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None,
) -> LocateResult:
    att = by_node.get(pod.node)
    if att is None:
        raise NotFound(f"pod {pod.key} is on node {pod.node}, which is not attached to this leaf")
    if addr is None and pod.ips and not pod.host_network:
        addr = ipaddress.ip_address(pod.ips[0])
    elif addr is None and pod.host_network and att.node_ips:
        addr = ipaddress.ip_address(att.node_ips[0])
    return _answer(query, matched, att, routes, addr, pod)


def locate(
    query: str,
    index: PodIndex,
    attachments: Sequence[AttachmentInfo],
    routes: Sequence[RouteInfo] = (),
    services: Sequence[ServiceInfo] = (),
) -> LocateResult:
    """Answer `fabricctl locate Q`: Q is a pod IP, namespace/pod, node name, node IP, Service
    VIP, or a pod name that is unique across namespaces. Raises InvalidQuery or NotFound with a
    sentence an operator can act on."""
    if not isinstance(query, str) or not query or len(query) > MAX_QUERY_LENGTH:
        raise InvalidQuery(f"query {validate.printable(query)} is empty or too long")
    by_node = {a.node: a for a in attachments}

    if "/" in query:
        ns, _, name = query.partition("/")
        try:
            namespace_name(ns)
            object_name(name, "pod name")
        except ValueError as exc:
            raise InvalidQuery(f"{exc} (expected namespace/pod)") from None
        pod = index.get(ns, name)
        if pod is None:
            raise NotFound(f"no pod {ns}/{name} on the nodes behind this leaf")
        return _locate_pod(query, pod, by_node, routes, "pod")

    addr: ipaddress.IPv4Address | ipaddress.IPv6Address | None
    try:
        addr = ipaddress.ip_address(query) if "%" not in query else None
    except ValueError:
        addr = None
    if addr is not None:
        canonical = str(addr)
        for att in attachments:  # a node's own address wins over any pod's claim
            if canonical in att.node_ips:
                return _answer(query, "node_ip", att, routes, addr)
        pod = index.by_ip(canonical)
        if pod is not None:
            return _locate_pod(query, pod, by_node, routes, "pod_ip", addr)
        # After nodes and pods: a VIP is refused when it is one of theirs, and the node or pod
        # is then what the address reaches. Before pod CIDRs: a refused VIP there says why.
        for info in services:
            if info.vip == canonical:
                return _answer_vip(query, info, by_node)
        best: tuple[int, AttachmentInfo] | None = None
        for att in attachments:
            for prefix in att.prefixes:
                net = _network(prefix)
                if net is not None and addr in net and (best is None or net.prefixlen > best[0]):
                    best = (net.prefixlen, att)
        if best is not None:
            return _answer(query, "pod_prefix", best[1], routes, addr)
        raise NotFound(f"{canonical} is no pod, node or Service VIP address behind this leaf")

    try:
        object_name(query, "query")
    except ValueError:
        raise InvalidQuery(f"{validate.printable(query)} is not a pod IP, namespace/pod, node "
                           "name, node IP or Service VIP") from None
    att = by_node.get(query)
    if att is not None:
        return _answer(query, "node", att, routes)
    pods = index.named(query)
    if len(pods) == 1:
        return _locate_pod(query, pods[0], by_node, routes, "pod")
    if len(pods) > 1:
        namespaces = ", ".join(p.namespace for p in pods)
        raise InvalidQuery(f"pod name {query} is in several namespaces ({namespaces}); "
                           "use namespace/pod")
    raise NotFound(f"{query} is no node attached to this leaf nor a pod on one")
