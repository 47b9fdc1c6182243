"""Route offload flags and the fib_notify sysctl (agent/apply/linux/offload.py), on crafted
messages: this machine's kernel has no switchdev, so no route here ever carries the flags."""

from __future__ import annotations

import ipaddress
import socket
import struct
from pathlib import Path
from typing import Any

import pytest
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from agent.apply.linux.offload import (
    NLMSG_HDR,
    RTM_DELROUTE,
    RTM_F_OFFLOAD,
    RTM_F_OFFLOAD_FAILED,
    RTM_F_TRAP,
    RTM_NEWROUTE,
    RTMSG,
    RTNH_F_OFFLOAD,
    OffloadTracker,
    RouteInput,
    decode_flags,
    enable_fib_notify,
    fib_notify_sysctl_paths,
    parse_route,
    parse_route_bytes,
)

AGENT_PROTO = 233


def failed_per_family(messages: list[Any], protocol: int | None = None) -> dict[int, int]:
    """Offload-failed routes per family after replaying `messages` in order (a dump, then
    notifications), as the applier's trackers count them."""
    tracker = OffloadTracker(protocol)
    tracker.apply(messages)
    return dict(tracker.counts())


def route(prefix: str, flags: int = 0, event: int = RTM_NEWROUTE, proto: int = AGENT_PROTO,
          table: int = 254, priority: int | None = None) -> dict[str, Any]:
    """A plain-dict route message, the shape pyroute2 gives (header fields + attrs)."""
    net = ipaddress.ip_network(prefix)
    attrs: list[tuple[str, Any]] = [("RTA_DST", str(net.network_address)), ("RTA_TABLE", table)]
    if priority is not None:
        attrs.append(("RTA_PRIORITY", priority))
    return {"family": socket.AF_INET if net.version == 4 else socket.AF_INET6,
            "dst_len": net.prefixlen, "table": min(table, 252), "proto": proto, "tos": 0,
            "flags": flags, "attrs": attrs, "header": {"type": event}}


def pyroute2_bytes(prefix: str, flags: int, event: int = RTM_NEWROUTE) -> bytes:
    msg = rtmsg()
    msg["header"]["type"] = event
    net = ipaddress.ip_network(prefix)
    msg["family"] = socket.AF_INET if net.version == 4 else socket.AF_INET6
    msg["dst_len"] = net.prefixlen
    msg["table"] = 254
    msg["proto"] = AGENT_PROTO
    msg["type"] = 1
    msg["flags"] = flags
    msg["attrs"] = [("RTA_DST", str(net.network_address)), ("RTA_TABLE", 254)]
    msg.encode()
    return bytes(msg.data)


def hand_packed_v4(dst: str, dst_len: int, flags: int, event: int = RTM_NEWROUTE) -> bytes:
    """An RTM_NEWROUTE packed with struct alone, so the parser is not only tested against the
    encoder it decodes with."""
    rta_dst = struct.pack("=HH", 8, 1) + socket.inet_aton(dst)  # RTA_DST = 1
    body = RTMSG.pack(socket.AF_INET, dst_len, 0, 0, 254, AGENT_PROTO, 0, 1, flags) + rta_dst
    return NLMSG_HDR.pack(NLMSG_HDR.size + len(body), event, 0, 1, 0) + body


@pytest.mark.parametrize(("flags", "expected"), [
    (0, (False, False, False)),
    (RTM_F_OFFLOAD, (True, False, False)),
    (RTM_F_TRAP, (False, True, False)),
    (RTM_F_OFFLOAD_FAILED, (False, False, True)),
    (RTM_F_OFFLOAD | RTM_F_TRAP, (True, True, False)),
    (RTNH_F_OFFLOAD, (True, False, False)),  # pre-5.9 kernels
    (0x100, (False, False, False)),  # RTM_F_NOTIFY is not offload
])
def test_decode_flags(flags: int, expected: tuple[bool, bool, bool]) -> None:
    assert decode_flags(flags) == expected


def test_constants_are_the_kernels() -> None:
    assert (RTM_F_OFFLOAD, RTM_F_TRAP, RTM_F_OFFLOAD_FAILED) == (0x4000, 0x8000, 0x20000000)


