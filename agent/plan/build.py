"""plan(): cluster state + config -> desired state, with every refusal and its reason.

Pure: no I/O, no clock, no randomness. Appliers diff its output against what they observe; tests
call it without root. When two nodes claim the same address space the older Node (by
creationTimestamp, then name) keeps it, so a newcomer can never take over routes that were
already programmed for someone else.

plan() derives what it reads of the cluster (attachments, address ownership, overlay nodes) into
a `ClusterView` and assembles the desired state from that; `agent.plan.incremental.PlanCache`
keeps the same view up to date change by change and hands it to the same assembly, so the two
cannot disagree on anything but the view, which the tests compare on random churn.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace

from agent.cluster.attachments import Attachment, resolve
from agent.cluster.nodes import ClusterState, IPNetwork, Node, Refusal
from agent.config import AgentConfig
from agent.headroom.profiles import capacity_for
from agent.headroom.resources import Capacity
from agent.plan.admission import admit, candidates_for
from agent.plan.costs import node_costs
from agent.plan.model import (
    DataplaneDesired,
    FrrDesired,
    Plan,
    PlannedAttachment,
    ServerPeer,
    StaticRoute,
    VtepDevice,
    VxlanPeer,
)
from agent.plan.ownership import HostRouteRules, admitted_prefixes, host_prefix

__all__ = ["ClusterView", "HostRouteRules", "admitted_prefixes", "derive", "plan", "plan_view",
           "static_routes", "vxlan_peers"]


@dataclass(frozen=True)
class ClusterView:
    """What plan() reads of the cluster, derived from it (from scratch by `derive`, or kept up
    to date by PlanCache)."""

    cluster: ClusterState
    by_name: Mapping[str, Node]
    attachments: Sequence[Attachment]
    attachment_refusals: Sequence[Refusal]
    prefixes: Mapping[str, Sequence[IPNetwork]]  # per node: what it may announce
    prefix_refusals: Sequence[Refusal]
    overlay: Sequence[Node]  # at least every node in vxlan mode, any order


def derive(config: AgentConfig, cluster: ClusterState,
           lldp_neighbors: Mapping[str, str] | None = None) -> ClusterView:
    fabric = config.fabric
    attachments, att_refusals = resolve(
        switch_hostname=config.switch.hostname,
        server_ports=fabric.server_ports,
        static=fabric.attachments,
        nodes=cluster.nodes,
        lldp_neighbors=(lldp_neighbors or {}) if fabric.lldp else {},
    )
    supernets = [ipaddress.ip_network(s) for s in fabric.pod_supernets]
    rules = HostRouteRules.from_config(config)
    prefixes, prefix_refusals = admitted_prefixes(cluster.nodes, supernets,
                                                  fabric.advertise_node_ips, rules)
    return ClusterView(cluster, cluster.by_name(), attachments, att_refusals, prefixes,
                       prefix_refusals, cluster.nodes)


def plan(
    config: AgentConfig,
    cluster: ClusterState,
    lldp_neighbors: Mapping[str, str] | None = None,
    *,
    capacity: Mapping[str, Capacity] | None = None,
    programmed: Collection[str] = (),
) -> Plan:
    """The desired state. With headroom admission on (the default), nodes whose entries would
    not fit the ASIC's capacity minus the reserve are refused, newest first, keeping what is
    `programmed` (the previous plan's admitted nodes): their sessions stay up but accept
    nothing, and no kernel or SONiC entry is asked for them. `capacity` defaults to the
    configured profile and overrides. Entries others hold (uplink routes) are not subtracted:
    the reserve keeps room for them (README, Known limits)."""
    return plan_view(config, derive(config, cluster, lldp_neighbors), capacity=capacity,
                     programmed=programmed)


def plan_view(
    config: AgentConfig,
    view: ClusterView,
    *,
    capacity: Mapping[str, Capacity] | None = None,
    programmed: Collection[str] = (),
) -> Plan:
    """plan() from an already derived view of the cluster."""
    full = _plan(config, view, frozenset())
    if capacity is None:
        capacity = capacity_for(config.headroom.profile, config.headroom.capacity)
    costs = node_costs(full.attachments, full.dataplane)
    # costs holds served nodes only, all in the view: no walk over the whole cluster.
    served = [view.by_name[name] for name in costs]
    result = admit(candidates_for(served, costs), costs, capacity,
                   config.headroom.reserve_percent, programmed)
    if not config.headroom.admission or not result.refused:
        return replace(full, admission=result, costs=costs)
    limited = _plan(config, view, frozenset(result.refused_nodes))
    refusals = limited.refusals + tuple(r.as_refusal() for r in result.refused)
    return replace(limited, refusals=refusals, admission=result, costs=costs)


def _plan(config: AgentConfig, view: ClusterView, refused: frozenset[str]) -> Plan:
    fabric = config.fabric
    refusals: list[Refusal] = [*view.cluster.refusals, *view.attachment_refusals,
                               *view.prefix_refusals]
    nodes = view.by_name
    supernets = [ipaddress.ip_network(s) for s in fabric.pod_supernets]
    rules = HostRouteRules.from_config(config)

    def accepted_by(name: str) -> list[IPNetwork]:
        if name in refused:  # no room in the ASIC: the node's space stays reserved, unused
            return []
        return list(view.prefixes.get(name, ()))

    by_port: dict[str, Attachment] = {a.port: a for a in view.attachments}
    peers: list[ServerPeer] = []
    planned: list[PlannedAttachment] = []
    advertised: list[IPNetwork] = []
    static: list[StaticRoute] = []
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
        accepted = accepted_by(node.name)
        planned.append(PlannedAttachment(port, node.name, att.source, routing,
                                         tuple(str(p) for p in accepted), node.unschedulable))
        if routing == "static":
            routes, why = static_routes(node, accepted, port, rules)
            static.extend(routes)
            refusals.extend(why)
        if routing != "bgp":
            continue  # the port gets no BGP session: the node does not speak BGP
        advertised.extend(accepted)
        peers.append(ServerPeer(
            port=port,
            node=node.name,
            accept_v4=tuple(str(p) for p in accepted if p.version == 4),
            accept_v6=tuple(str(p) for p in accepted if p.version == 6),
            draining=node.unschedulable,
        ))

    overlay = tuple(n for n in view.overlay if n.name not in refused)
    vtep, peers_vx, why = vxlan_peers(config, overlay, view.prefixes)
    refusals.extend(why)
    dataplane = DataplaneDesired(
        route_protocol=config.dataplane.route_protocol,
        static_routes=tuple(static),
        vtep=vtep,
        vxlan_peers=peers_vx,
    )
    routed_here = [ipaddress.ip_network(p) for p in dataplane.prefixes]
    advertised.extend(routed_here)

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
        redistribute_v4=tuple(str(n) for n in routed_here if n.version == 4),
        redistribute_v6=tuple(str(n) for n in routed_here if n.version == 6),
        **_originated(config, routed_here),
    )
    return Plan(frr, tuple(planned), tuple(refusals), dataplane)


def _originated(config: AgentConfig, routed_here: list[IPNetwork]) -> dict[str, tuple[str, ...]]:
    if config.dataplane.backend != "sonic":
        return {}
    return {"originate_v4": tuple(str(n) for n in routed_here if n.version == 4),
            "originate_v6": tuple(str(n) for n in routed_here if n.version == 6)}


def static_routes(
    node: Node, accepted: list[IPNetwork], port: str, rules: HostRouteRules | None = None
) -> tuple[list[StaticRoute], list[Refusal]]:
    """A static node's admitted pod CIDRs, each via its InternalIP of the same family, out of
    `port`, the server port the node is attached to. An InternalIP `rules` refuse as a host
    route is no next hop either: via the switch's own address or a VIP the route would loop or
    send the node's pods' traffic elsewhere."""
    rules = rules or HostRouteRules()
    routes, refusals = [], []
    for net in accepted:
        if net.prefixlen == net.max_prefixlen and any(net.network_address == ip
                                                      for ip in node.internal_ips):
            continue  # its own host route: the node is directly connected
        family = [ip for ip in node.internal_ips if ip.version == net.version]
        why = {ip: rules.problem(host_prefix(ip)) for ip in family}
        via = next((ip for ip in family if why[ip] is None), None)
        if via is None:
            detail = "".join(f" ({ip}: {why[ip]})" for ip in family)
            refusals.append(Refusal("prefix", f"{node.name} {net}", f"static routing needs an "
                                    f"IPv{net.version} InternalIP as next hop{detail}"))
            continue
        routes.append(StaticRoute(node.name, str(net), str(via), port))
    return routes, refusals


def vxlan_peers(
    config: AgentConfig, nodes: Sequence[Node], prefixes: Mapping[str, Sequence[IPNetwork]]
) -> tuple[VtepDevice | None, tuple[VxlanPeer, ...], list[Refusal]]:
    """Every served node in vxlan mode becomes a flannel peer of the switch's VTEP. Overlay nodes
    are reached over the underlay, so, unlike static nodes, they need not sit behind a port."""
    vx = config.dataplane.vxlan
    refusals: list[Refusal] = []
    peers: list[VxlanPeer] = []
    macs: dict[str, str] = {}
    for node in sorted(nodes, key=lambda n: (n.created, n.name)):
        if (node.routing or config.fabric.default_routing) != "vxlan":
            continue
        problem = None
        pod = next((p for p in prefixes.get(node.name, []) if p.version == 4
                    and p in node.pod_cidrs), None)
        if config.switch.vtep_ip is None:
            problem = "switch.vtep_ip is not configured"
        elif node.flannel is None:
            problem = "vxlan routing needs flannel's backend-data and public-ip annotations"
        elif node.flannel.vni != vx.vni:
            problem = f"flannel VNI {node.flannel.vni} differs from dataplane.vxlan.vni {vx.vni}"
        elif node.flannel.public_ip.version != 4:
            problem = "flannel public-ip must be IPv4 (the VTEP's underlay is IPv4)"
        elif str(node.flannel.public_ip) == config.switch.vtep_ip:
            # An FDB entry towards our own VTEP would loop the overlay back into the switch.
            problem = f"flannel public-ip {node.flannel.public_ip} is this switch's own VTEP"
        elif pod is None:
            problem = "no admitted IPv4 pod CIDR"
        elif node.flannel.vtep_mac in macs:
            owner = macs[node.flannel.vtep_mac]
            problem = f"VtepMAC {node.flannel.vtep_mac} is already used by {owner}"
        if problem is not None:
            refusals.append(Refusal("node", node.name, problem))
            continue
        assert node.flannel is not None and pod is not None
        macs[node.flannel.vtep_mac] = node.name
        peers.append(VxlanPeer(node.name, str(pod), str(pod.network_address),
                               node.flannel.vtep_mac, str(node.flannel.public_ip)))
    if not peers:
        return None, (), refusals
    assert config.switch.vtep_ip is not None
    vtep = VtepDevice(vx.device, vx.vni, vx.port, config.switch.vtep_ip, vx.mtu, vx.mac,
                      vx.address)
    return vtep, tuple(sorted(peers, key=lambda p: p.node)), refusals
