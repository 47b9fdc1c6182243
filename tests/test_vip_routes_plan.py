"""Service VIPs on static nodes (issue 12, item 4): the leaf routes the VIP itself, one ECMP route
to the permitted static nodes' InternalIPs (agent/plan/vip_routes.py).

Input/expected pairs: static nodes permitted as BGP nodes are (Ready, not excluded; Local: a
ready endpoint), the width cap (lowest addresses, the rest named), a VIP both BGP and static
nodes may serve (left to BGP), IPv6, unusable next hops, what goes upstream (redistributed on
Linux, originated on SONiC), and the ECMP groups headroom counts.
"""

from __future__ import annotations

from typing import Any

from agent.cluster.nodes import cluster_state
from agent.cluster.services import service_state
from agent.config import AgentConfig, parse_config
from agent.plan.build import plan
from agent.plan.costs import desired_total
from agent.plan.model import Plan, VipNexthop, VipRoute
from tests.test_services_plan import OLD, POOLS, endpoints, node, service


def config(**fabric: Any) -> AgentConfig:
    backend = fabric.pop("backend", "linux")
    return parse_config({
        "switch": {"hostname": "leaf1", "asn": 65101, "router_id": "10.0.0.1"},
        "fabric": {"server_ports": [f"swp{i}" for i in range(1, 9)], "uplinks": ["swp51"],
                   "pod_supernets": ["10.244.0.0/16", "fd00:10:244::/48"],
                   "service_pools": POOLS, **fabric},
        "dataplane": {"backend": backend},
    })


def static(name: str, index: int, **kwargs: Any) -> dict[str, Any]:
    return node(name, index, routing="static", **kwargs)


def dual_stack(obj: dict[str, Any], v6: str) -> dict[str, Any]:
    obj["status"]["addresses"].append({"type": "InternalIP", "address": v6})
    return obj


def plan_of(nodes: list[dict[str, Any]], services: list[dict[str, Any]],
            slices: list[dict[str, Any]] | None = None, cfg: AgentConfig | None = None,
            **kwargs: Any) -> Plan:
    return plan(cfg or config(), cluster_state(nodes),
                services=service_state(services, slices or []), **kwargs)


def routes(p: Plan) -> dict[str, tuple[str, ...]]:
    """VIP prefix -> the leaf route's next hops ("via@port")."""
    return {r.prefix: tuple(f"{h.via}@{h.port}" for h in r.nexthops)
            for r in p.dataplane.vip_routes}


def served(p: Plan, address: str) -> tuple[tuple[str, ...], tuple[str, ...], str | None]:
    v = next(v for v in p.services if v.vip == address)
    return v.nodes_permitted, v.nodes_routed, v.routing_note


STATIC3 = [static("s1", 1), static("s2", 2), static("s3", 3)]


# --- who is permitted -----------------------------------------------------------------------

def test_cluster_policy_static_nodes_get_one_ecmp_route_from_the_leaf() -> None:
    p = plan_of(STATIC3, [service("web", "203.0.113.10")])
    assert p.dataplane.vip_routes == (VipRoute("203.0.113.10", "203.0.113.10/32", (
        VipNexthop("192.168.10.1", "swp1", "s1"), VipNexthop("192.168.10.2", "swp2", "s2"),
        VipNexthop("192.168.10.3", "swp3", "s3"))),)
    assert served(p, "203.0.113.10") == (("s1", "s2", "s3"), ("s1", "s2", "s3"), None)
    # No session on a static node's port: nothing to announce through BGP.
    assert all(peer.node is None for peer in p.frr.server_peers)
    assert not [r for r in p.refusals if r.kind == "vip"]


def test_not_ready_and_excluded_static_nodes_are_not_next_hops() -> None:
    nodes = [static("s1", 1), static("s2", 2, ready="False"),
             static("s3", 3, labels={"node.kubernetes.io/exclude-from-external-load-balancers":
                                     ""})]
    p = plan_of(nodes, [service("web", "203.0.113.10")])
    assert routes(p) == {"203.0.113.10/32": ("192.168.10.1@swp1",)}


