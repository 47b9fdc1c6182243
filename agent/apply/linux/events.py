"""Kernel events: the second socket that listens to link, address, neighbour and route groups,
and the judge that replays them on the view.

An event that contradicts the tracked state (an owned route deleted or replaced, a VTEP entry
removed, the VTEP changed, a link or address gone, which can flush routes without a route event)
makes the applier's repair re-dump the affected tables and re-apply the delta, within
`REPAIR_DEBOUNCE` plus one dump. Every route event also passes the offload accounting.

A lost event (the socket overflowed) cannot be judged: every table is re-dumped instead.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from pyroute2 import AsyncIPRoute
from pyroute2.netlink import NLMSG_ERROR
from pyroute2.netlink.rtnl import (
    RTM_DELADDR,
    RTM_DELLINK,
    RTM_DELNEIGH,
    RTM_DELROUTE,
    RTM_NEWADDR,
    RTM_NEWLINK,
    RTM_NEWNEIGH,
    RTM_NEWROUTE,
    RTMGRP_IPV4_IFADDR,
    RTMGRP_IPV4_ROUTE,
    RTMGRP_IPV6_IFADDR,
    RTMGRP_IPV6_ROUTE,
    RTMGRP_LINK,
    RTMGRP_NEIGH,
)
from pyroute2.netlink.rtnl.ndmsg import NUD_PERMANENT

from agent.apply.linux.channel import set_rcvbuf
from agent.apply.linux.codec import (
    AF_BRIDGE,
    IFF_UP,
    RT_TABLE_MAIN,
    RouteKey,
    RouteValue,
    addr_ifindex,
    decode_link,
    decode_neigh,
    decode_route,
    iter_messages,
)
from agent.apply.linux.delta import DeltaTracker
from agent.apply.linux.view import LINKS, ROUTES, TABLES, KernelView, feed_offload

log = logging.getLogger(__name__)

# Events of a bulk change (100,000 routes) overflow any sane buffer; an overflow only costs a
# full resync, so this is sized for bursts of everyday changes, not for bulk.
EVENT_RCVBUF = 8 << 20
EVENT_BACKLOG_LIMIT = 50_000  # datagrams; past that one dump is cheaper than reading them
REPAIR_DEBOUNCE = 0.05
_EVENT_GROUPS = (RTMGRP_LINK | RTMGRP_NEIGH | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE
                 | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR)


class EventSource(Protocol):
    async def read(self) -> bytes:
        """The next datagram; b"" when the socket closed. A datagram holding an NLMSG_ERROR
        means events were lost (pyroute2 reports ENOBUFS this way)."""
        ...

    def close(self) -> None: ...


EventOpener = Callable[[str | None], Awaitable[EventSource]]


class EventSocket:
    """The event subscription on a pyroute2 AsyncIPRoute socket (its queue 0: every datagram
    that answers no request of its own)."""

    def __init__(self, ipr: AsyncIPRoute) -> None:
        self.ipr = ipr

    @property
    def socket(self) -> Any:
        return self.ipr.socket

    @classmethod
    async def open(cls, netns: str | None) -> EventSocket:
        kwargs: dict[str, Any] = {"netns": netns, "flags": 0} if netns else {}
        ev = AsyncIPRoute(**kwargs)
        try:
            await ev.bind(groups=_EVENT_GROUPS)
            set_rcvbuf(ev.socket, EVENT_RCVBUF)
        except BaseException:
            ev.close()
            raise
        return cls(ev)

    async def read(self) -> bytes:
        data: bytes = await self.ipr.msg_queue.get(0)
        return data

    def close(self) -> None:
        self.ipr.close()


class EventReader:
    """Reads the event socket into a backlog for the repair (waking it), feeding the offload
    accounting on the way. Opened before the first dumps, so nothing changed in between is
    missed; reopened (with every table marked stale) when events were lost."""

    def __init__(self, view: KernelView, netns: str | None, open_events: EventOpener, *,
                 started: Callable[[], bool], closed: Callable[[], bool],
                 offload_seen: Callable[[], None]) -> None:
        self._view = view
        self._netns = netns
        self._open_events = open_events
        self._started = started  # the applier has a command socket (start() opens this one)
        self._closed = closed
        self._offload_seen = offload_seen  # after route messages reached the offload trackers
        self.source: EventSource | None = None
        self.backlog: list[bytes] = []
        self.wake = asyncio.Event()  # the repair has something to look at

    async def open(self) -> None:
        self.source = await self._open_events(self._netns)

    def close(self) -> None:
        self.wake.set()
        if self.source is not None:
            self.source.close()
            self.source = None

    def take_backlog(self) -> list[bytes]:
        backlog, self.backlog = self.backlog, []
        return backlog

    async def run(self) -> None:
        while not self._closed():
            try:
                await self.read_one()
            except Exception:  # never let the watcher die: resync and go on
                log.exception("data plane: event reader failed; resyncing")
                self._view.stale = set(TABLES)
                self.wake.set()
                await asyncio.sleep(1.0)

    async def read_one(self) -> None:
        if self._closed():
            return
        view = self._view
        ev = self.source
        if ev is None:
            if not self._started():  # not started yet: start() opens it
                await asyncio.sleep(0.1)
                return
            view.stale = set(TABLES)  # a reopen after a failed one: events were lost
            view.offload_rebuild = True
            await self.open()
            return
        data = await ev.read()
        if self._closed():
            return
        broken = not data or any(m.type == NLMSG_ERROR for m in iter_messages(data))
        if not broken:
            # Every event, before the backlog decisions below: those may drop events the
            # repair no longer needs, but each may carry an offload flag.
            feed_offload(data, view.proto, view.offload_own, view.offload_other)
            self._offload_seen()
        if broken:
            # pyroute2 reports ENOBUFS (events lost) this way and then refuses the socket:
            # open a new one and re-dump everything.
            log.info("data plane: event socket %s; resubscribing and resyncing",
                     "closed" if not data else "overflowed")
            ev.close()
            self.source = None
            view.stale = set(TABLES)
            view.offload_rebuild = True  # a lost deletion would count forever
            await self.open()
            self.backlog.clear()
        elif len(self.backlog) >= EVENT_BACKLOG_LIMIT:
            view.stale = set(TABLES)  # a dump is cheaper than reading them all
            self.backlog.clear()
        elif not view.stale >= set(TABLES):
            self.backlog.append(data)
        self.wake.set()


def judge(view: KernelView, backlog: list[bytes]) -> tuple[set[str], bool]:
    """Replay the events on the view. Returns the tables to re-dump (what events cannot
    tell exactly) and whether a view changed (something to repair or retry).

    Events of one socket are complete (an overflow re-dumps everything) and in order, so
    the last event of a key is its state now: replaying a backlog over a view is exact even
    when the view is newer than some of the events. The echoes of the agent's own writes
    are judged after its lock is released, agree with the view, and change nothing.
    """
    stale: set[str] = set()
    moved = False
    vtep = view.vtep_ifindex
    routes = view.routes
    for data in backlog:
        for m in iter_messages(data):
            if m.type in (RTM_NEWROUTE, RTM_DELROUTE):
                r = decode_route(data, m.offset, m.end, vtep)
                if r.key.table != RT_TABLE_MAIN:
                    continue
                if r.proto == view.proto:
                    if _multipath_involved(routes, r.key, r.value, m.type):
                        # IPv6 tells of one sibling next hop at a time (a hand-deleted one,
                        # another appended): an event is no whole route, a dump is.
                        stale.add(ROUTES)
                    elif m.type == RTM_NEWROUTE and routes.dataplane.get(r.key) != r.value:
                        routes.dataplane_set(r.key, r.value)
                        moved = True
                    elif m.type == RTM_DELROUTE and r.key in routes.dataplane:
                        routes.dataplane_delete(r.key)
                        moved = True
                elif r.key in routes.dataplane:
                    stale.add(ROUTES)  # a foreign route may have replaced one of ours
                elif r.key in routes.desired:
                    moved = True  # a key we could not take changed hands: retry it
            elif m.type in (RTM_NEWNEIGH, RTM_DELNEIGH):
                n = decode_neigh(data, m.offset, m.end)
                if vtep is None or n.ifindex != vtep:
                    continue
                tracker = view.fdb if n.family == AF_BRIDGE else view.neighbors
                key, value = (n.mac, n.ip) if n.family == AF_BRIDGE else (n.ip, n.mac)
                if key is None:
                    continue
                if n.family == AF_BRIDGE and value is not None and n.extra:
                    value += "+"
                if m.type == RTM_NEWNEIGH and n.state & NUD_PERMANENT and value is not None:
                    if tracker.dataplane.get(key) != value:
                        tracker.dataplane_set(key, value)
                        moved = True
                elif key in tracker.dataplane:  # deleted, or no longer permanent
                    tracker.dataplane_delete(key)
                    moved = True
            elif m.type in (RTM_NEWLINK, RTM_DELLINK):
                link_stale, retry = judge_link(view, data, m.offset, m.end, m.type)
                stale |= link_stale
                moved = moved or retry
            elif m.type in (RTM_NEWADDR, RTM_DELADDR):
                if vtep is not None and addr_ifindex(data, m.offset) == vtep:
                    stale.add(LINKS)
                if m.type == RTM_DELADDR:
                    stale.add(ROUTES)  # routes through a removed subnet may be flushed
                elif not routes.in_sync:
                    moved = True  # a next hop may be reachable now
    return stale, moved


def _multipath_involved(routes: DeltaTracker[RouteKey, RouteValue], key: RouteKey,
                        value: RouteValue, msg_type: int) -> bool:
    """Whether an event of one of the agent's routes touches a multipath route (in the event,
    the view or the desired state) and says something the view does not already hold."""
    held = routes.dataplane.get(key)
    if msg_type == RTM_NEWROUTE and held == value:
        return False  # the echo of the agent's own write
    return any(v is not None and v.multipath
               for v in (value, held, routes.desired.get(key)))


def judge_link(view: KernelView, data: bytes, offset: int, end: int,
               msg_type: int) -> tuple[set[str], bool]:
    link = decode_link(data, offset, end)
    if link.index == view.vtep_ifindex or link.name == view.device:
        spec = view.links.dataplane.get(view.device)
        if msg_type == RTM_DELLINK or spec is None or link.index != view.vtep_ifindex:
            return {LINKS}, True  # a changed ifindex re-dumps every VTEP table
        mtu = spec.mtu if link.mtu is None else link.mtu
        mac = spec.mac if link.mac is None else link.mac
        if (mtu, mac, bool(link.flags & IFF_UP)) != (spec.mtu, spec.mac, spec.up):
            return {LINKS, ROUTES}, True  # routes through a downed device go silently
        return set(), False
    if msg_type == RTM_DELLINK or not link.flags & IFF_UP:
        return {ROUTES}, True  # IPv4 flushes routes through a device going down, silently
    return set(), not view.routes.in_sync  # a next hop may be reachable now
