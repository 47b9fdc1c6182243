"""CRM headroom numbers from COUNTERS_DB / CONFIG_DB, the CRM poller's readings through the
applier contract's Feedback, and the agent's state in STATE_DB (report())."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest

from agent.apply.contract import ApplyResult, HardwareReading, Outcome
from agent.apply.sonic.applier import SonicDataplane
from agent.apply.sonic.crm import (
    AGENT_RESOURCES,
    CRM_RETRY_SECONDS,
    WITHOUT_CRM_RESOURCE,
    CrmPoller,
    crm_percentage,
    crm_poll_seconds,
    crm_reading,
    parse_crm,
    read_crm,
)
from agent.apply.sonic.db import CONFIG_DB, COUNTERS_DB, SonicDb
from agent.apply.sonic.startup import SonicStart, prepare
from agent.apply.sonic.state import AgentStateWriter, ApplierSummary, StateDbPublisher
from agent.cluster.nodes import cluster_state
from agent.headroom.profiles import capacity_for
from agent.headroom.resources import Capacity, Observed
from agent.headroom.thresholds import Threshold
from agent.plan.build import plan
from lab.orchagent import OrchagentStandIn
from lab.redis_server import RedisServer
from tests.sonic.conftest import (
    RecordingFeedback,
    device_metadata,
    node,
    running,
    sonic_config,
)


def test_percentage_is_orchagents_integer_division() -> None:
    assert crm_percentage(0, 0) == 0
    assert crm_percentage(0, 100) == 0
    assert crm_percentage(1, 2) == 33  # 33.3 truncated, not rounded
    assert crm_percentage(2, 1) == 66  # 66.7 truncated
    assert crm_percentage(85, 15) == 85
    assert crm_percentage(5, 0) == 100


async def test_crm_counters_give_the_expected_headroom(sonic_db: SonicDb) -> None:
    stats = {
        "crm_stats_ipv4_route_used": "6000", "crm_stats_ipv4_route_available": "26000",
        "crm_stats_ipv6_route_used": "10", "crm_stats_ipv6_route_available": "16374",
        # one shared nexthop pool: both families report the same free space
        "crm_stats_ipv4_nexthop_used": "300", "crm_stats_ipv4_nexthop_available": "3796",
        "crm_stats_ipv6_nexthop_used": "100", "crm_stats_ipv6_nexthop_available": "3796",
        "crm_stats_ipv4_neighbor_used": "40", "crm_stats_ipv4_neighbor_available": "8152",
        "crm_stats_ipv6_neighbor_used": "8", "crm_stats_ipv6_neighbor_available": "4088",
        "crm_stats_fdb_entry_used": "17000", "crm_stats_fdb_entry_available": "15768",
        "crm_stats_nexthop_group_used": "3", "crm_stats_nexthop_group_available": "125",
    }
    await sonic_db.client(COUNTERS_DB).hset("CRM:STATS", mapping=stats)
    await sonic_db.client(CONFIG_DB).hset("CRM|Config", mapping={
        "polling_interval": "60",
        "fdb_entry_threshold_type": "used", "fdb_entry_low_threshold": "10000",
        "fdb_entry_high_threshold": "16000",
        "ipv4_route_high_threshold": "90",
    })
    snap = await read_crm(sonic_db)
    assert snap.polling_interval == 60 and snap.missing == () and snap.problems == ()
    got = {name: (r.used, r.available, r.capacity, r.percentage, r.above_high)
           for name, r in snap.resources.items()}
    assert got == {
        "ipv4_routes": (6000, 26000, 32000, 18, False),
        "ipv6_routes": (10, 16374, 16384, 0, False),
        "nexthops": (400, 3796, 4196, 9, False),
        "nexthop_groups": (3, 125, 128, 2, False),  # ECMP groups, e.g. VIPs over static nodes
        "neighbors": (48, 4088, 4136, 1, False),
        "fdb_entries": (17000, 15768, 32768, 51, True),  # threshold type "used": 17000 >= 16000
    }
    v4 = snap.resources["ipv4_routes"].counters[0]
    assert (v4.threshold.type, v4.threshold.low, v4.threshold.high) == ("percentage", 70, 90)
    fdb = snap.resources["fdb_entries"].counters[0]
    assert (fdb.utilization, fdb.threshold.low) == (17000, 10000)


async def test_crm_before_the_first_poll(sonic_db: SonicDb) -> None:
    snap = await read_crm(sonic_db)
    assert snap.polling_interval == 300
    assert snap.resources == {} and set(snap.missing) == set(AGENT_RESOURCES)
    assert "remote_vteps" in WITHOUT_CRM_RESOURCE and "remote_vteps" not in AGENT_RESOURCES


def test_bad_crm_config_falls_back_and_says_so() -> None:
    snap = parse_crm(
        {"crm_stats_ipv4_route_used": "1", "crm_stats_ipv4_route_available": "x"},
        {"polling_interval": "soon", "ipv4_route_threshold_type": "bogus"},
    )
    assert snap.polling_interval == 300
    assert snap.resources["ipv4_routes"].available == 0
    assert len(snap.problems) == 3


@dataclass(frozen=True)
class Att:
    port: str
    node: str
    routing: str
    prefixes: tuple[str, ...]
    source: str = "annotation"
    draining: bool = False


async def test_state_db_shows_attachments_and_summary(
    sonic_db: SonicDb, redis_server: RedisServer
) -> None:
    writer = AgentStateWriter(sonic_db)
    await writer.write_attachments([
        Att("Ethernet0", "node-a", "bgp", ("10.244.1.0/24", "192.168.10.1/32")),
        Att("Ethernet4", "node-b", "static", ("10.244.2.0/24",), draining=True),
    ])
    result = ApplyResult("dataplane", True, "applied", 1700000000.0, 0.0123)
    await writer.write_summary([
        ApplierSummary.from_result("sonic", result, {"routes": 2, "remote_vteps": 0}),
        ApplierSummary("frr", last_action="failed", last_ok=False, last_error="bgpd down"),
    ], attachments=2)

    raw = redis_server.sync_client(6)  # what `redis-cli -n 6` sees
    assert sorted(raw.keys("KUBE_FABRIC_AGENT*")) == [
        "KUBE_FABRIC_AGENT|attachment|Ethernet0",
        "KUBE_FABRIC_AGENT|attachment|Ethernet4",
        "KUBE_FABRIC_AGENT|summary",
    ]
    assert raw.hgetall("KUBE_FABRIC_AGENT|attachment|Ethernet4") == {
        "node": "node-b", "routing": "static", "prefixes@": "10.244.2.0/24",
        "source": "annotation", "draining": "true"}
    summary = raw.hgetall("KUBE_FABRIC_AGENT|summary")
    assert summary["sonic_routes"] == "2" and summary["sonic_last_action"] == "applied"
    assert summary["sonic_last_ok"] == "true" and summary["sonic_last_duration"] == "0.012"
    assert summary["sonic_last_at"] == "1700000000.000"  # when the apply started
    assert summary["frr_last_error"] == "bgpd down" and summary["attachments"] == "2"

    # node-a left, node-c arrived on Ethernet4: the stale port goes, no field lingers.
    await writer.write_attachments([Att("Ethernet4", "node-c", "vxlan", ())])
    assert sorted(raw.keys("KUBE_FABRIC_AGENT|attachment|*")) == [
        "KUBE_FABRIC_AGENT|attachment|Ethernet4"]
    assert raw.hgetall("KUBE_FABRIC_AGENT|attachment|Ethernet4") == {
        "node": "node-c", "routing": "vxlan", "prefixes@": "", "source": "annotation",
        "draining": "false"}
    await writer.write_summary([ApplierSummary("frr", last_action="applied", last_ok=True)], 1)
    assert "frr_last_error" not in raw.hgetall("KUBE_FABRIC_AGENT|summary")


def summary_of(raw: Any) -> dict[str, str]:
    return cast(dict[str, str], raw.hgetall("KUBE_FABRIC_AGENT|summary"))


# ---- CRM as HardwareReadings -----------------------------------------------------------------

CRM_STATS = {
    "crm_stats_ipv4_route_used": "6000", "crm_stats_ipv4_route_available": "26000",
    "crm_stats_ipv6_route_used": "10", "crm_stats_ipv6_route_available": "16374",
    "crm_stats_ipv4_nexthop_used": "300", "crm_stats_ipv4_nexthop_available": "3796",
    "crm_stats_ipv6_nexthop_used": "100", "crm_stats_ipv6_nexthop_available": "3796",
    "crm_stats_ipv4_neighbor_used": "0", "crm_stats_ipv4_neighbor_available": "0",
    "crm_stats_fdb_entry_used": "17000", "crm_stats_fdb_entry_available": "15768",
    "crm_stats_nexthop_group_used": "7", "crm_stats_nexthop_group_available": "505",
}


def test_crm_poll_interval_is_bounded() -> None:
    class Snap:
        def __init__(self, interval: int) -> None:
            self.polling_interval = interval

    assert crm_poll_seconds(None) == 300.0
    assert [crm_poll_seconds(cast(Any, Snap(i))) for i in (60, 1, 0, 3600)] == [
        60.0, 5.0, 5.0, 300.0]


async def test_crm_reading_gives_capacity_used_and_thresholds(sonic_db: SonicDb) -> None:
    await sonic_db.client(COUNTERS_DB).hset("CRM:STATS", mapping=CRM_STATS)
    await sonic_db.client(CONFIG_DB).hset("CRM|Config", mapping={
        "polling_interval": "30",
        "ipv4_route_threshold_type": "percentage", "ipv4_route_high_threshold": "15",
        "ipv4_route_low_threshold": "10",
        # two counters, two thresholds: the one that raises first is kept
        "ipv4_nexthop_high_threshold": "90", "ipv6_nexthop_high_threshold": "80",
        "ipv6_nexthop_low_threshold": "60",
        "fdb_entry_low_threshold": "90", "fdb_entry_high_threshold": "50",  # unusable
    })
    snapshot = await read_crm(sonic_db)
    assert crm_poll_seconds(snapshot) == 30.0
    reading = crm_reading(snapshot)
    assert reading.source == "crm"
    assert reading.capacity == {
        "ipv4_routes": Capacity(32000, "crm"), "ipv6_routes": Capacity(16384, "crm"),
        "nexthops": Capacity(4196, "crm"), "fdb_entries": Capacity(32768, "crm"),
        "nexthop_groups": Capacity(512, "crm"),
    }  # no usable neighbors table (size 0), and no CRM resource for remote_vteps
    assert reading.used == {
        "ipv4_routes": Observed(6000, "crm"), "ipv6_routes": Observed(10, "crm"),
        "nexthops": Observed(400, "crm"), "fdb_entries": Observed(17000, "crm"),
        "nexthop_groups": Observed(7, "crm"),
    }
    assert reading.thresholds is not None
    assert reading.thresholds["ipv4_routes"] == Threshold("percentage", 15.0, 10.0)
    assert reading.thresholds["nexthops"] == Threshold("percentage", 80.0, 60.0)
    assert reading.thresholds["ipv6_routes"] == Threshold("percentage", 85.0, 70.0)  # defaults
    assert "fdb_entries" not in reading.thresholds  # low >= high: the defaults stay
    assert any("no neighbors table" in n for n in reading.notes)
    assert any("threshold for fdb_entries not used" in n for n in reading.notes)
    assert not any("does not report" in n for n in reading.notes)


def test_crm_reading_notes_what_crm_does_not_report_yet() -> None:
    reading = crm_reading(parse_crm({}, {}))
    assert reading == HardwareReading("crm", {}, {}, {}, (
        "CRM does not report ipv4_routes, ipv6_routes, nexthops, nexthop_groups, neighbors, "
        "fdb_entries (yet): "
        "their capacity comes from the profile",))


async def eventually(check: Any, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {within} s")
        await asyncio.sleep(0.01)


async def test_the_crm_poller_gives_feedback_a_crm_reading(
    sonic_db: SonicDb, feedback: RecordingFeedback
) -> None:
    await sonic_db.client(COUNTERS_DB).hset("CRM:STATS", mapping=CRM_STATS)
    dp = SonicDataplane(sonic_db, feedback, frr_managed=True)
    await dp.start()
    try:
        assert [loop.__name__ for loop in dp.loops()] == ["redis_watch_loop", "crm_loop"]
        async with running(dp):  # as the runtime runs them
            await eventually(lambda: feedback.readings)
        (reading,) = feedback.readings  # one read now, the next after polling_interval
        assert reading.source == "crm"
        assert reading.capacity["ipv4_routes"] == Capacity(32000, "crm")
        assert reading.used["ipv4_routes"] == Observed(6000, "crm")
        assert feedback.replans == []  # a reading is for the runtime to judge
    finally:
        await dp.close()


async def test_a_failed_crm_read_keeps_the_last_reading_and_is_logged_once(
    sonic_db: SonicDb, redis_server: RedisServer, feedback: RecordingFeedback,
    caplog: pytest.LogCaptureFixture,
) -> None:
    poller = CrmPoller(sonic_db, feedback)
    with caplog.at_level(logging.INFO, logger="agent.apply.sonic.crm"):
        assert await poller.poll() == 300.0
        assert await poller.poll() == 300.0
        assert len(feedback.readings) == 2
        assert caplog.text.count("CRM does not report") == 1  # each note once

        redis_server.stop()
        assert await poller.poll() == CRM_RETRY_SECONDS
        assert await poller.poll() == CRM_RETRY_SECONDS
        assert len(feedback.readings) == 2  # nothing new: headroom keeps the last reading
        assert caplog.text.count("cannot read CRM") == 1

        redis_server.start()
        await sonic_db.client(COUNTERS_DB).hset("CRM:STATS", mapping=CRM_STATS)
        assert await poller.poll() == 300.0
        assert "CRM readable again" in caplog.text
    assert feedback.readings[-1].capacity["ipv4_routes"] == Capacity(32000, "crm")


async def test_a_larger_crm_capacity_reaches_feedback_and_admits_the_waiting_node(
    sonic_db: SonicDb, database_config: Path, feedback: RecordingFeedback,
    orchagent: OrchagentStandIn,
) -> None:
    # A tiny route table (a profile that gives routes almost no space): CRM says 3 entries in
    # all. Each static node needs 2 (pod CIDR, InternalIP): only the older one fits.
    counters = sonic_db.client(COUNTERS_DB)
    await counters.hset("CRM:STATS", mapping={"crm_stats_ipv4_route_used": "0",
                                              "crm_stats_ipv4_route_available": "3"})
    await device_metadata(sonic_db, hostname="leaf7", bgp_asn="65107",
                          docker_routing_config_mode="split")
    start = await prepare(sonic_config(database_config))
    config = start.config
    dp = SonicDataplane.from_start(start, feedback)
    await dp.start()
    try:
        cluster = cluster_state([
            node("srv1", "Ethernet0", "static", "10.244.1.0/24", "192.168.10.1"),
            node("srv3", "Ethernet4", "static", "10.244.3.0/24", "192.168.10.3"),
        ])

        def capacity(reading: HardwareReading) -> Any:  # the runtime's headroom, in short
            return capacity_for(config.headroom.profile, config.headroom.capacity,
                                cast(Any, reading.capacity))

        await dp._crm.poll()
        small = feedback.readings[-1]
        assert small.capacity["ipv4_routes"] == Capacity(3, "crm")
        first = plan(config, cluster, capacity=capacity(small))
        assert [r.name for r in first.refusals if r.kind == "headroom"] == ["srv3"]
        assert (await dp.apply(first.dataplane)).ok
        assert first.admission is not None

        # The same reading again: the same capacity, nothing for the runtime to re-plan.
        await dp._crm.poll()
        assert feedback.readings[-1].capacity == small.capacity

        # The operator moves the ASIC to a profile with more routes: CRM reports it, and the
        # reading carries it (the runtime re-plans on a changed capacity), which admits srv3.
        await counters.hset("CRM:STATS", "crm_stats_ipv4_route_available", "26000")
        await dp._crm.poll()
        large = feedback.readings[-1]
        assert large.capacity["ipv4_routes"] == Capacity(26000, "crm")
        second = plan(config, cluster, capacity=capacity(large),
                      programmed=first.admission.admitted)
        assert [r.name for r in second.refusals if r.kind == "headroom"] == []
        assert (await dp.apply(second.dataplane)).ok
        assert dp.held()["routes"] == {"10.244.1.0/24", "10.244.3.0/24"}
        await orchagent.quiesce()
        assert {k: v["ifname"] for k, v in (await orchagent.main_table("ROUTE_TABLE")).items()
                } == {"10.244.1.0/24": "Ethernet0", "10.244.3.0/24": "Ethernet4"}
    finally:
        await dp.close()


# ---- STATE_DB: report() ----------------------------------------------------------------------


async def test_state_db_publisher_writes_and_survives_redis_trouble(
    sonic_db: SonicDb, redis_server: RedisServer
) -> None:
    publisher = StateDbPublisher(sonic_db)
    frr = ApplyResult("frr", False, "not-managed", 1700000000.0, 0.0, error="FRR not managed: x")
    assert await publisher.publish([Att("Ethernet0", "node-a", "static", ("10.0.0.0/24",))], [
        ApplierSummary.from_result("frr", frr),
        ApplierSummary.from_result("sonic", None, {"routes": 1})])
    raw = redis_server.sync_client(6)
    assert sorted(raw.keys("KUBE_FABRIC_AGENT*")) == [
        "KUBE_FABRIC_AGENT|attachment|Ethernet0", "KUBE_FABRIC_AGENT|summary"]
    summary = summary_of(raw)
    assert summary["frr_last_action"] == "not-managed" and summary["frr_last_ok"] == "false"
    assert summary["sonic_routes"] == "1" and summary["attachments"] == "1"

    redis_server.stop()
    assert not await publisher.publish([], [])  # logged, not raised
    assert publisher.error
    redis_server.start()
    assert await publisher.publish([], [ApplierSummary.from_result("sonic", None,
                                                                   {"routes": 0})])
    assert publisher.error is None
    assert sorted(redis_server.sync_client(6).keys("KUBE_FABRIC_AGENT*")) == [
        "KUBE_FABRIC_AGENT|summary"]


@pytest.fixture
async def started(sonic_db: SonicDb, database_config: Path, feedback: RecordingFeedback,
                  orchagent: OrchagentStandIn) -> AsyncIterator[tuple[SonicStart, SonicDataplane]]:
    """prepare() and a started SonicDataplane on leaf7, whose routing config mode leaves FRR to
    bgpcfgd."""
    await device_metadata(sonic_db, hostname="leaf7", bgp_asn="65107",
                          docker_routing_config_mode="separated")
    start = await prepare(sonic_config(database_config))
    assert not start.frr_managed
    dp = SonicDataplane.from_start(start, feedback)
    await dp.start()
    try:
        yield start, dp
    finally:
        await dp.close()


def frr_not_managed(start: SonicStart, wants_bgp: bool) -> ApplyResult:
    """What the runtime records for FRR when it is not managed: failed while a node wants a BGP
    session."""
    return ApplyResult("frr", not wants_bgp, "not-managed", time.time(), 0.0,
                       error=start.frr_refusal)


async def test_report_after_an_apply_leaves_the_state_in_state_db(
    started: tuple[SonicStart, SonicDataplane], redis_server: RedisServer
) -> None:
    start, dp = started
    cluster = cluster_state([
        node("srv1", "Ethernet0", "static", "10.244.1.0/24", "192.168.10.1"),
        node("srv2", "Ethernet4", "bgp", "10.244.2.0/24", "192.168.10.2"),
    ])
    p = plan(start.config, cluster)
    applied = await dp.apply(p.dataplane)
    await dp.report(Outcome(p, {"dataplane": applied, "frr": frr_not_managed(start, True)}))

    raw = redis_server.sync_client(6)
    assert sorted(raw.keys("KUBE_FABRIC_AGENT*")) == [
        "KUBE_FABRIC_AGENT|attachment|Ethernet0", "KUBE_FABRIC_AGENT|attachment|Ethernet4",
        "KUBE_FABRIC_AGENT|summary"]
    assert raw.hgetall("KUBE_FABRIC_AGENT|attachment|Ethernet0")["node"] == "srv1"
    summary = summary_of(raw)
    assert (summary["sonic_routes"], summary["sonic_last_action"], summary["sonic_last_ok"]) == (
        "1", "applied", "true")
    assert summary["sonic_last_at"] == f"{applied.started:.3f}"
    # FRR is not managed here (routing config mode "separated") and srv2 wants a session.
    assert (summary["frr_last_action"], summary["frr_last_ok"]) == ("not-managed", "false")
    assert "docker_routing_config_mode" in summary["frr_last_error"]
    assert "frr_sessions" not in summary

    # Without the bgp node, FRR not being managed costs nothing.
    p = plan(start.config, cluster_state([
        node("srv1", "Ethernet0", "static", "10.244.1.0/24", "192.168.10.1")]))
    applied = await dp.apply(p.dataplane)
    await dp.report(Outcome(p, {"dataplane": applied, "frr": frr_not_managed(start, False)}))
    assert sorted(raw.keys("KUBE_FABRIC_AGENT|attachment|*")) == [
        "KUBE_FABRIC_AGENT|attachment|Ethernet0"]
    assert summary_of(raw)["frr_last_ok"] == "true"


async def test_report_counts_frr_sessions_only_when_frr_is_managed(
    sonic_db: SonicDb, redis_server: RedisServer
) -> None:
    config = sonic_config(hostname="leaf7", asn=65107, router_id="10.1.0.32")
    p = plan(config, cluster_state([
        node("srv2", "Ethernet4", "bgp", "10.244.2.0/24", "192.168.10.2")]))
    frr = ApplyResult("frr", True, "applied", time.time(), 0.5)
    for managed, sessions in ((True, "1"), (False, None)):
        dp = SonicDataplane(sonic_db, RecordingFeedback(), frr_managed=managed)
        await dp.report(Outcome(p, {"frr": frr}))
        summary = summary_of(redis_server.sync_client(6))
        assert summary.get("frr_sessions") == sessions
        assert summary["frr_last_action"] == "applied" and "sonic_last_action" not in summary
        assert summary["sonic_routes"] == "0"


async def test_report_survives_redis_being_down(
    started: tuple[SonicStart, SonicDataplane], redis_server: RedisServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    start, dp = started
    p = plan(start.config, cluster_state([
        node("srv1", "Ethernet0", "static", "10.244.1.0/24", "192.168.10.1")]))
    applied = await dp.apply(p.dataplane)
    outcome = Outcome(p, {"dataplane": applied})
    redis_server.stop()
    with caplog.at_level(logging.INFO, logger="agent.apply.sonic.state"):
        await dp.report(outcome)  # does not raise
        assert "cannot write the agent's state to STATE_DB" in caplog.text
        redis_server.start()  # empty, as a restarted SONiC database
        await dp.report(outcome)
        assert "STATE_DB state written again" in caplog.text
    raw = redis_server.sync_client(6)
    assert raw.hgetall("KUBE_FABRIC_AGENT|attachment|Ethernet0")["node"] == "srv1"
    assert summary_of(raw)["sonic_routes"] == "1"
