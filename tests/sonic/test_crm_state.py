"""CRM headroom numbers from COUNTERS_DB / CONFIG_DB, and the agent's state in STATE_DB."""

from __future__ import annotations

from dataclasses import dataclass

from agent.apply.sonic.applier import SonicApplyResult
from agent.apply.sonic.crm import (
    AGENT_RESOURCES,
    WITHOUT_CRM_RESOURCE,
    crm_percentage,
    parse_crm,
    read_crm,
)
from agent.apply.sonic.db import CONFIG_DB, COUNTERS_DB, SonicDb
from agent.apply.sonic.state import AgentStateWriter, ApplierSummary
from lab.redis_server import RedisServer


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
    result = SonicApplyResult(True, "applied", 1700000000.0, 0.0123)
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
