"""Service VIPs (issue 12): which node may announce which VIP, and what the leaf's FRR gets.

Input/expected pairs for every rule of agent/plan/services.py: Cluster and Local policies,
NotReady and excluded nodes, a VIP shared by Services, VIPs the fabric must never accept (pod
space, node IPs, the switch's own addresses, outside the pools, 0.0.0.0, 127.0.0.1, multicast,
link-local, ...), IPv6, a Service with 1,000 VIPs, headroom, and empty pools (nothing at all).
"""

from __future__ import annotations

import io
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.apply.frr.render import render_frr
from agent.cli import main
from agent.cluster import services as cluster_services
from agent.cluster.nodes import cluster_state
from agent.cluster.services import (
    MAX_VIPS_PER_SERVICE,
    parse_endpoint_slice,
    parse_service,
    service_state,
)
from agent.config import AgentConfig, parse_config
from agent.plan.build import plan
from agent.plan.model import Plan, ServiceVip
from agent.vocabulary import ROUTING_ANNOTATION, SWITCH_PORT_ANNOTATION

POOLS = ["203.0.113.0/24", "2001:db8:5::/112"]
OLD, NEW = "2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z"


def config(pools: list[str] | None = None, **fabric: Any) -> AgentConfig:
    return parse_config({
        "switch": {"hostname": "leaf1", "asn": 65101, "router_id": "10.0.0.1"},
        "fabric": {"server_ports": ["swp1", "swp2", "swp3", "swp4"], "uplinks": ["swp51"],
                   "pod_supernets": ["10.244.0.0/16", "fd00:10:244::/48"],
                   "service_pools": POOLS if pools is None else pools, **fabric},
    })


def node(name: str, index: int, *, ready: Any = "True", labels: dict[str, str] | None = None,
         routing: str | None = None, port: str | None = "auto",
         ip: str | None = None) -> dict[str, Any]:
    annotations = {}
    if port is not None:
        annotations[SWITCH_PORT_ANNOTATION] = f"leaf1/{f'swp{index}' if port == 'auto' else port}"
    if routing is not None:
        annotations[ROUTING_ANNOTATION] = routing
    status: dict[str, Any] = {"addresses": [
        {"type": "InternalIP", "address": ip or f"192.168.10.{index}"}]}
    if ready is not None:
        status["conditions"] = [{"type": "MemoryPressure", "status": "False"},
                                {"type": "Ready", "status": ready}]
    return {"kind": "Node",
            "metadata": {"name": name, "creationTimestamp": OLD, "annotations": annotations,
                         "labels": labels or {}},
            "spec": {"podCIDRs": [f"10.244.{index}.0/24", f"fd00:10:244:{index}::/64"]},
            "status": status}


def service(name: str, *vips: str, policy: str | None = None, kind: str = "LoadBalancer",
            external: list[str] | None = None, namespace: str = "shop",
            created: str = OLD) -> dict[str, Any]:
    spec: dict[str, Any] = {"type": kind}
    if policy is not None:
        spec["externalTrafficPolicy"] = policy
    if external is not None:
        spec["externalIPs"] = external
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"namespace": namespace, "name": name, "creationTimestamp": created},
            "spec": spec,
            "status": {"loadBalancer": {"ingress": [{"ip": v} for v in vips]}}}


def endpoints(service_name: str, *on: tuple[str, Any], namespace: str = "shop",
              name: str | None = None) -> dict[str, Any]:
    """An EndpointSlice; `on`: (nodeName, ready) per endpoint, ready None = condition absent."""
    eps = []
    for index, (node_name, ready) in enumerate(on):
        conditions = {} if ready is None else {"ready": ready}
        eps.append({"addresses": [f"10.244.9.{index + 1}"], "nodeName": node_name,
                    "conditions": conditions})
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"namespace": namespace, "name": name or f"{service_name}-abcde",
                         "labels": {"kubernetes.io/service-name": service_name}},
            "addressType": "IPv4", "endpoints": eps}


THREE = [node("n1", 1), node("n2", 2), node("n3", 3)]


def plan_of(nodes: list[dict[str, Any]], services: list[dict[str, Any]],
            slices: list[dict[str, Any]] | None = None, cfg: AgentConfig | None = None,
            **kwargs: Any) -> Plan:
    return plan(cfg or config(), cluster_state(nodes),
                services=service_state(services, slices or []), **kwargs)


