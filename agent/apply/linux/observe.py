"""Dumps: what the kernel holds of the agent's tables, into the view.

Dumps are filtered by the kernel (strict checking) and by protocol, device and state again here,
so ownership stays exact on a kernel that did not filter; one dump per table and family per
pass. Route dumps also rebuild the offload accounting of the agent's own routes; the other
owners' (FRR's BGP routes fill the same hardware table) need one unfiltered main-table dump, at
start and after lost events (an overflow can hide the deletion of a failed route). A flag change
racing a dump is corrected by the next dump of the agent's own routes (every resync) or the next
event of the route.
"""

from __future__ import annotations

import socket

from pyroute2.netlink.rtnl import RTM_NEWNEIGH
from pyroute2.netlink.rtnl.ndmsg import NTF_SELF, NUD_PERMANENT

from agent.apply.linux.channel import Channel, dump_or_empty
from agent.apply.linux.codec import (
    AF_BRIDGE,
    RT_TABLE_MAIN,
    RouteKey,
    RouteValue,
    collect_routes,
    decode_neigh,
    encode_fdb_dump,
    encode_neigh_dump,
    encode_route_dump,
    iter_messages,
)
from agent.apply.linux.offload import OffloadTracker
from agent.apply.linux.view import FDB, LINKS, NEIGHBORS, ROUTES, KernelView, feed_offload
from agent.apply.linux.vtep import observe_link


async def observe(chan: Channel, view: KernelView, tables: set[str]) -> None:
    """Re-dump `tables` (and every VTEP table when the VTEP's ifindex changed); they are no
    longer stale afterwards."""
    if LINKS in tables:
        before = view.vtep_ifindex
        await observe_link(chan, view)
        if view.vtep_ifindex != before:
            tables = tables | {NEIGHBORS, FDB, ROUTES}
    vtep = view.vtep_ifindex
    if NEIGHBORS in tables:
        neighbors: dict[str, str] = {}
        if vtep is not None:
            for family in (socket.AF_INET, socket.AF_INET6):
                for data in await dump_or_empty(
                        chan, lambda s, f=family: encode_neigh_dump(s, f, vtep)):
                    for m in iter_messages(data):
                        if m.type != RTM_NEWNEIGH:
                            continue
                        n = decode_neigh(data, m.offset, m.end)
                        if (n.ifindex == vtep and n.state & NUD_PERMANENT and n.ip
                                and n.mac and n.family == family):
                            neighbors[n.ip] = n.mac
        view.neighbors.replace_dataplane(neighbors)
    if FDB in tables:
        fdb: dict[str, str] = {}
        if vtep is not None:
            for data in await chan.dump(lambda s: encode_fdb_dump(s, vtep)):
                for m in iter_messages(data):
                    if m.type != RTM_NEWNEIGH:
                        continue
                    n = decode_neigh(data, m.offset, m.end)
                    if (n.family != AF_BRIDGE or n.ifindex != vtep or not n.mac
                            or not n.state & NUD_PERMANENT or not n.flags & NTF_SELF):
                        continue
                    dst = (n.ip or "?") + ("+" if n.extra else "")
                    # several remotes for one MAC: never equal to a desired value
                    fdb[n.mac] = f"{fdb[n.mac]},{dst}" if n.mac in fdb else dst
        view.fdb.replace_dataplane(fdb)
    if ROUTES in tables:
        proto = view.proto
        routes: dict[RouteKey, RouteValue] = {}
        own = OffloadTracker(proto)
        for family in (socket.AF_INET, socket.AF_INET6):
            parts = await dump_or_empty(
                chan, lambda s, f=family: encode_route_dump(s, f, proto))
            routes.update(collect_routes(parts, proto, RT_TABLE_MAIN, vtep))
            for data in parts:
                feed_offload(data, proto, own, None, dump=True)
        view.routes.replace_dataplane(routes)
        view.offload_own = own
        if view.offload_rebuild:
            await observe_offload(chan, view)
    view.stale -= tables


async def observe_offload(chan: Channel, view: KernelView) -> None:
    """Others' offload-failed routes from one dump of the whole main table (protocol 0: not
    filtered). Only at start and after lost events: a full table is big, and between those
    the kernel announces every change of the flag (fib_notify_on_flag_change=2)."""
    other = OffloadTracker()
    for family in (socket.AF_INET, socket.AF_INET6):
        for data in await dump_or_empty(
                chan, lambda s, f=family: encode_route_dump(s, f, 0)):
            feed_offload(data, view.proto, None, other, dump=True)
    view.offload_other = other
    view.offload_rebuild = False
