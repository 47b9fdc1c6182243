"""The daemon's SONiC glue against a real redis-server: identity from CONFIG_DB (and refusing what
CONFIG_DB should not say), FRR management by routing config mode, CRM as the headroom's source,
and the agent's state in STATE_DB after a reconcile."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest

from agent.apply.frr.render import render_frr
from agent.apply.sonic.crm import read_crm
from agent.apply.sonic.db import APPL_DB, CONFIG_DB, COUNTERS_DB, SonicDb
from agent.apply.sonic.device import read_device_defaults
from agent.apply.sonic.producer import ProducerStateTable
from agent.apply.sonic.runtime import (
    ConfigDbDefaultsError,
    StateDbPublisher,
    applier_summary,
    crm_poll_seconds,
    fill_from_config_db,
    frr_refusal,
)
from agent.cluster.nodes import cluster_state
from agent.config import ConfigError, parse_config
from agent.informers.kubeapi import KubeApi
from agent.plan.build import plan
from agent.runtime.daemon import Agent, prepare_sonic
from agent.status.headroom import HeadroomMonitor
from agent.status.model import ApplierResult, EventLog
from lab.orchagent import OrchagentStandIn
from lab.redis_server import RedisServer

FABRIC = {"server_ports": ["Ethernet0", "Ethernet4"], "pod_supernets": ["10.244.0.0/16"]}


def sonic_config(database_config: Path | str = "/nonexistent", **switch: Any) -> Any:
    return parse_config({
        "switch": switch,
        "fabric": FABRIC,
        "dataplane": {"backend": "sonic", "sonic": {"database_config": str(database_config)}},
    })


async def device_metadata(db: SonicDb, loopback: str | None = "10.1.0.32/32",
                          **fields: str) -> None:
    cfg = db.client(CONFIG_DB)
    if fields:
        await cfg.hset("DEVICE_METADATA|localhost", mapping=fields)
    if loopback:
        await cfg.hset("LOOPBACK_INTERFACE|Loopback0", "NULL", "NULL")
        await cfg.hset(f"LOOPBACK_INTERFACE|Loopback0|{loopback}", "NULL", "NULL")


# ---- the config model ------------------------------------------------------------------------


def test_linux_still_requires_asn_and_router_id_with_their_key_paths() -> None:
    for dataplane in ({}, {"backend": "linux"}):
        with pytest.raises(ConfigError) as err:
            parse_config({"switch": {"hostname": "leaf1"}, "fabric": FABRIC,
                          "dataplane": dataplane})
        assert err.value.problems == ["switch.asn: required key is missing",
                                      "switch.router_id: required key is missing"]
    # Reported together with the file's other problems, in the file's order.
    with pytest.raises(ConfigError) as err:
        parse_config({"switch": {"asn": 65101, "router_id": None}, "fabric": {"uplinks": []},
                      "frr": {"debounce_ms": -1}})
    problems = err.value.problems
    assert problems[0] == "switch.router_id: required key is missing"
    assert any(p.startswith("fabric.server_ports:") for p in problems)
    assert problems[-1].startswith("frr.debounce_ms:")


def test_sonic_may_leave_identity_to_config_db() -> None:
    cfg = sonic_config()
    assert cfg.switch.asn is None and cfg.switch.router_id is None
    assert "hostname" not in cfg.switch.model_fields_set  # gethostname() is only a default
    # What the file does give is still validated.
    with pytest.raises(ConfigError) as err:
        sonic_config(asn=23456)
    assert err.value.problems[0].startswith("switch.asn: ASN 23456")


def test_check_config_reports_the_missing_keys(tmp_path: Path) -> None:
    path = tmp_path / "linux.yaml"
    path.write_text("switch: {hostname: leaf1}\nfabric: {server_ports: [swp1], "
                    "pod_supernets: [10.244.0.0/16]}\n")
    res = subprocess.run([sys.executable, "-m", "agent.cli", "check-config", "--config",
                          str(path)], capture_output=True, text=True)
    assert res.returncode == 2
    assert res.stderr.splitlines() == ["switch.asn: required key is missing",
                                       "switch.router_id: required key is missing"]


# ---- identity from CONFIG_DB -----------------------------------------------------------------


async def test_left_out_keys_come_from_config_db(sonic_db: SonicDb) -> None:
    await device_metadata(sonic_db, hostname="leaf7", bgp_asn="65107",
                          bgp_router_id="10.1.0.99")
    cfg = await fill_from_config_db(sonic_config(), sonic_db)
    s = cfg.switch
    assert (s.hostname, s.asn, s.router_id, s.vtep_ip) == ("leaf7", 65107, "10.1.0.99",
                                                           "10.1.0.32")
    assert cfg.dataplane.backend == "sonic" and cfg.fabric.server_ports == ["Ethernet0",
                                                                              "Ethernet4"]


async def test_router_id_falls_back_to_loopback0(sonic_db: SonicDb) -> None:
    await device_metadata(sonic_db, bgp_asn="65107")
    cfg = await fill_from_config_db(sonic_config(hostname="leaf1"), sonic_db)
    assert (cfg.switch.hostname, cfg.switch.router_id, cfg.switch.vtep_ip) == (
        "leaf1", "10.1.0.32", "10.1.0.32")


async def test_the_config_file_wins(sonic_db: SonicDb, caplog: pytest.LogCaptureFixture) -> None:
    await device_metadata(sonic_db, hostname="leaf7", bgp_asn="65107",
                          bgp_router_id="10.1.0.99")
    given = sonic_config(hostname="leaf1", asn=65101, router_id="10.0.0.1", vtep_ip="10.0.0.2")
    with caplog.at_level(logging.WARNING):
        cfg = await fill_from_config_db(given, sonic_db)
    assert cfg == given
    assert "switch.asn 65101 (config file) differs from CONFIG_DB's 65107" in caplog.text
    # A value the file gives is not read from CONFIG_DB, so a bad one there does not matter.
    await sonic_db.client(CONFIG_DB).hset("DEVICE_METADATA|localhost", "bgp_asn",
                                          "65000\nrouter bgp 1")
    assert await fill_from_config_db(given, sonic_db) == given


@pytest.mark.parametrize(("field", "value", "key"), [
    ("bgp_asn", "65000\nrouter bgp 1", "asn"),
    ("bgp_asn", " 65000", "asn"),  # int() would forgive it; the validators do not
    ("bgp_asn", "23456", "asn"),
    ("bgp_router_id", "10.1.0.99\n", "router_id"),
    ("bgp_router_id", "fd00::1", "router_id"),
    ("hostname", "leaf1\nrouter bgp 1", "hostname"),
])
async def test_hostile_config_db_values_are_refused(
    sonic_db: SonicDb, field: str, value: str, key: str
) -> None:
    fields = {"hostname": "leaf7", "bgp_asn": "65107", field: value}
    await device_metadata(sonic_db, **fields)
    with pytest.raises(ConfigDbDefaultsError) as err:
        await fill_from_config_db(sonic_config(), sonic_db)
    (problem,) = err.value.problems
    assert problem.startswith(f"switch.{key}: CONFIG_DB DEVICE_METADATA|localhost {field} "
                              f"{value!r} is refused: ")
    assert "\n" not in problem  # the value is shown escaped, never as a second log line


async def test_missing_everywhere_names_the_key_and_where(sonic_db: SonicDb) -> None:
    await device_metadata(sonic_db, loopback=None, hostname="leaf7")
    with pytest.raises(ConfigDbDefaultsError) as err:
        await fill_from_config_db(sonic_config(), sonic_db)
    assert err.value.problems == [
        "switch.asn: not in the config file, and CONFIG_DB DEVICE_METADATA|localhost has no "
        "bgp_asn",
        "switch.router_id: not in the config file, and CONFIG_DB has neither "
        "DEVICE_METADATA|localhost bgp_router_id nor an IPv4 address on "
        "LOOPBACK_INTERFACE|Loopback0",
    ]


async def test_prepare_sonic_exits_like_a_bad_config_file(
    sonic_db: SonicDb, database_config: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await device_metadata(sonic_db, hostname="leaf7", bgp_asn="65000\nrouter bgp 1",
                          docker_routing_config_mode="split")
    with caplog.at_level(logging.ERROR), pytest.raises(SystemExit) as exit_:
        await prepare_sonic(sonic_config(database_config))
    assert exit_.value.code == 2
    assert "switch.asn: CONFIG_DB DEVICE_METADATA|localhost bgp_asn" in caplog.text

    await sonic_db.client(CONFIG_DB).hset("DEVICE_METADATA|localhost", "bgp_asn", "65107")
    cfg, db, refusal = await prepare_sonic(sonic_config(database_config))
    try:
        assert (cfg.switch.hostname, cfg.switch.asn, cfg.switch.router_id) == (
            "leaf7", 65107, "10.1.0.32")
        assert refusal is None
    finally:
        await db.close()


@pytest.mark.parametrize(("mode", "managed"), [
    ("split", True), ("split-unified", True), ("separated", False), ("unified", False),
    (None, False), ("split\nx", False),
])
async def test_frr_is_managed_only_in_a_split_mode(
    sonic_db: SonicDb, mode: str | None, managed: bool
) -> None:
    if mode is not None:
        await device_metadata(sonic_db, docker_routing_config_mode=mode)
    why = frr_refusal(await read_device_defaults(sonic_db))
    assert (why is None) == managed
    if why is not None:
        assert why.startswith("FRR not managed: CONFIG_DB DEVICE_METADATA|localhost "
                              "docker_routing_config_mode is ")
        assert "\n" not in why and "split" in why


# ---- CRM -------------------------------------------------------------------------------------

CRM_STATS = {
    "crm_stats_ipv4_route_used": "6000", "crm_stats_ipv4_route_available": "26000",
    "crm_stats_ipv6_route_used": "10", "crm_stats_ipv6_route_available": "16374",
    "crm_stats_ipv4_nexthop_used": "300", "crm_stats_ipv4_nexthop_available": "3796",
    "crm_stats_ipv6_nexthop_used": "100", "crm_stats_ipv6_nexthop_available": "3796",
    "crm_stats_ipv4_neighbor_used": "0", "crm_stats_ipv4_neighbor_available": "0",
    "crm_stats_fdb_entry_used": "17000", "crm_stats_fdb_entry_available": "15768",
}


def test_crm_poll_interval_is_bounded() -> None:
    class Snap:
        def __init__(self, interval: int) -> None:
            self.polling_interval = interval

    assert crm_poll_seconds(None) == 300.0
    assert [crm_poll_seconds(cast(Any, Snap(i))) for i in (60, 1, 0, 3600)] == [
        60.0, 5.0, 5.0, 300.0]


async def test_crm_drives_capacity_used_and_thresholds(sonic_db: SonicDb) -> None:
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
    config = parse_config({
        "switch": {"hostname": "leaf1", "asn": 65101, "router_id": "10.0.0.1"},
        "fabric": FABRIC, "dataplane": {"backend": "sonic"},
        "headroom": {"capacity": {"ipv6_routes": 1000}},
    })
    events = EventLog()
    monitor = HeadroomMonitor(config, events)
    snapshot = await read_crm(sonic_db)
    assert crm_poll_seconds(snapshot) == 30.0
    notes = monitor.set_crm(snapshot)
    assert any("no neighbors table" in n for n in notes)
    assert any("threshold for fdb_entries not used" in n for n in notes)
    monitor.update(plan(config, cluster_state([])), {"ipv4_routes": 5})

    rows = {r.resource: r for r in monitor.rows}
    v4 = rows["ipv4_routes"]
    assert (v4.capacity, v4.source, v4.used, v4.used_source) == (32000, "crm", 6000, "crm")
    assert v4.threshold == "raised"  # 6000 of 32000 = 18.75 % >= CRM|Config's 15
    nh = rows["nexthops"]
    assert (nh.capacity, nh.used, nh.source) == (4196, 400, "crm")
    assert monitor.tracker.threshold("nexthops").high == 80.0
    assert monitor.tracker.threshold("nexthops").low == 60.0
    # The config's override wins over CRM; CRM's usage is still what the ASIC holds.
    v6 = rows["ipv6_routes"]
    assert (v6.capacity, v6.source, v6.used, v6.used_source) == (1000, "config", 10, "crm")
    # No usable CRM table: the profile's figure, nothing observed.
    assert rows["neighbors"].source != "crm" and rows["neighbors"].used is None
    assert rows["remote_vteps"].source != "crm"
    assert rows["fdb_entries"].threshold == "ok"  # default 85 %: 17000 of 32768 is 52 %
    crossings = [e for e in events.history() if e.kind == "threshold_crossed"]
    assert [(e.subject, e.message.split(":")[0]) for e in crossings] == [
        ("ipv4_routes", "ipv4_routes threshold exceeded")]

    # The agent's own count wins only when it is larger than CRM's (CRM lags its interval).
    monitor.update(plan(config, cluster_state([])), {"ipv4_routes": 7000})
    v4 = {r.resource: r for r in monitor.rows}["ipv4_routes"]
    assert (v4.used, v4.used_source) == (7000, None)


# ---- STATE_DB --------------------------------------------------------------------------------


class Att:
    def __init__(self, port: str, node: str) -> None:
        self.port, self.node, self.routing, self.prefixes = port, node, "static", ("10.0.0.0/24",)


async def test_state_db_publisher_writes_and_survives_redis_trouble(
    sonic_db: SonicDb, redis_server: RedisServer
) -> None:
    publisher = StateDbPublisher(sonic_db)
    frr = ApplierResult("frr", False, "not-managed", 1700000000.0, 0.0, "FRR not managed: x")
    assert await publisher.publish([Att("Ethernet0", "node-a")], [
        applier_summary("frr", frr), applier_summary("sonic", None, {"routes": 1})])
    raw = redis_server.sync_client(6)
    assert sorted(raw.keys("KUBE_FABRIC_AGENT*")) == [
        "KUBE_FABRIC_AGENT|attachment|Ethernet0", "KUBE_FABRIC_AGENT|summary"]
    summary = raw.hgetall("KUBE_FABRIC_AGENT|summary")
    assert summary["frr_last_action"] == "not-managed" and summary["frr_last_ok"] == "false"
    assert summary["sonic_routes"] == "1" and summary["attachments"] == "1"

    redis_server.stop()
    assert not await publisher.publish([], [])  # logged, not raised
    assert publisher.error
    redis_server.start()
    assert await publisher.publish([], [applier_summary("sonic", None, {"routes": 0})])
    assert publisher.error is None
    assert sorted(redis_server.sync_client(6).keys("KUBE_FABRIC_AGENT*")) == [
        "KUBE_FABRIC_AGENT|summary"]


# ---- the daemon, one reconcile on SONiC ------------------------------------------------------


def node(name: str, port: str, routing: str, cidr: str, ip: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "creationTimestamp": "2026-01-01T00:00:00Z",
                         "annotations": {"kube-fabric-agent.io/switch-port": f"leaf7/{port}",
                                         "kube-fabric-agent.io/routing": routing}},
            "spec": {"podCIDRs": [cidr]},
            "status": {"addresses": [{"type": "InternalIP", "address": ip}]}}


@pytest.fixture
async def agent(sonic_db: SonicDb, database_config: Path, tmp_path: Path,
                orchagent: OrchagentStandIn) -> AsyncIterator[Agent]:
    await device_metadata(sonic_db, hostname="leaf7", bgp_asn="65107",
                          docker_routing_config_mode="separated")
    await sonic_db.client(COUNTERS_DB).hset("CRM:STATS", mapping=CRM_STATS)
    base = sonic_config(database_config)
    config = base.model_copy(update={
        "kubernetes": base.kubernetes.model_copy(update={"watch_pods": False}),
        "status": base.status.model_copy(update={"state_file": str(tmp_path / "status.json")}),
    })
    config, db, refusal = await prepare_sonic(config)
    assert refusal is not None
    daemon = Agent(config, cast(KubeApi, object()), sonic_db=db, frr_refusal=refusal)
    await daemon.start_dataplane()
    daemon.nodes.synced = daemon.nodes.connected = True
    try:
        yield daemon
    finally:
        if daemon.dataplane is not None:
            await daemon.dataplane.close()
        await db.close()


async def test_a_reconcile_on_sonic_leaves_state_in_state_db(
    agent: Agent, redis_server: RedisServer
) -> None:
    agent.nodes.store.update({
        "srv1": node("srv1", "Ethernet0", "static", "10.244.1.0/24", "192.168.10.1"),
        "srv2": node("srv2", "Ethernet4", "bgp", "10.244.2.0/24", "192.168.10.2"),
    })
    await agent.reconcile()

    raw = redis_server.sync_client(6)
    assert sorted(raw.keys("KUBE_FABRIC_AGENT*")) == [
        "KUBE_FABRIC_AGENT|attachment|Ethernet0", "KUBE_FABRIC_AGENT|attachment|Ethernet4",
        "KUBE_FABRIC_AGENT|summary"]
    assert raw.hgetall("KUBE_FABRIC_AGENT|attachment|Ethernet0")["node"] == "srv1"
    summary = raw.hgetall("KUBE_FABRIC_AGENT|summary")
    assert (summary["sonic_routes"], summary["sonic_last_action"], summary["sonic_last_ok"]) == (
        "1", "applied", "true")
    # FRR is not managed here (routing config mode "separated") and srv2 wants a session.
    assert (summary["frr_last_action"], summary["frr_last_ok"]) == ("not-managed", "false")
    assert "docker_routing_config_mode" in summary["frr_last_error"]
    assert "frr_sessions" not in summary
    status = agent.view.status()
    assert status.health == "degraded"
    assert any(r.startswith("last frr apply failed: FRR not managed")
               for r in status.health_reasons)

    # CRM feeds the headroom rows the status service serves.
    task = asyncio.create_task(agent.crm_loop())
    try:
        for _ in range(200):
            rows = {r.resource: r for r in agent.state.headroom}
            if rows and rows["ipv4_routes"].source == "crm":
                break
            await asyncio.sleep(0.01)
        assert (rows["ipv4_routes"].capacity, rows["ipv4_routes"].used) == (32000, 6000)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    # Without the bgp node, FRR not being managed costs nothing: healthy again.
    del agent.nodes.store["srv2"]
    await agent.reconcile()
    assert agent.view.status().health == "ok"
    assert sorted(raw.keys("KUBE_FABRIC_AGENT|attachment|*")) == [
        "KUBE_FABRIC_AGENT|attachment|Ethernet0"]
    assert raw.hgetall("KUBE_FABRIC_AGENT|summary")["frr_last_ok"] == "true"


async def test_on_sonic_bgp_originates_only_the_routes_appl_db_holds(
    agent: Agent, sonic_db: SonicDb, orchagent: OrchagentStandIn
) -> None:
    # Routes in APPL_DB never reach zebra: the static nodes' pod CIDRs are announced with
    # network statements, but not one whose ROUTE_TABLE key another producer holds (the
    # fabric's traffic for it would reach this leaf and find no route of the agent's).
    fpmsyncd = ProducerStateTable(sonic_db.client(APPL_DB), "ROUTE_TABLE", 0)
    await fpmsyncd.set("10.244.3.0/24", {"nexthop": "172.16.0.1", "ifname": "Ethernet64",
                                          "protocol": "bgp"})
    await orchagent.quiesce()
    agent.nodes.store.update({
        "srv1": node("srv1", "Ethernet0", "static", "10.244.1.0/24", "192.168.10.1"),
        "srv3": node("srv3", "Ethernet4", "static", "10.244.3.0/24", "192.168.10.3"),
    })
    await agent.reconcile()
    assert agent.state.plan is not None
    assert agent.state.plan.frr.originate_v4 == ("10.244.1.0/24", "10.244.3.0/24")
    desired = agent.frr_desired(agent.state.plan)
    assert desired.originate_v4 == ("10.244.1.0/24",)
    text = render_frr(desired)
    assert "  network 10.244.1.0/24\n" in text and "network 10.244.3.0/24" not in text
    routes = {r.prefix: r.observed for r in agent.view.routes()}
    assert routes == {"10.244.1.0/24": True, "10.244.3.0/24": False}

    # The other producer lets go: the agent writes its route, and then announces it.
    await fpmsyncd.delete("10.244.3.0/24")
    await orchagent.quiesce()
    await agent.reconcile()
    assert agent.frr_desired(agent.state.plan).originate_v4 == ("10.244.1.0/24",
                                                                 "10.244.3.0/24")


async def test_a_larger_crm_capacity_admits_the_waiting_node_without_a_node_change(
    agent: Agent, sonic_db: SonicDb
) -> None:
    # A tiny route table (a profile that gives routes almost no space): CRM says 3 entries
    # in all. Each static node needs 2 (pod CIDR, InternalIP): only the older one fits.
    counters = sonic_db.client(COUNTERS_DB)
    await counters.hset("CRM:STATS", mapping={"crm_stats_ipv4_route_used": "0",
                                              "crm_stats_ipv4_route_available": "3"})
    agent.take_crm(await read_crm(sonic_db))
    agent.nodes.store.update({
        "srv1": node("srv1", "Ethernet0", "static", "10.244.1.0/24", "192.168.10.1"),
        "srv3": node("srv3", "Ethernet4", "static", "10.244.3.0/24", "192.168.10.3"),
    })

    def waiting() -> list[str]:
        assert agent.state.plan is not None
        return [r.name for r in agent.state.plan.refusals if r.kind == "headroom"]

    assert agent.reconcile_pending, "CRM's figure replaced the profile's: plan again"
    agent._dirty.clear()  # as the reconcile loop does before each pass
    await agent.reconcile()
    assert waiting() == ["srv3"], "the newer node waits for room"
    # The same reading again changes nothing: no re-plan.
    agent.take_crm(await read_crm(sonic_db))
    assert not agent.reconcile_pending

    # The operator moves the ASIC to a profile with more routes: CRM reports it, and the
    # agent asks for a re-plan by itself (no Node changed), which admits srv3.
    await counters.hset("CRM:STATS", "crm_stats_ipv4_route_available", "26000")
    agent.take_crm(await read_crm(sonic_db))
    assert agent.reconcile_pending
    await agent.reconcile()
    assert waiting() == []
    assert {r.prefix for r in agent.view.routes() if r.observed} == {
        "10.244.1.0/24", "10.244.3.0/24"}
