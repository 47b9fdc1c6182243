"""SonicDataplane against a real redis-server and the orchagent stand-in: exactly the expected
pops for set, update, delete and bulk resync; other producers' keys untouched; a Redis restart
under the agent loses nothing; swss_zmq refused; results, held() and counts() in the applier
contract's shapes."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from agent.apply.contract import ApplyResult, TableCounts
from agent.apply.frr.render import render_frr
from agent.apply.sonic.applier import SonicDataplane
from agent.apply.sonic.db import APPL_DB, CONFIG_DB, STATE_DB, SonicDb
from agent.apply.sonic.device import SwssZmqEnabled
from agent.apply.sonic.producer import ProducerStateTable
from agent.apply.sonic.schema import TABLE_ORDER, OverlayMapping
from agent.cluster.nodes import cluster_state
from agent.errors import EXIT_FAILURE, StartupError
from agent.plan.build import plan
from agent.plan.model import DataplaneDesired, StaticRoute, VtepDevice, VxlanPeer, originated_only
from lab.orchagent import OrchagentStandIn, Pop
from lab.redis_server import RedisServer
from tests.recording import RecordingFeedback
from tests.sonic.conftest import node, running, sonic_config

PORTS = {"192.168.10.1": "Ethernet0", "192.168.10.2": "Ethernet4", "192.168.10.3": "Ethernet8"}


def static(node: str, prefix: str, via: str) -> StaticRoute:
    """A static node's route out of the port its address is cabled to (None: not attached)."""
    return StaticRoute(node=node, prefix=prefix, via=via, port=PORTS.get(via))


VTEP = VtepDevice(name="flannel.1", vni=1, port=4789, local="10.0.0.1", mtu=1450, mac=None,
                  address=None)
PEER_A = VxlanPeer(node="node-a", pod_cidr="10.244.7.0/24", gateway="10.244.7.0",
                   vtep_mac="aa:bb:cc:00:00:07", public_ip="192.168.20.7")
PEER_B = VxlanPeer(node="node-b", pod_cidr="10.244.8.0/24", gateway="10.244.8.0",
                   vtep_mac="aa:bb:cc:00:00:08", public_ip="192.168.20.8")


def desired(routes: tuple[StaticRoute, ...] = (), peers: tuple[VxlanPeer, ...] = ()
            ) -> DataplaneDesired:
    return DataplaneDesired(route_protocol=233, static_routes=routes,
                            vtep=VTEP if peers else None, vxlan_peers=peers)


def p(table: str, key: str, **fields: str) -> Pop:
    return Pop(table, key, "SET" if fields else "DEL", tuple(sorted(fields.items())))


def route(key: str, nexthop: str, ifname: str) -> Pop:
    return p("ROUTE_TABLE", key, nexthop=nexthop, ifname=ifname, protocol="233")


def overlay_pops(*peers: VxlanPeer) -> list[Pop]:
    out = [
        p("VXLAN_TUNNEL_TABLE", "kfavtep", src_ip="10.0.0.1"),
        p("VXLAN_EVPN_NVO_TABLE", "nvo1", source_vtep="kfavtep"),
        p("VXLAN_TUNNEL_MAP_TABLE", "kfavtep:map_1_Vlan4000", vni="1", vlan="Vlan4000"),
    ]
    for peer in peers:
        out += [
            p("VXLAN_REMOTE_VNI_TABLE", f"Vlan4000:{peer.public_ip}", vni="1"),
            p("VXLAN_FDB_TABLE", f"Vlan4000:{peer.vtep_mac}", remote_vtep=peer.public_ip,
              type="static", vni="1"),
            p("NEIGH_TABLE", f"Vlan4000:{peer.gateway}", neigh=peer.vtep_mac, family="IPv4"),
            route(peer.pod_cidr, peer.gateway, "Vlan4000"),
        ]
    return out


def key(pop: Pop) -> tuple[str, str, str]:
    return (pop.table, pop.key, pop.op)


