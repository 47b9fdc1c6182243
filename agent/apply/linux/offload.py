"""Did the hardware take a route? The switchdev route flags, and the sysctl that makes the
kernel announce when it did not.

The netlink ACK of RTM_NEWROUTE only means the *kernel* took the route. On a switchdev ASIC
(mlxsw) a route the hardware cannot hold stays in the kernel marked rt_offload_failed and its
traffic goes through the CPU: the silent overflow the headroom tracker exists to catch. With
`net.ipv{4,6}.fib_notify_on_flag_change = 2` the kernel sends an RTM_NEWROUTE notification
whenever a route's offload-failed flag changes (1 would notify on every offload/trap change:
a storm for nothing during a full table install), so a listener on the route groups learns of
exhaustion as it happens.

Pure parsing of route messages in three forms:
- pyroute2 0.9 `rtmsg` objects (dict subclasses: header fields as keys, `attrs` as NLA slots);
- plain dicts of the same shape (`{"family": 2, "dst_len": 24, "flags": ..., "attrs":
  [("RTA_DST", "10.0.0.0")], "header": {"type": 24}}`), which is what tests craft;
- raw bytes of one or more netlink messages, as read from a NETLINK_ROUTE socket.

The Linux applier keeps two OffloadTrackers (its own routes, everyone else's: FRR's BGP routes
fill the same hardware table) fed from its events and dumps (agent.apply.linux.view.feed_offload)
and sets the sysctl at start (`enable_offload_notifications`).
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
import struct
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

log = logging.getLogger(__name__)

# The kernel's uapi header linux/rtnetlink.h
RTM_F_OFFLOAD = 0x4000  # route is offloaded to hardware
RTM_F_TRAP = 0x8000  # route is in hardware but traps packets to the CPU (e.g. local routes)
RTM_F_OFFLOAD_FAILED = 0x20000000  # hardware refused the route: traffic goes through the CPU
# Kernels before 5.9 reported offload per nexthop, and for single-path IPv4 routes copied the
# nexthop flag into rtm_flags; recognised so an older switch still reads as offloaded.
RTNH_F_OFFLOAD = 0x8
RTNH_F_TRAP = 0x40

RTM_NEWROUTE = 24
RTM_DELROUTE = 25
NLMSG_HDR = struct.Struct("=IHHII")  # length, type, flags, seq, pid
# family, dst_len, src_len, tos, table, proto, scope, type, flags (what tests pack by hand)
RTMSG = struct.Struct("=BBBBBBBBI")
RT_TABLE_MAIN = 254

Family = Literal[4, 6]
_FAMILIES: Mapping[int, Family] = {socket.AF_INET: 4, socket.AF_INET6: 6}


@dataclass(frozen=True)
class RouteOffload:
    """A route message reduced to what offload accounting needs."""

    family: Family
    prefix: str  # canonical CIDR; "0.0.0.0/0" / "::/0" when the message has no RTA_DST
    table: int
    protocol: int
    priority: int  # RTA_PRIORITY (metric): same prefix, different metric = a different route
    tos: int
    offload: bool
    trap: bool
    offload_failed: bool
    deleted: bool  # RTM_DELROUTE

    @property
    def key(self) -> tuple[int, int, str, int, int]:
        """Identity of the route in the kernel FIB (what a later message updates)."""
        return (self.family, self.table, self.prefix, self.tos, self.priority)


def decode_flags(flags: int) -> tuple[bool, bool, bool]:
    """(offload, trap, offload_failed) from rtm_flags."""
    return (
        bool(flags & (RTM_F_OFFLOAD | RTNH_F_OFFLOAD)),
        bool(flags & (RTM_F_TRAP | RTNH_F_TRAP)),
        bool(flags & RTM_F_OFFLOAD_FAILED),
    )


def _attrs(msg: Mapping[str, Any]) -> dict[str, Any]:
    """The message's attributes as a dict, from pyroute2 NLA slots, (name, value) pairs or a
    dict. The first occurrence wins, as pyroute2's get_attr does."""
    raw = msg.get("attrs") or ()
    if isinstance(raw, Mapping):
        return dict(raw)
    result: dict[str, Any] = {}
    for item in raw:
        name, value = item[0], item[1]  # nla_slot and tuples both index this way
        result.setdefault(str(name), value)
    return result