def test_parse_plain_dict_ipv4_and_ipv6() -> None:
    v4 = parse_route(route("10.244.1.0/24", RTM_F_OFFLOAD))
    assert v4 is not None
    assert (v4.family, v4.prefix, v4.offload, v4.offload_failed, v4.deleted) == \
        (4, "10.244.1.0/24", True, False, False)
    v6 = parse_route(route("fd00:10:244:1::/64", RTM_F_OFFLOAD_FAILED, table=1000))
    assert v6 is not None
    assert (v6.family, v6.prefix, v6.table, v6.offload_failed) == \
        (6, "fd00:10:244:1::/64", 1000, True)  # table > 255 comes from RTA_TABLE


def test_parse_default_route_and_other_families() -> None:
    msg = {"family": socket.AF_INET, "dst_len": 0, "flags": RTM_F_TRAP, "attrs": []}
    parsed = parse_route(msg)
    assert parsed is not None and parsed.prefix == "0.0.0.0/0" and parsed.trap
    assert parse_route({"family": 28, "flags": RTM_F_OFFLOAD_FAILED}) is None  # AF_MPLS


def test_parse_pyroute2_rtmsg_object() -> None:
    msg = rtmsg(pyroute2_bytes("fd00:1::/64", RTM_F_OFFLOAD_FAILED | RTM_F_OFFLOAD,
                               RTM_DELROUTE))
    msg.decode()
    parsed = parse_route(msg)
    assert parsed is not None
    assert (parsed.family, parsed.prefix, parsed.offload, parsed.offload_failed,
            parsed.deleted, parsed.protocol) == (6, "fd00:1::/64", True, True, True, AGENT_PROTO)


def test_parse_raw_bytes_several_messages_and_skip_others() -> None:
    done = NLMSG_HDR.pack(20, 3, 2, 1, 0) + b"\0\0\0\0"  # NLMSG_DONE
    data = (hand_packed_v4("10.244.1.0", 24, RTM_F_OFFLOAD_FAILED)
            + pyroute2_bytes("10.244.2.0/24", RTM_F_OFFLOAD)
            + pyroute2_bytes("fd00:2::/64", RTM_F_TRAP)
            + done)
    routes = parse_route_bytes(data)
    assert [(r.prefix, r.offload, r.trap, r.offload_failed) for r in routes] == [
        ("10.244.1.0/24", False, False, True),
        ("10.244.2.0/24", True, False, False),
        ("fd00:2::/64", False, True, False),
    ]


def test_truncated_bytes_are_an_error() -> None:
    with pytest.raises(ValueError, match="truncated"):
        parse_route_bytes(hand_packed_v4("10.244.1.0", 24, 0)[:-2])


def test_count_offload_failed_per_family() -> None:
    dump = [
        route("10.244.1.0/24", RTM_F_OFFLOAD),
        route("10.244.2.0/24", RTM_F_OFFLOAD_FAILED),
        route("10.244.3.0/24", RTM_F_OFFLOAD_FAILED),
        route("fd00:1::/64", RTM_F_OFFLOAD_FAILED),
        route("fd00:2::/64", RTM_F_TRAP),
    ]
    assert failed_per_family(dump) == {4: 2, 6: 1}


def test_notifications_clear_and_delete_failed_routes() -> None:
    tracker = OffloadTracker()
    tracker.apply([route("10.244.2.0/24", RTM_F_OFFLOAD_FAILED),
                   route("10.244.3.0/24", RTM_F_OFFLOAD_FAILED)])
    assert tracker.counts() == {4: 2, 6: 0}
    tracker.apply([route("10.244.2.0/24", RTM_F_OFFLOAD)])  # room came back: offloaded now
    tracker.apply([route("10.244.3.0/24", RTM_F_OFFLOAD_FAILED, event=RTM_DELROUTE)])
    assert tracker.counts() == {4: 0, 6: 0}


