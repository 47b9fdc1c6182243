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

from collections.abc import Iterable, Mapping, Sequence
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


@dataclass(frozen=True)
class _Choice:
    """What the leaf does for one set of permitted nodes and one family (many VIPs share it)."""

    hops: tuple[VipNexthop, ...] = ()  # empty: no route of the leaf's
    routed: tuple[str, ...] = ()  # the nodes of `hops`, sorted
    note: str | None = None


class _Chooser:
    """The leaf's choice per distinct permitted node set and family, computed once: thousands
    of Cluster VIPs share one node set, and sorting addresses per VIP would cost seconds."""

    def __init__(self, nodes: Mapping[str, Node], attached: Mapping[str, VipNode], width: int,
                 rules: HostRouteRules) -> None:
        self.nodes, self.attached, self.width, self.rules = nodes, attached, width, rules
        self._hop: dict[tuple[str, int], IPAddress | None] = {}
        self._choice: dict[tuple[tuple[str, ...], int], _Choice] = {}

    def choice(self, permitted: tuple[str, ...], version: int) -> _Choice:
        key = (permitted, version)
        found = self._choice.get(key)
        if found is None:
            found = self._choice[key] = self._choose(permitted, version)
        return found

    def _next_hop(self, name: str, version: int) -> IPAddress | None:
        key = (name, version)
        if key not in self._hop:
            self._hop[key] = _next_hop(self.nodes[name], version, self.rules)
        return self._hop[key]

    def _choose(self, permitted: tuple[str, ...], version: int) -> _Choice:
        static = [n for n in permitted if self.attached[n].routing == "static"]
        if not static:
            return _Choice()
        bgp = [n for n in permitted if self.attached[n].routing == "bgp"]
        if bgp:
            return _Choice(note=f"BGP nodes announce it ({_names(bgp)}); the leaf routes none "
                           f"of it to static nodes ({_names(static)})")
        hops: list[tuple[IPAddress, str]] = []
        without: list[str] = []
        for name in static:
            ip = self._next_hop(name, version)
            if ip is None:
                without.append(name)
            else:
                hops.append((ip, name))
        hops.sort()
        notes = []
        if len(hops) > self.width:
            beyond = sorted(name for _, name in hops[self.width:])
            notes.append(f"beyond fabric.vip_ecmp_width {self.width} (lowest addresses first): "
                         f"{_names(beyond)}")
            hops = hops[:self.width]
        if without:
            notes.append(f"no usable IPv{version} InternalIP: {_names(without)}")
        chosen = tuple(VipNexthop(str(ip), self.attached[name].port, name) for ip, name in hops)
        return _Choice(chosen, tuple(sorted(name for _, name in hops)),
                       "; ".join(notes) or None)


def leaf_routes(vips: Sequence[ServiceVip], nodes: Mapping[str, Node],
                attached: Mapping[str, VipNode], width: int,
                rules: HostRouteRules) -> tuple[tuple[ServiceVip, ...], tuple[VipRoute, ...]]:
    """The VIPs with what the leaf does for their static nodes (nodes_routed, routing_note),
    and the leaf's own VIP routes, in the VIPs' order. `attached`: the nodes of
    `nodes_permitted` by name (every permitted node is attached)."""
    chooser = _Chooser(nodes, attached, width, rules)
    out: list[ServiceVip] = []
    routes: list[VipRoute] = []
    for vip in vips:
        if vip.refused is not None or not vip.nodes_permitted:
            out.append(vip)
            continue
        choice = chooser.choice(vip.nodes_permitted, 6 if ":" in vip.vip else 4)
        if choice.routed or choice.note:
            vip = replace(vip, nodes_routed=choice.routed, routing_note=choice.note)
        out.append(vip)
        if choice.hops:
            routes.append(VipRoute(vip.vip, vip.prefix, choice.hops))
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
    seen: set[tuple[str, ...]] = set()  # node sets already counted (Cluster VIPs share one)
    for vip in vips:
        permitted = vip.nodes_permitted
        if vip.refused is None and len(permitted) > 1 and permitted not in seen:
            seen.add(permitted)
            bgp = frozenset(n for n in permitted if attached[n].routing == "bgp")
            if len(bgp) > 1:
                groups.add(("bgp", bgp))
    return len(groups)
