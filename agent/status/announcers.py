"""Which nodes announce each Service VIP right now: read from the leaf's kernel FIB.

`fabricctl services` shows, next to the nodes Kubernetes permits to announce a VIP, the nodes
the leaf really forwards it to. The source is the kernel's main table, not FRR:
- it is what forwards: a route FRR holds but zebra could not install attracts no traffic;
- it is cheap at scale: one dump per family, filtered by protocol in the kernel (strict
  checking), gives every VIP's ECMP next hops at once, a few dozen bytes per hop. FRR's
  `show bgp ipv4 unicast json` is the whole table with every path in verbose JSON (hundreds of
  MB on a real fabric), and per-VIP queries are one vtysh round trip per VIP;
- the same dump sees the routes the agent installs itself for static nodes (its own route
  protocol, next hop the node's InternalIP).
What it cannot see: paths BGP holds beyond maximum-paths (the FIB holds at most that many
next hops), and routes a data plane keeps outside the kernel (SONiC's APPL_DB).

Polled with the BGP sessions (the daemon's BGP loop), so a status request never waits on the
kernel; what it shows is at most `status.bgp_poll_seconds` old. Nothing is read while the plan
names no VIP.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from typing import NamedTuple

from pyroute2.netlink import NLM_F_DUMP, NLM_F_REQUEST
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import RTM_NEWROUTE

from agent.apply.linux.channel import Channel, ChannelError, NetlinkChannel, dump_or_empty
from agent.apply.linux.codec import (
    NLMSGHDR,
    RT_TABLE_MAIN,
    RTA_DST,
    RTA_GATEWAY,
    RTA_MULTIPATH,
    RTA_OIF,
    RTA_TABLE,
    RTA_VIA,
    RTATTR,
    RTMSG,
    RTN_UNICAST,
    U32,
    encode_route_dump,
)
from agent.status.model import FibHop
from agent.status.state import ObservedState

log = logging.getLogger(__name__)

RTPROT_BGP = 186  # what FRR's zebra installs BGP routes with
RTA_NH_ID = 30  # the route uses a nexthop object (kernel >= 5.3, FRR's default when there)
RTM_NEWNEXTHOP, RTM_GETNEXTHOP = 104, 106
NHMSG = struct.Struct("=BBBBI")  # family, scope, protocol, reserved, flags
NHA_ID, NHA_GROUP, NHA_OIF, NHA_GATEWAY = 1, 2, 5, 6
NH_GROUP_ENTRY = struct.Struct("=IBBH")  # id, weight, reserved, reserved
RTNEXTHOP = struct.Struct("=HBBi")  # length, flags, hops, ifindex
# A next hop the kernel does not forward over: its port is down (or the hop is dead).
RTNH_F_DEAD, RTNH_F_LINKDOWN = 1, 16
_UNUSABLE = RTNH_F_DEAD | RTNH_F_LINKDOWN
_HOST_LENGTH = {socket.AF_INET: 32, socket.AF_INET6: 128}
# A route message's first fields: length, type (nlmsghdr), family, dst_len (rtmsg).
_ROUTE_HEAD = struct.Struct("=IH10xBB")


class RawHop(NamedTuple):
    proto: int
    ifindex: int
    gateway: str | None


def wanted_keys(prefixes: Iterable[str]) -> dict[tuple[int, bytes], str]:
    """(family, packed address) -> prefix for host prefixes ("203.0.113.10/32"): what a route
    message's RTA_DST is compared with, without formatting every address of the dump."""
    out: dict[tuple[int, bytes], str] = {}
    for prefix in prefixes:
        addr, _, length = prefix.partition("/")
        family = socket.AF_INET6 if ":" in addr else socket.AF_INET
        if int(length) == _HOST_LENGTH[family]:
            out[(family, socket.inet_pton(family, addr))] = prefix
    return out


def _address(raw: bytes) -> str | None:
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw)
    if len(raw) == 16:
        return socket.inet_ntop(socket.AF_INET6, raw)
    return None


def _via(raw: bytes) -> str | None:
    """RTA_VIA: a next hop of another family (an IPv4 route via an IPv6 link-local address)."""
    return _address(raw[2:]) if len(raw) > 2 else None