def vip(p: Plan, address: str) -> ServiceVip:
    return next(v for v in p.services if v.vip == address)


def announced(p: Plan) -> dict[str, tuple[str, ...]]:
    """Per node, the VIP prefixes its session accepts."""
    return {peer.node: peer.vips_v4 + peer.vips_v6 for peer in p.frr.server_peers if peer.node}


def vip_refusals(p: Plan) -> dict[str, str]:
    return {r.name: r.reason for r in p.refusals if r.kind == "vip"}


# --- policies -----------------------------------------------------------------------------------

def test_cluster_policy_every_ready_attached_node_may_announce() -> None:
    p = plan_of(THREE, [service("web", "203.0.113.10")])
    assert vip(p, "203.0.113.10") == ServiceVip("203.0.113.10", "203.0.113.10/32", ("shop/web",),
                                                "Cluster", ("n1", "n2", "n3"))
    assert announced(p) == {n: ("203.0.113.10/32",) for n in ("n1", "n2", "n3")}
    # Its own prefixes stay as they were; the VIP goes upstream; ECMP over the nodes.
    peers = {peer.node: peer for peer in p.frr.server_peers}
    assert peers["n1"].accept_v4 == ("10.244.1.0/24", "192.168.10.1/32")
    assert "203.0.113.10/32" in p.frr.advertise_v4
    assert p.frr.maximum_paths == 16
    assert not vip_refusals(p) and p.refusals == ()


def test_local_policy_only_nodes_with_a_ready_endpoint() -> None:
    slices = [endpoints("web", ("n1", True), ("n2", False), ("n3", None), ("elsewhere", True))]
    p = plan_of(THREE, [service("web", "203.0.113.10", policy="Local")], slices)
    # n2's only endpoint is not ready; n3's has no ready condition: "nil = unknown, interpret
    # as ready"; a node not behind this leaf announces nothing here.
    assert vip(p, "203.0.113.10").nodes_permitted == ("n1", "n3")
    assert announced(p) == {"n1": ("203.0.113.10/32",), "n2": (), "n3": ("203.0.113.10/32",)}


def test_local_endpoints_are_gathered_over_every_slice_of_the_service() -> None:
    slices = [endpoints("web", ("n1", True), name="web-1"),
              endpoints("web", ("n2", True), name="web-2"),
              endpoints("web", ("n3", True), namespace="other")]  # another namespace's "web"
    p = plan_of(THREE, [service("web", "203.0.113.10", policy="Local")], slices)
    assert vip(p, "203.0.113.10").nodes_permitted == ("n1", "n2")


def test_a_terminating_endpoint_serving_but_not_ready_attracts_nothing() -> None:
    terminating = endpoints("web", ("n1", False))
    terminating["endpoints"][0]["conditions"] = {"ready": False, "serving": True,
                                                 "terminating": True}
    p = plan_of(THREE, [service("web", "203.0.113.10", policy="Local")], [terminating])
    assert vip(p, "203.0.113.10").nodes_permitted == ()
    assert vip(p, "203.0.113.10").state == "ok"  # nothing wrong with it: no one serves it here
    assert announced(p) == {"n1": (), "n2": (), "n3": ()}
    assert "203.0.113.10/32" in p.frr.advertise_v4  # the uplink list follows Services only


def test_a_local_service_without_endpoints_is_announced_by_nobody() -> None:
    p = plan_of(THREE, [service("web", "203.0.113.10", policy="Local")])
    assert vip(p, "203.0.113.10").nodes_permitted == ()
    assert p.vip_costs.ipv4_routes == 0  # no node may announce it: no route on the leaf


@pytest.mark.parametrize("ready", ["False", "Unknown", None, "true"])
def test_a_node_that_is_not_ready_attracts_no_vip(ready: Any) -> None:
    nodes = [node("n1", 1), node("n2", 2, ready=ready), node("n3", 3)]
    slices = [endpoints("local", ("n2", True), ("n3", True))]
    p = plan_of(nodes, [service("web", "203.0.113.10"),
                        service("local", "203.0.113.11", policy="Local")], slices)
    assert vip(p, "203.0.113.10").nodes_permitted == ("n1", "n3")
    assert vip(p, "203.0.113.11").nodes_permitted == ("n3",)  # its endpoint alone is not enough
    assert announced(p)["n2"] == ()


