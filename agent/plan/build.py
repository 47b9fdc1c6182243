"""plan(): cluster state + config -> desired state, with every refusal and its reason.

Pure: no I/O, no clock, no randomness. Appliers diff its output against what they observe; tests
call it without root. When two nodes claim the same address space the older Node (by
creationTimestamp, then name) keeps it, so a newcomer can never take over routes that were
already programmed for someone else.

plan() derives what it reads of the cluster (attachments, address ownership, overlay nodes,
Services) into a `ClusterView` and assembles the desired state from that;
`agent.plan.incremental.PlanCache` keeps the same view up to date change by change and hands it
to the same assembly, so the two cannot disagree on anything but the view, which the tests
compare on random churn.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace

from agent.cluster.attachments import Attachment, resolve
from agent.cluster.nodes import ClusterState, IPNetwork, Node, Refusal
from agent.cluster.services import NO_SERVICES, ServiceState
from agent.config import AgentConfig
from agent.headroom.profiles import capacity_for
from agent.headroom.resources import Capacity
from agent.plan.admission import AdmissionResult, admit, candidates_for
from agent.plan.costs import node_costs
from agent.plan.model import (
    DataplaneDesired,
    FrrDesired,
    Plan,
    PlannedAttachment,
    ServerPeer,
    ServiceVip,
    StaticRoute,
    VtepDevice,
    VxlanPeer,
)
from agent.plan.ownership import HostRouteRules, admitted_prefixes, host_prefix
from agent.plan.services import VipTable, limit_vips, service_vips, vip_costs
from agent.plan.vip_routes import VipNode, leaf_routes, nexthop_groups

__all__ = ["ClusterView", "HostRouteRules", "admitted_prefixes", "derive", "plan", "plan_view",
           "static_routes", "vip_nodes", "vxlan_peers"]


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
    services: ServiceState = NO_SERVICES  # Services and where their endpoints are ready


def derive(config: AgentConfig, cluster: ClusterState,
           lldp_neighbors: Mapping[str, str] | None = None,
           services: ServiceState | None = None) -> ClusterView:
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
                       prefix_refusals, cluster.nodes, services or NO_SERVICES)


def plan(
    config: AgentConfig,
    cluster: ClusterState,
    lldp_neighbors: Mapping[str, str] | None = None,
    *,
    capacity: Mapping[str, Capacity] | None = None,
    programmed: Collection[str] = (),
    services: ServiceState | None = None,
) -> Plan:
    """The desired state. With headroom admission on (the default), nodes whose entries would
    not fit the ASIC's capacity minus the reserve are refused, newest first, keeping what is
    `programmed` (the previous plan's admitted nodes): their sessions stay up but accept
    nothing, and no kernel or SONiC entry is asked for them; then Service VIPs get the room the
    nodes leave, oldest Service first. `capacity` defaults to the configured profile and
    overrides. Entries others hold (uplink routes) are not subtracted: the reserve keeps room
    for them (README, Known limits). `services`: agent.cluster.services.service_state() of the
    Services and EndpointSlices; None is none (read only with fabric.service_pools set)."""
    return plan_view(config, derive(config, cluster, lldp_neighbors, services),
                     capacity=capacity, programmed=programmed)


def plan_view(
    config: AgentConfig,
    view: ClusterView,
    *,
    capacity: Mapping[str, Capacity] | None = None,
    programmed: Collection[str] = (),
) -> Plan:
    """plan() from an already derived view of the cluster."""
    attached = vip_nodes(config, view)
    table = service_vips(config, view.services, view.by_name, attached, view.prefixes)
    # Services are read only when VIPs may be accepted at all: with no pools, nothing of them
    # shows (no refusal either), as before Services were read.
    service_refusals = ((*view.services.refusals, *table.refusals)
                        if config.fabric.service_pools else ())
    full = _plan(config, view, frozenset(), table, table.vips, service_refusals, attached)
    if capacity is None:
        capacity = capacity_for(config.headroom.profile, config.headroom.capacity)
    costs = node_costs(full.attachments, full.dataplane)
    # costs holds served nodes only, all in the view: no walk over the whole cluster.
    served = [view.by_name[name] for name in costs]
    result = admit(candidates_for(served, costs), costs, capacity,
                   config.headroom.reserve_percent, programmed)
    # What the VIPs want, refused for room or not: a route each, and the ECMP groups of the
    # full plan's node sets.
    groups = nexthop_groups(table.vips, full.dataplane.vip_routes, attached)
    done = {"admission": result, "costs": costs,
            "vip_costs": replace(vip_costs(table.vips), nexthop_groups=groups)}
    if not config.headroom.admission:
        return replace(full, **done)
    vips, vips_refused = limit_vips(table, result.refused_nodes, _route_room(result))
    if not result.refused and not vips_refused:
        return replace(full, **done)
    limited = _plan(config, view, frozenset(result.refused_nodes), table, vips,
                    service_refusals, attached)
    refusals = (*limited.refusals, *(r.as_refusal() for r in result.refused), *vips_refused)
    return replace(limited, refusals=refusals, **done)


def _route_room(result: AdmissionResult) -> dict[str, int | None]:
    """Routes left per family once the admitted nodes' entries are planned (None: no limit)."""
    room: dict[str, int | None] = {}
    for resource in ("ipv4_routes", "ipv6_routes"):
        budget = result.budget.get(resource)
        room[resource] = None if budget is None else max(budget - result.planned[resource], 0)
    return room


def vip_nodes(config: AgentConfig, view: ClusterView) -> dict[str, VipNode]:
    """The nodes that may serve Service VIPs, by name: those on a server port in `bgp` mode
    (they announce the VIP themselves) or `static` mode (the leaf routes it to them). Overlay
    nodes need not sit behind this leaf: it cannot tell that traffic sent to them stays in the
    rack."""
    ports = set(config.fabric.server_ports)
    found = {}
    for att in view.attachments:
        node = view.by_name.get(att.node)
        if att.port not in ports or node is None:
            continue
        routing = node.routing or config.fabric.default_routing
        if routing in ("bgp", "static"):
            found[node.name] = VipNode(routing, att.port)
    return found


def _plan(config: AgentConfig, view: ClusterView, refused: frozenset[str], table: VipTable,
          vips: Sequence[ServiceVip], service_refusals: Sequence[Refusal],
          attached: Mapping[str, VipNode]) -> Plan:
    """The desired state with the nodes in `refused` accepting nothing; `vips`: `table`'s VIPs
    as headroom left them (refused for room, nodes refused taken out); `attached`: the nodes
    that may serve VIPs (vip_nodes)."""
    fabric = config.fabric
    refusals: list[Refusal] = [*view.cluster.refusals, *view.attachment_refusals,
                               *view.prefix_refusals, *service_refusals]
    nodes = view.by_name
    supernets = [ipaddress.ip_network(s) for s in fabric.pod_supernets]
    rules = HostRouteRules.from_config(config)

    def accepted_by(name: str) -> list[IPNetwork]:
        if name in refused:  # no room in the ASIC: the node's space stays reserved, unused
            return []
        return list(view.prefixes.get(name, ()))

    by_port: dict[str, Attachment] = {a.port: a for a in view.attachments}
    services, vip_routes = leaf_routes(vips, nodes, attached, fabric.vip_ecmp_width, rules)
    vips_of: dict[str, list[str]] = {}  # node -> the VIP prefixes it may announce, in order
    for vip in vips:
        if vip.refused is None:
            for name in vip.nodes_permitted:  # static ones have no session: never looked up
                vips_of.setdefault(name, []).append(vip.prefix)
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
        own_vips = vips_of.get(node.name, ())
        peers.append(ServerPeer(
            port=port,
            node=node.name,
            accept_v4=tuple(str(p) for p in accepted if p.version == 4),
            accept_v6=tuple(str(p) for p in accepted if p.version == 6),
            draining=node.unschedulable,
            vips_v4=tuple(p for p in own_vips if ":" not in p),
            vips_v6=tuple(p for p in own_vips if ":" in p),
        ))

    overlay = tuple(n for n in view.overlay if n.name not in refused)
    vtep, peers_vx, why = vxlan_peers(config, overlay, view.prefixes)
    refusals.extend(why)
    dataplane = DataplaneDesired(
        route_protocol=config.dataplane.route_protocol,
        static_routes=tuple(static),
        vtep=vtep,
        vxlan_peers=peers_vx,
        vip_routes=vip_routes,
    )
    routed_here = [ipaddress.ip_network(p) for p in dataplane.prefixes]
    advertised.extend(routed_here)

    # Every admitted VIP goes upstream, announced or not yet: the uplinks' list then changes
    # with the Services, not with every endpoint that moves. The leaf's own VIP routes are in
    # routed_here too (redistributed like pod CIDRs): listed once.
    networks = table.networks or {}
    advertised.extend(networks[v.vip] for v in vips if v.refused is None)
    pools = [ipaddress.ip_network(p) for p in fabric.service_pools]
    aggregates = supernets + pools if fabric.aggregate_to_supernets else []
    upstream = aggregates or sorted(set(advertised), key=lambda n: (n.version, n))
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
        maximum_paths=fabric.vip_ecmp_width if fabric.service_pools else None,
    )
    return Plan(frr, tuple(planned), tuple(refusals), dataplane, services=services)


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