def _multipath(data: bytes, start: int, end: int, proto: int) -> list[RawHop]:
    hops: list[RawHop] = []
    while start + RTNEXTHOP.size <= end:
        length, flags, _hops, ifindex = RTNEXTHOP.unpack_from(data, start)
        if length < RTNEXTHOP.size:
            break
        gateway = None
        a, stop = start + RTNEXTHOP.size, min(start + length, end)
        while a + 4 <= stop:
            alen, kind = RTATTR.unpack_from(data, a)
            if alen < 4:
                break
            if kind == RTA_GATEWAY:
                gateway = _address(data[a + 4 : a + alen])
            elif kind == RTA_VIA:
                gateway = _via(data[a + 4 : a + alen])
            a += (alen + 3) & ~3
        if not flags & _UNUSABLE:
            hops.append(RawHop(proto, ifindex, gateway))
        start += (length + 3) & ~3
    return hops


class _Decoder:
    """One dump's decoding state. Two things keep a large table cheap: a route is dropped at
    its header (protocol, type, length) or at its RTA_DST, which the kernel puts first, before
    anything else of it is read (the fabric's pod CIDRs and node host routes are most of the
    table); and an ECMP set is decoded once however many VIPs share it (every Cluster VIP of a
    leaf has the same one)."""

    def __init__(self, wanted: Mapping[tuple[int, bytes], str], protocols: Collection[int],
                 table: int) -> None:
        self.wanted, self.protocols, self.table = wanted, protocols, table
        self.hops: dict[str, list[RawHop]] = {}
        self.pending: dict[str, list[tuple[int, int]]] = {}
        self._sets: dict[tuple[int, bytes], list[RawHop]] = {}

    def route(self, data: bytes, offset: int, end: int) -> None:
        family, dst_len, _src, _tos, tab, proto, _scope, rtype, flags = RTMSG.unpack_from(
            data, offset + 16)
        if (proto not in self.protocols or rtype != RTN_UNICAST
                or dst_len != _HOST_LENGTH.get(family)):
            return
        prefix = raw_gw = None
        oif = nh_id = 0
        multipath: bytes | None = None
        a = offset + 28
        while a + 4 <= end:
            alen, kind = RTATTR.unpack_from(data, a)
            if alen < 4:
                break
            if kind == RTA_DST:
                prefix = self.wanted.get((family, data[a + 4 : a + alen]))
                if prefix is None:
                    return  # not a VIP: the rest of the message is not read
            elif kind == RTA_TABLE and alen >= 8:
                tab = U32.unpack_from(data, a + 4)[0]
            elif kind == RTA_OIF and alen >= 8:
                oif = U32.unpack_from(data, a + 4)[0]
            elif kind == RTA_GATEWAY:
                raw_gw = _address(data[a + 4 : a + alen])
            elif kind == RTA_VIA:
                raw_gw = _via(data[a + 4 : a + alen])
            elif kind == RTA_MULTIPATH:
                multipath = data[a + 4 : min(a + alen, end)]
            elif kind == RTA_NH_ID and alen >= 8:
                nh_id = U32.unpack_from(data, a + 4)[0]
            a += (alen + 3) & ~3
        if prefix is None or tab != self.table:
            return
        found = self.hops.setdefault(prefix, [])
        if multipath is not None:
            key = (proto, multipath)
            if key not in self._sets:
                self._sets[key] = _multipath(multipath, 0, len(multipath), proto)
            found.extend(self._sets[key])
        elif oif:
            if not flags & _UNUSABLE:
                found.append(RawHop(proto, oif, raw_gw))
        elif nh_id:
            self.pending.setdefault(prefix, []).append((proto, nh_id))