@pytest.mark.parametrize("value", ["", "true", "false"])
def test_a_node_labelled_exclude_from_external_load_balancers_attracts_no_vip(value: str) -> None:
    nodes = [node("n1", 1),
             node("n2", 2, labels={"node.kubernetes.io/exclude-from-external-load-balancers":
                                   value}),
             node("n3", 3)]
    slices = [endpoints("local", ("n2", True))]
    p = plan_of(nodes, [service("web", "203.0.113.10"),
                        service("local", "203.0.113.11", policy="Local")], slices)
    assert vip(p, "203.0.113.10").nodes_permitted == ("n1", "n3")
    assert vip(p, "203.0.113.11").nodes_permitted == ()
    assert announced(p)["n2"] == ()


def test_only_nodes_behind_this_leaf_in_bgp_or_static_mode_may_serve() -> None:
    nodes = [node("n1", 1), node("st", 2, routing="static"), node("far", 3, port=None),
             node("fl", 4, routing="vxlan")]
    p = plan_of(nodes, [service("web", "203.0.113.10")])
    assert vip(p, "203.0.113.10").nodes_permitted == ("n1", "st")
    # Only a session announces: the static node has none (tests/test_vip_routes_plan.py).
    assert announced(p) == {"n1": ("203.0.113.10/32",)}


def test_a_vip_shared_by_services_is_the_union_and_reported_not_refused() -> None:
    slices = [endpoints("a", ("n1", True)), endpoints("b", ("n2", True))]
    p = plan_of(THREE, [service("a", "203.0.113.10", policy="Local"),
                        service("b", "203.0.113.10", policy="Local", namespace="shop")], slices)
    shared = vip(p, "203.0.113.10")
    assert shared == ServiceVip("203.0.113.10", "203.0.113.10/32", ("shop/a", "shop/b"), "Local",
                                ("n1", "n2"))
    assert shared.shared and shared.state == "ok"
    assert not vip_refusals(p)
    # A Cluster Service on the same VIP: every eligible node, policy "mixed".
    p = plan_of(THREE, [service("a", "203.0.113.10", policy="Local"),
                        service("c", external=["203.0.113.10"], kind="ClusterIP")], slices)
    assert (vip(p, "203.0.113.10").policy, vip(p, "203.0.113.10").nodes_permitted) == (
        "mixed", ("n1", "n2", "n3"))


# --- addresses no node may announce -------------------------------------------------------------

@pytest.mark.parametrize(("address", "why"), [
    ("10.244.2.5", "10.244.2.5 lies in node n2's pod CIDR 10.244.2.0/24"),  # another node's
    ("10.244.1.7", "10.244.1.7 lies in node n1's pod CIDR 10.244.1.0/24"),  # a pod IP
    ("10.244.99.1", "10.244.99.1 lies in fabric.pod_supernets (pod space)"),
    ("fd00:10:244:3::9", "fd00:10:244:3::9 lies in node n3's pod CIDR fd00:10:244:3::/64"),
    ("192.168.10.2", "192.168.10.2 is node n2's InternalIP"),
    ("203.0.113.99", "203.0.113.99 is node n4's InternalIP"),  # in the pool, yet a node's
    ("198.51.100.1", "198.51.100.1 is outside fabric.service_pools"),
    ("2001:db8:6::1", "2001:db8:6::1 is outside fabric.service_pools"),
    ("203.0.113.1", "203.0.113.1 is this switch's switch.router_id"),
    ("0.0.0.0", "0.0.0.0 is the unspecified address"),
    ("0.1.2.3", "0.1.2.3 is in 0.0.0.0/8 (this network)"),
    ("127.0.0.1", "127.0.0.1 is a loopback address"),
    ("224.0.0.5", "224.0.0.5 is a multicast address"),
    ("239.1.1.1", "239.1.1.1 is a multicast address"),
    ("169.254.1.1", "169.254.1.1 is a link-local address"),
    ("255.255.255.255", "255.255.255.255 is the broadcast address"),
    ("::", ":: is the unspecified address"),
    ("::1", "::1 is a loopback address"),
    ("ff02::1", "ff02::1 is a multicast address"),
    ("fe80::1", "fe80::1 is a link-local address"),
    ("::ffff:203.0.113.5", "::ffff:cb00:7105 is an IPv4-mapped IPv6 address"),
])
def test_addresses_no_node_may_announce_are_refused_with_the_reason(address: str,
                                                                    why: str) -> None:
    cfg = parse_config({
        "switch": {"hostname": "leaf1", "asn": 65101, "router_id": "203.0.113.1"},
        "fabric": {"server_ports": ["swp1", "swp2", "swp3", "swp4"], "uplinks": ["swp51"],
                   "pod_supernets": ["10.244.0.0/16", "fd00:10:244::/48"],
                   "service_pools": POOLS}})
    nodes = [*THREE, node("n4", 4, ip="203.0.113.99")]
    p = plan_of(nodes, [service("web", address, "203.0.113.10")], cfg=cfg)
    bad = next(v for v in p.services if v.vip != "203.0.113.10")
    assert bad.refused == why and bad.state == "refused"
    assert bad.nodes_permitted == ()
    assert vip_refusals(p) == {bad.vip: f"shop/web: {why}"}
    # It changes nothing in FRR: nobody's prefix list, not the uplinks' list (a node's own
    # host route stays its own); the good VIP of the same Service stays.
    assert all(bad.prefix not in got for got in announced(p).values())
    assert p.frr == plan_of(nodes, [service("web", "203.0.113.10")], cfg=cfg).frr
    assert vip(p, "203.0.113.10").nodes_permitted == ("n1", "n2", "n3", "n4")
    assert p.vip_costs.ipv4_routes == 1


