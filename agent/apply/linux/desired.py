"""The plan's data plane (DataplaneDesired) as the kernel tables want it, keyed the way dumps
are, with each entry's node for messages and for flannel's per-node order.

- neighbours: `<peer subnet>.0 -> VtepMAC`, permanent, on the VTEP.
- fdb: `VtepMAC -> peer public IP`, NTF_SELF, permanent, on the VTEP.
- routes: static nodes' pod CIDRs via their InternalIP, flannel peers' pod CIDRs via the
  peer's `<subnet>.0` onlink out of the VTEP, Service VIPs the leaf routes itself via the
  static nodes' InternalIPs (multipath when more than one; resolved by the kernel like the pod
  CIDRs' next hops, never onlink: a node's InternalIP sits in a connected subnet of its port).
"""

from __future__ import annotations

import socket
from typing import NamedTuple

from agent.apply.linux.codec import RouteKey, RouteValue, multipath_value, route_key
from agent.plan.model import DataplaneDesired


class PeerMaps(NamedTuple):
    """Which node each overlay entry is for."""

    by_neigh: dict[str, str]  # gateway -> node
    by_fdb: dict[str, str]  # VtepMAC -> node
    by_route: dict[RouteKey, str]


class DesiredTables(NamedTuple):
    routes: dict[RouteKey, RouteValue]
    neighbors: dict[str, str]
    fdb: dict[str, str]
    peers: PeerMaps


def desired_tables(desired: DataplaneDesired) -> DesiredTables:
    peers = PeerMaps({}, {}, {})
    routes: dict[RouteKey, RouteValue] = {}
    neighbors: dict[str, str] = {}
    fdb: dict[str, str] = {}
    for r in desired.static_routes:
        routes[route_key(r.prefix)] = RouteValue(r.via, False)
    for p in desired.vxlan_peers:
        key = route_key(p.pod_cidr)
        routes[key] = RouteValue(p.gateway, True)
        neighbors[p.gateway] = p.vtep_mac
        fdb[p.vtep_mac] = p.public_ip
        peers.by_neigh[p.gateway], peers.by_fdb[p.vtep_mac] = p.node, p.node
        peers.by_route[key] = p.node
    for v in desired.vip_routes:
        routes[route_key(v.prefix)] = multipath_value(h.via for h in v.nexthops)
    return DesiredTables(routes, neighbors, fdb, peers)


def route_text(key: RouteKey, value: RouteValue | None, node: str | None) -> str:
    """"10.1.0.0/24 via 192.0.2.2 (node n1)": a route as errors and logs name it."""
    text = key.dst
    if value is not None and value.gateway:
        text += f" via {value.gateway}" + (" onlink (VTEP)" if value.vtep else "")
    elif value is not None and value.multipath:
        text += f" via {', '.join(value.multipath)} (ECMP)"
    if key.priority and key.priority != (1024 if key.family == socket.AF_INET6 else 0):
        text += f" metric {key.priority}"
    return text + (f" (node {node})" if node else "")