def decode_vip_routes(datagrams: Iterable[bytes], wanted: Mapping[tuple[int, bytes], str],
                      protocols: Collection[int], table: int = RT_TABLE_MAIN,
                      ) -> tuple[dict[str, list[RawHop]], dict[str, list[tuple[int, int]]]]:
    """The usable next hops of the wanted host routes of a route dump, and the routes that name
    only a nexthop object ((proto, nexthop id), when net.ipv4.nexthop_compat_mode is 0) to be
    resolved with a nexthop dump. The fabric's other routes are skipped unread."""
    decoder = _Decoder(wanted, protocols, table)
    lengths = {(f, n) for f, n in _HOST_LENGTH.items()}
    head = _ROUTE_HEAD.unpack_from
    for data in datagrams:
        offset, size = 0, len(data)
        while offset + 16 <= size:
            if offset + 28 > size:  # too short for a route (the dump's NLMSG_DONE)
                length, msg_type, family, dst_len = NLMSGHDR.unpack_from(data, offset)[0], 0, 0, 0
            else:
                length, msg_type, family, dst_len = head(data, offset)
            if length < 16:
                break
            # Most of a leaf's table are pod CIDRs: a family/length test drops them here,
            # without a call per route.
            if msg_type == RTM_NEWROUTE and (family, dst_len) in lengths:
                decoder.route(data, offset, min(offset + length, size))
            offset += (length + 3) & ~3
    return decoder.hops, decoder.pending


class NexthopObject(NamedTuple):
    ifindex: int
    gateway: str | None
    group: tuple[int, ...]  # member ids of a group; () for a single next hop
    usable: bool


def decode_nexthops(datagrams: Iterable[bytes]) -> dict[int, NexthopObject]:
    """id -> nexthop object, from an RTM_GETNEXTHOP dump."""
    out: dict[int, NexthopObject] = {}
    for data in datagrams:
        offset, size = 0, len(data)
        while offset + 16 <= size:
            length, msg_type = NLMSGHDR.unpack_from(data, offset)[:2]
            if length < 16:
                break
            end = min(offset + length, size)
            if msg_type == RTM_NEWNEXTHOP and offset + 24 <= end:
                flags = NHMSG.unpack_from(data, offset + 16)[4]
                nh_id = oif = 0
                gateway = None
                group: tuple[int, ...] = ()
                a = offset + 24
                while a + 4 <= end:
                    alen, kind = RTATTR.unpack_from(data, a)
                    if alen < 4:
                        break
                    payload = data[a + 4 : a + alen]
                    if kind == NHA_ID and len(payload) >= 4:
                        nh_id = U32.unpack_from(payload)[0]
                    elif kind == NHA_OIF and len(payload) >= 4:
                        oif = U32.unpack_from(payload)[0]
                    elif kind == NHA_GATEWAY:
                        gateway = _address(payload)
                    elif kind == NHA_GROUP:
                        group = tuple(NH_GROUP_ENTRY.unpack_from(payload, i)[0] for i in
                                      range(0, len(payload) - NH_GROUP_ENTRY.size + 1,
                                            NH_GROUP_ENTRY.size))
                    a += (alen + 3) & ~3
                if nh_id:
                    out[nh_id] = NexthopObject(oif, gateway, group, not flags & _UNUSABLE)
            offset += (length + 3) & ~3
    return out


def resolve_nexthop(proto: int, nh_id: int, objects: Mapping[int, NexthopObject]
                    ) -> list[RawHop]:
    """The usable hops of a nexthop object (a group's members; groups do not nest)."""
    obj = objects.get(nh_id)
    if obj is None:
        return []
    members = [objects.get(m) for m in obj.group] if obj.group else [obj]
    return [RawHop(proto, m.ifindex, m.gateway) for m in members
            if m is not None and m.usable and m.ifindex]


def encode_nexthop_dump(seq: int) -> bytes:
    # Strict checking wants every header field zero in a nexthop dump request.
    body = NHMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
    return NLMSGHDR.pack(16 + len(body), RTM_GETNEXTHOP, NLM_F_REQUEST | NLM_F_DUMP, seq,
                         0) + body


def _decode_dumps(dumps: Sequence[tuple[int, list[bytes]]],
                  wanted: Mapping[tuple[int, bytes], str],
                  ) -> tuple[dict[str, list[RawHop]], dict[str, list[tuple[int, int]]]]:
    hops: dict[str, list[RawHop]] = {}
    pending: dict[str, list[tuple[int, int]]] = {}
    for proto, parts in dumps:
        # Checked against the dump's own protocol: a kernel that did not filter sends every
        # route to both dumps, and none may count twice.
        found, waiting = decode_vip_routes(parts, wanted, (proto,))
        for prefix, more in found.items():
            hops.setdefault(prefix, []).extend(more)
        for prefix, ids in waiting.items():
            pending.setdefault(prefix, []).extend(ids)
    return hops, pending


