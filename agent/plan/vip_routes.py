"""Service VIPs the leaf routes itself: those only `static` nodes (no BGP speaker) may serve.

Rules (README, "Services"):
- a VIP whose permitted nodes include a BGP node is left to BGP: those nodes announce it and
  FRR spreads it over them (maximum-paths); the leaf installs no route of its own, and the
  static nodes permitted with them are named in the VIP's routing note. A kernel route would
  win over every BGP path (zebra ranks kernel routes at distance 0, eBGP at 20), silencing the
  speakers, and on SONiC both would be the same ROUTE_TABLE key: one owner per prefix;
- otherwise the leaf installs ONE route: ECMP over the InternalIPs (of the VIP's family) of the
  permitted static nodes, in address order, at most `fabric.vip_ecmp_width` of them: the lowest
  addresses win, as BGP's own tie-break on the lowest peer address would pick, so every VIP
  served by the same nodes shares one ECMP group in the ASIC (hashing each VIP onto its own
  subset would spread load but cost one group per VIP); the others are named in the note;
- an InternalIP the host-route rules refuse (the switch's own address, a VIP) is no next hop,
  as for static pod routes.
Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from agent.cluster.nodes import IPAddress, Node
from agent.plan.model import ServiceVip, VipNexthop, VipRoute
from agent.plan.ownership import HostRouteRules, host_prefix


@dataclass(frozen=True)
class VipNode:
    """An attached node that may serve VIPs: how the leaf reaches it and where."""

    routing: str  # bgp | static
    port: str


def _next_hop(node: Node, version: int, rules: HostRouteRules) -> IPAddress | None:
    for ip in node.internal_ips:
        if ip.version == version and rules.problem(host_prefix(ip)) is None:
            return ip
    return None


def _names(names: Iterable[str]) -> str:
    return ", ".join(names)


def _route(vip: ServiceVip, static: Sequence[str], next_hop: Callable[[str, int], IPAddress | None],
           attached: Mapping[str, VipNode], width: int) -> tuple[VipRoute | None, str | None]:
    version = 6 if ":" in vip.vip else 4
    hops: list[tuple[IPAddress, str]] = []
    without: list[str] = []
    for name in static:
        ip = next_hop(name, version)
        if ip is None:
            without.append(name)
        else:
            hops.append((ip, name))
    hops.sort()
    notes = []
    if len(hops) > width:
        beyond = sorted(name for _, name in hops[width:])
        notes.append(f"beyond fabric.vip_ecmp_width {width} (lowest addresses first): "
                     f"{_names(beyond)}")
        hops = hops[:width]
    if without:
        notes.append(f"no usable IPv{version} InternalIP: {_names(without)}")
    note = "; ".join(notes) or None
    if not hops:
        return None, note
    return VipRoute(vip.vip, vip.prefix, tuple(
        VipNexthop(str(ip), attached[name].port, name) for ip, name in hops)), note


def leaf_routes(vips: Sequence[ServiceVip], nodes: Mapping[str, Node],
                attached: Mapping[str, VipNode], width: int,
                rules: HostRouteRules) -> tuple[tuple[ServiceVip, ...], tuple[VipRoute, ...]]:
    """The VIPs with what the leaf does for their static nodes (nodes_routed, routing_note),
    and the leaf's own VIP routes, in the VIPs' order. `attached`: the nodes of
    `nodes_permitted` by name (every permitted node is attached)."""
    out: list[ServiceVip] = []
    routes: list[VipRoute] = []
    found: dict[tuple[str, int], IPAddress | None] = {}

    def next_hop(name: str, version: int) -> IPAddress | None:
        # Once per node and family: thousands of VIPs share the same few nodes.
        key = (name, version)
        if key not in found:
            found[key] = _next_hop(nodes[name], version, rules)
        return found[key]

    for vip in vips:
        static = [n for n in vip.nodes_permitted if attached[n].routing == "static"]
        if vip.refused is not None or not static:
            out.append(vip)
            continue
        bgp = [n for n in vip.nodes_permitted if attached[n].routing == "bgp"]
        if bgp:
            note = (f"BGP nodes announce it ({_names(bgp)}); the leaf routes none of it to "
                    f"static nodes ({_names(static)})")
            out.append(replace(vip, routing_note=note))
            continue
        route, note = _route(vip, static, next_hop, attached, width)
        routed = tuple(sorted(h.node for h in route.nexthops)) if route else ()
        out.append(replace(vip, nodes_routed=routed, routing_note=note))
        if route is not None:
            routes.append(route)
    return tuple(out), tuple(routes)


def nexthop_groups(vips: Sequence[ServiceVip], routes: Iterable[VipRoute],
                   attached: Mapping[str, VipNode]) -> int:
    """The ECMP groups the VIPs ask the ASIC for: one per distinct next-hop set of two or more
    (SONiC's orchagent and switchdev drivers share a group among routes with the same set).
    The leaf's own routes count by their next hops; a VIP left to BGP by the BGP nodes that
    may announce it (FRR uses at most maximum-paths of them: an upper bound)."""
    groups: set[tuple[str, frozenset[str]]] = set()
    for route in routes:
        if route.group is not None:
            groups.add(("static", route.group))
    for vip in vips:
        if vip.refused is None and len(vip.nodes_permitted) > 1:
            bgp = frozenset(n for n in vip.nodes_permitted if attached[n].routing == "bgp")
            if len(bgp) > 1:
                groups.add(("bgp", bgp))
    return len(groups)
