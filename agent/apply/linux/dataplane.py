"""The Linux kernel data plane through rtnetlink: the VTEP, its neighbour and FDB entries, routes.

`LinuxDataplane.apply(desired)` changes only the difference between the desired state and what
the agent observes, table by table (`agent.apply.linux.netlink.DeltaTracker`, Calico felix style):

- links: the one VTEP device, named by `dataplane.vxlan.device`. Built to be offloadable by a
  switch ASIC (mlxsw): `local` set, no underlay `dev` binding, learning off, UDP checksum off,
  TTL set, TOS inherited. Immutable attributes that differ make it re-created; MTU, MAC, the
  overlay address and admin state are changed in place (other addresses on it are removed,
  IPv6 link-local aside: the device is the agent's).
- neighbours: `<peer subnet>.0 -> VtepMAC`, permanent, on the VTEP.
- fdb: `VtepMAC -> peer public IP`, NTF_SELF, permanent, on the VTEP.
- routes: static nodes' pod CIDRs via their InternalIP, flannel peers' pod CIDRs via the
  peer's `<subnet>.0` onlink out of the VTEP; all with protocol `route_protocol`.

Ownership: routes with the agent's protocol in the main table, permanent neighbour/FDB entries on
the VTEP, and the VTEP itself. Nothing else is ever written or deleted: adds are exclusive (a
foreign route at the same key is reported, not replaced) and deletes name the protocol, which
the kernel matches.

Speed: routes, neighbours and FDB entries are packed by hand and sent up to `BATCH` messages per
sendmsg on the pyroute2 socket, without per-message ACKs: the kernel answers only failures
(each naming the sequence number of its message) and a trailing NOOP's ACK marks the end of the
batch. Dumps are filtered by the kernel (strict checking) and by protocol again here; one dump
per table per resync.

Events: a second socket listens to link, address, neighbour and route groups. An event that
contradicts the tracked state (an owned route deleted or replaced, a VTEP entry removed, the
VTEP changed, a link or address gone, which can flush routes without a route event) makes the
repair task re-dump the affected tables and re-apply the delta, within `REPAIR_DEBOUNCE` plus
one dump.

Start-up adopts what the kernel holds (nothing is deleted and re-added when it already matches);
closing leaves the data plane as it is.

Offload: routes the ASIC refused (RTM_F_OFFLOAD_FAILED, main table, any protocol: FRR's BGP
routes fill the same hardware table) are counted from every route event, the agent's own route
dumps, and one unfiltered main-table dump at start and after lost events (an overflow can hide
the deletion of a failed route). A flag change racing a dump is corrected by the next dump of
the agent's own routes (every resync) or the next event of the route.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

from pyroute2 import AsyncIPRoute
from pyroute2.netlink import NLM_F_DUMP_INTR, NLMSG_DONE, NLMSG_ERROR
from pyroute2.netlink.exceptions import NetlinkError
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
from pyroute2.netlink.rtnl.ndmsg import NTF_SELF, NUD_PERMANENT

from agent.apply.linux.netlink import (
    AF_BRIDGE,
    RT_TABLE_MAIN,
    RTMSG,
    U32,
    DeltaTracker,
    RouteKey,
    RouteValue,
    TableCounts,
    attrs,
    collect_routes,
    decode_neigh,
    decode_route,
    encode_fdb_del,
    encode_fdb_dump,
    encode_fdb_set,
    encode_neigh_del,
    encode_neigh_dump,
    encode_neigh_set,
    encode_route_del,
    encode_route_dump,
    encode_route_set,
    error_of,
    iter_messages,
    noop_ack,
    route_key,
)
from agent.apply.linux.offload import RTM_F_OFFLOAD_FAILED, OffloadTracker
from agent.config import DataplaneConfig
from agent.plan.model import DataplaneDesired, VtepDevice

log = logging.getLogger(__name__)
T = TypeVar("T")

LINKS, ROUTES, NEIGHBORS, FDB = "links", "routes", "neighbors", "fdb"
TABLES = (LINKS, NEIGHBORS, FDB, ROUTES)  # also the order in which they are observed

# Messages per sendmsg. Every one of them may fail, and the kernel queues all the answers
# before the sender reads any (the batch is processed inside sendmsg): 512 errors fit the
# receive buffer below with room to spare, and larger batches gain nothing measurable.
BATCH = 512
COMMAND_RCVBUF = 4 << 20
# Events of a bulk change (100,000 routes) overflow any sane buffer; an overflow only costs a
# full resync, so this is sized for bursts of everyday changes, not for bulk.
EVENT_RCVBUF = 8 << 20
EVENT_BACKLOG_LIMIT = 50_000  # datagrams; past that one dump is cheaper than reading them
REPLY_TIMEOUT = 10.0
REPAIR_DEBOUNCE = 0.05
# mlxsw offloads a VXLAN device only with a fixed TTL (not inherit) and inherited TOS; 64 is
# what the host stack would use.
VTEP_TTL = 64
VTEP_TOS_INHERIT = 1
IFF_UP = 0x1
# pyroute2 allocates sequence numbers 0xFF..0xFFFF on a socket; the agent's raw batches use the
# range above, so the ACK of one of pyroute2's own requests is never mistaken for theirs.
_SEQ_FIRST, _SEQ_LAST = 0x10000, 0x7FFFFFFF
_GONE_ON_DELETE = {errno.ESRCH, errno.ENOENT, errno.ENODEV, errno.EADDRNOTAVAIL}
_EVENT_GROUPS = (RTMGRP_LINK | RTMGRP_NEIGH | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE
                 | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR)


# --- offload accounting ----------------------------------------------------------------------


class _OffloadTracker(OffloadTracker):
    """OffloadTracker with an O(1) emptiness test. Every route event passes the filter below,
    and decoding one (pyroute2) is only worth it when it is flagged or could clear a flagged
    route: in the common case (nothing failed) an event costs one struct unpack."""

    def __bool__(self) -> bool:
        return bool(self._failed)


def _route_offload_messages(data: bytes, proto: int, own: _OffloadTracker | None,
                            other: _OffloadTracker | None, *, dump: bool = False) -> None:
    """Feed the main table's route messages of one datagram to `own` (protocol `proto`, the
    agent's) or `other` (every other protocol; None: not wanted), each only when it matters.
    `dump`: the trackers are fresh and every route appears once, so only flagged routes do."""
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


# --- results ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ObjectError:
    table: str
    object: str  # e.g. "10.1.0.0/24 via 203.0.113.9"
    error: str  # e.g. "ENETUNREACH: Nexthop has invalid gateway"

    def __str__(self) -> str:
        return f"{self.table} {self.object}: {self.error}"


@dataclass(frozen=True)
class DataplaneResult:
    ok: bool
    action: str  # "unchanged", "in-sync", "applied", "repaired", "partial", "failed"
    duration: float
    counts: dict[str, TableCounts] = field(default_factory=dict)
    errors: tuple[ObjectError, ...] = ()  # per object; everything else was still applied
    error: str | None = None  # summary: the first object errors, or why nothing could be done

    @property
    def changes(self) -> int:
        return sum(c.total for c in self.counts.values())


class ChannelError(Exception):
    """The command socket is unusable (closed, overflowed, no answer): reopen and resync."""


# --- the netlink channel ---------------------------------------------------------------------


class _Channel:
    """Raw batched requests and dumps on a pyroute2 AsyncIPRoute socket.

    pyroute2 routes every datagram it reads into a queue per sequence number it has registered
    (`msg_queue`), and everything else into queue 0. Batched messages use sequence numbers it
    has not registered, so their (rare) errors land in queue 0, drained after each batch; the
    barrier's and dumps' sequence numbers are registered so their answers come back directly.
    """

    def __init__(self, ipr: AsyncIPRoute) -> None:
        self.ipr = ipr
        self._seq = _SEQ_FIRST

    @classmethod
    async def open(cls, netns: str | None) -> _Channel:
        # flags=0: never create the namespace when it does not exist (pyroute2's default).
        kwargs: dict[str, Any] = {"netns": netns, "flags": 0} if netns else {}
        ipr = AsyncIPRoute(strict_check=True, ext_ack=True, **kwargs)
        try:
            await ipr.setup_endpoint()
            # Not NETLINK_CAP_ACK: pyroute2 0.9 parses the echoed request of an error as a
            # whole message and crashes (struct.error) on a capped one.
            _set_rcvbuf(ipr.socket, COMMAND_RCVBUF)
        except BaseException:
            ipr.close()
            raise
        return cls(ipr)

    def close(self) -> None:
        self.ipr.close()

    def _take_seqs(self, count: int) -> int:
        if self._seq + count > _SEQ_LAST:
            self._seq = _SEQ_FIRST
        first, self._seq = self._seq, self._seq + count
        return first

    def _send(self, data: bytes) -> None:
        try:
            self.ipr.send(data)
        except OSError as exc:  # also pyroute2 re-raising an earlier socket error
            raise ChannelError(f"netlink send failed: {exc}") from exc

    async def _reply(self, seq: int) -> bytes:
        # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation that races
        # with the answer, and a cancelled run_events() then never ends.
        try:
            async with asyncio.timeout(REPLY_TIMEOUT):
                data: bytes = await self.ipr.msg_queue.get(seq)
        except TimeoutError:
            raise ChannelError(f"no netlink answer within {REPLY_TIMEOUT:.0f}s") from None
        if not data:
            raise ChannelError("netlink socket closed")
        return data

    def _drain_unsolicited(self) -> list[bytes]:
        root = self.ipr.msg_queue.root
        out = []
        while not root.empty():
            out.append(root.get_nowait())
            root.task_done()
        return out

    async def batch(self, items: Sequence[T], encode: Callable[[int, T], bytes],
                    ) -> dict[int, tuple[int, str]]:
        """Send one request per item; returns {index: (errno, text)} for those that failed."""
        failures: dict[int, tuple[int, str]] = {}
        queue = self.ipr.msg_queue
        for start in range(0, len(items), BATCH):
            chunk = items[start : start + BATCH]
            base = self._take_seqs(len(chunk) + 1)
            parts = []
            for i, item in enumerate(chunk):
                try:
                    parts.append(encode(base + i, item))
                except (ValueError, OSError) as exc:  # e.g. an address inet_pton refuses
                    failures[start + i] = (errno.EINVAL, str(exc))
            barrier = base + len(chunk)
            parts.append(noop_ack(barrier))
            queue.ensure_tag(barrier)
            try:
                self._send(b"".join(parts))
                await self._reply(barrier)
            finally:
                queue.free_tag(barrier)
            for data in self._drain_unsolicited():
                for msg in iter_messages(data):
                    if msg.type == NLMSG_ERROR and base <= msg.seq < barrier:
                        code, text = error_of(data, msg)
                        if code:
                            failures[start + msg.seq - base] = (code, text)
                    elif msg.type == NLMSG_ERROR and msg.seq == 0:
                        # pyroute2's own report of a socket error (e.g. ENOBUFS)
                        raise ChannelError(f"netlink socket error {error_of(data, msg)[0]}")
        return failures

    async def dump(self, request: Callable[[int], bytes]) -> list[bytes]:
        """The datagrams of one complete dump, retried when the kernel flags it interrupted."""
        queue = self.ipr.msg_queue
        for _ in range(5):
            seq = self._take_seqs(1)
            queue.ensure_tag(seq)
            parts: list[bytes] = []
            interrupted = False
            try:
                self._send(request(seq))
                done = False
                while not done:
                    data = await self._reply(seq)
                    parts.append(data)
                    for msg in iter_messages(data):
                        interrupted = interrupted or bool(msg.flags & NLM_F_DUMP_INTR)
                        if msg.type == NLMSG_DONE:
                            done = True
                        elif msg.type == NLMSG_ERROR:
                            code, text = error_of(data, msg)
                            raise NetlinkError(code, text or errno.errorcode.get(code, str(code)))
            finally:
                queue.free_tag(seq)
            if not interrupted:
                return parts
        raise ChannelError("dump interrupted five times in a row (table changing too fast)")


def _set_rcvbuf(sock: socket.socket, size: int) -> None:
    # SO_RCVBUFFORCE (CAP_NET_ADMIN, which the agent has) passes net.core.rmem_max.
    try:
        sock.setsockopt(socket.SOL_SOCKET, 33, size)
    except PermissionError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


def _errtext(code: int, text: str) -> str:
    name = errno.errorcode.get(code, f"errno {code}")
    return f"{name}: {text}" if text else f"{name}: {os.strerror(code)}"


def _nlerr(exc: NetlinkError) -> str:
    """pyroute2's NetlinkError carries (code, the kernel's extended-ACK text or strerror)."""
    text = exc.args[-1] if len(exc.args) > 1 and isinstance(exc.args[-1], str) else ""
    return _errtext(exc.code, "" if text == os.strerror(exc.code) else text)


# --- the VTEP device -------------------------------------------------------------------------


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


def _desired_vtep(dev: VtepDevice, observed: VtepSpec | None) -> VtepSpec:
    # No fixed MAC asked: whatever the kernel gave the existing device is right.
    mac = dev.mac or (observed.mac if observed else "")
    return VtepSpec(dev.vni, dev.port, dev.local, VTEP_TTL, VTEP_TOS_INHERIT, False, False, 0,
                    dev.mtu, mac, True, frozenset([dev.address] if dev.address else []))


class _ObservedLink(NamedTuple):
    ifindex: int | None  # of our VTEP; None when absent or not ours
    spec: VtepSpec | None
    foreign: str | None  # why a device of that name is not ours to touch


# --- peers: flannel's per-node order ---------------------------------------------------------


class _PeerMaps(NamedTuple):
    by_neigh: dict[str, str]  # gateway -> node
    by_fdb: dict[str, str]  # VtepMAC -> node
    by_route: dict[RouteKey, str]


def _desired_tables(desired: DataplaneDesired) -> tuple[
        dict[RouteKey, RouteValue], dict[str, str], dict[str, str], _PeerMaps]:
    peers = _PeerMaps({}, {}, {})
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
    return routes, neighbors, fdb, peers


# --- the data plane --------------------------------------------------------------------------


class LinuxDataplane:
    """Programs the kernel: see the module docstring. One instance per network namespace."""

    def __init__(self, cfg: DataplaneConfig, *, netns: str | None = None,
                 on_tamper: Callable[[], None] | None = None) -> None:
        self._netns = netns
        self._on_tamper = on_tamper
        self._proto = cfg.route_protocol
        self._device = cfg.vxlan.device
        self._chan: _Channel | None = None
        self._events: AsyncIPRoute | None = None
        self._lock = asyncio.Lock()  # one writer at a time: apply, resync or repair
        self._desired: DataplaneDesired | None = None
        self._built: tuple[DataplaneDesired, _PeerMaps] | None = None  # what the trackers want
        self._links: DeltaTracker[str, VtepSpec] = DeltaTracker()
        self._routes: DeltaTracker[RouteKey, RouteValue] = DeltaTracker()
        self._neighbors: DeltaTracker[str, str] = DeltaTracker()
        self._fdb: DeltaTracker[str, str] = DeltaTracker()
        self._vtep_ifindex: int | None = None
        self._foreign_link: str | None = None
        self._stale: set[str] = set()  # tables whose view must be re-dumped before trusting it
        self._backlog: list[bytes] = []
        self._wake = asyncio.Event()
        self._closed = False
        self._last_error: str | None = None
        self.last_repair: DataplaneResult | None = None
        # Offload-failed routes: the agent's own (rebuilt by every dump of them) and others'.
        self._offload_own = _OffloadTracker(self._proto)
        self._offload_other = _OffloadTracker()
        self._offload_rebuild = True  # others' need one unfiltered dump: at start, after loss

    # --- life cycle

    async def start(self) -> None:
        """Open the command and event sockets, then adopt what the kernel holds (no writes).
        Events are subscribed before the dumps, so nothing changed in between is missed."""
        if self._chan is not None:
            return
        self._closed = False
        self._chan = await _Channel.open(self._netns)
        try:
            await self._open_events()
        except BaseException:
            self._chan.close()
            self._chan = None
            raise
        try:
            async with self._lock:
                await self._observe(set(TABLES))
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Close the sockets. The data plane stays exactly as it is."""
        self._closed = True
        self._wake.set()
        if self._chan is not None:
            self._chan.close()
            self._chan = None
        if self._events is not None:
            self._events.close()
            self._events = None

    async def _open_events(self) -> None:
        kwargs: dict[str, Any] = {"netns": self._netns, "flags": 0} if self._netns else {}
        ev = AsyncIPRoute(**kwargs)
        try:
            await ev.bind(groups=_EVENT_GROUPS)
            _set_rcvbuf(ev.socket, EVENT_RCVBUF)
        except BaseException:
            ev.close()
            raise
        self._events = ev

    # --- public operations

    async def apply(self, desired: DataplaneDesired) -> DataplaneResult:
        """Make the kernel hold `desired`, changing only the difference. Never raises for
        netlink trouble: per-object errors are in the result, and everything else is applied."""
        async with self._lock:
            t0 = time.monotonic()
            problem = self._check(desired)
            if problem:
                return DataplaneResult(False, "failed", time.monotonic() - t0, error=problem)
            self._desired = desired
            return await self._sync(t0, set(), "applied", "unchanged")

    async def resync(self) -> DataplaneResult:
        """Re-dump every owned table and repair any drift (the daemon's periodic full pass)."""
        async with self._lock:
            return await self._sync(time.monotonic(), set(TABLES), "repaired", "in-sync")

    def held(self) -> tuple[set[str], set[str]]:
        """(pod CIDRs, VtepMACs) whose kernel entries are as desired now: what may be announced
        and reported as observed. A failed or pending write is not held."""
        routes, fdb = self._routes, self._fdb
        return ({k.dst for k, v in routes.dataplane.items() if routes.desired.get(k) == v},
                {m for m, v in fdb.dataplane.items() if fdb.desired.get(m) == v})

    def observed_counts(self) -> dict[str, int]:
        """What the agent owns in the kernel now (for the hardware headroom check)."""
        routes = self._routes.dataplane
        v4 = sum(1 for k in routes if k.family == socket.AF_INET)
        return {
            "ipv4_routes": v4,
            "ipv6_routes": len(routes) - v4,
            "neighbors": len(self._neighbors.dataplane),
            "fdb_entries": len(self._fdb.dataplane),
            "remote_vteps": len({ip.rstrip("+") for v in self._fdb.dataplane.values()
                                 for ip in v.split(",")}),
        }

    def offload_failed_counts(self) -> dict[int, int]:
        """Routes in the main table the hardware refused (rt_offload_failed), per family
        ({4: n, 6: m}); always zero without a switchdev ASIC."""
        own, other = self._offload_own.counts(), self._offload_other.counts()
        return {family: own[family] + other[family] for family in (4, 6)}

    async def run_events(self) -> None:
        """Watch the kernel and repair owned objects changed behind the agent's back. Runs until
        cancelled or close(); cancelling it changes nothing in the kernel."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._read_events())
            group.create_task(self._repair_loop())

    # --- reconciliation

    def _check(self, desired: DataplaneDesired) -> str | None:
        if self._chan is None and self._closed:
            return "the data plane is closed"
        if desired.route_protocol != self._proto:
            return (f"desired route protocol {desired.route_protocol} is not this data plane's "
                    f"{self._proto} (dataplane.route_protocol)")
        if desired.vtep is not None and desired.vtep.name != self._device:
            return (f"desired VTEP {desired.vtep.name} is not dataplane.vxlan.device "
                    f"{self._device}, the only device the agent may own")
        return None

    async def _sync(self, t0: float, dump: set[str], done: str, nothing: str) -> DataplaneResult:
        counts = {t: TableCounts() for t in TABLES}
        errors: list[ObjectError] = []
        try:
            if self._chan is None:
                if self._closed:
                    raise ChannelError("the data plane is closed")
                self._chan = await _Channel.open(self._netns)
                self._stale = set(TABLES)
            await self._observe(dump | self._stale)
            if self._desired is not None:
                await self._reconcile(self._desired, counts, errors)
        except Exception as exc:
            # The socket (not one object) failed, or a bug: never take the agent down for it.
            # Drop the socket and trust nothing until a re-dump.
            if isinstance(exc, (ChannelError, NetlinkError, OSError)):
                log.warning("data plane: netlink failure: %s", exc)
            else:
                log.exception("data plane: unexpected failure")
            if self._chan is not None:
                self._chan.close()
                self._chan = None
            self._stale = set(TABLES)
            return DataplaneResult(False, "failed", time.monotonic() - t0, counts, tuple(errors),
                                   f"netlink: {exc}")
        result = _result(t0, counts, errors, done, nothing)
        # the same failure at every resync is said once, then at debug level
        repeated, self._last_error = result.error == self._last_error, result.error
        if result.changes or errors:
            level = (logging.WARNING if errors and not repeated
                     else logging.INFO if result.changes else logging.DEBUG)
            summary = ", ".join(f"{t} +{c.added} ~{c.changed} -{c.removed}"
                                for t, c in counts.items() if c.total)
            log.log(level, "data plane %s in %.3fs: %s%s", result.action, result.duration,
                    summary or "no change", f"; {result.error}" if result.error else "")
        return result

    async def _reconcile(self, desired: DataplaneDesired, counts: dict[str, TableCounts],
                         errors: list[ObjectError]) -> None:
        assert self._chan is not None
        if self._built is None or self._built[0] != desired:
            # Rebuilding 100,000 keys costs more than comparing the two desired states.
            routes, neighbors, fdb, peers = _desired_tables(desired)
            self._routes.replace_desired(routes)
            self._neighbors.replace_desired(neighbors)
            self._fdb.replace_desired(fdb)
            self._built = (desired, peers)
        peers = self._built[1]
        want_vtep = desired.vtep is not None or bool(desired.vxlan_peers)

        if desired.vtep is not None:
            await self._reconcile_vtep(desired.vtep, counts[LINKS], errors)

        # Additions in flannel's order per peer (neighbour, FDB, route), each stage skipping the
        # peers an earlier stage failed for, and undoing what this pass wrote for them.
        failed: set[str] = set()
        written_neigh: dict[str, tuple[str, bool]] = {}  # node -> (key, was it a change)
        written_fdb: dict[str, tuple[str, bool]] = {}
        vtep = self._vtep_ifindex

        neigh_todo = self._neighbors.pending_updates()
        if vtep is None:
            for ip, mac in neigh_todo:
                node = peers.by_neigh.get(ip, "?")
                failed.add(node)
                errors.append(ObjectError(NEIGHBORS, f"{ip} lladdr {mac} (node {node})",
                                          self._no_vtep_reason()))
        else:
            ok = await self._write(
                NEIGHBORS, neigh_todo, self._neighbors,
                lambda s, kv: encode_neigh_set(s, vtep, kv[0], kv[1]),
                lambda kv: f"{kv[0]} lladdr {kv[1]} (node {peers.by_neigh.get(kv[0], '?')})",
                counts[NEIGHBORS], errors,
                on_fail=lambda kv: failed.add(peers.by_neigh.get(kv[0], "?")))
            for ip, was_change in ok:
                written_neigh[peers.by_neigh.get(ip, "?")] = (ip, was_change)

        fdb_todo = [kv for kv in self._fdb.pending_updates()
                    if peers.by_fdb.get(kv[0]) not in failed]
        if vtep is not None and fdb_todo:
            fdb_view = self._fdb.dataplane
            ok = await self._write(
                FDB, fdb_todo, self._fdb,
                lambda s, kv: (encode_fdb_del(s, vtep, kv[0]) if "," in fdb_view.get(kv[0], "")
                               else b"") + encode_fdb_set(s, vtep, kv[0], kv[1]),
                lambda kv: f"{kv[0]} dst {kv[1]} (node {peers.by_fdb.get(kv[0], '?')})",
                counts[FDB], errors,
                on_fail=lambda kv: failed.add(peers.by_fdb.get(kv[0], "?")))
            for mac, was_change in ok:
                written_fdb[peers.by_fdb.get(mac, "?")] = (mac, was_change)
        await self._undo(failed, written_neigh, {}, counts)

        route_todo = []
        for key, value in self._routes.pending_updates():
            node = peers.by_route.get(key)
            if node is not None and node in failed:
                continue
            if value.vtep and vtep is None:
                failed.add(node or "?")
                errors.append(ObjectError(ROUTES, _route_text(key, value, node),
                                          self._no_vtep_reason()))
                continue
            route_todo.append((key, value))
        route_view = self._routes.dataplane
        route_failed: set[str] = set()
        await self._write(
            ROUTES, route_todo, self._routes,
            lambda s, kv: encode_route_set(s, kv[0], kv[1], self._proto, kv[0] in route_view,
                                           vtep),
            lambda kv: _route_text(kv[0], kv[1], peers.by_route.get(kv[0])),
            counts[ROUTES], errors,
            on_fail=lambda kv: route_failed.add(peers.by_route.get(kv[0], "")))
        route_failed.discard("")
        await self._undo(route_failed, written_neigh, written_fdb, counts)

        # Removals in the reverse order: routes, FDB, neighbours.
        await self._remove(ROUTES, self._routes,
                           lambda s, k: encode_route_del(s, k, self._proto),
                           lambda k: _route_text(k, route_view.get(k), None), counts, errors)
        if vtep is not None:
            await self._remove(FDB, self._fdb, lambda s, k: encode_fdb_del(s, vtep, k),
                               lambda k: f"{k} dst {self._fdb.dataplane.get(k)}", counts, errors)
            await self._remove(NEIGHBORS, self._neighbors,
                               lambda s, k: encode_neigh_del(s, vtep, k),
                               lambda k: f"{k} lladdr {self._neighbors.dataplane.get(k)}",
                               counts, errors)
        if not want_vtep:
            await self._remove_vtep(counts[LINKS], errors)

    def _no_vtep_reason(self) -> str:
        return self._foreign_link or f"the VTEP device {self._device} is not available"

    async def _write(self, table: str, items: list[tuple[Any, Any]],
                     tracker: DeltaTracker[Any, Any],
                     encode: Callable[[int, tuple[Any, Any]], bytes],
                     describe: Callable[[tuple[Any, Any]], str], counts: TableCounts,
                     errors: list[ObjectError],
                     on_fail: Callable[[tuple[Any, Any]], None]) -> list[tuple[Any, bool]]:
        """Add or change items; returns (key, was it a change) of those written. The view
        follows each success."""
        if not items:
            return []
        assert self._chan is not None
        view = tracker.dataplane
        existed = [kv[0] in view for kv in items]
        failures = await self._chan.batch(items, encode)
        done = []
        for i, (key, value) in enumerate(items):
            if i in failures:
                code, text = failures[i]
                if code == errno.EEXIST and table == ROUTES:
                    text = "the prefix is held by a route the agent does not own; left alone"
                errors.append(ObjectError(table, describe((key, value)), _errtext(code, text)))
                on_fail((key, value))
                continue
            tracker.dataplane_set(key, value)
            done.append((key, existed[i]))
            if existed[i]:
                counts.changed += 1
            else:
                counts.added += 1
        return done

    async def _remove(self, table: str, tracker: DeltaTracker[Any, Any],
                      encode: Callable[[int, Any], bytes], describe: Callable[[Any], str],
                      counts: dict[str, TableCounts], errors: list[ObjectError]) -> None:
        keys = tracker.pending_deletions()
        if not keys:
            return
        assert self._chan is not None
        failures = await self._chan.batch(keys, encode)
        for i, key in enumerate(keys):
            if i in failures and failures[i][0] not in _GONE_ON_DELETE:
                errors.append(ObjectError(table, describe(key), _errtext(*failures[i])))
                continue
            tracker.dataplane_delete(key)
            counts[table].removed += 1

    async def _undo(self, nodes: set[str], neigh: dict[str, tuple[str, bool]],
                    fdb: dict[str, tuple[str, bool]], counts: dict[str, TableCounts]) -> None:
        """Flannel's undo: a peer whose later step failed loses what this pass wrote for it, so
        no half-programmed peer stays. It is retried by the next apply or resync."""
        vtep = self._vtep_ifindex
        if vtep is None or self._chan is None:
            return
        for table, written, tracker, encode in (
            (FDB, fdb, self._fdb, encode_fdb_del),
            (NEIGHBORS, neigh, self._neighbors, encode_neigh_del),
        ):
            undo = [written.pop(n) for n in sorted(nodes) if n in written]
            if not undo:
                continue
            failures = await self._chan.batch(
                [key for key, _ in undo], lambda s, k, enc=encode: enc(s, vtep, k))
            for i, (key, was_change) in enumerate(undo):
                if i not in failures or failures[i][0] in _GONE_ON_DELETE:
                    tracker.dataplane_delete(key)
                    # counted as written, but the pass did not leave it there after all
                    if was_change:
                        counts[table].changed -= 1
                    else:
                        counts[table].added -= 1

    # --- the VTEP

    async def _reconcile_vtep(self, dev: VtepDevice, counts: TableCounts,
                              errors: list[ObjectError]) -> None:
        if self._foreign_link:
            errors.append(ObjectError(LINKS, dev.name, self._foreign_link))
            self._links.replace_desired({})
            return
        observed = self._links.dataplane.get(dev.name)
        want = _desired_vtep(dev, observed)
        self._links.replace_desired({dev.name: want})
        if self._links.in_sync:
            return
        ipr = self._ipr()
        try:
            if observed is not None and observed.needs_recreate(want):
                log.info("data plane: re-creating %s (%s)", dev.name, _vtep_diff(observed, want))
                await ipr.link("del", index=self._vtep_ifindex)
                self._forget_vtep()
                observed = None
            if observed is None:
                kwargs: dict[str, Any] = {}
                if dev.mac:
                    kwargs["address"] = dev.mac
                await ipr.link("add", ifname=dev.name, kind="vxlan", vxlan_id=dev.vni,
                               vxlan_local=dev.local, vxlan_port=dev.port, vxlan_learning=0,
                               vxlan_ttl=VTEP_TTL, vxlan_tos=VTEP_TOS_INHERIT,
                               vxlan_udp_csum=0, mtu=dev.mtu, **kwargs)
                await self._observe_link()
                observed = self._links.dataplane.get(dev.name)
                if observed is None:
                    raise NetlinkError(errno.ENODEV, "created but not found")
                want = _desired_vtep(dev, observed)
                self._links.replace_desired({dev.name: want})
                counts.added += 1
                created = True
            else:
                created = False
            index = self._vtep_ifindex
            changes: dict[str, Any] = {}
            if observed.mtu != want.mtu:
                changes["mtu"] = want.mtu
            if observed.mac != want.mac:
                changes["address"] = want.mac
            if changes:
                await ipr.link("set", index=index, **changes)
            for addr in sorted(observed.addresses - want.addresses):
                ip, _, plen = addr.partition("/")
                await ipr.addr("del", index=index, address=ip, prefixlen=int(plen))
            for addr in sorted(want.addresses - observed.addresses):
                ip, _, plen = addr.partition("/")
                await ipr.addr("add", index=index, address=ip, prefixlen=int(plen))
            if not observed.up:
                await ipr.link("set", index=index, state="up")
            if not created and (changes or observed.addresses != want.addresses
                                or not observed.up):
                counts.changed += 1
            await self._observe_link()
        except NetlinkError as exc:
            errors.append(ObjectError(LINKS, dev.name, _nlerr(exc)))
            with contextlib.suppress(NetlinkError):
                await self._observe_link()

    async def _remove_vtep(self, counts: TableCounts, errors: list[ObjectError]) -> None:
        self._links.replace_desired({})
        if self._vtep_ifindex is None:
            return
        try:
            await self._ipr().link("del", index=self._vtep_ifindex)
        except NetlinkError as exc:
            if exc.code not in _GONE_ON_DELETE:
                errors.append(ObjectError(LINKS, self._device, _nlerr(exc)))
                return
        self._forget_vtep()
        counts.removed += 1

    def _forget_vtep(self) -> None:
        """The kernel took the VTEP's neighbours, FDB entries and routes with it (the IPv4 routes
        without a single notification)."""
        self._links.replace_dataplane({})
        self._vtep_ifindex = None
        self._neighbors.replace_dataplane({})
        self._fdb.replace_dataplane({})
        for key, value in list(self._routes.dataplane.items()):
            if value.vtep:
                self._routes.dataplane_delete(key)

    def _ipr(self) -> AsyncIPRoute:
        assert self._chan is not None
        return self._chan.ipr

    # --- observation (dumps)

    async def _observe(self, tables: set[str]) -> None:
        if LINKS in tables:
            before = self._vtep_ifindex
            await self._observe_link()
            if self._vtep_ifindex != before:
                tables = tables | {NEIGHBORS, FDB, ROUTES}
        chan = self._chan
        assert chan is not None
        vtep = self._vtep_ifindex
        if NEIGHBORS in tables:
            neighbors: dict[str, str] = {}
            if vtep is not None:
                for family in (socket.AF_INET, socket.AF_INET6):
                    for data in await _dump_or_empty(
                            chan, lambda s, f=family: encode_neigh_dump(s, f, vtep)):
                        for m in iter_messages(data):
                            if m.type != RTM_NEWNEIGH:
                                continue
                            n = decode_neigh(data, m.offset, m.end)
                            if (n.ifindex == vtep and n.state & NUD_PERMANENT and n.ip
                                    and n.mac and n.family == family):
                                neighbors[n.ip] = n.mac
            self._neighbors.replace_dataplane(neighbors)
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
            self._fdb.replace_dataplane(fdb)
        if ROUTES in tables:
            routes: dict[RouteKey, RouteValue] = {}
            own = _OffloadTracker(self._proto)
            for family in (socket.AF_INET, socket.AF_INET6):
                parts = await _dump_or_empty(
                    chan, lambda s, f=family: encode_route_dump(s, f, self._proto))
                routes.update(collect_routes(parts, self._proto, RT_TABLE_MAIN, vtep))
                for data in parts:
                    _route_offload_messages(data, self._proto, own, None, dump=True)
            self._routes.replace_dataplane(routes)
            self._offload_own = own
            if self._offload_rebuild:
                await self._observe_offload(chan)
        self._stale -= tables

    async def _observe_offload(self, chan: _Channel) -> None:
        """Others' offload-failed routes from one dump of the whole main table (protocol 0: not
        filtered). Only at start and after lost events: a full table is big, and between those
        the kernel announces every change of the flag (fib_notify_on_flag_change=2)."""
        other = _OffloadTracker()
        for family in (socket.AF_INET, socket.AF_INET6):
            for data in await _dump_or_empty(
                    chan, lambda s, f=family: encode_route_dump(s, f, 0)):
                _route_offload_messages(data, self._proto, None, other, dump=True)
        self._offload_other = other
        self._offload_rebuild = False

    async def _observe_link(self) -> None:
        link = await self._get_link()
        self._vtep_ifindex = link.ifindex
        self._foreign_link = link.foreign
        self._links.replace_dataplane({self._device: link.spec} if link.spec else {})

    async def _get_link(self) -> _ObservedLink:
        ipr = self._ipr()
        try:
            (msg,) = await ipr.link("get", ifname=self._device)
        except NetlinkError as exc:
            if exc.code == errno.ENODEV:
                return _ObservedLink(None, None, None)
            raise
        if msg.get(("linkinfo", "kind")) != "vxlan":
            return _ObservedLink(None, None, f"a device named {self._device} exists and is not "
                                 "a vxlan device: the agent does not touch it")
        index = msg["index"]
        data = dict((msg.get(("linkinfo", "data")) or {}).get("attrs", []))
        addresses = set()
        async for a in await ipr.addr("dump", index=index):
            addr = a.get("address")
            if a["index"] == index and addr and not addr.startswith("fe80:"):
                addresses.add(f"{addr}/{a['prefixlen']}")
        spec = VtepSpec(
            vni=data.get("IFLA_VXLAN_ID", 0),
            port=data.get("IFLA_VXLAN_PORT", 0),
            local=data.get("IFLA_VXLAN_LOCAL") or data.get("IFLA_VXLAN_LOCAL6") or "",
            ttl=data.get("IFLA_VXLAN_TTL", 0),
            tos=data.get("IFLA_VXLAN_TOS", 0),
            learning=bool(data.get("IFLA_VXLAN_LEARNING", 1)),
            udp_csum=bool(data.get("IFLA_VXLAN_UDP_CSUM", 0)),
            bound=data.get("IFLA_VXLAN_LINK", 0) or 0,
            mtu=msg.get("mtu"),
            mac=msg.get("address") or "",
            up=bool(msg["flags"] & IFF_UP),
            addresses=frozenset(addresses),
        )
        return _ObservedLink(index, spec, None)

    # --- events and repair

    async def _read_events(self) -> None:
        while not self._closed:
            try:
                await self._read_event()
            except Exception:  # never let the watcher die: resync and go on
                log.exception("data plane: event reader failed; resyncing")
                self._stale = set(TABLES)
                self._wake.set()
                await asyncio.sleep(1.0)

    async def _read_event(self) -> None:
        if not self._closed:
            ev = self._events
            if ev is None:
                if self._chan is None:  # not started yet: start() opens it
                    await asyncio.sleep(0.1)
                    return
                self._stale = set(TABLES)  # a reopen after a failed one: events were lost
                self._offload_rebuild = True
                await self._open_events()
                return
            data: bytes = await ev.msg_queue.get(0)
            if self._closed:
                return
            broken = not data or any(m.type == NLMSG_ERROR for m in iter_messages(data))
            if not broken:
                # Every event, before the backlog decisions below: those may drop events the
                # repair no longer needs, but each may carry an offload flag.
                _route_offload_messages(data, self._proto, self._offload_own,
                                        self._offload_other)
            if broken:
                # pyroute2 reports ENOBUFS (events lost) this way and then refuses the socket:
                # open a new one and re-dump everything.
                log.info("data plane: event socket %s; resubscribing and resyncing",
                         "closed" if not data else "overflowed")
                ev.close()
                self._events = None
                self._stale = set(TABLES)
                self._offload_rebuild = True  # a lost deletion would count forever
                await self._open_events()
                self._backlog.clear()
            elif len(self._backlog) >= EVENT_BACKLOG_LIMIT:
                self._stale = set(TABLES)  # a dump is cheaper than reading them all
                self._backlog.clear()
            elif not self._stale >= set(TABLES):
                self._backlog.append(data)
            self._wake.set()

    async def _repair_loop(self) -> None:
        while not self._closed:
            await self._wake.wait()
            if self._closed:
                return
            await asyncio.sleep(REPAIR_DEBOUNCE)  # let the rest of a burst arrive
            self._wake.clear()
            async with self._lock:
                backlog, self._backlog = self._backlog, []
                try:
                    stale, moved = self._judge(backlog)
                except Exception:  # a message the decoders choke on: the dumps will tell
                    log.exception("data plane: cannot judge kernel events; resyncing")
                    stale, moved = set(TABLES), True
                stale |= self._stale
                if (not stale and not moved) or self._closed:
                    continue
                result = await self._sync(time.monotonic(), stale, "repaired", "in-sync")
            self.last_repair = result
            if result.changes and self._on_tamper is not None:
                try:
                    self._on_tamper()
                except Exception:
                    log.exception("data plane: on_tamper callback failed")

    def _judge(self, backlog: list[bytes]) -> tuple[set[str], bool]:
        """Replay the events on the views. Returns the tables to re-dump (what events cannot
        tell exactly) and whether a view changed (something to repair or retry).

        Events of one socket are complete (an overflow re-dumps everything) and in order, so
        the last event of a key is its state now: replaying a backlog over a view is exact even
        when the view is newer than some of the events. The echoes of the agent's own writes
        are judged after its lock is released, agree with the view, and change nothing.
        """
        stale: set[str] = set()
        moved = False
        vtep = self._vtep_ifindex
        routes = self._routes
        for data in backlog:
            for m in iter_messages(data):
                if m.type in (RTM_NEWROUTE, RTM_DELROUTE):
                    r = decode_route(data, m.offset, m.end, vtep)
                    if r.key.table != RT_TABLE_MAIN:
                        continue
                    if r.proto == self._proto:
                        if m.type == RTM_NEWROUTE and routes.dataplane.get(r.key) != r.value:
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
                    tracker = self._fdb if n.family == AF_BRIDGE else self._neighbors
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
                    link_stale, retry = self._judge_link(data, m.offset, m.end, m.type)
                    stale |= link_stale
                    moved = moved or retry
                elif m.type in (RTM_NEWADDR, RTM_DELADDR):
                    index = U32.unpack_from(data, m.offset + 20)[0]
                    if vtep is not None and index == vtep:
                        stale.add(LINKS)
                    if m.type == RTM_DELADDR:
                        stale.add(ROUTES)  # routes through a removed subnet may be flushed
                    elif not routes.in_sync:
                        moved = True  # a next hop may be reachable now
        return stale, moved

    def _judge_link(self, data: bytes, offset: int, end: int,
                    msg_type: int) -> tuple[set[str], bool]:
        _family, _pad, _type, index, flags, _change = _IFINFOMSG.unpack_from(data, offset + 16)
        found = attrs(data, offset + 32, end)
        name = found.get(_IFLA_IFNAME, b"").rstrip(b"\0").decode(errors="replace")
        if index == self._vtep_ifindex or name == self._device:
            spec = self._links.dataplane.get(self._device)
            if msg_type == RTM_DELLINK or spec is None or index != self._vtep_ifindex:
                return {LINKS}, True  # a changed ifindex re-dumps every VTEP table
            mtu = U32.unpack(found[_IFLA_MTU])[0] if _IFLA_MTU in found else spec.mtu
            mac = found[_IFLA_ADDRESS].hex(":") if _IFLA_ADDRESS in found else spec.mac
            if (mtu, mac, bool(flags & IFF_UP)) != (spec.mtu, spec.mac, spec.up):
                return {LINKS, ROUTES}, True  # routes through a downed device go silently
            return set(), False
        if msg_type == RTM_DELLINK or not flags & IFF_UP:
            return {ROUTES}, True  # IPv4 flushes routes through a device going down, silently
        return set(), not self._routes.in_sync  # a next hop may be reachable now


_IFINFOMSG = struct.Struct("=BBHiII")  # family, pad, type, index, flags, change
_IFLA_ADDRESS, _IFLA_IFNAME, _IFLA_MTU = 1, 3, 4


async def _dump_or_empty(chan: _Channel, request: Callable[[int], bytes]) -> list[bytes]:
    """A dump of one family; a kernel without that family (IPv6 disabled) has nothing of ours."""
    try:
        return await chan.dump(request)
    except NetlinkError as exc:
        if exc.code in (errno.EAFNOSUPPORT, errno.EOPNOTSUPP):
            return []
        raise


def _route_text(key: RouteKey, value: RouteValue | None, node: str | None) -> str:
    text = key.dst
    if value is not None and value.gateway:
        text += f" via {value.gateway}" + (" onlink (VTEP)" if value.vtep else "")
    if key.priority and key.priority != (1024 if key.family == socket.AF_INET6 else 0):
        text += f" metric {key.priority}"
    return text + (f" (node {node})" if node else "")


def _vtep_diff(old: VtepSpec, new: VtepSpec) -> str:
    return ", ".join(f"{a} {getattr(old, a)} -> {getattr(new, a)}"
                     for a in ("vni", "port", "local", "ttl", "tos", "learning", "udp_csum",
                               "bound") if getattr(old, a) != getattr(new, a))


def _result(t0: float, counts: dict[str, TableCounts], errors: list[ObjectError], done: str,
            nothing: str) -> DataplaneResult:
    duration = time.monotonic() - t0
    changed = any(c.total for c in counts.values())
    if errors:
        more = f" (+{len(errors) - 3} more)" if len(errors) > 3 else ""
        summary = "; ".join(str(e) for e in errors[:3]) + more
        return DataplaneResult(False, "partial", duration, counts, tuple(errors), summary)
    return DataplaneResult(True, done if changed else nothing, duration, counts)

