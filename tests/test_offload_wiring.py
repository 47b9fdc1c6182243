"""Offload failures through the paths the daemon runs: crafted route messages carrying
RTM_F_OFFLOAD_FAILED fed to LinuxDataplane's event reader and its route dumps, counted per
family, and turned by the daemon into a data plane health failure and one event. No switchdev
here, so no kernel route ever carries the flag: the messages are packed by hand."""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest

from agent.apply.linux import offload
from agent.apply.linux.dataplane import ROUTES, LinuxDataplane
from agent.apply.linux.offload import (
    NLMSG_HDR,
    RTM_DELROUTE,
    RTM_F_OFFLOAD,
    RTM_F_OFFLOAD_FAILED,
    RTM_NEWROUTE,
    RTMSG,
)
from agent.config import DataplaneConfig
from agent.runtime.daemon import enable_offload_notifications

AGENT, BGP = 233, 186
FAILED = RTM_F_OFFLOAD_FAILED
NLMSG_DONE, NLMSG_ERROR = 3, 2


def msg(prefix: str, flags: int = 0, proto: int = AGENT, event: int = RTM_NEWROUTE,
        table: int = 254) -> bytes:
    """One route message as the kernel sends it: header, rtmsg, RTA_DST."""
    addr, _, plen = prefix.partition("/")
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    raw = socket.inet_pton(family, addr)
    body = RTMSG.pack(family, int(plen), 0, 0, table, proto, 0, 1, flags)
    body += struct.pack("=HH", 4 + len(raw), 1) + raw  # RTA_DST
    return NLMSG_HDR.pack(NLMSG_HDR.size + len(body), event, 0, 1, 0) + body


def done() -> bytes:
    return NLMSG_HDR.pack(20, NLMSG_DONE, 2, 1, 0) + b"\0\0\0\0"


class FakeQueue:
    def __init__(self) -> None:
        self.items: asyncio.Queue[bytes] = asyncio.Queue()

    async def get(self, _tag: int) -> bytes:
        return await self.items.get()


class FakeEvents:
    """The event socket as _read_event() uses it: a message queue and close()."""

    def __init__(self) -> None:
        self.msg_queue = FakeQueue()
        self.closed = False

    def close(self) -> None:
        self.closed = True


class FakeChannel:
    """Answers route dumps: by the request's protocol (0 = the whole main table)."""

    def __init__(self, routes: list[bytes]) -> None:
        self.routes = routes
        self.requests: list[tuple[int, int]] = []  # (family, protocol)

    async def dump(self, request: Callable[[int], bytes]) -> list[bytes]:
        family, _dl, _sl, _tos, _table, proto, *_ = RTMSG.unpack_from(request(1), 16)
        self.requests.append((family, proto))
        picked = b""
        for m in self.routes:
            r_family, _dl, _sl, _tos, _table, r_proto, *_ = RTMSG.unpack_from(m, 16)
            if r_family == family and proto in (0, r_proto):
                picked += m
        return [picked + done()]


async def feed(plane: LinuxDataplane, events: FakeEvents, *datagrams: bytes) -> None:
    for data in datagrams:
        events.msg_queue.items.put_nowait(data)
        await plane._read_event()


@pytest.fixture
def plane() -> tuple[LinuxDataplane, FakeEvents]:
    dp = LinuxDataplane(DataplaneConfig())
    events = FakeEvents()
    dp._events = cast(Any, events)
    dp._chan = cast(Any, FakeChannel([]))
    return dp, events


async def test_events_count_failed_routes_per_family_until_cleared(
    plane: tuple[LinuxDataplane, FakeEvents],
) -> None:
    dp, events = plane
    assert dp.offload_failed_counts() == {4: 0, 6: 0}
    await feed(dp, events,
               msg("10.244.1.0/24", FAILED),                 # the agent's route
               msg("10.244.2.0/24", FAILED, proto=BGP),      # FRR's: same hardware table
               msg("fd00:1::/64", FAILED, proto=BGP),
               msg("10.9.0.0/16", FAILED, table=100),        # another table: not counted
               msg("10.244.3.0/24", RTM_F_OFFLOAD),          # offloaded fine
               msg("10.244.4.0/24", FAILED) + msg("10.244.5.0/24", FAILED))  # one datagram
    assert dp.offload_failed_counts() == {4: 4, 6: 1}
    # The flag clears (offloaded after all), a route goes away, an IPv6 one is re-sent.
    await feed(dp, events,
               msg("10.244.1.0/24", RTM_F_OFFLOAD),
               msg("10.244.2.0/24", proto=BGP, event=RTM_DELROUTE),
               msg("fd00:1::/64", FAILED, proto=BGP))
    assert dp.offload_failed_counts() == {4: 2, 6: 1}


