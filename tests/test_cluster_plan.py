"""Node validation, attachment precedence and plan(): pure functions, no root."""

from __future__ import annotations

from typing import Any

import pytest

from agent import validate
from agent.apply.frr.render import UnsafeValue, _token, render_frr
from agent.cluster.attachments import match_lldp_name, resolve
from agent.cluster.nodes import Node, cluster_state, parse_node
from agent.config import config_warnings, parse_config
from agent.plan.build import plan

CONFIG = {
    "switch": {"hostname": "leaf1", "asn": 65101, "router_id": "10.0.0.1"},
    "fabric": {"server_ports": ["swp1", "swp2", "swp3"], "uplinks": ["swp51"],
               "pod_supernets": ["10.244.0.0/16"], "lldp": True},
}


def node(name: str, cidr: str | None = None, port: str | None = None, ip: str | None = None,
         created: str = "2026-01-01T00:00:00Z", **extra: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {"metadata": {"name": name, "creationTimestamp": created,
                                        "annotations": {}}, "spec": {}, "status": {}}
    if cidr:
        obj["spec"]["podCIDRs"] = [cidr]
    if port:
        obj["metadata"]["annotations"]["kube-fabric-agent.io/switch-port"] = port
    if ip:
        obj["status"]["addresses"] = [{"type": "InternalIP", "address": ip}]
    obj["spec"].update(extra)
    return obj


@pytest.mark.parametrize("value", ["a", "node-1.example.com", "x" * 253])
def test_valid_node_names(value: str) -> None:
    assert validate.node_name(value) == value


@pytest.mark.parametrize("value", ["", "A", "-a", "a_b", "a\nb", "a b", "x" * 254, None, 5,
                                   "node-a\n", "node-a\r\n"])
def test_invalid_node_names(value: object) -> None:
    with pytest.raises(ValueError):
        validate.node_name(value)


@pytest.mark.parametrize("value", ["10.244.1.1/24", "10.244.1.0", "300.1.1.0/24", "::/ab", 7,
                                   "10.244.1.0/24\n", " 10.244.1.0/24", "10.244.1.0/ 24"])
def test_invalid_cidrs(value: object) -> None:
    with pytest.raises(ValueError):
        validate.cidr(value)


@pytest.mark.parametrize(("check", "value"), [
    (validate.interface_name, "swp1\n"), (validate.hostname, "leaf1\n"),
    (validate.label_selector, "rack=r1\n"), (validate.mac_address, "aa:bb:cc:dd:ee:f0\n"),
])
def test_trailing_newline_is_refused_everywhere(check: Any, value: str) -> None:
    with pytest.raises(ValueError):
        check(value)


def test_parse_node_keeps_good_fields_and_refuses_bad_ones() -> None:
    obj = node("n1", ip="192.168.1.1")
    obj["spec"]["podCIDRs"] = ["10.244.1.0/24", "10.244.2.0/24 permit any"]
    parsed, refusals = parse_node(obj)
    assert parsed is not None
    assert [str(c) for c in parsed.pod_cidrs] == ["10.244.1.0/24"]
    assert len(refusals) == 1 and "not a valid CIDR" in refusals[0].reason


def test_pod_cidr_falls_back_to_single_field() -> None:
    obj = node("n1")
    obj["spec"]["podCIDR"] = "10.244.3.0/24"
    parsed, _ = parse_node(obj)
    assert parsed is not None and [str(c) for c in parsed.pod_cidrs] == ["10.244.3.0/24"]


@pytest.mark.parametrize("obj", ["string", None, 42, {"metadata": "x"}, {"metadata": {}}])
def test_garbage_objects_are_refused_not_crashing(obj: object) -> None:
    parsed, refusals = parse_node(obj)
    assert parsed is None and refusals


def test_flannel_vxlan_nodes_default_to_vxlan_routing() -> None:
    obj = node("n1")
    obj["metadata"]["annotations"]["flannel.alpha.coreos.com/backend-type"] = "vxlan"
    parsed, _ = parse_node(obj)
    assert parsed is not None and parsed.routing == "vxlan"


def _nodes(*objs: dict[str, Any]) -> list[Node]:
    return list(cluster_state(objs).nodes)


def test_attachment_precedence_static_annotation_lldp() -> None:
    nodes = _nodes(node("a", port="leaf1/swp2"), node("b"), node("c.example.com"))
    atts, refusals = resolve(switch_hostname="leaf1", server_ports=["swp1", "swp2", "swp3"],
                             static={"swp1": "a"}, nodes=nodes,
                             lldp_neighbors={"swp2": "b", "swp3": "c"})
    assert {(a.port, a.node, a.source) for a in atts} == {
        ("swp1", "a", "static"), ("swp2", "b", "lldp"), ("swp3", "c.example.com", "lldp")}
    assert any("static wins" in r.reason for r in refusals)


def test_a_port_claimed_twice_stays_with_the_older_node() -> None:
    # A kubelet may write its own Node's annotations: a newcomer annotating itself onto a
    # working node's port must not take it (that removed the node's routes at leaf and spine).
    nodes = _nodes(node("a", port="leaf1/swp1", created="2026-02-01T00:00:00Z"),
                   node("b", port="leaf1/swp1", created="2026-01-01T00:00:00Z"), node("c"))
    atts, refusals = resolve(switch_hostname="leaf1", server_ports=["swp1", "swp2", "swp3"],
                             static={}, nodes=nodes, lldp_neighbors={"swp2": "c", "swp3": "c"})
    assert [(a.port, a.node) for a in atts] == [("swp1", "b")]
    assert {r.name for r in refusals} == {"a", "c"}  # c: LLDP puts it on two ports
    assert "port swp1 belongs to b (older node, both by annotation)" in [
        r.reason for r in refusals]
    # Same age: the name decides, so the outcome never depends on the order of a list.
    same = _nodes(node("y", port="leaf1/swp1"), node("x", port="leaf1/swp1"))
    atts, _ = resolve(switch_hostname="leaf1", server_ports=["swp1"], static={}, nodes=same,
                      lldp_neighbors={})
    assert [a.node for a in atts] == ["x"]


def test_annotation_for_another_switch_is_ignored() -> None:
    nodes = _nodes(node("a", port="leaf2/swp1"))
    atts, refusals = resolve(switch_hostname="leaf1", server_ports=["swp1"], static={},
                             nodes=nodes, lldp_neighbors={})
    assert atts == [] and refusals == []


def test_lldp_short_name_must_be_unique() -> None:
    assert match_lldp_name("srv1", ["srv1.a.example", "srv2.a.example"]) == "srv1.a.example"
    assert match_lldp_name("srv1", ["srv1.a.example", "srv1.b.example"]) is None
    assert match_lldp_name("SRV1", ["srv1"]) == "srv1"


def test_plan_older_node_keeps_overlapping_cidr() -> None:
    cfg = parse_config(CONFIG)
    state = cluster_state([
        node("young", "10.244.1.0/25", "leaf1/swp2", created="2026-02-01T00:00:00Z"),
        node("old", "10.244.1.0/24", "leaf1/swp1", created="2026-01-01T00:00:00Z"),
    ])
    p = plan(cfg, state)
    peers = {peer.port: peer for peer in p.frr.server_peers}
    assert peers["swp1"].accept_v4 == ("10.244.1.0/24",)
    assert peers["swp2"].accept_v4 == ()
    assert any("overlaps a pod CIDR of older node old" in r.reason for r in p.refusals)


def test_plan_internal_ip_inside_other_nodes_space_is_refused() -> None:
    cfg = parse_config(CONFIG)
    state = cluster_state([node("a", "10.244.1.0/24", "leaf1/swp1", ip="192.168.0.1"),
                           node("b", "10.244.2.0/24", "leaf1/swp2", ip="10.244.1.7",
                                created="2026-03-01T00:00:00Z")])
    peers = {peer.port: peer for peer in plan(cfg, state).frr.server_peers}
    assert peers["swp1"].accept_v4 == ("10.244.1.0/24", "192.168.0.1/32")
    assert peers["swp2"].accept_v4 == ("10.244.2.0/24",)


def test_plan_cordoned_node_drains_and_unknown_ports_deny() -> None:
    cfg = parse_config(CONFIG)
    state = cluster_state([node("a", "10.244.1.0/24", "leaf1/swp1", unschedulable=True)])
    p = plan(cfg, state)
    peers = {peer.port: peer for peer in p.frr.server_peers}
    assert peers["swp1"].draining
    assert peers["swp2"].node is None and peers["swp3"].node is None
    text = render_frr(p.frr)
    assert "set community graceful-shutdown additive" in text
    assert " neighbor swp2 route-map KFA-DENY in" in text
    assert p.frr.advertise_v4 == ("10.244.1.0/24",)


def test_plan_uses_lldp_only_when_enabled() -> None:
    state = cluster_state([node("srv9", "10.244.9.0/24")])
    on = plan(parse_config(CONFIG), state, {"swp3": "srv9"})
    assert [(a.port, a.source) for a in on.attachments] == [("swp3", "lldp")]
    off_cfg = {**CONFIG, "fabric": {**CONFIG["fabric"], "lldp": False}}
    assert plan(parse_config(off_cfg), state, {"swp3": "srv9"}).attachments == ()


def test_plan_is_deterministic_whatever_the_input_order() -> None:
    cfg = parse_config(CONFIG)
    objs = [node(f"n{i}", f"10.244.{i}.0/24", f"leaf1/swp{i}") for i in (1, 2, 3)]
    a = render_frr(plan(cfg, cluster_state(objs)).frr)
    b = render_frr(plan(cfg, cluster_state(list(reversed(objs)))).frr)
    assert a == b


def test_hostile_values_never_reach_the_rendered_config() -> None:
    evil = "x\n neighbor 6.6.6.6 remote-as 1"
    cfg = parse_config(CONFIG)
    objs = [
        node(evil, "10.244.1.0/24", "leaf1/swp1"),
        node("b", "10.244.2.0/24", f"leaf1/swp2{evil}"),
        node("c", f"10.244.3.0/24{evil}", "leaf1/swp3", ip=f"10.1.1.1{evil}"),
    ]
    objs[2]["metadata"]["annotations"]["kube-fabric-agent.io/routing"] = evil
    text = render_frr(plan(cfg, cluster_state(objs)).frr)
    assert "6.6.6.6" not in text and "remote-as 1\n" not in text


@pytest.mark.parametrize("value", ["a b", "a\nb", "", "x;y", "a!b", "swp1\n", "65101\n"])
def test_token_filter_is_the_last_line_of_defence(value: str) -> None:
    with pytest.raises(UnsafeValue):
        _token(value)


def _flannel(name: str, cidr: str, mac: str, ip: str, vni: int = 1) -> dict[str, Any]:
    obj = node(name, cidr)
    obj["metadata"]["annotations"].update({
        "flannel.alpha.coreos.com/backend-type": "vxlan",
        "flannel.alpha.coreos.com/backend-data": f'{{"VNI":{vni},"VtepMAC":"{mac}"}}',
        "flannel.alpha.coreos.com/public-ip": ip,
    })
    return obj


def test_plan_dataplane_static_and_vxlan() -> None:
    cfg = parse_config({**CONFIG, "switch": {**CONFIG["switch"], "vtep_ip": "10.0.0.1"}})
    static = node("st", "10.244.5.0/24", "leaf1/swp2", ip="192.168.10.5")
    static["metadata"]["annotations"]["kube-fabric-agent.io/routing"] = "static"
    p = plan(cfg, cluster_state([static, _flannel("fl", "10.244.7.0/24", "0A:58:0A:F4:07:00",
                                                   "192.168.20.7")]))
    dp = p.dataplane
    assert [(r.prefix, r.via) for r in dp.static_routes] == [("10.244.5.0/24", "192.168.10.5")]
    assert [r.port for r in dp.static_routes] == ["swp2"]  # the port the node is attached to
    assert dp.vtep is not None and (dp.vtep.name, dp.vtep.vni, dp.vtep.port) == ("flannel.1", 1,
                                                                                8472)
    (peer,) = dp.vxlan_peers
    assert (peer.gateway, peer.vtep_mac, peer.public_ip) == ("10.244.7.0", "0a:58:0a:f4:07:00",
                                                             "192.168.20.7")
    assert dp.route_protocol == 233
    assert p.frr.redistribute_v4 == ("10.244.5.0/24", "10.244.7.0/24")
    assert {"10.244.5.0/24", "10.244.7.0/24"} <= set(p.frr.advertise_v4)
    assert all(peer.port != "swp2" or peer.node is None for peer in p.frr.server_peers)


def test_plan_vxlan_needs_vtep_ip() -> None:
    p = plan(parse_config(CONFIG), cluster_state([_flannel("fl", "10.244.7.0/24",
                                                           "0a:58:0a:f4:07:00", "192.168.20.7")]))
    assert p.dataplane.vtep is None and p.dataplane.vxlan_peers == ()
    assert any("vtep_ip" in r.reason for r in p.refusals)


def test_plan_admission_keeps_programmed_and_admits_when_room_returns() -> None:
    cfg = parse_config({**CONFIG, "headroom": {"capacity": {"ipv4_routes": 5},
                                               "reserve_percent": 0}})
    objs = [node(f"n{i}", f"10.244.{i}.0/24", f"leaf1/swp{i}", ip=f"192.168.1.{i}",
                 created=f"2026-01-0{i}T00:00:00Z") for i in (1, 2, 3)]
    first = plan(cfg, cluster_state(objs))  # 2 routes each: two fit in 5
    assert first.admission is not None and first.admission.admitted == ("n1", "n2")
    # n1 leaves: n3, refused so far, is admitted on the next pass without anything else
    second = plan(cfg, cluster_state(objs[1:]), programmed=first.admission.admitted)
    assert second.admission is not None and second.admission.admitted == ("n2", "n3")
    assert not any(r.kind == "headroom" for r in second.refusals)
    # n1 comes back: n2 and n3 are programmed and stay; the returning older node waits
    third = plan(cfg, cluster_state(objs), programmed=second.admission.admitted)
    assert third.admission is not None and set(third.admission.admitted) == {"n2", "n3"}
    assert [r.name for r in third.refusals if r.kind == "headroom"] == ["n1"]


# ---- hostile values that used to crash or slip through (issue "Hostile nodes and bad days") ----


def flannel_node(backend_data: str, public_ip: str = "198.51.100.7") -> dict[str, Any]:
    obj = node("fl1", "10.244.7.0/24")
    obj["metadata"]["annotations"].update({
        "flannel.alpha.coreos.com/backend-type": "vxlan",
        "flannel.alpha.coreos.com/backend-data": backend_data,
        "flannel.alpha.coreos.com/public-ip": public_ip,
    })
    return obj


def test_deeply_nested_backend_data_is_a_refusal_not_a_crash() -> None:
    # '[' * 100000 raised RecursionError out of the parser: the agent exited at every start.
    for data in ("[" * 100_000, "[" * 900 + "]" * 900, '{"VNI": 1, "x": "' + "a" * 5000 + '"}'):
        parsed, refusals = parse_node(flannel_node(data))
        assert parsed is not None and parsed.flannel is None
        assert [r.kind for r in refusals] == ["node"]
        assert "backend-data" in refusals[0].reason


def test_a_parser_bug_costs_one_node_not_the_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    import agent.cluster.nodes as nodes

    real = nodes.parse_node

    def buggy(obj: Any) -> Any:
        if obj["metadata"]["name"] == "n2":
            raise KeyError("a bug")
        return real(obj)

    monkeypatch.setattr(nodes, "parse_node", buggy)
    state = cluster_state([node("n1", "10.244.1.0/24"), node("n2", "10.244.2.0/24")])
    assert [n.name for n in state.nodes] == ["n1"]
    assert [(r.kind, r.name) for r in state.refusals] == [("node", "n2")]
    assert "could not be parsed" in state.refusals[0].reason


@pytest.mark.parametrize(("address", "why"), [
    ("fe80::1%swp4", "zone id"), ("fd00::1%2", "zone id"), ("fe80::1", "link-local"),
    ("169.254.10.1", "link-local"), ("255.255.255.255", "broadcast"),
])
def test_internal_ips_must_be_routable(address: str, why: str) -> None:
    obj = node("n1", "10.244.1.0/24", ip=address)
    parsed, refusals = parse_node(obj)
    assert parsed is not None and parsed.internal_ips == ()
    assert len(refusals) == 1 and why in refusals[0].reason


def test_a_vtep_endpoint_must_be_routable() -> None:
    data = '{"VNI": 1, "VtepMAC": "aa:bb:cc:dd:ee:01"}'
    for public_ip in ("fe80::1%eth0", "169.254.0.1", "255.255.255.255"):
        parsed, refusals = parse_node(flannel_node(data, public_ip))
        assert parsed is not None and parsed.flannel is None, public_ip
        assert len(refusals) == 1


def test_one_pod_cidr_per_family_as_the_api_server_allows() -> None:
    obj = node("n1", "10.244.1.0/24")
    obj["spec"]["podCIDRs"] = ["10.244.1.0/24", "10.244.1.0/24", "10.244.2.0/24",
                               "fd00:10:244:1::/64", "fd00:10:244:2::/64"]
    parsed, refusals = parse_node(obj)
    assert parsed is not None
    assert [str(c) for c in parsed.pod_cidrs] == ["10.244.1.0/24", "fd00:10:244:1::/64"]
    assert [r.name for r in refusals] == ["n1 10.244.1.0/24", "n1 10.244.2.0/24",
                                         "n1 fd00:10:244:2::/64"]


def test_a_thousand_pod_cidrs_are_not_all_read() -> None:
    obj = node("n1", "10.244.1.0/24")
    obj["spec"]["podCIDRs"] = [f"10.244.{i // 256}.{i % 256}/32" for i in range(1000)]
    parsed, refusals = parse_node(obj)
    assert parsed is not None and len(parsed.pod_cidrs) == 1
    assert len(refusals) == 8  # 7 of the family refused by name, then one line for the rest
    assert "1000 entries" in refusals[-1].reason


def test_overlay_entries_the_kernel_or_the_fabric_cannot_use_are_refused() -> None:
    cfg = parse_config({**CONFIG, "switch": {**CONFIG["switch"], "vtep_ip": "10.0.0.1"}})
    p = plan(cfg, cluster_state([
        _flannel("zero", "10.244.7.0/24", "00:00:00:00:00:00", "192.168.20.7"),
        _flannel("mirror", "10.244.8.0/24", "0a:58:0a:f4:08:00", "10.0.0.1"),
        _flannel("good", "10.244.9.0/24", "0a:58:0a:f4:09:00", "192.168.20.9"),
    ]))
    assert [peer.node for peer in p.dataplane.vxlan_peers] == ["good"]
    reasons = {(r.name, r.reason) for r in p.refusals}
    assert any(name == "zero" and "all-zero MAC" in why for name, why in reasons)
    assert any(name == "mirror" and "this switch's own VTEP" in why for name, why in reasons)


def test_internal_ips_outside_node_networks_are_refused() -> None:
    # A kubelet may rewrite its own Node's addresses: 198.51.100.7 was accepted and announced.
    nodes = [node("a", "10.244.1.0/24", "leaf1/swp1", ip="192.168.10.1"),
             node("b", "10.244.2.0/24", "leaf1/swp2", ip="198.51.100.7")]
    cfg = parse_config({**CONFIG, "fabric": {**CONFIG["fabric"],
                                             "node_networks": ["192.168.10.0/24"]}})
    p = plan(cfg, cluster_state(nodes))
    accepted = {peer.node: peer.accept_v4 for peer in p.frr.server_peers if peer.node}
    assert accepted == {"a": ("10.244.1.0/24", "192.168.10.1/32"), "b": ("10.244.2.0/24",)}
    assert [(r.name, r.reason) for r in p.refusals] == [
        ("b 198.51.100.7/32", "InternalIP outside fabric.node_networks")]
    # Absent: unchecked, as before, and said (check-config and the daemon's start).
    unchecked = parse_config(CONFIG)
    assert "198.51.100.7/32" in plan(unchecked, cluster_state(nodes)).frr.advertise_v4
    assert any("node_networks" in w for w in config_warnings(unchecked))
    assert config_warnings(cfg) == []


def _host_route_refused(fabric: dict[str, Any] | None = None, switch: dict[str, Any] | None = None,
                        ip: str = "192.168.10.2", **dataplane: Any) -> list[tuple[str, str]]:
    """Node b's InternalIP `ip`: which host routes are accepted from it and what is refused.
    Node a (192.168.10.1) is the honest neighbour, which must keep its own."""
    cfg = parse_config({**CONFIG, "switch": {**CONFIG["switch"], **(switch or {})},
                        "fabric": {**CONFIG["fabric"], **(fabric or {})},
                        "dataplane": dataplane})
    p = plan(cfg, cluster_state([node("a", "10.244.1.0/24", "leaf1/swp1", ip="192.168.10.1"),
                                 node("b", "10.244.2.0/24", "leaf1/swp2", ip=ip)]))
    accepted = {peer.node: peer.accept_v4 for peer in p.frr.server_peers if peer.node}
    assert accepted["a"] == ("10.244.1.0/24", "192.168.10.1/32")
    assert accepted["b"] == ("10.244.2.0/24",)
    assert f"{ip}/32" not in p.frr.advertise_v4
    return [(r.name, r.reason) for r in p.refusals]


def test_an_internal_ip_in_a_service_pool_is_refused() -> None:
    # A node claiming a VIP as its address would draw the VIP's traffic to itself alone.
    assert _host_route_refused({"service_pools": ["203.0.113.0/24"]}, ip="203.0.113.10") == [
        ("b 203.0.113.10/32", "InternalIP inside fabric.service_pools (Service VIP space)")]


def test_an_internal_ip_in_pod_space_no_node_holds_yet_is_refused() -> None:
    # 10.244.9.0/24 is nobody's pod CIDR yet; the node that gets it later must not find it taken.
    assert _host_route_refused(ip="10.244.9.9") == [
        ("b 10.244.9.9/32", "InternalIP inside fabric.pod_supernets (pod space)")]


def test_an_internal_ip_in_the_nodes_own_pod_cidr_is_refused_not_dropped_silently() -> None:
    assert _host_route_refused(ip="10.244.2.1") == [
        ("b 10.244.2.1/32", "InternalIP inside fabric.pod_supernets (pod space)")]


@pytest.mark.parametrize(("switch", "dataplane", "ip", "key"), [
    ({}, {}, "10.0.0.1", "switch.router_id"),
    ({"vtep_ip": "10.0.0.2"}, {}, "10.0.0.2", "switch.vtep_ip"),
    ({}, {"vxlan": {"address": "10.244.0.0/32"}}, "10.244.0.0", "dataplane.vxlan.address"),
])
def test_an_internal_ip_that_is_the_switchs_own_address_is_refused(
        switch: dict[str, Any], dataplane: dict[str, Any], ip: str, key: str) -> None:
    # Announced upstream, the spines would send the leaf's own traffic (BGP, VXLAN) to the node.
    assert _host_route_refused(switch=switch, ip=ip, **dataplane) == [
        (f"b {ip}/32", f"InternalIP is this switch's {key}")]


def test_a_static_node_is_never_routed_via_an_address_refused_as_its_host_route() -> None:
    # Via the switch's own router id, the kernel route would point the pods back at the leaf.
    cfg = parse_config(CONFIG)
    obj = node("s", "10.244.3.0/24", "leaf1/swp1", ip="10.0.0.1")
    obj["metadata"]["annotations"]["kube-fabric-agent.io/routing"] = "static"
    p = plan(cfg, cluster_state([obj]))
    assert p.dataplane.static_routes == ()
    assert ("s 10.244.3.0/24", "static routing needs an IPv4 InternalIP as next hop "
            "(10.0.0.1: InternalIP is this switch's switch.router_id)") in [
                (r.name, r.reason) for r in p.refusals]


@pytest.mark.parametrize("field", ["podCIDRs", "name", "address"])
def test_a_huge_value_is_not_echoed_whole_into_the_refusal(field: str) -> None:
    # Found by tests/test_fuzz_parsers.py: the reason quoted the value in full, so 300 KB in a
    # Node field became 300 KB in the log and in the status, on every resync.
    huge = "a" * 300_000
    obj = node("n1", ip="192.168.10.1")
    if field == "podCIDRs":
        obj["spec"]["podCIDRs"] = [huge + "/24"]
    elif field == "name":
        obj["metadata"]["name"] = huge
    else:
        obj["status"]["addresses"] = [{"type": "InternalIP", "address": huge}]
    _, refusals = parse_node(obj)
    assert refusals and all(len(str(r)) < 400 for r in refusals), [len(str(r)) for r in refusals]
