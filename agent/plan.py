"""plan(): cluster state + config -> desired state, with every refusal and its reason.

Pure: no I/O, no clock, no randomness. Appliers diff its output against what they observe; tests
call it without root. When two nodes claim the same address space the older Node (by
creationTimestamp, then name) keeps it, so a newcomer can never take over routes that were
already programmed for someone else.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass

from agent.attachments import Attachment, resolve
from agent.cluster import ClusterState, IPNetwork, Node, Refusal
from agent.config import AgentConfig


@dataclass(frozen=True)
class ServerPeer:
    """One server port's BGP session. node None: nothing known is cabled there, so the session
    exists (a node can come up before its Node object) but accepts and announces nothing."""

    port: str
    node: str | None
    accept_v4: tuple[str, ...] = ()
    accept_v6: tuple[str, ...] = ()
    draining: bool = False


@dataclass(frozen=True)
class FrrDesired:
    hostname: str
    asn: int
    router_id: str
    server_peers: tuple[ServerPeer, ...]
    uplinks: tuple[str, ...]
    advertise_v4: tuple[str, ...]  # prefixes the spines may receive from this leaf
    advertise_v6: tuple[str, ...]
    aggregate_v4: tuple[str, ...]
    aggregate_v6: tuple[str, ...]
    max_prefixes: int
    max_prefix_restart_minutes: int


@dataclass(frozen=True)
class PlannedAttachment:
    port: str
    node: str
    source: str
    routing: str
    prefixes: tuple[str, ...]  # accepted from this node
    draining: bool


@dataclass(frozen=True)
class Plan:
    frr: FrrDesired
    attachments: tuple[PlannedAttachment, ...]
    refusals: tuple[Refusal, ...]


def _host_prefix(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> IPNetwork:
    return ipaddress.ip_network(f"{addr}/{addr.max_prefixlen}")


def admitted_prefixes(
    nodes: tuple[Node, ...], supernets: list[IPNetwork], include_node_ips: bool
) -> tuple[dict[str, list[IPNetwork]], list[Refusal]]:
    """Per node, the prefixes it may announce: its pod CIDRs inside the supernets, not
    overlapping an older node's, plus its InternalIP host routes unless another node's space
    already covers them."""
    refusals: list[Refusal] = []
    taken: list[tuple[IPNetwork, str]] = []
    result: dict[str, list[IPNetwork]] = {}

    def owner_of(net: IPNetwork) -> str | None:
        for other, owner in taken:
            if other.version == net.version and other.overlaps(net):
                return owner
        return None

    for node in sorted(nodes, key=lambda n: (n.created, n.name)):
        accepted: list[IPNetwork] = []
        for net in node.pod_cidrs:
            if not any(net.version == s.version and net.subnet_of(s) for s in supernets):
                refusals.append(Refusal("prefix", f"{node.name} {net}",
                                        "outside fabric.pod_supernets"))
                continue
            owner = owner_of(net)
            if owner is not None:
                refusals.append(Refusal("prefix", f"{node.name} {net}",
                                        f"overlaps a pod CIDR of older node {owner}"))
                continue
            accepted.append(net)
        taken.extend((net, node.name) for net in accepted)
        result[node.name] = accepted

    if include_node_ips:
        for node in sorted(nodes, key=lambda n: (n.created, n.name)):
            for addr in node.internal_ips:
                host = _host_prefix(addr)
                owner = owner_of(host)
                if owner is not None and owner != node.name:
                    refusals.append(Refusal("prefix", f"{node.name} {host}",
                                            f"InternalIP lies in address space of node {owner}"))
                    continue
                if owner is None:
                    taken.append((host, node.name))
                    result[node.name].append(host)
    return result, refusals


def plan(
    config: AgentConfig,
    cluster: ClusterState,
    lldp_neighbors: Mapping[str, str] | None = None,
) -> Plan:
    fabric = config.fabric
    refusals: list[Refusal] = list(cluster.refusals)
    nodes = cluster.by_name()

    attachments, why = resolve(
        switch_hostname=config.switch.hostname,
        server_ports=fabric.server_ports,
        static=fabric.attachments,
        nodes=cluster.nodes,
        lldp_neighbors=(lldp_neighbors or {}) if fabric.lldp else {},
    )
    refusals.extend(why)

    supernets = [ipaddress.ip_network(s) for s in fabric.pod_supernets]
    prefixes, why = admitted_prefixes(cluster.nodes, supernets, fabric.advertise_node_ips)
    refusals.extend(why)

    by_port: dict[str, Attachment] = {a.port: a for a in attachments}
    peers: list[ServerPeer] = []
    planned: list[PlannedAttachment] = []
    advertised: list[IPNetwork] = []
    for port in fabric.server_ports:
        att = by_port.get(port)
        node = nodes.get(att.node) if att else None
        if att is not None and node is None:
            refusals.append(Refusal("attachment", att.node, f"{att.source} puts it on {port} "
                                    "but no such Node exists; the port accepts nothing"))
        if att is None or node is None:
            peers.append(ServerPeer(port, None))
            continue
        routing = node.routing or fabric.default_routing
        accepted = prefixes.get(node.name, [])
        planned.append(PlannedAttachment(port, node.name, att.source, routing,
                                         tuple(str(p) for p in accepted), node.unschedulable))
        if routing != "bgp":
            # The kernel data plane for static and overlay nodes is not part of this version;
            # refusing keeps the port from peering with a node that will not speak BGP.
            refusals.append(Refusal("node", node.name, f"routing mode {routing} is not "
                                    "supported by this agent version; no session on " + port))
            continue
        advertised.extend(accepted)
        peers.append(ServerPeer(
            port=port,
            node=node.name,
            accept_v4=tuple(str(p) for p in accepted if p.version == 4),
            accept_v6=tuple(str(p) for p in accepted if p.version == 6),
            draining=node.unschedulable,
        ))

    aggregates = supernets if fabric.aggregate_to_supernets else []
    upstream = aggregates or sorted(advertised, key=lambda n: (n.version, n))
    frr = FrrDesired(
        hostname=config.switch.hostname,
        asn=config.switch.asn,
        router_id=config.switch.router_id,
        server_peers=tuple(peers),
        uplinks=tuple(fabric.uplinks),
        advertise_v4=tuple(str(n) for n in upstream if n.version == 4),
        advertise_v6=tuple(str(n) for n in upstream if n.version == 6),
        aggregate_v4=tuple(str(n) for n in aggregates if n.version == 4),
        aggregate_v6=tuple(str(n) for n in aggregates if n.version == 6),
        max_prefixes=fabric.max_prefixes_per_node,
        max_prefix_restart_minutes=fabric.max_prefix_restart_minutes,
    )
    return Plan(frr, tuple(planned), tuple(refusals))