def tally(res: ApplyResult) -> TableCounts:
    """The result's counts summed over every object kind."""
    out = TableCounts()
    for c in res.counts.values():
        out = TableCounts(out.added + c.added, out.changed + c.changed, out.removed + c.removed,
                          out.repaired + c.repaired)
    return out


def astuple3(res: ApplyResult) -> tuple[int, int, int]:
    t = tally(res)
    return t.added, t.changed, t.removed


def dataplane(db: SonicDb, *, probe_interval: float = 1.0,
              overlay: OverlayMapping | None = None) -> SonicDataplane:
    return SonicDataplane(db, RecordingFeedback(), frr_managed=True, overlay=overlay,
                          probe_interval=probe_interval)


async def owned_record(db: SonicDb, table: str) -> dict[str, dict[str, str]]:
    raw = await db.client(STATE_DB).hgetall(f"KFA_OWNED|{table}")
    return {k: json.loads(v) for k, v in raw.items()}


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 10.0) -> None:
    """Poll check() until it holds, failing after `within` seconds."""
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {within} s")
        await asyncio.sleep(0.02)


@pytest.fixture
async def applier(sonic_db: SonicDb) -> AsyncIterator[SonicDataplane]:
    """Started, with its loops running (the Redis watcher among them) as the runtime runs them."""
    dp = dataplane(sonic_db, probe_interval=0.1)
    await dp.start()
    try:
        async with running(dp):
            yield dp
    finally:
        await dp.close()


async def test_set_update_delete_give_exactly_the_expected_pops(
    applier: SonicDataplane, orchagent: OrchagentStandIn, sonic_db: SonicDb
) -> None:
    r1 = static("node-1", "10.244.1.0/24", "192.168.10.1")
    r2 = static("node-2", "10.244.2.0/24", "192.168.10.2")
    res = await applier.apply(desired((r1, r2)))
    t = tally(res)
    assert (res.ok, res.action, t.added, t.changed, t.removed) == (True, "applied", 2, 0, 0)
    assert res.applier == "dataplane" and res.counts["routes"] == TableCounts(added=2)
    assert res.details == {}  # no conflicts, nothing skipped, no warnings
    assert sorted(await orchagent.quiesce(), key=key) == sorted([
        route("10.244.1.0/24", "192.168.10.1", "Ethernet0"),
        route("10.244.2.0/24", "192.168.10.2", "Ethernet4"),
    ], key=key)

    # Same desired state: nothing written, nothing popped.
    res = await applier.apply(desired((r1, r2)))
    assert (res.action, *astuple3(res)) == ("unchanged", 0, 0, 0)
    assert await orchagent.quiesce() == []

    # node-2 moved behind another address/port: one SET with every field replaced.
    r2b = static("node-2", "10.244.2.0/24", "192.168.10.3")
    res = await applier.apply(desired((r1, r2b)))
    assert (res.action, *astuple3(res)) == ("applied", 0, 1, 0)
    assert await orchagent.quiesce() == [route("10.244.2.0/24", "192.168.10.3", "Ethernet8")]
    assert (await orchagent.main_table("ROUTE_TABLE"))["10.244.2.0/24"] == {
        "nexthop": "192.168.10.3", "ifname": "Ethernet8", "protocol": "233"}

    res = await applier.apply(desired((r1,)))
    assert (res.action, *astuple3(res)) == ("applied", 0, 0, 1)
    assert await orchagent.quiesce() == [p("ROUTE_TABLE", "10.244.2.0/24")]
    assert set(await orchagent.main_table("ROUTE_TABLE")) == {"10.244.1.0/24"}
    assert set(await owned_record(sonic_db, "ROUTE_TABLE")) == {"10.244.1.0/24"}