async def test_dumps_rebuild_the_counts(plane: tuple[LinuxDataplane, FakeEvents]) -> None:
    dp, events = plane
    chan = FakeChannel([
        msg("10.244.1.0/24", FAILED), msg("10.244.2.0/24"),
        msg("10.0.0.0/8", FAILED, proto=BGP), msg("fd00:2::/64", FAILED, proto=BGP),
        msg("10.1.0.0/16", proto=BGP),
    ])
    dp._chan = cast(Any, chan)
    await dp._observe({ROUTES})  # the first one also dumps the whole main table
    assert (socket.AF_INET, 0) in chan.requests and (socket.AF_INET6, 0) in chan.requests
    assert dp.offload_failed_counts() == {4: 2, 6: 1}

    # A later resync dumps only the agent's routes and replaces only their count: the
    # agent's failed route is gone from the kernel (its deletion event was missed).
    chan.routes = [m for m in chan.routes if m != msg("10.244.1.0/24", FAILED)]
    chan.requests.clear()
    await dp._observe({ROUTES})
    assert {proto for _f, proto in chan.requests} == {AGENT}
    assert dp.offload_failed_counts() == {4: 1, 6: 1}

    # Lost events (the socket overflowed): the whole table is dumped again on the next pass,
    # so a failed route deleted meanwhile stops counting.
    reopened: list[FakeEvents] = []

    async def reopen() -> None:
        reopened.append(FakeEvents())
        dp._events = cast(Any, reopened[-1])

    dp._open_events = reopen  # type: ignore[method-assign]
    await feed(dp, events, NLMSG_HDR.pack(36, NLMSG_ERROR, 0, 0, 0) + b"\0" * 20)
    assert events.closed and reopened
    chan.routes = [m for m in chan.routes if m != msg("fd00:2::/64", FAILED, proto=BGP)]
    chan.requests.clear()
    await dp._observe({ROUTES})
    assert (socket.AF_INET6, 0) in chan.requests
    assert dp.offload_failed_counts() == {4: 1, 6: 0}


@pytest.mark.parametrize(("v4", "v6", "levels"), [
    (None, None, {logging.INFO}),  # absent: a fact, not a problem
    ("0", "2", {logging.INFO}),  # set, and already set
])
def test_fib_notify_outcomes_are_logged_once_each(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
    v4: str | None, v6: str | None, levels: set[int]
) -> None:
    for family, value in ((4, v4), (6, v6)):
        if value is not None:
            path = tmp_path / f"net/ipv{family}/fib_notify_on_flag_change"
            path.parent.mkdir(parents=True)
            path.write_text(value + "\n")
    real = offload.enable_fib_notify
    monkeypatch.setattr(offload, "enable_fib_notify",
                        lambda value: real(value, proc_sys=tmp_path))
    with caplog.at_level(logging.INFO, logger="agent.runtime.daemon"):
        enable_offload_notifications()
    lines = [r for r in caplog.records if "fib_notify_on_flag_change" in r.getMessage()]
    assert [r.getMessage().split(":")[0] for r in lines] == [
        "net.ipv4.fib_notify_on_flag_change", "net.ipv6.fib_notify_on_flag_change"]
    assert {r.levelno for r in lines} == levels
    if v4 is None:
        assert "no such sysctl" in lines[0].getMessage()
    else:
        assert (tmp_path / "net/ipv4/fib_notify_on_flag_change").read_text() == "2\n"


def test_fib_notify_failure_is_a_warning_with_the_way_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refused(value: int) -> tuple[offload.SysctlOutcome, ...]:
        return tuple(offload.SysctlOutcome(f, f"/proc/sys/net/ipv{f}/x", "failed", "0",
                                           "cannot set to 2: permission denied") for f in (4, 6))

    monkeypatch.setattr(offload, "enable_fib_notify", refused)
    with caplog.at_level(logging.INFO, logger="agent.runtime.daemon"):
        enable_offload_notifications()
    assert [r.levelno for r in caplog.records] == [logging.WARNING, logging.WARNING]
    assert "sysctl.d" in caplog.records[0].getMessage()
