"""The cluster's need (agent/plan/costs.py) and the nodes_left forecast
(agent/headroom/usage.py, agent/headroom/report.py)."""

from __future__ import annotations

from fractions import Fraction

import pytest

from agent.headroom.report import build_report
from agent.headroom.resources import Capacity, Counts
from agent.headroom.usage import (
    CostModel,
    baseline,
    nodes_left,
    nominal_node_cost,
    per_node_cost,
    total,
)
from agent.plan.costs import node_costs
from agent.plan.model import DataplaneDesired, PlannedAttachment, StaticRoute, VxlanPeer


def att(node: str, port: str, *prefixes: str, routing: str = "bgp") -> PlannedAttachment:
    return PlannedAttachment(port, node, "annotation", routing, prefixes, False)


def peer(node: str, cidr: str, ip: str) -> VxlanPeer:
    gw = cidr.split("/")[0]
    return VxlanPeer(node, cidr, gw, "aa:bb:cc:00:00:01", ip)


BGP_NODES = [
    att("n1", "swp1", "10.244.1.0/24", "192.168.1.11/32"),
    att("n2", "swp2", "10.244.2.0/24", "10.244.3.0/24", "fd00:2::/64", "192.168.1.12/32"),
]


def test_attached_bgp_node_costs_its_routes_a_neighbour_and_a_nexthop() -> None:
    costs = node_costs(BGP_NODES)
    assert costs["n1"] == Counts(ipv4_routes=2, nexthops=1, neighbors=1)
    assert costs["n2"] == Counts(ipv4_routes=3, ipv6_routes=1, nexthops=1, neighbors=1)
    assert list(costs) == ["n1", "n2"]


def test_overlay_node_costs_vtep_fdb_neighbour_route_nexthop() -> None:
    dp = DataplaneDesired(233, vxlan_peers=(peer("o1", "10.244.7.0/24", "192.168.2.7"),))
    costs = node_costs([], dp)
    assert costs["o1"] == Counts(ipv4_routes=1, nexthops=1, neighbors=1, fdb_entries=1,
                                 remote_vteps=1)


def test_static_route_and_plan_prefix_for_the_same_cidr_are_one_route() -> None:
    atts = [att("s1", "swp3", "10.244.5.0/24", "192.168.1.15/32", routing="static")]
    dp = DataplaneDesired(233, static_routes=(StaticRoute("s1", "10.244.5.0/24",
                                                          "192.168.1.15"),))
    assert node_costs(atts, dp)["s1"] == Counts(ipv4_routes=2, nexthops=1, neighbors=1)


def test_attached_overlay_node_pays_both() -> None:
    atts = [att("v1", "swp4", "10.244.9.0/24", "192.168.1.19/32", routing="vxlan")]
    dp = DataplaneDesired(233, vxlan_peers=(peer("v1", "10.244.9.0/24", "192.168.1.19"),))
    assert node_costs(atts, dp)["v1"] == Counts(ipv4_routes=2, nexthops=2, neighbors=2,
                                                fdb_entries=1, remote_vteps=1)


def test_cost_model_is_tunable() -> None:
    costs = node_costs(BGP_NODES[:1], model=CostModel(attached_neighbors=2))
    assert costs["n1"].neighbors == 2


def test_total_is_the_sum() -> None:
    assert total(node_costs(BGP_NODES)) == Counts(ipv4_routes=5, ipv6_routes=1, nexthops=2,
                                                  neighbors=2)


def test_average_and_worst_case_per_node() -> None:
    costs = {"a": Counts(ipv4_routes=2, neighbors=1),
             "b": Counts(ipv4_routes=3, neighbors=1),
             "c": Counts(ipv4_routes=10, neighbors=1, remote_vteps=1)}
    per = per_node_cost(costs)
    assert per.nodes == 3
    assert per.average["ipv4_routes"] == Fraction(5)
    assert per.average["remote_vteps"] == Fraction(1, 3)
    assert per.worst == Counts(ipv4_routes=10, neighbors=1, remote_vteps=1)
    assert per.average_float()["remote_vteps"] == pytest.approx(0.3333, abs=1e-3)


def test_empty_cluster_forecasts_with_the_nominal_node() -> None:
    per = per_node_cost({})
    assert per.worst == nominal_node_cost() == Counts(ipv4_routes=2, nexthops=1, neighbors=1)


@pytest.mark.parametrize(("capacity", "reserve", "used", "cost", "expected"), [
    (1000, 5, 0, 2, 475),  # 950 usable / 2
    (1000, 5, 949, 2, 0),  # 1 left, a node needs 2: floor
    (1000, 5, 948, 2, 1),
    (1000, 5, 990, 2, 0),  # already inside the reserve: never negative
    (128, 0, 100, 1, 28),
    (100, 0, 0, Fraction(1, 3), 300),  # average cost below one entry
    (100, 0, 0, 0, None),  # a node costs none of it: not limiting
    (None, 5, 0, 2, None),  # capacity unknown
    (Capacity(1000, "config"), 5, 0, 2, 475),
])
def test_nodes_left(capacity: int | Capacity | None, reserve: float, used: int,
                    cost: int | Fraction, expected: int | None) -> None:
    assert nodes_left(capacity, reserve, used, cost) == expected


def test_baseline_is_the_larger_of_observed_and_desired() -> None:
    base = baseline(Counts(ipv4_routes=10, neighbors=5), {"ipv4_routes": 40, "neighbors": 2})
    assert base["ipv4_routes"] == 40 and base["neighbors"] == 5 and base["fdb_entries"] == 0


def test_report_nodes_left_average_vs_worst_case() -> None:
    # Nine BGP nodes and one overlay node; 20 remote VTEPs usable.
    costs = {f"b{i}": Counts(ipv4_routes=2, nexthops=1, neighbors=1) for i in range(9)}
    costs["o1"] = Counts(ipv4_routes=1, nexthops=1, neighbors=1, fdb_entries=1, remote_vteps=1)
    caps = {"ipv4_routes": Capacity(100, "config"), "remote_vteps": Capacity(20, "config")}
    rows = {r.resource: r for r in build_report(caps, total(costs), per_node_cost(costs), 0)}
    assert rows["ipv4_routes"].desired == 19
    assert rows["ipv4_routes"].nodes_left == 40  # 81 // 2
    assert rows["ipv4_routes"].nodes_left_average == 42  # 81 / 1.9
    assert rows["remote_vteps"].nodes_left == 19  # 19 // 1
    assert rows["remote_vteps"].nodes_left_average == 190  # 19 / 0.1
    assert rows["neighbors"].nodes_left is None  # no capacity given: not limiting
    limiting = min((r for r in rows.values() if r.nodes_left is not None),
                   key=lambda r: r.nodes_left or 0)
    assert (limiting.resource, limiting.nodes_left) == ("remote_vteps", 19)


def test_report_uses_observed_when_it_is_higher() -> None:
    costs = {"a": Counts(ipv4_routes=2)}
    caps = {"ipv4_routes": Capacity(100, "x")}
    rows = build_report(caps, total(costs), per_node_cost(costs), 0,
                        observed={"ipv4_routes": 90})
    assert rows[0].nodes_left == 5