def test_local_policy_routes_only_to_static_nodes_with_a_ready_endpoint() -> None:
    slices = [endpoints("web", ("s1", False), ("s2", True), ("s3", True), ("elsewhere", True))]
    p = plan_of(STATIC3, [service("web", "203.0.113.10", policy="Local")], slices)
    assert routes(p) == {"203.0.113.10/32": ("192.168.10.2@swp2", "192.168.10.3@swp3")}
    # The endpoint moves to s1 alone: the route follows, now a plain one-hop route.
    moved = plan_of(STATIC3, [service("web", "203.0.113.10", policy="Local")],
                    [endpoints("web", ("s1", True))])
    assert routes(moved) == {"203.0.113.10/32": ("192.168.10.1@swp1",)}
    assert moved.dataplane.vip_routes[0].group is None  # one next hop: no ECMP group


def test_a_local_service_without_ready_endpoints_gets_no_leaf_route() -> None:
    p = plan_of(STATIC3, [service("web", "203.0.113.10", policy="Local")])
    assert p.dataplane.vip_routes == ()
    assert "203.0.113.10/32" not in p.frr.redistribute_v4
    assert "203.0.113.10/32" in p.frr.advertise_v4  # the uplink list follows Services only


def test_a_static_node_not_behind_this_leaf_or_in_the_overlay_is_no_next_hop() -> None:
    nodes = [static("s1", 1), static("far", 2, port=None), node("fl", 3, routing="vxlan")]
    p = plan_of(nodes, [service("web", "203.0.113.10")])
    assert routes(p) == {"203.0.113.10/32": ("192.168.10.1@swp1",)}


# --- width cap --------------------------------------------------------------------------------

def test_the_width_caps_the_next_hops_lowest_addresses_first_and_names_the_rest() -> None:
    # Addresses out of name order: the choice is by address, not by name or age.
    nodes = [static("a", 1, ip="192.168.10.40"), static("b", 2, ip="192.168.10.9"),
             static("c", 3, ip="192.168.10.30"), static("d", 4, ip="192.168.10.100")]
    p = plan_of(nodes, [service("web", "203.0.113.10"), service("api", "203.0.113.11")],
                cfg=config(vip_ecmp_width=2))
    want = ("192.168.10.9@swp2", "192.168.10.30@swp3")
    assert routes(p) == {"203.0.113.10/32": want, "203.0.113.11/32": want}
    permitted, routed, note = served(p, "203.0.113.10")
    assert (permitted, routed) == (("a", "b", "c", "d"), ("b", "c"))
    assert note == "beyond fabric.vip_ecmp_width 2 (lowest addresses first): a, d"
    # Both VIPs go to the same two nodes: one ECMP group, not one per VIP.
    assert p.vip_costs.nexthop_groups == 1


def test_a_width_of_one_is_a_plain_route_and_no_group() -> None:
    p = plan_of(STATIC3, [service("web", "203.0.113.10")], cfg=config(vip_ecmp_width=1))
    assert routes(p) == {"203.0.113.10/32": ("192.168.10.1@swp1",)}
    assert p.vip_costs.nexthop_groups == 0


# --- BGP and static nodes on one VIP ----------------------------------------------------------

def test_a_vip_bgp_nodes_may_announce_is_left_to_bgp_and_the_static_ones_are_named() -> None:
    nodes = [node("b1", 1), node("b2", 2), static("s3", 3), static("s4", 4)]
    p = plan_of(nodes, [service("web", "203.0.113.10")])
    assert p.dataplane.vip_routes == ()
    permitted, routed, note = served(p, "203.0.113.10")
    assert permitted == ("b1", "b2", "s3", "s4") and routed == ()
    assert note == ("BGP nodes announce it (b1, b2); the leaf routes none of it to static nodes "
                    "(s3, s4)")
    peers = {peer.node: peer.vips_v4 for peer in p.frr.server_peers if peer.node}
    assert peers == {"b1": ("203.0.113.10/32",), "b2": ("203.0.113.10/32",)}
    assert "203.0.113.10/32" not in p.frr.redistribute_v4


def test_when_the_last_bgp_endpoint_leaves_the_leaf_takes_the_vip_to_the_static_node() -> None:
    nodes = [node("b1", 1), static("s2", 2)]
    svc = [service("web", "203.0.113.10", policy="Local")]
    both = plan_of(nodes, svc, [endpoints("web", ("b1", True), ("s2", True))])
    assert both.dataplane.vip_routes == ()
    static_only = plan_of(nodes, svc, [endpoints("web", ("s2", True))])
    assert routes(static_only) == {"203.0.113.10/32": ("192.168.10.2@swp2",)}
    peer = next(p for p in static_only.frr.server_peers if p.node == "b1")
    assert peer.vips_v4 == ()


# --- families, next hops, upstream ------------------------------------------------------------

