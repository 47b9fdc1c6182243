"""What the agent wants and believes the kernel holds, table by table: the one state that dumps,
events and writes update and that held(), counts() and the offload report read.

Ownership: routes with the agent's protocol in the main table, permanent neighbour/FDB entries on
the VTEP, and the VTEP itself. The dataplane side of each tracker holds only those.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from pyroute2.netlink.rtnl import RTM_DELROUTE, RTM_NEWROUTE

from agent.apply.linux.codec import RT_TABLE_MAIN, RTMSG, RouteKey, RouteValue, iter_messages
from agent.apply.linux.delta import DeltaTracker
from agent.apply.linux.offload import RTM_F_OFFLOAD_FAILED, OffloadTracker

LINKS, ROUTES, NEIGHBORS, FDB = "links", "routes", "neighbors", "fdb"
TABLES = (LINKS, NEIGHBORS, FDB, ROUTES)  # also the order in which they are observed


@dataclass(frozen=True)
class VtepSpec:
    """The VTEP as the agent compares it: desired from VtepDevice, observed from the kernel."""

    vni: int
    port: int
    local: str
    ttl: int
    tos: int
    learning: bool
    udp_csum: bool
    bound: int  # IFLA_VXLAN_LINK: 0 = no underlay device binding
    mtu: int
    mac: str
    up: bool
    addresses: frozenset[str]  # "addr/plen", IPv6 link-local left out (the kernel's own)

    def needs_recreate(self, other: VtepSpec) -> bool:
        """Attributes the kernel cannot change on a live vxlan device."""
        keep = ("vni", "port", "local", "ttl", "tos", "learning", "udp_csum", "bound")
        return any(getattr(self, a) != getattr(other, a) for a in keep)


class KernelView:
    """The four tables' trackers, the VTEP's identity, and the offload accounting."""

    def __init__(self, proto: int, device: str) -> None:
        self.proto = proto  # the agent's rtnetlink protocol: it owns these routes only
        self.device = device  # the only device the agent may own (dataplane.vxlan.device)
        self.links: DeltaTracker[str, VtepSpec] = DeltaTracker()
        self.routes: DeltaTracker[RouteKey, RouteValue] = DeltaTracker()
        self.neighbors: DeltaTracker[str, str] = DeltaTracker()
        self.fdb: DeltaTracker[str, str] = DeltaTracker()
        self.vtep_ifindex: int | None = None  # of our VTEP; None when absent or not ours
        self.foreign_link: str | None = None  # why a device of that name is not ours to touch
        self.stale: set[str] = set()  # tables whose view must be re-dumped before trusting it
        # Offload-failed routes: the agent's own (rebuilt by every dump of them) and others'.
        self.offload_own = OffloadTracker(proto)
        self.offload_other = OffloadTracker()
        self.offload_rebuild = True  # others' need one unfiltered dump: at start, after loss

    def held(self) -> dict[str, frozenset[str]]:
        """Pod CIDRs and VtepMACs whose kernel entries, as last observed, are as desired: what
        may be announced and reported as observed. A failed or pending write is not held."""
        routes, fdb = self.routes, self.fdb
        return {
            "routes": frozenset(k.dst for k, v in routes.dataplane.items()
                                if routes.desired.get(k) == v),
            "fdb": frozenset(m for m, v in fdb.dataplane.items() if fdb.desired.get(m) == v),
        }

    def observed_counts(self) -> dict[str, int]:
        """What the agent owns in the kernel now, per headroom resource."""
        routes = self.routes.dataplane
        v4 = sum(1 for k in routes if k.family == socket.AF_INET)
        return {
            "ipv4_routes": v4,
            "ipv6_routes": len(routes) - v4,
            # ECMP groups: one per distinct next-hop set, as switchdev drivers share them
            "nexthop_groups": len({v.multipath for v in routes.values() if v.multipath}),
            "neighbors": len(self.neighbors.dataplane),
            "fdb_entries": len(self.fdb.dataplane),
            "remote_vteps": len({ip.rstrip("+") for v in self.fdb.dataplane.values()
                                 for ip in v.split(",")}),
        }

    def offload_failed_counts(self) -> dict[int, int]:
        """Routes in the main table the hardware refused (rt_offload_failed), per family
        ({4: n, 6: m}); always zero without a switchdev ASIC."""
        own, other = self.offload_own.counts(), self.offload_other.counts()
        return {family: own[family] + other[family] for family in (4, 6)}

    def forget_vtep(self) -> None:
        """The kernel took the VTEP's neighbours, FDB entries and routes with it (the IPv4 routes
        without a single notification)."""
        self.links.replace_dataplane({})
        self.vtep_ifindex = None
        self.neighbors.replace_dataplane({})
        self.fdb.replace_dataplane({})
        for key, value in list(self.routes.dataplane.items()):
            if value.vtep:
                self.routes.dataplane_delete(key)


def feed_offload(data: bytes, proto: int, own: OffloadTracker | None,
                 other: OffloadTracker | None, *, dump: bool = False) -> None:
    """Feed the main table's route messages of one datagram to `own` (protocol `proto`, the
    agent's) or `other` (every other protocol; None: not wanted), each only when it matters.
    `dump`: the trackers are fresh and every route appears once, so only flagged routes do.

    Every route event passes through here, and decoding one (pyroute2) is only worth it when it
    is flagged or could clear a flagged route: in the common case (nothing failed) an event
    costs one struct unpack."""
    for m in iter_messages(data):
        if m.type not in (RTM_NEWROUTE, RTM_DELROUTE) or m.end - m.offset < 16 + RTMSG.size:
            continue
        _fam, _dl, _sl, _tos, table, rt_proto, _scope, _type, flags = RTMSG.unpack_from(
            data, m.offset + 16)
        if table != RT_TABLE_MAIN:
            continue
        tracker = own if rt_proto == proto else other
        if tracker is not None and (flags & RTM_F_OFFLOAD_FAILED or (tracker and not dump)):
            tracker.apply([data[m.offset:m.end]])