async def test_overlay_entries_in_dependency_order_and_removed_in_reverse(
    applier: SonicDataplane, orchagent: OrchagentStandIn
) -> None:
    res = await applier.apply(desired(peers=(PEER_A, PEER_B)))
    assert res.ok and tally(res).added == 3 + 4 * 2
    pops = await orchagent.quiesce()
    assert sorted(pops, key=key) == sorted(overlay_pops(PEER_A, PEER_B), key=key)
    tables = [x.table for x in pops]
    assert tables.index("VXLAN_TUNNEL_TABLE") < tables.index("VXLAN_TUNNEL_MAP_TABLE") \
        < tables.index("VXLAN_REMOTE_VNI_TABLE") < tables.index("ROUTE_TABLE")

    res = await applier.apply(desired(peers=(PEER_A,)))
    assert astuple3(res) == (0, 0, 4)
    assert sorted(await orchagent.quiesce(), key=key) == sorted([
        p("VXLAN_REMOTE_VNI_TABLE", "Vlan4000:192.168.20.8"),
        p("VXLAN_FDB_TABLE", "Vlan4000:aa:bb:cc:00:00:08"),
        p("NEIGH_TABLE", "Vlan4000:10.244.8.0"),
        p("ROUTE_TABLE", "10.244.8.0/24"),
    ], key=key)

    res = await applier.apply(desired())
    assert tally(res).removed == 7
    pops = await orchagent.quiesce()
    tables = [x.table for x in pops]
    assert tables.index("ROUTE_TABLE") < tables.index("VXLAN_REMOTE_VNI_TABLE") \
        < tables.index("VXLAN_TUNNEL_MAP_TABLE") < tables.index("VXLAN_TUNNEL_TABLE")
    for table in ("ROUTE_TABLE", "VXLAN_TUNNEL_TABLE", "VXLAN_FDB_TABLE", "NEIGH_TABLE"):
        assert await orchagent.main_table(table) == {}
    assert applier.object_counts() == dict.fromkeys(applier.object_counts(), 0)


async def test_bulk_resync_uses_batches(
    applier: SonicDataplane, orchagent: OrchagentStandIn, sonic_db: SonicDb
) -> None:
    routes = tuple(static(f"n{i}", f"10.{100 + i // 256}.{i % 256}.0/24", "192.168.10.1")
                   for i in range(2500))
    client = sonic_db.client(APPL_DB)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe("ROUTE_TABLE_CHANNEL@0")
    try:
        res = await applier.apply(desired(routes))
        assert tally(res).added == 2500
        pops = await orchagent.quiesce()
        assert sorted(pops, key=key) == sorted(
            (route(r.prefix, r.via, "Ethernet0") for r in routes), key=key)
        # 2500 keys in batches of 1000: three publishes, not 2500.
        messages = []
        deadline = time.monotonic() + 5
        while len(messages) < 3 and time.monotonic() < deadline:
            msg = await pubsub.get_message(timeout=0.1)
            if msg is not None:
                messages.append(msg)
        assert len(messages) == 3
    finally:
        await pubsub.aclose()