def _message_type(msg: Mapping[str, Any]) -> int:
    header = msg.get("header")
    if isinstance(header, Mapping) and "type" in header:
        return int(header["type"])
    event = msg.get("event")
    if event == "RTM_DELROUTE":
        return RTM_DELROUTE
    return RTM_NEWROUTE  # a dump answers with RTM_NEWROUTE


def parse_route(msg: Mapping[str, Any]) -> RouteOffload | None:
    """A pyroute2 rtmsg or an equivalent dict -> RouteOffload; None for families the agent
    does not route (MPLS, multicast families)."""
    family = _FAMILIES.get(int(msg.get("family", 0)))
    if family is None:
        return None
    attrs = _attrs(msg)
    dst = attrs.get("RTA_DST") or ("0.0.0.0" if family == 4 else "::")
    network = ipaddress.ip_network(f"{dst}/{int(msg.get('dst_len', 0))}", strict=False)
    table = int(attrs.get("RTA_TABLE", msg.get("table", RT_TABLE_MAIN)))  # >255 only in attr
    offload, trap, failed = decode_flags(int(msg.get("flags", 0)))
    return RouteOffload(
        family=family,
        prefix=str(network),
        table=table,
        protocol=int(msg.get("proto", 0)),
        priority=int(attrs.get("RTA_PRIORITY", 0)),
        tos=int(msg.get("tos", 0)),
        offload=offload,
        trap=trap,
        offload_failed=failed,
        deleted=_message_type(msg) == RTM_DELROUTE,
    )


