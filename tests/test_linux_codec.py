"""The rtnetlink codec (agent/apply/linux/codec.py) on plain bytes: what it encodes decodes back,
pyroute2's own decoder (an independent reading of the wire format) agrees with it, and messages
built by hand as the kernel sends them decode as the applier expects."""

from __future__ import annotations

import errno
import socket
import struct

import pytest
from pyroute2.netlink import (
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_DUMP,
    NLM_F_EXCL,
    NLM_F_REPLACE,
    NLM_F_REQUEST,
    NLMSG_ERROR,
    NLMSG_NOOP,
)
from pyroute2.netlink.rtnl import (
    RTM_DELADDR,
    RTM_DELNEIGH,
    RTM_DELROUTE,
    RTM_GETNEIGH,
    RTM_GETROUTE,
    RTM_NEWLINK,
    RTM_NEWNEIGH,
    RTM_NEWROUTE,
)
from pyroute2.netlink.rtnl.ndmsg import NTF_SELF, NUD_PERMANENT, ndmsg
from pyroute2.netlink.rtnl.rtmsg import RTNH_F_ONLINK, rtmsg

from agent.apply.linux.codec import (
    AF_BRIDGE,
    IFF_UP,
    NLMSGHDR,
    RT_TABLE_MAIN,
    RTMSG,
    U32,
    RouteKey,
    RouteValue,
    addr_ifindex,
    attrs,
    collect_routes,
    decode_link,
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

PROTO = 233
VTEP = 7


def attr(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * (-length & 3)


def message(msg_type: int, body: bytes, flags: int = 0, seq: int = 1) -> bytes:
    return NLMSGHDR.pack(16 + len(body), msg_type, flags, seq, 0) + body


def header(data: bytes) -> tuple[int, int, int, int, int]:
    length, msg_type, flags, seq, pid = NLMSGHDR.unpack_from(data)
    return length, msg_type, flags, seq, pid


def pyroute2_route(data: bytes) -> rtmsg:
    msg = rtmsg(data)
    msg.decode()
    return msg


# --- routes ------------------------------------------------------------------------------------


def test_route_keys_carry_the_kernels_default_priority() -> None:
    assert route_key("10.1.0.0/24") == RouteKey(socket.AF_INET, RT_TABLE_MAIN, "10.1.0.0/24", 0)
    # IPv6 stores 1024 for a route added without a metric: dumps show it, keys must match
    assert route_key("fd00:2::/64") == RouteKey(socket.AF_INET6, RT_TABLE_MAIN, "fd00:2::/64",
                                                1024)


@pytest.mark.parametrize(("prefix", "value", "vtep"), [
    ("10.1.0.0/24", RouteValue("192.0.2.2", False), None),
    ("fd00:2::/64", RouteValue("2001:db8::2", False), None),
    ("10.244.1.0/24", RouteValue("10.244.1.0", True), VTEP),  # a flannel peer: onlink, VTEP
])
def test_route_set_decodes_back(prefix: str, value: RouteValue, vtep: int | None) -> None:
    key = route_key(prefix)
    data = encode_route_set(0x10001, key, value, PROTO, False, vtep)
    assert header(data)[:4] == (len(data), RTM_NEWROUTE,
                                NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL, 0x10001)
    assert [m.end for m in iter_messages(data)] == [len(data)]
    assert decode_route(data, 0, len(data), vtep) == (PROTO, key, value)
    # pyroute2 reads the same route from the same bytes
    msg = pyroute2_route(data)
    assert (msg["proto"], msg["table"], msg["dst_len"]) == (PROTO, RT_TABLE_MAIN,
                                                            int(prefix.split("/")[1]))
    assert msg.get_attr("RTA_DST") == prefix.split("/")[0]
    assert msg.get_attr("RTA_GATEWAY") == value.gateway
    assert msg.get_attr("RTA_OIF") == vtep
    assert bool(msg["flags"] & RTNH_F_ONLINK) == value.vtep
    assert msg.get_attr("RTA_PRIORITY") == (key.priority or None)


def test_route_replace_and_delete() -> None:
    key = route_key("10.1.0.0/24")
    replace = encode_route_set(5, key, RouteValue("192.0.2.3", False), PROTO, True, None)
    assert header(replace)[2] == NLM_F_REQUEST | NLM_F_CREATE | NLM_F_REPLACE
    delete = encode_route_del(6, key, PROTO)
    assert header(delete)[1:4] == (RTM_DELROUTE, NLM_F_REQUEST, 6)
    # the protocol is in the request: the kernel deletes only a route of the agent's
    assert decode_route(delete, 0, len(delete), None).proto == PROTO
    assert pyroute2_route(delete).get_attr("RTA_GATEWAY") is None


def test_an_onlink_route_out_of_another_device_is_not_a_vtep_route() -> None:
    data = encode_route_set(1, route_key("10.244.1.0/24"), RouteValue("10.244.1.0", True),
                            PROTO, False, VTEP)
    assert decode_route(data, 0, len(data), VTEP + 1).value == RouteValue("10.244.1.0", False)


def test_a_vtep_route_without_the_vtep_cannot_be_encoded() -> None:
    with pytest.raises(ValueError, match="VTEP"):
        encode_route_set(1, route_key("10.244.1.0/24"), RouteValue("10.244.1.0", True), PROTO,
                         False, None)


def test_a_route_in_a_table_above_255_goes_in_rta_table() -> None:
    key = RouteKey(socket.AF_INET, 1000, "10.1.0.0/24", 0)
    data = encode_route_set(1, key, RouteValue("192.0.2.2", False), PROTO, False, None)
    assert RTMSG.unpack_from(data, 16)[4] == 252  # RT_TABLE_COMPAT in the header
    assert decode_route(data, 0, len(data), None).key == key


def test_route_dump_request_is_filtered_by_family_table_and_protocol() -> None:
    data = encode_route_dump(9, socket.AF_INET6, PROTO)
    assert header(data)[1:4] == (RTM_GETROUTE, NLM_F_REQUEST | NLM_F_DUMP, 9)
    family, _dl, _sl, _tos, table, proto, *_ = RTMSG.unpack_from(data, 16)
    assert (family, table, proto) == (socket.AF_INET6, RT_TABLE_MAIN, PROTO)


def kernel_route(prefix: str, proto: int, *extra: bytes, gateway: str | None = None,
                 table: int = RT_TABLE_MAIN, flags: int = 0, rtype: int = 1) -> bytes:
    """An RTM_NEWROUTE as the kernel sends it in a dump, packed by hand."""
    addr, _, plen = prefix.partition("/")
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    body = RTMSG.pack(family, int(plen), 0, 0, table, proto, 0, rtype, flags)
    body += attr(15, U32.pack(table))  # RTA_TABLE, as the kernel always adds it
    body += attr(1, socket.inet_pton(family, addr))  # RTA_DST
    if gateway:
        body += attr(5, socket.inet_pton(family, gateway))  # RTA_GATEWAY
    return message(RTM_NEWROUTE, body + b"".join(extra), flags=0x2)  # NLM_F_MULTI


def test_collect_routes_keeps_the_protocol_and_table_asked_for() -> None:
    first = (kernel_route("10.1.0.0/24", PROTO, gateway="192.0.2.2")
             + kernel_route("10.2.0.0/24", 4, gateway="192.0.2.9")  # another owner
             + kernel_route("10.3.0.0/24", PROTO, gateway="192.0.2.2", table=100))
    second = (kernel_route("10.4.0.0/24", PROTO, attr(6, U32.pack(50)), gateway="192.0.2.2")
              + kernel_route("10.5.0.0/24", PROTO, attr(9, b"\0" * 8))  # multipath
              + message(3, b"\0\0\0\0", flags=0x2))  # NLMSG_DONE
    assert collect_routes([first, second], PROTO, RT_TABLE_MAIN, None) == {
        route_key("10.1.0.0/24"): RouteValue("192.0.2.2", False),
        RouteKey(socket.AF_INET, RT_TABLE_MAIN, "10.4.0.0/24", 50): RouteValue("192.0.2.2",
                                                                               False),
        route_key("10.5.0.0/24"): RouteValue(None, False),  # a shape the agent never installs
    }


# --- neighbours and FDB ------------------------------------------------------------------------


@pytest.mark.parametrize(("ip", "family"), [("10.244.1.0", socket.AF_INET),
                                            ("fd00:244:1::", socket.AF_INET6)])
def test_neighbour_set_and_delete_decode_back(ip: str, family: int) -> None:
    data = encode_neigh_set(3, VTEP, ip, "aa:bb:cc:00:00:01")
    assert header(data)[1:3] == (RTM_NEWNEIGH, NLM_F_REQUEST | NLM_F_CREATE | NLM_F_REPLACE)
    n = decode_neigh(data, 0, len(data))
    assert (n.family, n.ifindex, n.state, n.ip, n.mac, n.extra) == (
        family, VTEP, NUD_PERMANENT, ip, "aa:bb:cc:00:00:01", False)
    msg = ndmsg(data)
    msg.decode()
    assert (msg.get_attr("NDA_DST"), msg.get_attr("NDA_LLADDR")) == (ip, "aa:bb:cc:00:00:01")
    delete = encode_neigh_del(4, VTEP, ip)
    assert header(delete)[1] == RTM_DELNEIGH
    assert decode_neigh(delete, 0, len(delete))[:5] == (family, VTEP, 0, 0, ip)


def test_fdb_set_and_delete_decode_back() -> None:
    data = encode_fdb_set(3, VTEP, "aa:bb:cc:00:00:01", "192.0.2.11")
    n = decode_neigh(data, 0, len(data))
    assert (n.family, n.ifindex, n.state, n.flags, n.ip, n.mac, n.extra) == (
        AF_BRIDGE, VTEP, NUD_PERMANENT, NTF_SELF, "192.0.2.11", "aa:bb:cc:00:00:01", False)
    delete = encode_fdb_del(4, VTEP, "aa:bb:cc:00:00:01")
    d = decode_neigh(delete, 0, len(delete))
    assert header(delete)[1] == RTM_DELNEIGH
    assert (d.family, d.flags, d.mac, d.ip) == (AF_BRIDGE, NTF_SELF, "aa:bb:cc:00:00:01", None)


def test_an_fdb_entry_with_attributes_the_agent_never_sets_is_not_its_shape() -> None:
    data = encode_fdb_set(3, VTEP, "aa:bb:cc:00:00:01", "192.0.2.11")
    vni = attr(7, U32.pack(42))  # NDA_VNI
    data = struct.pack("=I", len(data) + len(vni)) + data[4:] + vni
    assert decode_neigh(data, 0, len(data)).extra


def test_neighbour_dumps_name_the_device_in_an_attribute() -> None:
    for data, family in ((encode_neigh_dump(2, socket.AF_INET6, VTEP), socket.AF_INET6),
                         (encode_fdb_dump(2, VTEP), AF_BRIDGE)):
        assert header(data)[1:3] == (RTM_GETNEIGH, NLM_F_REQUEST | NLM_F_DUMP)
        n = decode_neigh(data, 0, len(data))
        # strict dump checking wants ifindex 0 in the header
        assert (n.family, n.ifindex) == (family, 0)
        assert attrs(data, 28, len(data))[8] == U32.pack(VTEP)  # NDA_IFINDEX


# --- framing, errors, links, addresses ----------------------------------------------------------


def test_iter_messages_walks_concatenated_and_padded_messages() -> None:
    odd = message(RTM_NEWLINK, b"\1" * 5, seq=1)  # 21 bytes, padded to 24 on the wire
    data = odd + b"\0" * 3 + noop_ack(2) + message(RTM_DELADDR, b"\0" * 8, seq=3)
    found = [(m.type, m.seq, m.offset, m.end) for m in iter_messages(data)]
    assert found == [(RTM_NEWLINK, 1, 0, 21), (NLMSG_NOOP, 2, 24, 40),
                     (RTM_DELADDR, 3, 40, 64)]
    # a length past the datagram is cut at its end, a partial header is not a message, and a
    # length below a header stops the walk
    assert [m.end for m in iter_messages(data[:60])] == [21, 40, 60]
    assert [m.end for m in iter_messages(data[:50])] == [21, 40]
    broken = data[:24] + NLMSGHDR.pack(8, NLMSG_NOOP, 0, 9, 0) + data[24:]
    assert [m.seq for m in iter_messages(broken)] == [1]


def test_noop_ack_asks_for_an_ack_only() -> None:
    assert header(noop_ack(77)) == (16, NLMSG_NOOP, NLM_F_REQUEST | NLM_F_ACK, 77, 0)


def nlmsg_error(code: int, request: bytes, text: str | None, capped: bool = False) -> bytes:
    """An NLMSG_ERROR as the kernel sends it: -errno, the echoed request (or only its header,
    NETLINK_CAP_ACK), then the extended-ACK attributes."""
    flags = (0x200 if text is not None else 0) | (0x100 if capped else 0)
    body = struct.pack("=i", -code) + (request[:16] if capped else request)
    if text is not None:
        body += attr(1, text.encode() + b"\0")  # NLMSGERR_ATTR_MSG
    return message(NLMSG_ERROR, body, flags=flags, seq=header(request)[3])


@pytest.mark.parametrize("capped", [False, True])
def test_error_of_reads_errno_and_the_extended_ack_text(capped: bool) -> None:
    request = encode_route_set(0x10005, route_key("10.9.0.0/24"),
                               RouteValue("203.0.113.9", False), PROTO, False, None)
    data = nlmsg_error(errno.ENETUNREACH, request, "Nexthop has invalid gateway", capped)
    (msg,) = iter_messages(data)
    assert (msg.type, msg.seq) == (NLMSG_ERROR, 0x10005)
    assert error_of(data, msg) == (errno.ENETUNREACH, "Nexthop has invalid gateway")


def test_error_of_an_ack_and_of_an_error_without_text() -> None:
    request = noop_ack(4)
    ack = nlmsg_error(0, request, None)
    assert error_of(ack, next(iter_messages(ack))) == (0, "")
    plain = nlmsg_error(errno.EEXIST, request, None)
    assert error_of(plain, next(iter_messages(plain))) == (errno.EEXIST, "")


def test_decode_link_event() -> None:
    body = struct.pack("=BBHiII", 0, 0, 1, VTEP, IFF_UP | 0x40, 0)
    body += attr(3, b"flannel.1\0") + attr(4, U32.pack(1450))  # IFLA_IFNAME, IFLA_MTU
    body += attr(1, bytes.fromhex("020000000001"))  # IFLA_ADDRESS
    data = message(RTM_NEWLINK, body)
    link = decode_link(data, 0, len(data))
    assert link == (VTEP, IFF_UP | 0x40, "flannel.1", 1450, "02:00:00:00:00:01")
    bare = message(RTM_NEWLINK, struct.pack("=BBHiII", 0, 0, 1, 3, 0, 0))
    assert decode_link(bare, 0, len(bare)) == (3, 0, "", None, None)


def test_addr_event_names_its_device() -> None:
    body = struct.pack("=BBBBI", socket.AF_INET, 24, 0, 0, VTEP) + attr(1, bytes(4))
    data = message(RTM_DELADDR, body)
    assert addr_ifindex(data, 0) == VTEP
