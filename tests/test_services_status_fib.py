"""Which nodes announce a Service VIP, as read from the leaf's kernel FIB
(agent.status.announcers): route and nexthop messages built by pyroute2's own encoder (an
independent implementation of the wire format) or by hand from linux/nexthop.h, a fake channel
that filters dumps as a strict-checking kernel does, the observer's poll into the observed
state, and one read-only read of this machine's real kernel.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable, Sequence
from typing import Any, cast

import pytest
from pyroute2.netlink import NLMSG_DONE
from pyroute2.netlink.rtnl import RTM_NEWROUTE
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from agent.apply.linux.channel import NetlinkChannel
from agent.apply.linux.codec import NLMSGHDR, RTMSG
from agent.cluster.nodes import cluster_state
from agent.informers.informer import Informer
from agent.informers.kubeapi import KubeApi
from agent.plan.model import Plan
from agent.status import announcers
from agent.status.announcers import (
    RTPROT_BGP,
    VipRouteObserver,
    decode_nexthops,
    decode_vip_routes,
    encode_nexthop_dump,
    read_vip_routes,
    resolve_nexthop,
    wanted_keys,
)
from agent.status.model import FibHop
from agent.status.state import ObservedState
from tests.test_services_plan import THREE, plan_of, service

OWN = 233  # the agent's route protocol (dataplane.route_protocol's default)
LL = "fe80::a8c1:abff:fe12:3401"
NAMES = {3: "swp1", 4: "swp2", 5: "swp3", 51: "swp51"}


# ---- route messages as the kernel sends them --------------------------------------------------

def route(dst: str, *, proto: int = RTPROT_BGP, oif: int | None = None, via: str | None = None,
          gateway: str | None = None, multipath: Sequence[dict[str, Any]] = (),
          table: int = 254, rtype: int = 1, flags: int = 0, nh_id: int | None = None) -> bytes:
    """An RTM_NEWROUTE message, encoded by pyroute2 (not by the code under test)."""
    addr, _, length = dst.partition("/")
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    m = rtmsg()
    m["header"]["type"] = RTM_NEWROUTE
    m["family"], m["dst_len"], m["table"] = family, int(length), min(table, 252)
    m["proto"], m["type"], m["flags"] = proto, rtype, flags
    attrs: list[tuple[str, Any]] = [("RTA_TABLE", table), ("RTA_DST", addr)]
    if oif is not None:
        attrs.append(("RTA_OIF", oif))
    if gateway is not None:
        attrs.append(("RTA_GATEWAY", gateway))
    if via is not None:
        attrs.append(("RTA_VIA", {"family": socket.AF_INET6, "addr": via}))
    if multipath:
        attrs.append(("RTA_MULTIPATH", list(multipath)))
    m["attrs"] = attrs
    m.encode()
    data = bytes(m.data)
    if nh_id is not None:  # pyroute2 0.9 cannot encode RTA_NH_ID: appended by hand
        data += struct.pack("=HHI", 8, announcers.RTA_NH_ID, nh_id)
        data = struct.pack("=I", len(data)) + data[4:]
    return data


def hop(oif: int, *, via: str | None = None, gateway: str | None = None,
        flags: int = 0) -> dict[str, Any]:
    attrs: list[tuple[str, Any]] = []
    if via is not None:
        attrs.append(("RTA_VIA", {"family": socket.AF_INET6, "addr": via}))
    if gateway is not None:
        attrs.append(("RTA_GATEWAY", gateway))
    return {"oif": oif, "flags": flags, "hops": 0, "attrs": attrs}


def nexthop(nh_id: int, *, oif: int = 0, gateway: str | None = None,
            group: Sequence[int] = (), flags: int = 0) -> bytes:
    """An RTM_NEWNEXTHOP message (linux/nexthop.h; pyroute2 0.9 has no encoder for them)."""
    def attr(kind: int, payload: bytes) -> bytes:
        return struct.pack("=HH", 4 + len(payload), kind) + payload + b"\0" * (-len(payload) & 3)

    family = socket.AF_INET6 if gateway and ":" in gateway else socket.AF_INET
    body = announcers.NHMSG.pack(socket.AF_UNSPEC if group else family, 0, RTPROT_BGP, 0, flags)
    body += attr(announcers.NHA_ID, struct.pack("=I", nh_id))
    if group:
        body += attr(announcers.NHA_GROUP, b"".join(struct.pack("=IBBH", m, 0, 0, 0)
                                                    for m in group))
    else:
        body += attr(announcers.NHA_OIF, struct.pack("=I", oif))
        if gateway:
            body += attr(announcers.NHA_GATEWAY, socket.inet_pton(family, gateway))
    return NLMSGHDR.pack(16 + len(body), announcers.RTM_NEWNEXTHOP, 2, 1, 0) + body


def datagram(*messages: bytes) -> bytes:
    return b"".join(m + b"\0" * (-len(m) & 3) for m in messages)


WANTED = wanted_keys(["203.0.113.10/32", "203.0.113.11/32", "2001:db8:5::10/128"])


def test_an_ecmp_vip_route_gives_one_hop_per_usable_next_hop() -> None:
    message = route("203.0.113.10/32", multipath=[
        hop(3, via=LL), hop(4, via="fe80::2"),
        hop(5, via="fe80::3", flags=announcers.RTNH_F_LINKDOWN),  # its port is down
        hop(6, via="fe80::4", flags=announcers.RTNH_F_DEAD)])
    found, pending = decode_vip_routes([datagram(message)], WANTED, (RTPROT_BGP,))
    assert found == {"203.0.113.10/32": [(RTPROT_BGP, 3, LL), (RTPROT_BGP, 4, "fe80::2")]}
    assert pending == {}


def test_single_path_routes_of_both_families_and_the_agents_own() -> None:
    messages = [route("203.0.113.10/32", oif=3, via=LL),
                route("2001:db8:5::10/128", oif=4, gateway="fe80::2"),
                route("203.0.113.11/32", proto=OWN, oif=5, gateway="192.168.10.13")]
    found, _ = decode_vip_routes([datagram(*messages)], WANTED, (RTPROT_BGP, OWN))
    assert found == {"203.0.113.10/32": [(RTPROT_BGP, 3, LL)],
                     "2001:db8:5::10/128": [(RTPROT_BGP, 4, "fe80::2")],
                     "203.0.113.11/32": [(OWN, 5, "192.168.10.13")]}


@pytest.mark.parametrize(("why", "message"), [
    ("not a wanted VIP", route("203.0.113.99/32", oif=3)),
    ("a pod CIDR, not a host route", route("203.0.113.0/24", oif=3)),
    ("another protocol (a static route by hand)", route("203.0.113.10/32", proto=4, oif=3)),
    ("another table (a VRF)", route("203.0.113.10/32", oif=3, table=1001)),
    ("a blackhole", route("203.0.113.10/32", rtype=6)),
    ("its only next hop is down",
     route("203.0.113.10/32", oif=3, flags=announcers.RTNH_F_LINKDOWN)),
])
def test_routes_that_forward_no_vip_to_a_node_give_no_hop(why: str, message: bytes) -> None:
    found, pending = decode_vip_routes([datagram(message)], WANTED, (RTPROT_BGP,))
    assert not any(found.values()) and not pending, why


def test_routes_naming_only_a_nexthop_object_are_resolved_through_the_nexthop_dump() -> None:
    # net.ipv4.nexthop_compat_mode = 0: the route carries RTA_NH_ID and no next hop of its own.
    found, pending = decode_vip_routes([datagram(route("203.0.113.10/32", nh_id=90))], WANTED,
                                       (RTPROT_BGP,))
    assert found == {"203.0.113.10/32": []} and pending == {"203.0.113.10/32": [(186, 90)]}
    objects = decode_nexthops([datagram(
        nexthop(11, oif=3, gateway=LL), nexthop(12, oif=4, gateway="fe80::2"),
        nexthop(13, oif=5, gateway="fe80::3", flags=announcers.RTNH_F_LINKDOWN),
        nexthop(90, group=[11, 12, 13]))])
    assert resolve_nexthop(RTPROT_BGP, 90, objects) == [(186, 3, LL), (186, 4, "fe80::2")]
    assert resolve_nexthop(RTPROT_BGP, 11, objects) == [(186, 3, LL)]
    assert resolve_nexthop(RTPROT_BGP, 77, objects) == []  # gone since the route dump
    # In compat mode (the default) the next hops come inline: no nexthop dump is needed.
    inline = route("203.0.113.10/32", nh_id=90, multipath=[hop(3, via=LL)])
    found, pending = decode_vip_routes([datagram(inline)], WANTED, (RTPROT_BGP,))
    assert found == {"203.0.113.10/32": [(186, 3, LL)]} and pending == {}


class FakeChannel:
    """Answers route dumps the way a strict-checking kernel does (filtered by family and
    protocol) and nexthop dumps, from a list of messages; records the requests."""

    def __init__(self, routes: Sequence[bytes], nexthops: Sequence[bytes] = ()) -> None:
        self.routes, self.nexthops = routes, nexthops
        self.requests: list[tuple[int, int, int]] = []  # (type, family, protocol)
        self.closed = False

    async def dump(self, request: Callable[[int], bytes]) -> list[bytes]:
        data = request(7)
        msg_type = NLMSGHDR.unpack_from(data)[1]
        if msg_type == announcers.RTM_GETNEXTHOP:
            self.requests.append((msg_type, 0, 0))
            return [datagram(*self.nexthops), NLMSGHDR.pack(16, NLMSG_DONE, 2, 7, 0)]
        family, proto = RTMSG.unpack_from(data, 16)[0], RTMSG.unpack_from(data, 16)[5]
        self.requests.append((msg_type, family, proto))
        chosen = [m for m in self.routes
                  if RTMSG.unpack_from(m, 16)[0] == family and RTMSG.unpack_from(m, 16)[5] == proto]
        return [datagram(*chosen), NLMSGHDR.pack(16, NLMSG_DONE, 2, 7, 0)]

    def close(self) -> None:
        self.closed = True


async def test_reading_the_fib_names_the_ports_and_dumps_only_what_it_needs() -> None:
    chan = FakeChannel([
        route("203.0.113.10/32", multipath=[hop(3, via=LL), hop(4, via="fe80::2")]),
        route("203.0.113.11/32", proto=OWN, oif=5, gateway="192.168.10.13"),
        route("203.0.113.0/24", oif=51, via="fe80::51"),  # the fabric's other routes
    ])
    got = await read_vip_routes(cast(Any, chan), ["203.0.113.10/32", "203.0.113.11/32",
                                                   "203.0.113.12/32"], OWN, NAMES.__getitem__)
    assert got == {
        "203.0.113.10/32": (FibHop("bgp", "swp1", LL), FibHop("bgp", "swp2", "fe80::2")),
        "203.0.113.11/32": (FibHop("agent", "swp3", "192.168.10.13"),),
        "203.0.113.12/32": (),  # no route at all: known, and nobody announces it
    }
    # IPv4 only (no IPv6 VIP), BGP's and the agent's protocol, no nexthop dump.
    assert chan.requests == [(26, socket.AF_INET, RTPROT_BGP), (26, socket.AF_INET, OWN)]


async def test_a_port_gone_between_the_dump_and_its_name_is_no_crash() -> None:
    def ifname(index: int) -> str:
        raise OSError(6, "No such device or address")

    chan = FakeChannel([route("203.0.113.10/32", oif=3, via=LL)])
    got = await read_vip_routes(cast(Any, chan), ["203.0.113.10/32"], OWN, ifname)
    assert got == {"203.0.113.10/32": (FibHop("bgp", "", LL),)}


def state_with(plan: Plan | None, nodes: Sequence[dict[str, Any]] = THREE) -> ObservedState:
    """The observed state after a reconcile of `plan`, planned from `nodes`."""
    informer = Informer(cast(KubeApi, object()), "/api/v1/nodes", on_change=lambda: None)
    informer.synced = informer.connected = True
    state = ObservedState(started_at=time.time(), hostname="leaf1", nodes=informer)
    state.plan, state.cluster = plan, cluster_state(nodes)
    return state


async def test_the_observer_reads_nothing_without_vips_and_says_unknown_when_it_cannot(
        caplog: pytest.LogCaptureFixture) -> None:
    opened: list[str | None] = []
    chan = FakeChannel([route("203.0.113.10/32", multipath=[hop(3, via=LL)])])
    failing = True

    async def open_channel(netns: str | None) -> FakeChannel:
        opened.append(netns)
        if failing:
            raise PermissionError(1, "Operation not permitted")
        return chan

    observer = VipRouteObserver(OWN, open_channel=open_channel, ifname=NAMES.__getitem__)
    state = state_with(plan_of(THREE, []))
    await observer.poll(state)
    assert state.vip_fib == {} and opened == []  # no VIP: no socket, nothing unknown either

    state.plan = plan_of(THREE, [service("web", "203.0.113.10")])
    await observer.poll(state)
    await observer.poll(state)
    assert state.vip_fib is None and observer.error == "[Errno 1] Operation not permitted"
    assert caplog.text.count("cannot read the Service VIPs' routes") == 1  # not every poll

    failing = False
    await observer.poll(state)
    assert state.vip_fib == {"203.0.113.10/32": (FibHop("bgp", "swp1", LL),)}
    assert observer.error is None and chan.closed and opened == [None, None, None]


async def test_the_real_kernel_accepts_the_dumps() -> None:
    """Read-only, on this machine's own namespace: the strict-checking kernel takes the route
    dumps (filtered by protocol) and the nexthop dump request as they are encoded."""
    chan = await NetlinkChannel.open(None)
    try:
        got = await read_vip_routes(chan, ["203.0.113.250/32", "2001:db8:ffff::250/128"], OWN,
                                    socket.if_indextoname)
        objects = decode_nexthops(await chan.dump(encode_nexthop_dump))
    finally:
        chan.close()
    assert got == {"203.0.113.250/32": (), "2001:db8:ffff::250/128": ()}
    assert isinstance(objects, dict)