def split_messages(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(type, whole message) for each netlink message in a datagram."""
    offset = 0
    while offset + NLMSG_HDR.size <= len(data):
        length, mtype, _flags, _seq, _pid = NLMSG_HDR.unpack_from(data, offset)
        if length < NLMSG_HDR.size or offset + length > len(data):
            raise ValueError(f"truncated netlink message at offset {offset}")
        yield mtype, data[offset:offset + length]
        offset += (length + 3) & ~3  # NLMSG_ALIGN


def parse_route_bytes(data: bytes) -> list[RouteOffload]:
    """Raw netlink bytes (one datagram, possibly several messages) -> route records; other
    message types (NLMSG_DONE, errors, links) are skipped. Decoded with pyroute2's rtmsg, the
    same decoder the agent's netlink socket uses."""
    from pyroute2.netlink.rtnl.rtmsg import rtmsg  # imported late: pure callers need not pay

    routes: list[RouteOffload] = []
    for mtype, raw in split_messages(data):
        if mtype not in (RTM_NEWROUTE, RTM_DELROUTE):
            continue
        msg = rtmsg(raw)
        msg.decode()
        route = parse_route(msg)
        if route is not None:
            routes.append(route)
    return routes


RouteInput = Mapping[str, Any] | RouteOffload | bytes


def _records(messages: Iterable[RouteInput]) -> Iterator[RouteOffload]:
    for msg in messages:
        if isinstance(msg, RouteOffload):
            yield msg
        elif isinstance(msg, bytes | bytearray | memoryview):
            yield from parse_route_bytes(bytes(msg))
        else:
            route = parse_route(msg)
            if route is not None:
                yield route


class OffloadTracker:
    """Routes whose latest message says offload failed, kept across notifications: a route
    that failed and was later offloaded (flag cleared) or deleted stops counting."""

    def __init__(self, protocol: int | None = None) -> None:
        self._protocol = protocol  # count only this owner's routes; None = every route
        self._failed: dict[tuple[int, int, str, int, int], RouteOffload] = {}

    def apply(self, messages: Iterable[RouteInput]) -> None:
        for route in _records(messages):
            if self._protocol is not None and route.protocol != self._protocol:
                continue
            if route.offload_failed and not route.deleted:
                self._failed[route.key] = route
            else:
                self._failed.pop(route.key, None)

    def counts(self) -> dict[Family, int]:
        result: dict[Family, int] = {4: 0, 6: 0}
        for route in self._failed.values():
            result[route.family] += 1
        return result

    def __bool__(self) -> bool:
        """Whether any route counts: O(1), so a caller can skip decoding (pyroute2) the
        messages that could not change an empty tracker."""
        return bool(self._failed)


# ---- net.ipv{4,6}.fib_notify_on_flag_change ------------------------------------------------

FIB_NOTIFY_OFFLOAD_FAILED = 2  # notify only when the offload-failed flag changes


def fib_notify_sysctl_paths(proc_sys: Path = Path("/proc/sys")) -> dict[Family, Path]:
    return {
        4: proc_sys / "net/ipv4/fib_notify_on_flag_change",
        6: proc_sys / "net/ipv6/fib_notify_on_flag_change",
    }


@dataclass(frozen=True)
class SysctlOutcome:
    family: Family
    path: str
    status: Literal["set", "unchanged", "absent", "failed"]
    previous: str | None
    detail: str


def enable_fib_notify(
    value: int = FIB_NOTIFY_OFFLOAD_FAILED, proc_sys: Path = Path("/proc/sys")
) -> tuple[SysctlOutcome, ...]:
    """Set fib_notify_on_flag_change for both families and report per family what happened.
    Never raises for the machine's reasons: a kernel without the sysctl (before 5.14, or a
    namespace without it) or without permission is a fact to report, not a crash; the agent
    then learns of failed offloads only from periodic dumps."""
    if value not in (0, 1, 2):
        raise ValueError(f"fib_notify_on_flag_change takes 0, 1 or 2, not {value}")
    outcomes: list[SysctlOutcome] = []
    for family, path in fib_notify_sysctl_paths(proc_sys).items():
        try:
            previous = path.read_text().strip()
        except FileNotFoundError:
            outcomes.append(SysctlOutcome(family, str(path), "absent", None,
                                          "the kernel has no such sysctl (before 5.14?): "
                                          "offload failures are seen only by dumping routes"))
            continue
        except OSError as exc:
            outcomes.append(SysctlOutcome(family, str(path), "failed", None,
                                          f"cannot read: {exc.strerror or exc}"))
            continue
        if previous == str(value):
            outcomes.append(SysctlOutcome(family, str(path), "unchanged", previous,
                                          f"already {value}"))
            continue
        try:
            path.write_text(f"{value}\n")
        except OSError as exc:
            why = "permission denied" if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS) \
                else (exc.strerror or str(exc))
            outcomes.append(SysctlOutcome(family, str(path), "failed", previous,
                                          f"cannot set to {value}: {why}"))
            continue
        outcomes.append(SysctlOutcome(family, str(path), "set", previous,
                                      f"{previous} -> {value}"))
    return tuple(outcomes)


def enable_offload_notifications(proc_sys: Path = Path("/proc/sys")) -> None:
    """Ask the kernel to announce routes whose offload to the ASIC failed, and log what
    happened per family once. Absent (kernels before 5.14) is a fact, not an error: such a
    kernel has no offload-failed flag to announce. Refused: failures are then seen only in the
    agent's route dumps."""
    for outcome in enable_fib_notify(FIB_NOTIFY_OFFLOAD_FAILED, proc_sys=proc_sys):
        name = f"net.ipv{outcome.family}.fib_notify_on_flag_change"
        if outcome.status == "failed":
            log.warning("%s: %s; offload failures are seen only in the agent's route dumps "
                        "(set it to %d in sysctl.d: the unit's ProtectKernelTunables keeps "
                        "/proc/sys read-only)", name, outcome.detail, FIB_NOTIFY_OFFLOAD_FAILED)
        else:
            log.info("%s: %s", name, outcome.detail)
