"""VIP multipath routes in the Linux applier's plain-data parts (no kernel): the rtnetlink
encoding (checked against pyroute2's own decoder), what dumps decode to, the desired tables, the
delta tracker, and the event judge's rule for multipath routes."""

from __future__ import annotations

import socket
import struct

import pytest
from pyroute2.netlink.rtnl import RTM_DELROUTE, RTM_NEWROUTE
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from agent.apply.linux.codec import (
    RTA_GATEWAY,
    RTA_MULTIPATH,
    RTNEXTHOP,
    U32,
    RouteKey,
    RouteValue,
    collect_routes,
    decode_route,
    encode_route_set,
    multipath_value,
    route_key,
)
from agent.apply.linux.delta import DeltaTracker
from agent.apply.linux.desired import desired_tables, route_text
from agent.apply.linux.events import judge
from agent.apply.linux.view import ROUTES, KernelView
from agent.plan.model import DataplaneDesired, StaticRoute, VipNexthop, VipRoute
from tests.test_linux_codec import attr, kernel_route

PROTO = 233
ECMP4 = RouteValue(None, False, ("192.0.2.2", "192.0.2.3"))
ECMP6 = RouteValue(None, False, ("2001:db8::2", "2001:db8::10"))


def hop(gateway: str, *, flags: int = 0, hops: int = 0, ifindex: int = 7,
        extra: bytes = b"") -> bytes:
    family = socket.AF_INET6 if ":" in gateway else socket.AF_INET
    body = attr(RTA_GATEWAY, socket.inet_pton(family, gateway)) + extra
    return RTNEXTHOP.pack(RTNEXTHOP.size + len(body), flags, hops, ifindex) + body


def metric(prefix: str) -> tuple[bytes, ...]:
    """RTA_PRIORITY as the kernel reports an IPv6 route added without one (1024)."""
    return (attr(6, U32.pack(1024)),) if ":" in prefix else ()


def dumped(prefix: str, *hops_: bytes, flags: int = 0) -> bytes:
    """A multipath route as the kernel dumps it (each next hop with its resolved device)."""
    return kernel_route(prefix, PROTO, *metric(prefix), attr(RTA_MULTIPATH, b"".join(hops_)),
                        flags=flags)


# --- values -----------------------------------------------------------------------------------

def test_the_value_of_a_vip_route_is_canonical_by_address_and_one_hop_is_plain() -> None:
    assert multipath_value(["192.0.2.3", "192.0.2.2", "192.0.2.3"]) == ECMP4
    # By address bytes, not by text: ::10 after ::2.
    assert multipath_value(["2001:db8::10", "2001:db8::2"]) == ECMP6
    assert multipath_value(["192.0.2.9"]) == RouteValue("192.0.2.9", False)
    with pytest.raises(ValueError):
        multipath_value([])


# --- encoding -------------------------------------------------------------------------------

@pytest.mark.parametrize(("prefix", "value"), [("203.0.113.10/32", ECMP4),
                                               ("2001:db8:5::10/128", ECMP6)])
def test_a_multipath_route_encodes_as_pyroute2_reads_it_and_decodes_back(
        prefix: str, value: RouteValue) -> None:
    key = route_key(prefix)
    data = encode_route_set(4, key, value, PROTO, False, None)
    msg = rtmsg(data)
    msg.decode()
    assert (msg["proto"], msg["table"], msg.get_attr("RTA_GATEWAY")) == (PROTO, 254, None)
    nhs = msg.get_attr("RTA_MULTIPATH")
    assert [(nh.get_attr("RTA_GATEWAY"), nh["hops"], nh["flags"], nh["oif"]) for nh in nhs] == [
        (g, 0, 0, 0) for g in value.multipath]
    assert decode_route(data, 0, len(data), None).value == value
    assert decode_route(data, 0, len(data), None).key == key


# --- decoding what the kernel dumps ------------------------------------------------------------

def test_dumped_multipath_routes_decode_to_their_gateways_whatever_the_kernels_own_flags() -> None:
    linkdown_dead = 0x10 | 0x1
    dump = (dumped("203.0.113.10/32", hop("192.0.2.3"), hop("192.0.2.2", flags=linkdown_dead))
            + dumped("203.0.113.11/32", hop("192.0.2.2"))  # one hop: a plain route
            + dumped("2001:db8:5::10/128", hop("2001:db8::10"), hop("2001:db8::2")))
    assert collect_routes([dump], PROTO, 254, None) == {
        route_key("203.0.113.10/32"): ECMP4,
        route_key("203.0.113.11/32"): RouteValue("192.0.2.2", False),
        route_key("2001:db8:5::10/128"): ECMP6,
    }


@pytest.mark.parametrize("odd", [
    dumped("203.0.113.10/32", hop("192.0.2.2"), hop("192.0.2.3", flags=0x4)),  # onlink
    dumped("203.0.113.10/32", hop("192.0.2.2"), hop("192.0.2.3", hops=2)),  # a weight
    dumped("203.0.113.10/32", hop("192.0.2.2"), hop("192.0.2.3", extra=attr(11, b"\0" * 4))),
    dumped("203.0.113.10/32", hop("192.0.2.2"), RTNEXTHOP.pack(8, 0, 0, 7)),  # device only
    dumped("203.0.113.10/32", hop("192.0.2.2")[:-2]),  # truncated
    dumped("203.0.113.10/32", hop("192.0.2.2"), hop("192.0.2.3"), flags=0x4),  # route onlink
    kernel_route("203.0.113.10/32", PROTO, attr(RTA_MULTIPATH, hop("192.0.2.2")),
                 gateway="192.0.2.9"),  # a gateway and next hops
])
def test_a_multipath_shape_the_agent_never_writes_is_no_value_it_wants(odd: bytes) -> None:
    (value,) = collect_routes([odd], PROTO, 254, None).values()
    assert value == RouteValue(None, False) and value not in (ECMP4,)


