"""The daemon on SONiC, one reconcile at a time: the real SONiC backend (open_backend: CONFIG_DB
identity, FRR left to bgpcfgd in the "separated" mode, APPL_DB data plane, CRM, STATE_DB) wired
by agent.runtime.daemon.Agent, against a real redis-server and the orchagent stand-in. The Node
store is filled by hand (the informer's list/watch is tested on its own)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import cast

import pytest

from agent.apply.backends import Backend, open_backend
from agent.apply.frr.render import render_frr
from agent.apply.sonic.db import APPL_DB, COUNTERS_DB, SonicDb
from agent.apply.sonic.producer import ProducerStateTable
from agent.informers.kubeapi import KubeApi
from agent.runtime.daemon import Agent
from lab.orchagent import OrchagentStandIn
from lab.redis_server import RedisServer
from tests.sonic.conftest import device_metadata, node, running, sonic_config
from tests.sonic.test_crm_state import CRM_STATS


async def sonic_agent(sonic_db: SonicDb, database_config: Path, tmp_path: Path,
                      **headroom: object) -> tuple[Agent, Backend]:
    """The daemon as run_agent() builds it on a SONiC switch in the "separated" routing config
    mode (FRR is bgpcfgd's), with CRM's counters set; its data plane started."""
    await device_metadata(sonic_db, hostname="leaf7", bgp_asn="65107",
                          docker_routing_config_mode="separated")
    await sonic_db.client(COUNTERS_DB).hset("CRM:STATS", mapping=CRM_STATS)
    base = sonic_config(database_config)
    config = base.model_copy(update={
        "kubernetes": base.kubernetes.model_copy(update={"watch_pods": False}),
        "headroom": base.headroom.model_copy(update=headroom),
        "status": base.status.model_copy(update={"state_file": str(tmp_path / "status.json")}),
    })
    backend = await open_backend(config)
    daemon = Agent(cast(KubeApi, object()), backend)
    await daemon.dataplane.start()
    daemon.nodes.synced = daemon.nodes.connected = True
    return daemon, backend


@pytest.fixture
async def agent(sonic_db: SonicDb, database_config: Path, tmp_path: Path,
                orchagent: OrchagentStandIn) -> AsyncIterator[Agent]:
    daemon, backend = await sonic_agent(sonic_db, database_config, tmp_path)
    try:
        yield daemon
    finally:
        await daemon.dataplane.close()
        await backend.close()


async def until(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 5.0
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def waiting(agent: Agent) -> list[str]:
    assert agent.state.plan is not None
    return [r.name for r in agent.state.plan.refusals if r.kind == "headroom"]


async def test_a_reconcile_on_sonic_leaves_state_in_state_db(
    agent: Agent, redis_server: RedisServer
) -> None:
    assert agent.config.switch.hostname == "leaf7"  # from CONFIG_DB
    agent.nodes.store.update({
        "srv1": node("srv1", "Ethernet0", "static", "10.244.1.0/24", "192.168.10.1"),
        "srv2": node("srv2", "Ethernet4", "bgp", "10.244.2.0/24", "192.168.10.2"),
    })
    await agent.reconciler.reconcile()

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

    # CRM feeds the headroom rows the status service serves, and its thresholds raise events.
    async with running(agent.dataplane):
        await until(lambda: any(r.source == "crm" for r in agent.state.headroom), "CRM rows")
    rows = {r.resource: r for r in agent.state.headroom}
    assert (rows["ipv4_routes"].capacity, rows["ipv4_routes"].used) == (32000, 6000)
    assert (rows["fdb_entries"].used, rows["fdb_entries"].threshold) == (17000, "ok")

    # Without the bgp node, FRR not being managed costs nothing: healthy again.
    del agent.nodes.store["srv2"]
    await agent.reconciler.reconcile()
    assert agent.view.status().health == "ok"
    assert sorted(raw.keys("KUBE_FABRIC_AGENT|attachment|*")) == [
        "KUBE_FABRIC_AGENT|attachment|Ethernet0"]
    assert raw.hgetall("KUBE_FABRIC_AGENT|summary")["frr_last_ok"] == "true"


async def test_a_crm_threshold_crossing_is_one_event(agent: Agent, sonic_db: SonicDb) -> None:
    agent.nodes.store.update({
        "srv1": node("srv1", "Ethernet0", "static", "10.244.1.0/24", "192.168.10.1")})
    await agent.reconciler.reconcile()
    await sonic_db.client(COUNTERS_DB).hset("CRM:STATS", mapping={
        "crm_stats_ipv4_route_used": "30000", "crm_stats_ipv4_route_available": "2000"})
    async with running(agent.dataplane):
        await until(lambda: any(e.kind == "threshold_crossed" for e in agent.events.history()),
                    "the threshold event")
    crossed = [e for e in agent.events.history() if e.kind == "threshold_crossed"]
    assert [e.subject for e in crossed] == ["ipv4_routes"]
    assert {r.resource: r.threshold for r in agent.state.headroom}["ipv4_routes"] == "raised"


async def test_the_config_override_beats_crm(sonic_db: SonicDb, database_config: Path,
                                             tmp_path: Path,
                                             orchagent: OrchagentStandIn) -> None:
    agent, backend = await sonic_agent(sonic_db, database_config, tmp_path,
                                       capacity={"ipv4_routes": 100})
    try:
        agent.nodes.store["srv1"] = node("srv1", "Ethernet0", "static", "10.244.1.0/24",
                                         "192.168.10.1")
        await agent.reconciler.reconcile()
        async with running(agent.dataplane):
            await until(lambda: any(r.used == 6000 for r in agent.state.headroom), "CRM used")
        v4 = {r.resource: r for r in agent.state.headroom}["ipv4_routes"]
        assert (v4.capacity, v4.source, v4.used) == (100, "config", 6000)
    finally:
        await agent.dataplane.close()
        await backend.close()


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
    applied = []
    apply = agent.frr.apply

    async def recording_apply(desired):  # type: ignore[no-untyped-def]
        applied.append(desired)
        return await apply(desired)

    agent.frr.apply = recording_apply  # type: ignore[method-assign]
    agent.nodes.store.update({
        "srv1": node("srv1", "Ethernet0", "static", "10.244.1.0/24", "192.168.10.1"),
        "srv3": node("srv3", "Ethernet4", "static", "10.244.3.0/24", "192.168.10.3"),
    })
    await agent.reconciler.reconcile()
    assert agent.state.plan is not None
    assert agent.state.plan.frr.originate_v4 == ("10.244.1.0/24", "10.244.3.0/24")
    assert applied[-1].originate_v4 == ("10.244.1.0/24",)
    text = render_frr(applied[-1])
    assert "  network 10.244.1.0/24\n" in text and "network 10.244.3.0/24" not in text
    routes = {r.prefix: r.observed for r in agent.view.routes()}
    assert routes == {"10.244.1.0/24": True, "10.244.3.0/24": False}

    # The other producer lets go: the agent writes its route, and then announces it.
    await fpmsyncd.delete("10.244.3.0/24")
    await orchagent.quiesce()
    await agent.reconciler.reconcile()
    assert applied[-1].originate_v4 == ("10.244.1.0/24", "10.244.3.0/24")


async def test_a_larger_crm_capacity_admits_the_waiting_node_without_a_node_change(
    agent: Agent, sonic_db: SonicDb
) -> None:
    # A tiny route table (a profile that gives routes almost no space): CRM says 3 entries
    # in all. Each static node needs 2 (pod CIDR, InternalIP): only the older one fits.
    counters = sonic_db.client(COUNTERS_DB)
    await counters.hset("CRM:STATS", mapping={"crm_stats_ipv4_route_used": "0",
                                              "crm_stats_ipv4_route_available": "3"})
    agent.nodes.store.update({
        "srv1": node("srv1", "Ethernet0", "static", "10.244.1.0/24", "192.168.10.1"),
        "srv3": node("srv3", "Ethernet4", "static", "10.244.3.0/24", "192.168.10.3"),
    })
    async with running(agent.dataplane):
        await until(lambda: agent.dirty.pending, "CRM's figure replacing the profile's")
    agent.dirty.take()  # as the reconcile loop does before each pass
    await agent.reconciler.reconcile()
    assert waiting(agent) == ["srv3"], "the newer node waits for room"

    # The operator moves the ASIC to a profile with more routes: CRM reports it, and the
    # agent asks for a re-plan by itself (no Node changed), which admits srv3.
    await counters.hset("CRM:STATS", "crm_stats_ipv4_route_available", "26000")
    async with running(agent.dataplane):
        await until(lambda: agent.dirty.pending, "the larger capacity to re-plan")
    agent.dirty.take()
    await agent.reconciler.reconcile()
    assert waiting(agent) == []
    assert {r.prefix for r in agent.view.routes() if r.observed} == {
        "10.244.1.0/24", "10.244.3.0/24"}
