"""Service VIPs over static nodes on SONiC (issue 12, item 4): one ROUTE_TABLE entry with
comma-separated `nexthop` and `ifname`, keyed as fpmsyncd keys a host route, against a real
redis-server and the orchagent stand-in: the pops, a next-hop change in place, another
producer's route for the same VIP left alone (and not announced), repair, and the plan's VIP
originated by BGP only once APPL_DB holds it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from agent.apply.frr.render import render_frr
from agent.apply.sonic.applier import SonicDataplane
from agent.apply.sonic.db import APPL_DB, SonicDb
from agent.apply.sonic.producer import ProducerStateTable
from agent.apply.sonic.schema import host_key, prefix_of
from agent.cluster.nodes import cluster_state
from agent.cluster.services import service_state
from agent.config import parse_config
from agent.plan.build import plan
from agent.plan.model import DataplaneDesired, VipNexthop, VipRoute, originated_only
from lab.orchagent import OrchagentStandIn, Pop
from tests.recording import RecordingFeedback
from tests.sonic.conftest import node, running
from tests.sonic.test_applier import owned_record, tally
from tests.test_services_plan import service

PORTS = {"192.168.10.1": "Ethernet0", "192.168.10.2": "Ethernet4", "192.168.10.3": "Ethernet8",
         "2001:db8:10::1": "Ethernet0", "2001:db8:10::2": "Ethernet4"}


def vip(prefix: str, *vias: str) -> VipRoute:
    return VipRoute(prefix.partition("/")[0], prefix,
                    tuple(VipNexthop(v, PORTS.get(v), f"n{i}") for i, v in enumerate(vias)))


def desired(*routes: VipRoute) -> DataplaneDesired:
    return DataplaneDesired(route_protocol=233, vip_routes=routes)


def ecmp(key: str, nexthop: str, ifname: str) -> Pop:
    return Pop("ROUTE_TABLE", key, "SET", tuple(sorted(
        {"nexthop": nexthop, "ifname": ifname, "protocol": "233"}.items())))


@pytest.fixture
async def applier(sonic_db: SonicDb) -> AsyncIterator[SonicDataplane]:
    dp = SonicDataplane(sonic_db, RecordingFeedback(), frr_managed=True, probe_interval=0.1)
    await dp.start()
    try:
        async with running(dp):
            yield dp
    finally:
        await dp.close()


def test_host_routes_are_keyed_as_fpmsyncd_keys_them() -> None:
    assert host_key("203.0.113.10/32") == "203.0.113.10"
    assert host_key("2001:db8:5::10/128") == "2001:db8:5::10"
    assert host_key("10.244.1.0/24") == "10.244.1.0/24"
    for prefix in ("203.0.113.10/32", "2001:db8:5::10/128", "10.244.1.0/24"):
        assert prefix_of(host_key(prefix)) == prefix


async def test_a_vip_is_one_ecmp_entry_with_comma_separated_next_hops_and_ports(
    applier: SonicDataplane, orchagent: OrchagentStandIn, sonic_db: SonicDb
) -> None:
    res = await applier.apply(desired(vip("203.0.113.10/32", "192.168.10.1", "192.168.10.2"),
                                      vip("2001:db8:5::10/128", "2001:db8:10::1",
                                          "2001:db8:10::2")))
    assert res.ok and res.counts["routes"].added == 2 and res.details == {}, res
    assert sorted(await orchagent.quiesce(), key=repr) == sorted([
        ecmp("203.0.113.10", "192.168.10.1,192.168.10.2", "Ethernet0,Ethernet4"),
        ecmp("2001:db8:5::10", "2001:db8:10::1,2001:db8:10::2", "Ethernet0,Ethernet4"),
    ], key=repr)
    assert set(await owned_record(sonic_db, "ROUTE_TABLE")) == {"203.0.113.10",
                                                                "2001:db8:5::10"}
    # held() names them as the plan does, so BGP may originate them.
    assert applier.held()["routes"] == {"203.0.113.10/32", "2001:db8:5::10/128"}
    assert (await applier.apply(desired(vip("203.0.113.10/32", "192.168.10.1", "192.168.10.2"),
                                        vip("2001:db8:5::10/128", "2001:db8:10::1",
                                            "2001:db8:10::2")))).action == "unchanged"
    assert await orchagent.quiesce() == []


async def test_a_changed_node_set_is_one_set_of_the_same_key_never_a_delete(
    applier: SonicDataplane, orchagent: OrchagentStandIn
) -> None:
    await applier.apply(desired(vip("203.0.113.10/32", "192.168.10.1", "192.168.10.2")))
    await orchagent.quiesce()
    res = await applier.apply(desired(vip("203.0.113.10/32", "192.168.10.1", "192.168.10.2",
                                          "192.168.10.3")))
    assert (res.ok, *[getattr(tally(res), f) for f in ("added", "changed", "removed")]) == (
        True, 0, 1, 0)
    assert await orchagent.quiesce() == [ecmp("203.0.113.10", "192.168.10.1,192.168.10.2,"
                                              "192.168.10.3", "Ethernet0,Ethernet4,Ethernet8")]
    # Down to one node: a plain route, still the same key, still no delete in between.
    await applier.apply(desired(vip("203.0.113.10/32", "192.168.10.3")))
    assert await orchagent.quiesce() == [ecmp("203.0.113.10", "192.168.10.3", "Ethernet8")]
    assert (await orchagent.main_table("ROUTE_TABLE"))["203.0.113.10"] == {
        "nexthop": "192.168.10.3", "ifname": "Ethernet8", "protocol": "233"}
    # No VIP any more: the agent's key goes.
    assert tally(await applier.apply(desired())).removed == 1
    assert await orchagent.quiesce() == [Pop("ROUTE_TABLE", "203.0.113.10", "DEL", ())]


async def test_bgps_route_for_the_same_vip_is_left_alone_and_the_vip_not_originated(
    applier: SonicDataplane, orchagent: OrchagentStandIn, sonic_db: SonicDb
) -> None:
    # fpmsyncd's key for a /32 has no length: the same key as the agent's, hence a conflict,
    # not a second entry for one prefix.
    fpmsyncd = ProducerStateTable(sonic_db.client(APPL_DB), "ROUTE_TABLE", 0)
    await fpmsyncd.set("203.0.113.10", {"nexthop": "169.254.0.1", "ifname": "Ethernet64",
                                         "protocol": "bgp"})
    await orchagent.quiesce()
    res = await applier.apply(desired(vip("203.0.113.10/32", "192.168.10.1", "192.168.10.2")))
    assert res.ok and res.counts["routes"].added == 0
    (conflict,) = res.details["conflicts"]
    assert conflict.startswith("ROUTE_TABLE:203.0.113.10: held by another producer")
    assert await orchagent.quiesce() == []
    assert (await orchagent.main_table("ROUTE_TABLE"))["203.0.113.10"]["protocol"] == "bgp"
    assert applier.held()["routes"] == frozenset()


async def test_a_vip_entry_removed_behind_the_agents_back_is_written_again(
    applier: SonicDataplane, orchagent: OrchagentStandIn, sonic_db: SonicDb
) -> None:
    await applier.apply(desired(vip("203.0.113.10/32", "192.168.10.1", "192.168.10.2")))
    await orchagent.quiesce()
    await ProducerStateTable(sonic_db.client(APPL_DB), "ROUTE_TABLE", 0).delete("203.0.113.10")
    await orchagent.quiesce()
    res = await applier.resync()
    assert (res.action, tally(res).repaired) == ("repaired", 1)
    assert await orchagent.quiesce() == [
        ecmp("203.0.113.10", "192.168.10.1,192.168.10.2", "Ethernet0,Ethernet4")]


async def test_a_next_hop_without_a_known_port_skips_the_vip_and_says_why(
    applier: SonicDataplane, orchagent: OrchagentStandIn
) -> None:
    res = await applier.apply(desired(vip("203.0.113.10/32", "192.168.10.1", "192.168.99.9"),
                                      vip("203.0.113.11/32", "192.168.10.2")))
    assert res.ok and res.counts["routes"].added == 1
    assert res.details["skipped"] == (
        "ROUTE_TABLE:203.0.113.10: no port known that leads to 192.168.99.9 (node n1)",)
    assert [pop.key for pop in await orchagent.quiesce()] == ["203.0.113.11"]


async def test_the_plans_vip_over_static_nodes_is_written_then_originated(
    applier: SonicDataplane, orchagent: OrchagentStandIn
) -> None:
    config = parse_config({
        "switch": {"hostname": "leaf7", "asn": 65107, "router_id": "10.1.0.32"},
        "fabric": {"server_ports": ["Ethernet0", "Ethernet4"], "pod_supernets": ["10.244.0.0/16"],
                   "service_pools": ["203.0.113.0/24"]},
        "dataplane": {"backend": "sonic"},
    })
    nodes = [node("srv1", "Ethernet0", "static", "10.244.1.0/24", "192.168.10.1"),
             node("srv2", "Ethernet4", "static", "10.244.2.0/24", "192.168.10.2")]
    for obj in nodes:  # Ready, as a kubelet reports it
        obj["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    p = plan(config, cluster_state(nodes),
             services=service_state([service("web", "203.0.113.10")], []))
    assert "203.0.113.10/32" in p.frr.originate_v4
    # Not held yet: not originated (the fabric would send traffic this leaf has no route for).
    assert "203.0.113.10/32" not in originated_only(p.frr, applier.held()["routes"]).originate_v4
    assert (await applier.apply(p.dataplane)).ok
    frr = originated_only(p.frr, applier.held()["routes"])
    assert "  network 203.0.113.10/32\n" in render_frr(frr)
    await orchagent.quiesce()
    assert (await orchagent.main_table("ROUTE_TABLE"))["203.0.113.10"] == {
        "nexthop": "192.168.10.1,192.168.10.2", "ifname": "Ethernet0,Ethernet4",
        "protocol": "233"}