async def test_other_producers_keys_are_left_alone(
    applier: SonicDataplane, orchagent: OrchagentStandIn, sonic_db: SonicDb
) -> None:
    fpmsyncd = ProducerStateTable(sonic_db.client(APPL_DB), "ROUTE_TABLE", 0)
    await fpmsyncd.set("10.99.0.0/24", {"nexthop": "172.16.0.1", "ifname": "Ethernet64",
                                         "protocol": "bgp"})
    # The same prefix as a static node's, held by another producer with other fields.
    await fpmsyncd.set("10.244.5.0/24", {"nexthop": "172.16.0.1", "ifname": "Ethernet64",
                                          "protocol": "bgp"})
    await orchagent.quiesce()
    before = await orchagent.main_table("ROUTE_TABLE")

    r5 = static("node-5", "10.244.5.0/24", "192.168.10.1")
    r6 = static("node-6", "10.244.6.0/24", "192.168.10.2")
    res = await applier.apply(desired((r5, r6)))
    assert res.ok and tally(res).added == 1
    (conflict,) = res.details["conflicts"]
    assert conflict.startswith("ROUTE_TABLE:10.244.5.0/24")
    assert await orchagent.quiesce() == [route("10.244.6.0/24", "192.168.10.2", "Ethernet4")]
    after = await orchagent.main_table("ROUTE_TABLE")
    assert {k: after[k] for k in before} == before
    assert set(await owned_record(sonic_db, "ROUTE_TABLE")) == {"10.244.6.0/24"}

    # Nothing desired any more: only the agent's own key is deleted.
    res = await applier.apply(desired())
    assert tally(res).removed == 1 and "conflicts" not in res.details
    assert await orchagent.quiesce() == [p("ROUTE_TABLE", "10.244.6.0/24")]
    assert await orchagent.main_table("ROUTE_TABLE") == before

    # Once the other producer lets go of the prefix, the agent takes it.
    await fpmsyncd.delete("10.244.5.0/24")
    await orchagent.quiesce()
    res = await applier.apply(desired((r5,)))
    assert tally(res).added == 1 and "conflicts" not in res.details
    assert await orchagent.quiesce() == [route("10.244.5.0/24", "192.168.10.1", "Ethernet0")]


async def test_identical_foreign_entry_is_shared_not_owned(
    applier: SonicDataplane, orchagent: OrchagentStandIn, sonic_db: SonicDb
) -> None:
    """An operator's VTEP with the same name and source: used, never rewritten or deleted."""
    vxlanmgrd = ProducerStateTable(sonic_db.client(APPL_DB), "VXLAN_TUNNEL_TABLE", 0)
    await vxlanmgrd.set("kfavtep", {"src_ip": "10.0.0.1"})
    await orchagent.quiesce()
    res = await applier.apply(desired(peers=(PEER_A,)))
    assert res.ok and "conflicts" not in res.details
    pops = await orchagent.quiesce()
    assert "VXLAN_TUNNEL_TABLE" not in {x.table for x in pops}
    await applier.apply(desired())
    pops = await orchagent.quiesce()
    assert "VXLAN_TUNNEL_TABLE" not in {x.table for x in pops}
    assert await orchagent.main_table("VXLAN_TUNNEL_TABLE") == {"kfavtep": {"src_ip": "10.0.0.1"}}


async def test_entry_rewritten_by_another_producer_is_released_not_deleted(
    applier: SonicDataplane, orchagent: OrchagentStandIn, sonic_db: SonicDb
) -> None:
    r1 = static("node-1", "10.244.1.0/24", "192.168.10.1")
    await applier.apply(desired((r1,)))
    await orchagent.quiesce()
    other = ProducerStateTable(sonic_db.client(APPL_DB), "ROUTE_TABLE", 0)
    await other.replace("10.244.1.0/24", {"nexthop": "172.16.0.9", "ifname": "Ethernet64"})
    await orchagent.quiesce()
    res = await applier.resync()
    assert "released" in res.details["conflicts"][0]
    assert await owned_record(sonic_db, "ROUTE_TABLE") == {}
    await applier.apply(desired())
    assert await orchagent.quiesce() == []
    assert (await orchagent.main_table("ROUTE_TABLE"))["10.244.1.0/24"]["nexthop"] == "172.16.0.9"


async def test_a_change_never_overwrites_another_producers_rewrite(
    applier: SonicDataplane, orchagent: OrchagentStandIn, sonic_db: SonicDb
) -> None:
    await applier.apply(desired((static("node-1", "10.244.1.0/24", "192.168.10.1"),)))
    await orchagent.quiesce()
    other = ProducerStateTable(sonic_db.client(APPL_DB), "ROUTE_TABLE", 0)
    await other.replace("10.244.1.0/24", {"nexthop": "172.16.0.9", "ifname": "Ethernet64"})
    await orchagent.quiesce()
    # The node moves before any resync noticed the rewrite: the apply looks before it writes.
    res = await applier.apply(desired((static("node-1", "10.244.1.0/24", "192.168.10.2"),)))
    assert tally(res).changed == 0 and "released" in res.details["conflicts"][0]
    assert await orchagent.quiesce() == []
    assert (await orchagent.main_table("ROUTE_TABLE"))["10.244.1.0/24"]["nexthop"] == "172.16.0.9"


