"""Offload failures through the paths the applier runs: crafted route messages carrying
RTM_F_OFFLOAD_FAILED fed to LinuxDataplane's event reader and its route dumps, counted per
family and reported to Feedback.offload_failed when the counts change; and the fib_notify
sysctl set at start. No switchdev here, so no kernel route ever carries the flag: the messages
are packed by hand."""

from __future__ import annotations

import logging
import socket
import struct
from pathlib import Path

import pytest
from pyroute2.netlink.rtnl import RTM_GETROUTE

from agent.apply.linux import offload
from agent.apply.linux.applier import LinuxDataplane
from agent.apply.linux.offload import (
    NLMSG_HDR,
    RTM_DELROUTE,
    RTM_F_OFFLOAD,
    RTM_F_OFFLOAD_FAILED,
    RTM_NEWROUTE,
    RTMSG,
    enable_offload_notifications,
)
from agent.apply.linux.view import ROUTES
from agent.config import DataplaneConfig
from agent.headroom.resources import Capacity
from tests.recording import RecordingFeedback
from tests.test_linux_fakes import FakeEvents, FakeKernel

AGENT, BGP = 233, 186
FAILED = RTM_F_OFFLOAD_FAILED
NLMSG_ERROR = 2


def msg(prefix: str, flags: int = 0, proto: int = AGENT, event: int = RTM_NEWROUTE,
        table: int = 254) -> bytes:
    """One route message as the kernel sends it: header, rtmsg, RTA_DST."""
    addr, _, plen = prefix.partition("/")
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    raw = socket.inet_pton(family, addr)
    body = RTMSG.pack(family, int(plen), 0, 0, table, proto, 0, 1, flags)
    body += struct.pack("=HH", 4 + len(raw), 1) + raw  # RTA_DST
    return NLMSG_HDR.pack(NLMSG_HDR.size + len(body), event, 0, 1, 0) + body


class EventSockets:
    """open_events for the applier: a new FakeEvents each time, all kept."""

    def __init__(self) -> None:
        self.opened: list[FakeEvents] = []

    async def __call__(self, netns: str | None) -> FakeEvents:
        self.opened.append(FakeEvents())
        return self.opened[-1]


async def feed(plane: LinuxDataplane, events: FakeEvents, *datagrams: bytes) -> None:
    """Each datagram through the event reader, as if the socket had delivered it."""
    for data in datagrams:
        events.put(data)
        await plane._events.read_one()


def make_plane(feedback: RecordingFeedback | None = None,
               sockets: EventSockets | None = None) -> tuple[LinuxDataplane, FakeEvents]:
    """A data plane whose sockets are fakes, without start(): nothing dumped yet."""
    dp = LinuxDataplane(DataplaneConfig(), feedback or RecordingFeedback(), procfs=None,
                        open_events=sockets or EventSockets())
    events = FakeEvents()
    dp._events.source = events
    dp._chan = FakeKernel()
    return dp, events


@pytest.fixture
def plane() -> tuple[LinuxDataplane, FakeEvents]:
    return make_plane()


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


async def test_dumps_rebuild_the_counts() -> None:
    sockets = EventSockets()
    dp, events = make_plane(sockets=sockets)
    kernel = FakeKernel()
    kernel.add_route("10.244.1.0/24", "192.0.2.2", AGENT, FAILED)
    kernel.add_route("10.244.2.0/24", "192.0.2.2", AGENT)
    kernel.add_route("10.0.0.0/8", "192.0.2.9", BGP, FAILED)
    kernel.add_route("fd00:2::/64", "2001:db8::9", BGP, FAILED)
    kernel.add_route("10.1.0.0/16", "192.0.2.9", BGP)
    dp._chan = kernel
    await dp._observe({ROUTES})  # the first one also dumps the whole main table
    assert {(RTM_GETROUTE, socket.AF_INET, 0), (RTM_GETROUTE, socket.AF_INET6, 0)} <= set(
        kernel.dumps)
    assert dp.offload_failed_counts() == {4: 2, 6: 1}

    # A later resync dumps only the agent's routes and replaces only their count: the
    # agent's failed route is gone from the kernel (its deletion event was missed).
    kernel.remove_route("10.244.1.0/24")
    kernel.dumps.clear()
    await dp._observe({ROUTES})
    assert {proto for _t, _f, proto in kernel.dumps} == {AGENT}
    assert dp.offload_failed_counts() == {4: 1, 6: 1}

    # Lost events (the socket overflowed): the whole table is dumped again on the next pass,
    # so a failed route deleted meanwhile stops counting.
    await feed(dp, events, NLMSG_HDR.pack(36, NLMSG_ERROR, 0, 0, 0) + b"\0" * 20)
    assert events.closed and sockets.opened and dp._events.source is sockets.opened[-1]
    kernel.remove_route("fd00:2::/64")
    kernel.dumps.clear()
    await dp._observe({ROUTES})
    assert (RTM_GETROUTE, socket.AF_INET6, 0) in kernel.dumps
    assert dp.offload_failed_counts() == {4: 1, 6: 0}