def test_refused_vips_are_named_in_the_rendered_plans_refusals() -> None:
    p = plan_of(THREE, [service("web", "127.0.0.1")])
    assert [str(r) for r in p.refusals] == [
        "vip 127.0.0.1: shop/web: 127.0.0.1 is a loopback address"]


def test_ipv6_vips_are_exact_128s_in_the_v6_lists() -> None:
    p = plan_of(THREE, [service("web", "203.0.113.10", "2001:DB8:5::10")])
    assert vip(p, "2001:db8:5::10").prefix == "2001:db8:5::10/128"
    peer = next(peer for peer in p.frr.server_peers if peer.node == "n1")
    assert (peer.vips_v4, peer.vips_v6) == (("203.0.113.10/32",), ("2001:db8:5::10/128",))
    assert "2001:db8:5::10/128" in p.frr.advertise_v6
    assert (p.vip_costs.ipv4_routes, p.vip_costs.ipv6_routes) == (1, 1)
    text = render_frr(p.frr)
    assert "ipv6 prefix-list KFA-NODE-swp1-V6 seq 20 permit 2001:db8:5::10/128\n" in text
    assert "ip prefix-list KFA-NODE-swp1-V4 seq 30 permit 203.0.113.10/32\n" in text


# --- hostile Services ---------------------------------------------------------------------------

def test_a_service_with_1000_vips_is_refused_whole_without_reading_them(
        monkeypatch: pytest.MonkeyPatch) -> None:
    read: list[object] = []
    real = cluster_services.vip_address
    monkeypatch.setattr(cluster_services, "vip_address", lambda v: read.append(v) or real(v))
    many = [f"203.0.113.{i % 250 + 2}" for i in range(1000)]
    p = plan_of(THREE, [service("flood", *many[:500], external=many[500:]),
                        service("web", "203.0.113.10")])
    assert read == ["203.0.113.10"]  # the flood's list is never walked
    assert [v.services for v in p.services] == [("shop/web",)]
    assert [str(r) for r in p.refusals] == [
        "service shop/flood: names 1000 VIPs (at most 16 per Service); none is used"]
    assert announced(p)["n1"] == ("203.0.113.10/32",)


def test_a_service_with_as_many_vips_as_the_bound_is_accepted() -> None:
    vips = [f"203.0.113.{i + 10}" for i in range(MAX_VIPS_PER_SERVICE)]
    p = plan_of(THREE, [service("wide", *vips[:2], external=vips[2:])])
    assert len(p.services) == MAX_VIPS_PER_SERVICE and not p.refusals
    assert len(announced(p)["n1"]) == MAX_VIPS_PER_SERVICE
    over = plan_of(THREE, [service("wide", *vips[:2], external=[*vips[2:], "203.0.113.99"])])
    assert over.services == () and len(over.refusals) == 1