async def test_resync_repairs_a_key_removed_behind_the_agents_back(
    applier: SonicDataplane, orchagent: OrchagentStandIn, sonic_db: SonicDb
) -> None:
    r1 = static("node-1", "10.244.1.0/24", "192.168.10.1")
    r2 = static("node-2", "10.244.2.0/24", "192.168.10.2")
    await applier.apply(desired((r1, r2)))
    await orchagent.quiesce()
    # e.g. fpmsyncd's warm-restart reconciliation deleting routes zebra does not know
    await ProducerStateTable(sonic_db.client(APPL_DB), "ROUTE_TABLE", 0).delete("10.244.2.0/24")
    await orchagent.quiesce()
    res = await applier.resync()
    assert (res.action, tally(res).repaired) == ("repaired", 1)
    assert await orchagent.quiesce() == [route("10.244.2.0/24", "192.168.10.2", "Ethernet4")]
    res = await applier.resync()
    assert (res.action, tally(res).repaired) == ("in-sync", 0)


async def test_agent_restart_deletes_exactly_its_keys(
    orchagent: OrchagentStandIn, sonic_db: SonicDb
) -> None:
    r1 = static("node-1", "10.244.1.0/24", "192.168.10.1")
    r2 = static("node-2", "10.244.2.0/24", "192.168.10.2")
    first = dataplane(sonic_db)
    await first.start()
    await first.apply(desired((r1, r2)))
    await first.close()
    await orchagent.quiesce()

    second = dataplane(sonic_db)
    await second.start()
    try:
        assert second.object_counts()["routes"] == 2  # from STATE_DB KFA_OWNED
        res = await second.apply(desired((r1,)))
        assert astuple3(res) == (0, 0, 1)
        assert await orchagent.quiesce() == [p("ROUTE_TABLE", "10.244.2.0/24")]
    finally:
        await second.close()


async def test_redis_restart_under_the_agent_loses_nothing(
    redis_server: RedisServer, sonic_db: SonicDb, orchagent: OrchagentStandIn,
    caplog: pytest.LogCaptureFixture,
) -> None:
    dp = dataplane(sonic_db, probe_interval=0.05)
    await dp.start()
    try:
        async with running(dp):  # the Redis watcher replays, with no apply or resync asked
            want = desired((static("node-1", "10.244.1.0/24", "192.168.10.1"),
                            static("node-2", "10.244.2.0/24", "192.168.10.2")), peers=(PEER_A,))
            await dp.apply(want)
            await orchagent.quiesce()
            expected = {t: await orchagent.main_table(t) for t in
                        ("ROUTE_TABLE", "VXLAN_TUNNEL_TABLE", "VXLAN_FDB_TABLE", "NEIGH_TABLE")}
            assert set(expected["ROUTE_TABLE"]) == {"10.244.1.0/24", "10.244.2.0/24",
                                                    "10.244.7.0/24"}
            assert expected["NEIGH_TABLE"] == {
                "Vlan4000:10.244.7.0": {"neigh": "aa:bb:cc:00:00:07", "family": "IPv4"}}
            owned_before = {t: await owned_record(sonic_db, t) for t in ("ROUTE_TABLE",)}
            assert set(owned_before["ROUTE_TABLE"]) == set(expected["ROUTE_TABLE"])

            await orchagent.stop()  # swss restarts with the database on SONiC
            with caplog.at_level(logging.WARNING, logger="agent.apply.sonic.applier"):
                redis_server.restart_empty()
                stand_in = OrchagentStandIn(str(redis_server.socket), 0, list(TABLE_ORDER))
                await stand_in.start()
                try:
                    async def restored() -> bool:
                        return all([await stand_in.main_table(t) == v
                                    for t, v in expected.items()])

                    await eventually(restored)
                    # Noticed as a restart (so replayed, not verified), by the watcher alone.
                    assert "Redis instance redis restarted (run_id" in caplog.text
                    assert {t: await owned_record(sonic_db, t)
                            for t in owned_before} == owned_before
                    res = await dp.resync()
                    assert (res.ok, res.action) == (True, "in-sync")
                finally:
                    await stand_in.stop()
    finally:
        await dp.close()