def _name_hops(prefixes: Collection[str], hops: Mapping[str, Sequence[RawHop]],
               ifname: Callable[[int], str]) -> dict[str, tuple[FibHop, ...]]:
    """The hops with their ports' names, sorted; VIPs with the same next hops (every Cluster
    VIP of a leaf) share one tuple, built once."""
    names: dict[int, str] = {}

    def name(index: int) -> str:
        if index not in names:
            try:
                names[index] = ifname(index)
            except OSError:  # the port went away between the dump and now
                names[index] = ""
        return names[index]

    built: dict[tuple[RawHop, ...], tuple[FibHop, ...]] = {}
    out: dict[str, tuple[FibHop, ...]] = {}
    for prefix in prefixes:
        raw = tuple(hops.get(prefix, ()))
        if raw not in built:
            built[raw] = tuple(sorted(
                {FibHop("bgp" if h.proto == RTPROT_BGP else "agent", name(h.ifindex), h.gateway)
                 for h in raw}, key=lambda h: (h.source, h.device, h.gateway or "")))
        out[prefix] = built[raw]
    return out


async def read_vip_routes(chan: Channel, prefixes: Collection[str], own_protocol: int,
                          ifname: Callable[[int], str]) -> dict[str, tuple[FibHop, ...]]:
    """prefix -> the usable next hops of its route(s) of protocol BGP or the agent's own, for
    the wanted host prefixes; a prefix without such a route maps to (). The dumps are read on
    the event loop; decoding them runs in a worker thread (tens of ms with 100,000 routes and
    5,000 VIPs), so status requests are answered meanwhile."""
    wanted = wanted_keys(prefixes)
    dumps: list[tuple[int, list[bytes]]] = []
    for family in sorted({f for f, _ in wanted}):
        for proto in (RTPROT_BGP, own_protocol):
            dumps.append((proto, await dump_or_empty(
                chan, lambda s, f=family, p=proto: encode_route_dump(s, f, p))))
    hops, pending = await asyncio.to_thread(_decode_dumps, dumps, wanted)
    if pending:
        objects = decode_nexthops(await chan.dump(encode_nexthop_dump))
        for prefix, ids in pending.items():
            for proto, nh_id in ids:
                hops.setdefault(prefix, []).extend(resolve_nexthop(proto, nh_id, objects))
    return await asyncio.to_thread(_name_hops, prefixes, hops, ifname)


ChannelOpener = Callable[[str | None], Awaitable[Channel]]


class VipRouteObserver:
    """Polls the FIB for the plan's VIPs into the observed state (`vip_fib`): call `poll` from
    the daemon's BGP loop. `vip_fib` None means not known (never read, or the read failed); the
    status then says "unknown" rather than guessing."""

    def __init__(self, own_protocol: int, *, open_channel: ChannelOpener = NetlinkChannel.open,
                 ifname: Callable[[int], str] = socket.if_indextoname) -> None:
        self.own_protocol = own_protocol
        self._open = open_channel
        self._ifname = ifname
        self.error: str | None = None

    async def poll(self, state: ObservedState) -> None:
        prefixes = sorted({v.prefix for v in state.plan.services}) if state.plan else []
        if not prefixes:
            state.vip_fib = {}  # nothing to read: known, and empty
            return
        try:
            chan = await self._open(None)  # a socket per poll: nothing to close at shutdown
            try:
                routes = await read_vip_routes(chan, prefixes, self.own_protocol, self._ifname)
            finally:
                chan.close()
        except (OSError, NetlinkError, ChannelError) as exc:
            if self.error is None:
                log.warning("cannot read the Service VIPs' routes from the kernel: %s", exc)
            self.error = str(exc)
            state.vip_fib = None
            return
        if self.error is not None:
            log.info("reading the Service VIPs' routes from the kernel again")
        self.error = None
        state.vip_fib = routes