@pytest.mark.parametrize(("obj", "why"), [
    (service("web", "203.0.113.10", policy="Global"),
     "spec.externalTrafficPolicy 'Global' is not Cluster or Local"),
    (service("Web", "203.0.113.10"), "Service name 'Web' is not a DNS-1035 label"),
    (service("web", "203.0.113.10", namespace="a b"), "namespace 'a b' is not a DNS-1123 label"),
])
def test_a_service_whose_identity_or_policy_is_in_doubt_is_refused(obj: Any, why: str) -> None:
    parsed, refusals = parse_service(obj)
    assert parsed is None and [r.reason for r in refusals] == [why]


def test_bad_vips_are_refused_one_by_one() -> None:
    obj = service("web", "203.0.113.10", "fe80::1%swp1", "203.0.113.10\n",
                  external=["203.0.113.11", 7, "203.0.113.10"])
    obj["status"]["loadBalancer"]["ingress"].append({"hostname": "lb.example.com"})
    obj["status"]["loadBalancer"]["ingress"].append("203.0.113.12")
    parsed, refusals = parse_service(obj)
    assert parsed is not None
    assert [str(a) for a in parsed.vips] == ["203.0.113.10", "203.0.113.11"]
    assert [r.reason for r in refusals] == [
        "status.loadBalancer.ingress[1].ip: 'fe80::1%swp1' is not an IP address",
        "status.loadBalancer.ingress[2].ip: '203.0.113.10\\n' is not an IP address",
        "status.loadBalancer.ingress[4] is not an object",
        "spec.externalIPs[1]: 7 is not an IP address"]


def test_ingress_is_read_for_load_balancers_only_external_ips_for_any_type() -> None:
    obj = service("web", "203.0.113.10", kind="ClusterIP", external=["203.0.113.11"])
    parsed, _ = parse_service(obj)
    assert parsed is not None and [str(a) for a in parsed.vips] == ["203.0.113.11"]
    assert parsed.policy == "Cluster"  # the default


def test_endpoint_slices_are_read_as_the_nodes_with_ready_and_serving_endpoints() -> None:
    obj = endpoints("web", ("n1", True), ("n2", False), ("n3", None), ("n4", "yes"),
                    ("N5", True))
    obj["endpoints"][1]["conditions"]["serving"] = True  # terminating, still serving
    obj["endpoints"].append({"addresses": ["10.0.0.9"]})  # on no node
    parsed, refusals = parse_endpoint_slice(obj)
    assert parsed is not None
    assert (parsed.service_key, parsed.ready_nodes, parsed.serving_nodes) == (
        "shop/web", {"n1", "n3"}, {"n1", "n2", "n3"})
    assert [r.reason for r in refusals] == [
        "1 endpoint(s) with a nodeName that is no node name, e.g. 'N5'; ignored"]


@pytest.mark.parametrize(("change", "why"), [
    ({"apiVersion": "discovery.k8s.io/v1beta1"},
     "apiVersion 'discovery.k8s.io/v1beta1' is not discovery.k8s.io/v1"),
    ({"endpoints": {"n1": True}}, "endpoints is not a list"),
    ({"endpoints": [{"nodeName": "n1"}] * 1001},
     "1001 endpoints (the API allows 1000); none is used"),
])
def test_endpoint_slices_the_api_would_not_serve_are_refused(change: dict[str, Any],
                                                             why: str) -> None:
    parsed, refusals = parse_endpoint_slice({**endpoints("web", ("n1", True)), **change})
    assert parsed is None and [r.reason for r in refusals] == [why]


def test_a_slice_of_no_service_is_not_read() -> None:
    obj = endpoints("web", ("n1", True))
    del obj["metadata"]["labels"]
    assert parse_endpoint_slice(obj) == (None, [])


# --- headroom, aggregation, ECMP width, and no pools -------------------------------------------

def test_vips_get_the_room_the_nodes_leave_oldest_service_first() -> None:
    # 9 IPv4 routes minus the 5 % reserve: 8; each node takes 2 (pod CIDR, host route), so
    # the 3 nodes leave 2 for VIPs.
    services = [service("new", "203.0.113.30", created=NEW),
                service("old", "203.0.113.20", created=OLD),
                service("older", "203.0.113.40", created="2025-12-01T00:00:00Z")]
    p = plan_of(THREE, services, capacity={"ipv4_routes": 9})
    assert [v.vip for v in p.services if v.nodes_permitted] == ["203.0.113.20", "203.0.113.40"]
    new = vip(p, "203.0.113.30")
    assert new.state == "refused" and new.refused is not None
    assert new.refused.startswith("headroom: ipv4_routes: no room")
    assert vip_refusals(p) == {"203.0.113.30": f"shop/new: {new.refused}"}
    assert "203.0.113.30/32" not in p.frr.advertise_v4
    assert all("203.0.113.30/32" not in got for got in announced(p).values())
    assert p.vip_costs.ipv4_routes == 3  # desired: refused ones included