async def test_swss_zmq_enabled_is_refused(sonic_db: SonicDb) -> None:
    await sonic_db.client(CONFIG_DB).hset("SYSTEM_DEFAULTS|swss_zmq", "status", "enabled")
    dp = dataplane(sonic_db)
    with pytest.raises(SwssZmqEnabled, match="ZMQ") as err:
        await dp.start()
    assert isinstance(err.value, StartupError) and err.value.exit_code == EXIT_FAILURE
    await dp.close()


async def test_swss_zmq_enabled_later_stops_writes(
    applier: SonicDataplane, sonic_db: SonicDb
) -> None:
    await sonic_db.client(CONFIG_DB).hset("SYSTEM_DEFAULTS|swss_zmq", "status", "enabled")
    res = await applier.apply(desired((static("n", "10.244.1.0/24", "192.168.10.1"),)))
    assert (res.ok, res.action) == (False, "refused") and "swss_zmq" in (res.error or "")
    assert await sonic_db.client(APPL_DB).exists("ROUTE_TABLE_KEY_SET") == 0


async def test_unknown_port_is_skipped_and_reported(
    applier: SonicDataplane, orchagent: OrchagentStandIn
) -> None:
    res = await applier.apply(desired((static("far", "10.244.9.0/24", "192.168.99.9"),
                                       static("n1", "10.244.1.0/24", "192.168.10.1"))))
    assert res.ok and tally(res).added == 1
    (skipped,) = res.details["skipped"]
    assert "192.168.99.9" in skipped
    assert [x.key for x in await orchagent.quiesce()] == ["10.244.1.0/24"]


async def test_overlay_prerequisites_are_reported(
    applier: SonicDataplane, sonic_db: SonicDb
) -> None:
    res = await applier.apply(desired(peers=(PEER_A,)))
    assert any("VLAN|Vlan4000" in w for w in res.details["warnings"])
    cfg = sonic_db.client(CONFIG_DB)
    await cfg.hset("VLAN|Vlan4000", "vlanid", "4000")
    await cfg.hset("VLAN_INTERFACE|Vlan4000", "NULL", "NULL")
    res = await applier.apply(desired(peers=(PEER_A, PEER_B)))
    assert "warnings" not in res.details


async def test_overlay_mapping_is_configurable(sonic_db: SonicDb,
                                               orchagent: OrchagentStandIn) -> None:
    dp = dataplane(sonic_db,
                        overlay=OverlayMapping(vlan_id=3001, vtep_name="vtep1"))
    await dp.start()
    try:
        await dp.apply(desired(peers=(PEER_A,)))
        keys = {(x.table, x.key) for x in await orchagent.quiesce()}
        assert ("VXLAN_TUNNEL_MAP_TABLE", "vtep1:map_1_Vlan3001") in keys
        assert ("ROUTE_TABLE", "10.244.7.0/24") in keys
        assert (await orchagent.main_table("ROUTE_TABLE"))["10.244.7.0/24"]["ifname"] == "Vlan3001"
    finally:
        await dp.close()
    with pytest.raises(ValueError):
        OverlayMapping(vlan_id=1)