def test_an_ipv6_vip_goes_to_the_nodes_ipv6_internal_ips_only() -> None:
    nodes = [dual_stack(static("s1", 1), "2001:db8:10::1"), static("s2", 2)]
    p = plan_of(nodes, [service("web", "2001:db8:5::10", "203.0.113.10")])
    assert routes(p) == {"203.0.113.10/32": ("192.168.10.1@swp1", "192.168.10.2@swp2"),
                         "2001:db8:5::10/128": ("2001:db8:10::1@swp1",)}
    assert served(p, "2001:db8:5::10")[2] == "no usable IPv6 InternalIP: s2"
    # s2's IPv6 pod CIDR has no next hop either (refused); the VIP follows the pod CIDRs.
    assert p.frr.redistribute_v6 == ("fd00:10:244:1::/64", "2001:db8:5::10/128")
    # IPv4 first, then IPv6, each in address order.
    assert [r.prefix for r in p.dataplane.vip_routes] == ["203.0.113.10/32", "2001:db8:5::10/128"]


def test_an_internal_ip_the_host_route_rules_refuse_is_no_next_hop() -> None:
    cfg = config(node_networks=["192.168.10.0/24"])
    nodes = [static("s1", 1), static("s2", 2, ip="172.16.0.2")]
    p = plan_of(nodes, [service("web", "203.0.113.10")], cfg=cfg)
    assert routes(p) == {"203.0.113.10/32": ("192.168.10.1@swp1",)}
    assert served(p, "203.0.113.10")[2] == "no usable IPv4 InternalIP: s2"


def test_leaf_vip_routes_go_upstream_once_redistributed_on_linux() -> None:
    p = plan_of(STATIC3, [service("web", "203.0.113.10")])
    assert "203.0.113.10/32" in p.frr.redistribute_v4
    assert p.frr.advertise_v4.count("203.0.113.10/32") == 1
    assert p.frr.originate_v4 == ()
    assert "203.0.113.10/32" in p.dataplane.prefixes


def test_on_sonic_leaf_vip_routes_are_originated() -> None:
    p = plan_of(STATIC3, [service("web", "203.0.113.10")], cfg=config(backend="sonic"))
    assert "203.0.113.10/32" in p.frr.originate_v4


# --- headroom -----------------------------------------------------------------------------------

def test_a_vip_route_counts_once_in_the_route_table_and_not_per_node() -> None:
    p = plan_of(STATIC3, [service("web", "203.0.113.10")])
    without = plan_of(STATIC3, [])
    assert p.costs == without.costs  # the nodes' own costs are unchanged
    assert p.vip_costs.ipv4_routes == 1
    assert desired_total(p).ipv4_routes == desired_total(without).ipv4_routes + 1


def test_nexthop_groups_count_distinct_sets_of_leaf_routes_and_bgp_vips() -> None:
    nodes = [node("b1", 1), node("b2", 2), static("s3", 3), static("s4", 4), static("s5", 5)]
    slices = [endpoints("loc", ("s3", True), ("s4", True)), endpoints("one", ("s5", True)),
              endpoints("bgp", ("b1", True), ("b2", True))]
    services = [
        service("loc", "203.0.113.20", policy="Local"),  # {s3, s4}: a group
        service("loc2", "203.0.113.21", policy="Local"),  # no endpoint: nothing
        service("one", "203.0.113.22", policy="Local"),  # {s5}: a plain route, no group
        service("bgp", "203.0.113.23", policy="Local"),  # BGP {b1, b2}: a group
        service("web", "203.0.113.10"),  # Cluster: left to BGP {b1, b2}: the same group
    ]
    p = plan_of(nodes, services, slices)
    assert p.vip_costs.nexthop_groups == 2
    assert desired_total(p).nexthop_groups == 2


def test_vips_refused_for_room_still_count_in_desired_but_get_no_route() -> None:
    # 9 IPv4 routes minus 5 %: 8; three static nodes take 2 each (pod CIDR, host route):
    # 2 left for VIPs, the newest Service's VIP does not fit.
    services = [service("old", "203.0.113.20", created=OLD),
                service("new", "203.0.113.30", created="2026-03-01T00:00:00Z"),
                service("older", "203.0.113.40", created="2025-01-01T00:00:00Z")]
    p = plan_of(STATIC3, services, capacity={"ipv4_routes": 9})
    assert set(routes(p)) == {"203.0.113.20/32", "203.0.113.40/32"}
    assert p.vip_costs.ipv4_routes == 3
