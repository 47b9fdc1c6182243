"""Service VIPs in the status: the plan's verdict next to what the leaf's FIB forwards.

Pure functions of the plan's `ServiceVip`s, the attachments and the FIB reading
(agent.status.announcers): `service_infos` builds `fabricctl services`' rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from agent.plan.model import ServiceVip
from agent.status.model import AttachmentInfo, FibHop, ServiceInfo
from agent.vocabulary import UNKNOWN


def announcing_nodes(hops: Sequence[FibHop], port_node: Mapping[str, str],
                     ip_node: Mapping[str, str]) -> tuple[str, ...]:
    """The nodes behind a VIP route's next hops: a BGP hop by the server port it leaves by
    (unnumbered: its gateway is a link-local address), one of the agent's own routes by its
    gateway, a node's InternalIP. Hops to anything else (uplinks, unknown ports) name no node:
    a route via the spines is no node of this leaf announcing."""
    nodes = set()
    for hop in hops:
        node = port_node.get(hop.device) if hop.source == "bgp" else ip_node.get(
            hop.gateway or "")
        if node is not None:
            nodes.add(node)
    return tuple(sorted(nodes))


def service_infos(vips: Sequence[ServiceVip], attachments: Sequence[AttachmentInfo],
                  fib: Mapping[str, Sequence[FibHop]] | None) -> list[ServiceInfo]:
    """One row per VIP, in the plan's order (address order, IPv4 first). `fib` None: the FIB
    was not read, so who announces is unknown and so is the state of a VIP not refused."""
    port_node = {a.port: a.node for a in attachments}
    node_port = {a.node: a.port for a in attachments}
    ip_node = {ip: a.node for a in attachments for ip in a.node_ips}
    rows = []
    # Most VIPs of a leaf share their next hops (one tuple, agent.status.announcers) and their
    # permitted nodes (every Cluster VIP: the same tuple, from the plan): what follows from
    # them is worked out once per distinct pair, not once per VIP.
    known: dict[int, tuple[str, ...]] = {}
    shared: dict[tuple[tuple[str, ...], tuple[str, ...] | None], tuple[bool, dict[str, str]]] = {}
    for vip in vips:
        announcing = None
        if fib is not None:
            hops = fib.get(vip.prefix, ())
            announcing = known.get(id(hops))
            if announcing is None:
                announcing = known[id(hops)] = announcing_nodes(hops, port_node, ip_node)
        key = (vip.nodes_permitted, announcing)
        if key not in shared:
            named = sorted({*vip.nodes_permitted, *(announcing or ())})
            shared[key] = (bool(set(announcing or ()) & set(vip.nodes_permitted)),
                           {n: node_port[n] for n in named if n in node_port})
        served, ports = shared[key]
        if vip.refused is not None:
            state = "refused"
        elif announcing is None:
            state = UNKNOWN
        else:
            state = "ok" if served else "no-announcer"
        rows.append(ServiceInfo(
            vip=vip.vip, services=vip.services, policy=vip.policy,
            nodes_permitted=vip.nodes_permitted, nodes_announcing=announcing, state=state,
            reason=vip.refused, prefix=vip.prefix, ports=ports))  # shared: never mutated
    return rows
