"""LinuxDataplane's reconcile logic without root: the applier over FakeKernel (a fake of the
netlink channel, tests/test_linux_fakes.py) and FakeEvents, and its side of the applier
contract: ApplyResult, held(), counts(), loops() and what it tells Feedback. The same logic
against the real kernel is tests/test_linux_dataplane.py (root)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from pyroute2.netlink import NLM_F_EXCL, NLM_F_REPLACE
from pyroute2.netlink.rtnl import RTM_DELROUTE, RTM_NEWROUTE

from agent.apply import contract
from agent.apply.linux import applier as applier_module
from agent.apply.linux.applier import LinuxDataplane
from agent.apply.linux.channel import ChannelError
from agent.config import DataplaneConfig
from agent.errors import StartupError
from agent.headroom.resources import Capacity
from agent.plan.model import DataplaneDesired, StaticRoute
from tests.recording import RecordingFeedback
from tests.test_linux_fakes import FakeEvents, FakeKernel

PROTO = 233
STATIC = (
    StaticRoute("s1", "10.1.0.0/24", "192.0.2.2"),
    StaticRoute("s2", "10.2.0.0/24", "192.0.2.2"),
    StaticRoute("s2", "fd00:2::/64", "2001:db8::2"),
)
DEVLINK = {"ipv4_routes": Capacity(1000, "devlink:netdevsim/netdevsim1:/IPv4/fib")}


class Rig:
    """A LinuxDataplane wired to fakes, and the fakes."""

    def __init__(self, procfs: Path | None = None) -> None:
        self.kernel = FakeKernel()
        self.feedback = RecordingFeedback()
        self.events: list[FakeEvents] = []
        self.devlink_reads = 0
        self.dp = LinuxDataplane(DataplaneConfig(), self.feedback, procfs=procfs,
                                 open_channel=self.kernel.open, open_events=self._open_events,
                                 read_devlink=self._read_devlink)

    async def _open_events(self, netns: str | None) -> FakeEvents:
        self.events.append(FakeEvents())
        return self.events[-1]

    async def _read_devlink(self) -> dict[str, Capacity]:
        self.devlink_reads += 1
        return dict(DEVLINK)


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    r = Rig()
    await r.dp.start()
    try:
        yield r
    finally:
        await r.dp.close()


@contextlib.asynccontextmanager
async def running(task_fn: Callable[[], Awaitable[None]]) -> AsyncIterator[None]:
    task = asyncio.create_task(task_fn())
    try:
        yield
    finally:
        task.cancel()
        async with asyncio.timeout(5):
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def until(check: Callable[[], bool], what: str, limit: float = 2.0) -> None:
    deadline = asyncio.get_running_loop().time() + limit
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not within {limit}s: {what}")
        await asyncio.sleep(0.005)


def writes(kernel: FakeKernel) -> list[tuple[str, str]]:
    """("add" | "replace" | "del", dst) of every route write since the last clear."""
    out = []
    for msg_type, flags, dst in kernel.sent:
        if msg_type == RTM_NEWROUTE:
            out.append(("add" if flags & NLM_F_EXCL else
                        "replace" if flags & NLM_F_REPLACE else "?", dst))
        elif msg_type == RTM_DELROUTE:
            out.append(("del", dst))
    return sorted(out)


# --- reconcile ----------------------------------------------------------------------------------


async def test_apply_installs_only_the_difference(rig: Rig) -> None:
    result = await rig.dp.apply(DataplaneDesired(PROTO, STATIC))
    assert result.ok and result.action == "applied", result
    assert result.counts["routes"] == contract.TableCounts(added=3)
    assert writes(rig.kernel) == [("add", "10.1.0.0/24"), ("add", "10.2.0.0/24"),
                                  ("add", "fd00:2::/64")]
    assert rig.kernel.owned(PROTO) == {"10.1.0.0/24": "192.0.2.2", "10.2.0.0/24": "192.0.2.2",
                                       "fd00:2::/64": "2001:db8::2"}

    rig.kernel.sent.clear()
    changed = (
        StaticRoute("s1", "10.1.0.0/24", "192.0.2.2"),  # unchanged
        StaticRoute("s2", "10.2.0.0/24", "192.0.2.3"),  # new next hop
        StaticRoute("s3", "10.3.0.0/24", "192.0.2.2"),  # new; fd00:2::/64 goes
    )
    result = await rig.dp.apply(DataplaneDesired(PROTO, changed))
    assert result.ok and result.counts["routes"] == contract.TableCounts(1, 1, 1), result
    assert writes(rig.kernel) == [("add", "10.3.0.0/24"), ("del", "fd00:2::/64"),
                                  ("replace", "10.2.0.0/24")]
    assert rig.kernel.owned(PROTO) == {"10.1.0.0/24": "192.0.2.2", "10.2.0.0/24": "192.0.2.3",
                                       "10.3.0.0/24": "192.0.2.2"}


async def test_a_second_apply_and_a_resync_change_nothing(rig: Rig) -> None:
    desired = DataplaneDesired(PROTO, STATIC)
    await rig.dp.apply(desired)
    rig.kernel.sent.clear()
    rig.kernel.dumps.clear()
    again = await rig.dp.apply(desired)
    assert again.ok and again.action == "unchanged" and again.changes == 0, again
    assert rig.kernel.sent == [] and rig.kernel.dumps == []  # not even looked at
    resync = await rig.dp.resync()
    assert resync.ok and resync.action == "in-sync" and resync.changes == 0, resync
    assert rig.kernel.sent == [] and rig.kernel.dumps  # looked, wrote nothing


async def test_removal_deletes_only_what_it_owns(rig: Rig) -> None:
    rig.kernel.add_route("10.60.0.0/24", "192.0.2.9", 4)  # another owner's (proto static)
    rig.kernel.add_route("10.2.0.0/24", "192.0.2.9", 4)  # ... at the key of a desired one
    await rig.dp.resync()  # the agent looks at the kernel again: foreign routes are not its
    result = await rig.dp.apply(DataplaneDesired(PROTO, STATIC))
    assert not result.ok and result.action == "partial"
    assert result.details["errors"] == (
        "routes 10.2.0.0/24 via 192.0.2.2: EEXIST: the prefix is held by a route the agent "
        "does not own; left alone",)
    assert result.error == result.details["errors"][0]
    assert rig.kernel.protocols()["10.2.0.0/24"] == 4  # not replaced

    rig.kernel.sent.clear()
    removed = await rig.dp.apply(DataplaneDesired(PROTO))
    assert removed.ok and removed.counts["routes"].removed == 2, removed
    assert writes(rig.kernel) == [("del", "10.1.0.0/24"), ("del", "fd00:2::/64")]
    assert rig.kernel.protocols() == {"10.60.0.0/24": 4, "10.2.0.0/24": 4}


async def test_a_foreign_route_is_never_deleted_even_when_it_replaced_ours(rig: Rig) -> None:
    await rig.dp.apply(DataplaneDesired(PROTO, STATIC))
    # someone replaces our 10.1.0.0/24 with theirs, behind the agent's back
    rig.kernel.add_route("10.1.0.0/24", "192.0.2.9", 4)
    rig.kernel.sent.clear()
    result = await rig.dp.resync()
    assert not result.ok and "10.1.0.0/24" in (result.error or "")
    removed = await rig.dp.apply(DataplaneDesired(PROTO))
    assert ("del", "10.1.0.0/24") not in writes(rig.kernel), removed
    assert rig.kernel.protocols() == {"10.1.0.0/24": 4}


async def test_held_reports_observed_routes_not_desired(rig: Rig) -> None:
    """(c): held() is what the kernel was seen to hold, never what was asked for."""
    rig.kernel.refuse["10.2.0.0/24"] = (errno.ENETUNREACH, "Nexthop has invalid gateway")
    result = await rig.dp.apply(DataplaneDesired(PROTO, STATIC))
    assert result.action == "partial"
    assert rig.dp.held() == {"routes": frozenset({"10.1.0.0/24", "fd00:2::/64"}),
                             "fdb": frozenset()}
    # a route taken away behind the agent's back that cannot be put back: the next dump
    # (every resync) drops it from held()
    rig.kernel.remove_route("fd00:2::/64")
    rig.kernel.refuse["fd00:2::/64"] = (errno.ENETUNREACH, "")
    await rig.dp.resync()
    assert rig.dp.held()["routes"] == {"10.1.0.0/24"}
    # and once the kernel takes them, they are held
    rig.kernel.refuse.clear()
    await rig.dp.resync()
    assert rig.dp.held()["routes"] == {"10.1.0.0/24", "10.2.0.0/24", "fd00:2::/64"}


async def test_a_stray_route_of_ours_seen_in_an_event_is_deleted(rig: Rig) -> None:
    """(d) through the applier: a route with the agent's protocol that nobody desires appears
    (an event tells); the repair deletes it and asks for a new plan."""
    await rig.dp.apply(DataplaneDesired(PROTO, STATIC))
    events = rig.events[-1]
    async with running(rig.dp.run_events):
        events.put(rig.kernel.add_route("10.77.0.0/24", "192.0.2.2", PROTO))
        await until(lambda: "10.77.0.0/24" not in rig.kernel.protocols(), "stray deleted")
        await until(lambda: bool(rig.feedback.replans), "replan asked")
        assert "routes +0 ~0 -1" in rig.feedback.replans[0]
        assert rig.dp.last_repair is not None and rig.dp.last_repair.action == "repaired"
        # one of ours deleted behind the agent's back comes back
        events.put(rig.kernel.remove_route("10.1.0.0/24"))
        await until(lambda: "10.1.0.0/24" in rig.kernel.protocols(), "route restored")
    assert set(rig.kernel.owned(PROTO)) == {"10.1.0.0/24", "10.2.0.0/24", "fd00:2::/64"}


async def test_a_failed_socket_fails_the_pass_and_is_reopened(rig: Rig) -> None:
    async def broken(*_args: object) -> dict[int, tuple[int, str]]:
        raise ChannelError("netlink socket closed")

    rig.kernel.batch = broken  # type: ignore[method-assign,assignment]
    result = await rig.dp.apply(DataplaneDesired(PROTO, STATIC))
    assert not result.ok and result.action == "failed"
    assert result.error == "netlink: netlink socket closed"
    assert rig.kernel.closed
    del rig.kernel.batch
    retry = await rig.dp.apply(DataplaneDesired(PROTO, STATIC))
    assert retry.ok and retry.counts["routes"].added == 3, retry
    assert len(rig.kernel.opened) == 2


# --- the contract -------------------------------------------------------------------------------


async def test_results_are_the_contracts(rig: Rig) -> None:
    assert rig.dp.name == "dataplane"
    result = await rig.dp.apply(DataplaneDesired(PROTO, STATIC))
    assert isinstance(result, contract.ApplyResult)
    assert result.applier == "dataplane" and result.started > 1e9 and result.duration >= 0
    assert set(result.counts) == {"links", "neighbors", "fdb", "routes"}
    assert all(isinstance(c, contract.TableCounts) for c in result.counts.values())
    assert result.details == {} and result.error is None
    wrong = await rig.dp.apply(DataplaneDesired(PROTO + 1, STATIC))
    assert (wrong.ok, wrong.action, dict(wrong.counts)) == (False, "failed", {})
    assert "route protocol 234" in (wrong.error or "")
    await rig.dp.report(contract.Outcome(plan=None, results={}))  # type: ignore[arg-type]


async def test_counts_are_the_larger_of_its_own_and_the_kernels(tmp_path: Path) -> None:
    (tmp_path / "net").mkdir()
    (tmp_path / "net/route").write_text("Iface\tDestination\n" + "swp1\t0\n" * 5)
    (tmp_path / "net/ipv6_route").write_text("")
    r = Rig(procfs=tmp_path)
    await r.dp.start()
    await r.dp.apply(DataplaneDesired(PROTO, STATIC))
    own = r.dp.observed_counts()
    assert own == {"ipv4_routes": 2, "ipv6_routes": 1, "nexthop_groups": 0, "neighbors": 0,
                   "fdb_entries": 0, "remote_vteps": 0}
    # IPv4: the kernel holds 5 (FRR's too); IPv6: procfs says 0, the agent knows of 1
    assert r.dp.counts() == {**own, "ipv4_routes": 5}
    await r.dp.close()
    # another namespace's routes are not in this /proc: only its own counts
    elsewhere = LinuxDataplane(DataplaneConfig(), RecordingFeedback(), netns="ns1",
                               procfs=tmp_path)
    assert elsewhere.counts() == elsewhere.observed_counts()


async def test_start_reports_devlink_and_offload_once() -> None:
    r = Rig()
    await r.dp.start()
    assert r.devlink_reads == 1
    assert [(x.source, dict(x.capacity)) for x in r.feedback.readings] == [("devlink", DEVLINK)]
    assert r.feedback.offload == [{4: 0, 6: 0}]
    assert r.feedback.replans == []
    await r.dp.close()


async def test_the_devlink_poller_reports_every_reading(monkeypatch: pytest.MonkeyPatch,
                                                        ) -> None:
    r = Rig()
    await r.dp.start()
    loops = r.dp.loops()
    assert loops == [r.dp.run_events, r.dp.poll_devlink]
    monkeypatch.setattr(applier_module, "DEVLINK_POLL_SECONDS", 0.001)
    async with running(r.dp.poll_devlink):
        await until(lambda: len(r.feedback.readings) >= 3, "two more readings")
    assert {x.source for x in r.feedback.readings} == {"devlink"}
    assert all(dict(x.capacity) == DEVLINK for x in r.feedback.readings)
    await r.dp.close()


async def test_start_failure_is_a_startup_error() -> None:
    async def no_namespace(netns: str | None) -> FakeKernel:
        raise FileNotFoundError(2, "No such file or directory")

    dp = LinuxDataplane(DataplaneConfig(), RecordingFeedback(), netns="gone", procfs=None,
                        open_channel=no_namespace, read_devlink=Rig()._read_devlink)
    with pytest.raises(StartupError, match="network namespace gone") as raised:
        await dp.start()
    assert isinstance(raised.value.__cause__, FileNotFoundError)
    result = await dp.apply(DataplaneDesired(PROTO, STATIC))  # never started: opens on demand
    assert result.action == "failed"