def test_same_prefix_other_metric_or_table_is_another_route() -> None:
    msgs = [route("10.244.2.0/24", RTM_F_OFFLOAD_FAILED, priority=10),
            route("10.244.2.0/24", RTM_F_OFFLOAD_FAILED, priority=20),
            route("10.244.2.0/24", RTM_F_OFFLOAD_FAILED, table=100),
            route("10.244.2.0/24", RTM_F_OFFLOAD, priority=10)]
    assert failed_per_family(msgs) == {4: 2, 6: 0}


def test_protocol_filter_counts_only_the_agents_routes() -> None:
    msgs = [route("10.244.2.0/24", RTM_F_OFFLOAD_FAILED),
            route("10.99.0.0/24", RTM_F_OFFLOAD_FAILED, proto=186)]  # FRR's BGP route
    assert failed_per_family(msgs) == {4: 2, 6: 0}
    assert failed_per_family(msgs, protocol=AGENT_PROTO) == {4: 1, 6: 0}


def test_mixed_inputs_in_one_replay() -> None:
    msgs: list[RouteInput] = [hand_packed_v4("10.244.1.0", 24, RTM_F_OFFLOAD_FAILED),
                              route("fd00:1::/64", RTM_F_OFFLOAD_FAILED)]
    tracker = OffloadTracker()
    tracker.apply(msgs)
    assert tracker.counts() == {4: 1, 6: 1} and tracker
    # Each was recorded under its own route's identity: a message of the same prefix in the
    # other form (and no other prefix) clears it.
    tracker.apply([route("10.244.9.0/24", RTM_F_OFFLOAD),
                   pyroute2_bytes("fd00:9::/64", RTM_F_OFFLOAD)])
    assert tracker.counts() == {4: 1, 6: 1}
    tracker.apply([route("10.244.1.0/24", RTM_F_OFFLOAD)])
    assert tracker.counts() == {4: 0, 6: 1}
    tracker.apply([pyroute2_bytes("fd00:1::/64", RTM_F_OFFLOAD)])
    assert tracker.counts() == {4: 0, 6: 0} and not tracker


# ---- sysctl --------------------------------------------------------------------------------


def fake_proc(tmp_path: Path, v4: str | None = "0", v6: str | None = "0") -> Path:
    for family, value in (("ipv4", v4), ("ipv6", v6)):
        (tmp_path / "net" / family).mkdir(parents=True)
        if value is not None:
            (tmp_path / "net" / family / "fib_notify_on_flag_change").write_text(value + "\n")
    return tmp_path


def test_sysctl_paths() -> None:
    paths = fib_notify_sysctl_paths()
    assert str(paths[4]) == "/proc/sys/net/ipv4/fib_notify_on_flag_change"
    assert str(paths[6]) == "/proc/sys/net/ipv6/fib_notify_on_flag_change"


def test_enable_sets_2_and_reports(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, v4="0", v6="2")
    outcomes = enable_fib_notify(proc_sys=proc)
    assert [(o.family, o.status, o.previous) for o in outcomes] == \
        [(4, "set", "0"), (6, "unchanged", "2")]
    assert (proc / "net/ipv4/fib_notify_on_flag_change").read_text().strip() == "2"


def test_absent_sysctl_is_reported_not_raised(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, v4=None, v6=None)
    outcomes = enable_fib_notify(proc_sys=proc)
    assert [o.status for o in outcomes] == ["absent", "absent"]
    assert "no such sysctl" in outcomes[0].detail


def test_unwritable_sysctl_is_reported_not_raised(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path)
    target = proc / "net/ipv6/fib_notify_on_flag_change"
    target.unlink()
    target.mkdir()  # reading a directory fails with an OSError other than "not found"
    outcomes = enable_fib_notify(proc_sys=proc)
    assert [o.status for o in outcomes] == ["set", "failed"]


def test_invalid_value_is_a_programming_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        enable_fib_notify(3, proc_sys=tmp_path)


def test_permission_denied_on_write_is_reported(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    proc = fake_proc(tmp_path)

    def refuse(self: Path, *args: object, **kwargs: object) -> int:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "write_text", refuse)  # root ignores file modes: simulate
    outcomes = enable_fib_notify(proc_sys=proc)
    assert [o.status for o in outcomes] == ["failed", "failed"]
    assert "permission denied" in outcomes[0].detail and outcomes[0].previous == "0"