async def test_offload_counts_reach_feedback_when_they_change() -> None:
    feedback = RecordingFeedback()
    kernel = FakeKernel()
    kernel.add_route("10.0.0.0/8", "192.0.2.9", BGP, FAILED)
    sockets = EventSockets()
    dp = LinuxDataplane(DataplaneConfig(), feedback, procfs=None, open_channel=kernel.open,
                        open_events=sockets, read_devlink=_no_devlink)
    await dp.start()
    assert feedback.offload == [{4: 1, 6: 0}]  # once after start, from the dumps
    events = sockets.opened[-1]
    # the agent's own route is refused by the ASIC after it was installed (an event says so)
    kernel.add_route("10.244.1.0/24", "192.0.2.2", AGENT, FAILED)
    await feed(dp, events, msg("10.244.1.0/24", FAILED), msg("fd00:1::/64", FAILED, proto=BGP))
    assert feedback.offload[-2:] == [{4: 2, 6: 0}, {4: 2, 6: 1}]
    reported = len(feedback.offload)
    await feed(dp, events, msg("10.244.7.0/24", RTM_F_OFFLOAD))  # no change: not reported
    await dp.resync()  # the dump of the agent's routes agrees with the events: not reported
    assert len(feedback.offload) == reported
    await feed(dp, events, msg("10.0.0.0/8", proto=BGP, event=RTM_DELROUTE))
    assert feedback.offload[-1] == {4: 1, 6: 1}
    # the flag cleared and the event was missed: the next dump of the agent's routes tells
    kernel.add_route("10.244.1.0/24", "192.0.2.2", AGENT, RTM_F_OFFLOAD)
    await dp.resync()
    assert feedback.offload[-1] == {4: 0, 6: 1}
    await dp.close()


async def _no_devlink() -> dict[str, Capacity]:
    return {}


# --- net.ipv{4,6}.fib_notify_on_flag_change at start -------------------------------------------


def fake_sysctls(root: Path, v4: str | None, v6: str | None) -> Path:
    for family, value in ((4, v4), (6, v6)):
        if value is not None:
            path = root / f"sys/net/ipv{family}/fib_notify_on_flag_change"
            path.parent.mkdir(parents=True)
            path.write_text(value + "\n")
    return root


@pytest.mark.parametrize(("v4", "v6", "levels"), [
    (None, None, {logging.INFO}),  # absent: a fact, not a problem
    ("0", "2", {logging.INFO}),  # set, and already set
])
def test_fib_notify_outcomes_are_logged_once_each(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
    v4: str | None, v6: str | None, levels: set[int]
) -> None:
    proc = fake_sysctls(tmp_path, v4, v6)
    with caplog.at_level(logging.INFO, logger="agent.apply.linux.offload"):
        enable_offload_notifications(proc / "sys")
    lines = [r for r in caplog.records if "fib_notify_on_flag_change" in r.getMessage()]
    assert [r.getMessage().split(":")[0] for r in lines] == [
        "net.ipv4.fib_notify_on_flag_change", "net.ipv6.fib_notify_on_flag_change"]
    assert {r.levelno for r in lines} == levels
    if v4 is None:
        assert "no such sysctl" in lines[0].getMessage()
    else:
        assert (proc / "sys/net/ipv4/fib_notify_on_flag_change").read_text() == "2\n"


def test_fib_notify_failure_is_a_warning_with_the_way_out(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refused(value: int, proc_sys: Path) -> tuple[offload.SysctlOutcome, ...]:
        return tuple(offload.SysctlOutcome(f, f"/proc/sys/net/ipv{f}/x", "failed", "0",
                                           "cannot set to 2: permission denied") for f in (4, 6))

    monkeypatch.setattr(offload, "enable_fib_notify", refused)
    with caplog.at_level(logging.INFO, logger="agent.apply.linux.offload"):
        enable_offload_notifications()
    assert [r.levelno for r in caplog.records] == [logging.WARNING, logging.WARNING]
    assert "sysctl.d" in caplog.records[0].getMessage()


async def test_start_sets_the_sysctl_of_its_own_namespace_only(tmp_path: Path) -> None:
    proc = fake_sysctls(tmp_path, "0", "0")
    kernel = FakeKernel()
    own = LinuxDataplane(DataplaneConfig(), RecordingFeedback(), procfs=proc,
                         open_channel=kernel.open, open_events=EventSockets(),
                         read_devlink=_no_devlink)
    await own.start()
    await own.close()
    assert (proc / "sys/net/ipv4/fib_notify_on_flag_change").read_text() == "2\n"
    assert (proc / "sys/net/ipv6/fib_notify_on_flag_change").read_text() == "2\n"

    other = fake_sysctls(tmp_path / "other", "0", "0")
    elsewhere = LinuxDataplane(DataplaneConfig(), RecordingFeedback(), netns="ns1",
                               procfs=other, open_channel=kernel.open,
                               open_events=EventSockets(), read_devlink=_no_devlink)
    await elsewhere.start()
    await elsewhere.close()
    assert kernel.opened[-1] == "ns1"
    # /proc is the agent's namespace's, not ns1's: left alone
    assert (other / "sys/net/ipv4/fib_notify_on_flag_change").read_text() == "0\n"