# --- desired tables and the delta ------------------------------------------------------------

def vip_route(prefix: str, *vias: str) -> VipRoute:
    return VipRoute(prefix.partition("/")[0], prefix,
                    tuple(VipNexthop(v, "swp1", f"n{i}") for i, v in enumerate(vias)))


def test_desired_tables_hold_one_route_per_vip_beside_the_pod_routes() -> None:
    tables = desired_tables(DataplaneDesired(PROTO, (StaticRoute("s1", "10.1.0.0/24",
                                                                 "192.0.2.2"),),
                                             vip_routes=(vip_route("203.0.113.10/32",
                                                                   "192.0.2.3", "192.0.2.2"),
                                                         vip_route("203.0.113.11/32",
                                                                   "192.0.2.4"))))
    assert tables.routes == {
        route_key("10.1.0.0/24"): RouteValue("192.0.2.2", False),
        route_key("203.0.113.10/32"): ECMP4,
        route_key("203.0.113.11/32"): RouteValue("192.0.2.4", False),
    }
    assert route_text(route_key("203.0.113.10/32"), ECMP4, None) == \
        "203.0.113.10/32 via 192.0.2.2, 192.0.2.3 (ECMP)"


def test_the_delta_wants_the_whole_set_back_when_a_next_hop_is_missing() -> None:
    key = route_key("203.0.113.10/32")
    tracker: DeltaTracker[RouteKey, RouteValue] = DeltaTracker()
    tracker.replace_desired({key: ECMP4})
    tracker.replace_dataplane({key: RouteValue("192.0.2.3", False)})  # one left by hand
    assert tracker.pending_updates() == [(key, ECMP4)] and not tracker.pending_deletions()
    tracker.dataplane_set(key, RouteValue(None, False, ("192.0.2.2", "192.0.2.3")))
    assert tracker.in_sync
    # The node set changes: one update of the same key, nothing to delete first.
    wider = RouteValue(None, False, ("192.0.2.2", "192.0.2.3", "192.0.2.4"))
    tracker.replace_desired({key: wider})
    assert tracker.pending_updates() == [(key, wider)] and not tracker.pending_deletions()


# --- the event judge ----------------------------------------------------------------------------

def view_holding(value: RouteValue, want: RouteValue) -> tuple[KernelView, RouteKey]:
    view = KernelView(PROTO, "flannel.1")
    key = route_key("2001:db8:5::10/128")
    view.routes.replace_desired({key: want})
    view.routes.replace_dataplane({key: value})
    return view, key


def event(msg_type: int, prefix: str, *hops_: bytes, gateway: str | None = None) -> bytes:
    extra = (attr(RTA_MULTIPATH, b"".join(hops_)),) if hops_ else ()
    data = bytearray(kernel_route(prefix, PROTO, *metric(prefix), *extra, gateway=gateway))
    struct.pack_into("=H", data, 4, msg_type)
    return bytes(data)


def test_an_ipv6_sibling_deleted_by_hand_makes_the_routes_be_dumped_again() -> None:
    # The kernel tells of the one sibling it removed: no whole route, so the judge trusts the
    # dump instead of the event (taking it for the whole route, the repair would add over the
    # route still there and fail).
    view, key = view_holding(ECMP6, ECMP6)
    stale, _ = judge(view, [event(RTM_DELROUTE, "2001:db8:5::10/128", gateway="2001:db8::2")])
    assert stale == {ROUTES}
    assert view.routes.dataplane[key] == ECMP6  # left for the dump to correct


def test_the_echo_of_the_agents_own_multipath_write_changes_nothing() -> None:
    view, _ = view_holding(ECMP6, ECMP6)
    echo = event(RTM_NEWROUTE, "2001:db8:5::10/128", hop("2001:db8::2"), hop("2001:db8::10"))
    assert judge(view, [echo]) == (set(), False)


def test_plain_routes_keep_being_judged_from_their_events() -> None:
    plain = RouteValue("192.0.2.2", False)
    view = KernelView(PROTO, "flannel.1")
    key = route_key("10.1.0.0/24")
    view.routes.replace_desired({key: plain})
    view.routes.replace_dataplane({key: plain})
    stale, moved = judge(view, [event(RTM_DELROUTE, "10.1.0.0/24", gateway="192.0.2.2")])
    assert (stale, moved) == (set(), True) and key not in view.routes.dataplane


def test_observed_nexthop_groups_are_the_distinct_multipath_sets_the_agent_holds() -> None:
    view = KernelView(PROTO, "flannel.1")
    view.routes.replace_dataplane({
        route_key("203.0.113.10/32"): ECMP4, route_key("203.0.113.11/32"): ECMP4,
        route_key("203.0.113.12/32"): RouteValue("192.0.2.2", False),
        route_key("2001:db8:5::10/128"): ECMP6})
    assert view.observed_counts()["nexthop_groups"] == 2