async def test_held_and_counts_are_what_the_agent_holds_in_appl_db(
    applier: SonicDataplane, orchagent: OrchagentStandIn, sonic_db: SonicDb
) -> None:
    assert applier.held() == {"routes": frozenset(), "fdb": frozenset()}
    fpmsyncd = ProducerStateTable(sonic_db.client(APPL_DB), "ROUTE_TABLE", 0)
    await fpmsyncd.set("10.244.5.0/24", {"nexthop": "172.16.0.1", "ifname": "Ethernet64",
                                          "protocol": "bgp"})
    await orchagent.quiesce()
    res = await applier.apply(desired((static("node-1", "10.244.1.0/24", "192.168.10.1"),
                                       static("node-5", "10.244.5.0/24", "192.168.10.2")),
                                      peers=(PEER_A,)))
    assert res.ok and len(res.details["conflicts"]) == 1
    # Observed, never merely asked for: the other producer's prefix is not held.
    held = applier.held()
    assert held == {"routes": frozenset({"10.244.1.0/24", "10.244.7.0/24"}),
                    "fdb": frozenset({"aa:bb:cc:00:00:07"})}
    assert all(isinstance(v, frozenset) for v in held.values())
    assert applier.counts() == {}  # CRM says what the ASIC holds
    assert applier.object_counts() == {"vteps": 1, "evpn_nvos": 1, "vni_maps": 1, "remote_vteps": 1,
                                "fdb": 1, "neighbors": 1, "routes": 2}
    assert applier.name == "dataplane" and res.applier == applier.name


async def test_bgp_originates_only_the_routes_appl_db_holds(
    applier: SonicDataplane, sonic_db: SonicDb, orchagent: OrchagentStandIn
) -> None:
    # Routes in APPL_DB never reach zebra: the static nodes' pod CIDRs are announced with
    # network statements, but not one whose ROUTE_TABLE key another producer holds (the
    # fabric's traffic for it would reach this leaf and find no route of the agent's).
    fpmsyncd = ProducerStateTable(sonic_db.client(APPL_DB), "ROUTE_TABLE", 0)
    await fpmsyncd.set("10.244.3.0/24", {"nexthop": "172.16.0.1", "ifname": "Ethernet64",
                                          "protocol": "bgp"})
    await orchagent.quiesce()
    config = sonic_config(hostname="leaf7", asn=65107, router_id="10.1.0.32")
    cluster = cluster_state([
        node("srv1", "Ethernet0", "static", "10.244.1.0/24", "192.168.10.1"),
        node("srv3", "Ethernet4", "static", "10.244.3.0/24", "192.168.10.3"),
    ])
    p = plan(config, cluster)
    assert [(r.prefix, r.port) for r in p.dataplane.static_routes] == [
        ("10.244.1.0/24", "Ethernet0"), ("10.244.3.0/24", "Ethernet4")]
    res = await applier.apply(p.dataplane)
    assert res.ok and res.details["conflicts"][0].startswith("ROUTE_TABLE:10.244.3.0/24")
    assert p.frr.originate_v4 == ("10.244.1.0/24", "10.244.3.0/24")
    frr = originated_only(p.frr, applier.held()["routes"])
    assert frr.originate_v4 == ("10.244.1.0/24",)
    text = render_frr(frr)
    assert "  network 10.244.1.0/24\n" in text and "network 10.244.3.0/24" not in text
    await orchagent.quiesce()
    assert (await orchagent.main_table("ROUTE_TABLE"))["10.244.1.0/24"] == {
        "nexthop": "192.168.10.1", "ifname": "Ethernet0", "protocol": "233"}

    # The other producer lets go: the agent writes its route, and then announces it.
    await fpmsyncd.delete("10.244.3.0/24")
    await orchagent.quiesce()
    assert (await applier.apply(p.dataplane)).ok
    assert originated_only(p.frr, applier.held()["routes"]).originate_v4 == (
        "10.244.1.0/24", "10.244.3.0/24")
    await orchagent.quiesce()
    assert (await orchagent.main_table("ROUTE_TABLE"))["10.244.3.0/24"]["ifname"] == "Ethernet4"