def test_a_node_refused_for_room_announces_no_vip() -> None:
    nodes = [node("n1", 1), {**node("n2", 2), "metadata": {
        **node("n2", 2)["metadata"], "creationTimestamp": NEW}}]
    # 4 routes minus the reserve: 3; n1 (older) takes 2, n2 does not fit, the VIP takes 1.
    p = plan_of(nodes, [service("web", "203.0.113.10")], capacity={"ipv4_routes": 4})
    assert [r.name for r in p.refusals if r.kind == "headroom"] == ["n2"]
    assert vip(p, "203.0.113.10").nodes_permitted == ("n1",)
    assert announced(p) == {"n1": ("203.0.113.10/32",), "n2": ()}


def test_with_aggregation_the_pools_go_upstream_as_aggregates() -> None:
    p = plan_of(THREE, [service("web", "203.0.113.10")], cfg=config(aggregate_to_supernets=True))
    assert p.frr.aggregate_v4 == ("10.244.0.0/16", "203.0.113.0/24")
    assert p.frr.aggregate_v6 == ("fd00:10:244::/48", "2001:db8:5::/112")
    assert p.frr.advertise_v4 == p.frr.aggregate_v4


def test_the_ecmp_width_is_the_configured_one() -> None:
    p = plan_of(THREE, [service("web", "203.0.113.10")], cfg=config(vip_ecmp_width=4))
    assert p.frr.maximum_paths == 4
    assert render_frr(p.frr).count("  maximum-paths 4\n") == 2  # both address families


def test_without_pools_services_change_nothing_at_all() -> None:
    hostile = [service("web", "203.0.113.10"), service("flood", *["203.0.113.9"] * 1000),
               service("Bad", "127.0.0.1")]
    slices = [endpoints("web", ("n1", True)), {"apiVersion": "discovery.k8s.io/v1beta1"}]
    cfg = config(pools=[])
    with_services = plan_of(THREE, hostile, slices, cfg=cfg)
    without = plan(cfg, cluster_state(THREE))
    assert with_services == without
    assert with_services.services == () and with_services.frr.maximum_paths is None
    assert "maximum-paths" not in render_frr(with_services.frr)


# --- fabric-agent render ------------------------------------------------------------------------

def test_render_reads_services_and_endpoint_slices_from_the_cluster_file(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump({
        "switch": {"hostname": "leaf1", "asn": 65101, "router_id": "10.0.0.1"},
        "kubernetes": {"node_selector": "rack=r1"},
        "fabric": {"server_ports": ["swp1", "swp2", "swp3"], "uplinks": ["swp51"],
                   "pod_supernets": ["10.244.0.0/16", "fd00:10:244::/48"],
                   "service_pools": ["203.0.113.0/24"]}}))
    r1 = {"rack": "r1"}
    items = [node("n1", 1, labels=r1), node("n2", 2, labels=r1),
             node("n3", 3, labels={"rack": "r2"}),  # not this leaf's: the selector leaves it out
             service("web", "203.0.113.10"),
             service("db", "203.0.113.20", policy="Local"),
             service("bad", "127.0.0.1"),
             endpoints("db", ("n2", True), ("n3", True)),
             {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "shop"}}]
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": items}))
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        assert main(["render", "--config", str(cfg), "--cluster", str(cluster)]) == 0
    text = out.getvalue()
    assert "ip prefix-list KFA-NODE-swp1-V4 seq 30 permit 203.0.113.10/32\n" in text
    assert "ip prefix-list KFA-NODE-swp2-V4 seq 30 permit 203.0.113.10/32\n" in text
    assert "ip prefix-list KFA-NODE-swp2-V4 seq 40 permit 203.0.113.20/32\n" in text
    assert "KFA-NODE-swp1-V4 seq 40" not in text  # n1 has no endpoint of the Local Service
    assert "KFA-NODE-swp3" not in text
    assert text.count("  maximum-paths 16\n") == 2
    assert err.getvalue() == "refused: vip 127.0.0.1: shop/bad: 127.0.0.1 is a loopback address\n"
