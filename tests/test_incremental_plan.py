"""The incremental core equals the from-scratch plan (issue 15).

- PlanCache.plan after every step of random churn (Nodes added, changed, deleted, with
  overlapping CIDRs, shared InternalIPs, contested ports, ages, routing modes, readiness, LLDP;
  Services and EndpointSlices added, changed, deleted, with shared and hostile VIPs) equals
  (cluster_state, plan) computed from scratch;
- the ownership index gives what the pairwise rule gives (the rule as it was written before the
  index: every CIDR compared with every CIDR kept so far), on hand-made Nodes too;
- a change parses only the Node (or Service, or EndpointSlice) that changed.

CI runs a fixed derandomized profile (KFA_FUZZ_PROFILE=deep hunts longer), as test_fuzz_parsers.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.cluster.nodes import IPNetwork, Node, Refusal, cluster_state
from agent.cluster.services import service_state
from agent.config import AgentConfig, parse_config
from agent.plan.build import plan
from agent.plan.incremental import PlanCache
from agent.plan.ownership import HostRouteRules, admitted_prefixes, host_prefix
from agent.vocabulary import FLANNEL_PREFIX, ROUTING_ANNOTATION, SWITCH_PORT_ANNOTATION
from tests.fuzz_profiles import FUZZ

NAMES = [f"n{i}" for i in range(7)] + ["n0.example.com", "N1"]
STAMPS = ["", "2026-01-01T00:00:00Z", "2026-01-01T00:00:01Z", "2026-01-02T00:00:00Z"]
# Nested, overlapping and disjoint CIDRs, one outside the supernets, one malformed.
CIDRS = ["10.244.0.0/16", "10.244.1.0/24", "10.244.1.128/25", "10.244.1.0/24", "10.244.2.0/24",
         "10.244.0.0/23", "10.245.0.0/24", "10.244.3.0/24", "fd00:10:244::/56",
         "fd00:10:244::/64", "fd00:10:244:1::/64", "fd00:99::/64", "10.244.4.1/24"]
# InternalIPs inside pod CIDRs, shared, outside node_networks, the switch's own router id.
IPS = ["192.168.0.1", "192.168.0.2", "10.244.1.5", "10.244.2.9", "172.16.0.1", "10.0.0.1",
       "fd00:192::1", "fd00:10:244::5", "fd00:192::2", "203.0.113.7"]
PORTS = ["leaf1/swp1", "leaf1/swp2", "leaf1/swp3", "leaf1/swp9", "LEAF1/swp2", "leaf2/swp1"]
FLANNEL = {FLANNEL_PREFIX + "backend-type": "vxlan",
           FLANNEL_PREFIX + "backend-data": '{"VNI": 1, "VtepMAC": "aa:bb:cc:dd:ee:01"}',
           FLANNEL_PREFIX + "public-ip": "192.168.0.9"}

CONFIGS = [
    {"switch": {"hostname": "leaf1", "asn": 65101, "router_id": "10.0.0.1",
                "vtep_ip": "192.168.0.100"},
     "fabric": {"server_ports": ["swp1", "swp2", "swp3"], "uplinks": ["swp51"],
                "pod_supernets": ["10.244.0.0/16", "fd00:10:244::/48"], "lldp": True,
                "attachments": {"swp3": "n5"}, "node_networks": ["192.168.0.0/16",
                                                                 "fd00:192::/48"]}},
    {"switch": {"hostname": "leaf1", "asn": 65101, "router_id": "10.0.0.1"},
     "fabric": {"server_ports": ["swp1", "swp2"], "pod_supernets": ["10.244.0.0/16"],
                "advertise_node_ips": False, "default_routing": "static"}},
    {"switch": {"hostname": "leaf1", "asn": 65101, "router_id": "203.0.113.1"},
     "fabric": {"server_ports": ["swp1", "swp2", "swp3"], "uplinks": ["swp51"],
                "pod_supernets": ["10.244.0.0/16", "fd00:10:244::/48"],
                "service_pools": ["203.0.113.0/24", "fd00:203::/64"], "vip_ecmp_width": 2}},
]
# In the pools, a pod IP, a node IP (also in the pools), the switch's own, hostile ones.
VIPS = ["203.0.113.10", "203.0.113.11", "fd00:203::10", "10.244.1.9", "192.168.0.1",
        "203.0.113.7", "203.0.113.1", "127.0.0.1", "198.51.100.1", "bogus"]
SERVICES = ["a", "b", "c"]


@st.composite
def node_objects(draw: st.DrawFn) -> dict[str, Any]:
    annotations: dict[str, str] = {}
    if draw(st.booleans()):
        annotations[SWITCH_PORT_ANNOTATION] = draw(st.sampled_from(PORTS))
    routing = draw(st.sampled_from([None, "bgp", "static", "vxlan", "bogus"]))
    if routing is not None:
        annotations[ROUTING_ANNOTATION] = routing
    if draw(st.integers(0, 3)) == 0:
        annotations.update(FLANNEL)
    labels = {"gen": str(draw(st.integers(0, 2)))}
    if draw(st.integers(0, 4)) == 0:
        labels["node.kubernetes.io/exclude-from-external-load-balancers"] = ""
    obj: dict[str, Any] = {
        "metadata": {"name": draw(st.sampled_from(NAMES)),
                     "creationTimestamp": draw(st.sampled_from(STAMPS)),
                     "annotations": annotations,
                     "labels": labels},
        "spec": {"podCIDRs": draw(st.lists(st.sampled_from(CIDRS), max_size=3)),
                 "unschedulable": draw(st.booleans())},
        "status": {"addresses": [{"type": "InternalIP", "address": a}
                                 for a in draw(st.lists(st.sampled_from(IPS), max_size=3))],
                   "conditions": [{"type": "Ready", "status": draw(st.sampled_from(
                       ["True", "True", "False", "Unknown"]))}]},
    }
    return obj


@st.composite
def service_objects(draw: st.DrawFn) -> dict[str, Any]:
    return {"metadata": {"namespace": "ns", "name": draw(st.sampled_from(SERVICES)),
                         "creationTimestamp": draw(st.sampled_from(STAMPS))},
            "spec": {"type": draw(st.sampled_from(["LoadBalancer", "ClusterIP"])),
                     "externalTrafficPolicy": draw(st.sampled_from([None, "Cluster", "Local",
                                                                    "Nowhere"])),
                     "externalIPs": draw(st.lists(st.sampled_from(VIPS), max_size=2))},
            "status": {"loadBalancer": {"ingress": [
                {"ip": v} for v in draw(st.lists(st.sampled_from(VIPS), max_size=2))]}}}


@st.composite
def slice_objects(draw: st.DrawFn) -> dict[str, Any]:
    service = draw(st.sampled_from(SERVICES))
    return {"metadata": {"namespace": "ns", "name": f"{service}-{draw(st.integers(0, 1))}",
                         "labels": {"kubernetes.io/service-name": service}},
            "endpoints": [{"nodeName": n, "conditions": {"ready": r}} for n, r in draw(st.lists(
                st.tuples(st.sampled_from(NAMES), st.sampled_from([True, False, None])),
                max_size=3))]}


# One step: put an object (add or replace a Node by name) or delete a name; occasionally put a
# second object with a name already present (a file may), or re-send an equal copy; put or
# delete a Service or an EndpointSlice.
STEPS = st.lists(st.one_of(
    st.tuples(st.just("put"), node_objects()),
    st.tuples(st.just("delete"), st.sampled_from(NAMES)),
    st.tuples(st.just("dup"), node_objects()),
    st.tuples(st.just("copy"), st.sampled_from(NAMES)),
    st.tuples(st.just("service"), service_objects()),
    st.tuples(st.just("no-service"), st.sampled_from(SERVICES)),
    st.tuples(st.just("slice"), slice_objects()),
    st.tuples(st.just("no-slice"), st.sampled_from(["a-0", "a-1", "b-0", "c-1"])),
), min_size=1, max_size=25)


@FUZZ
@given(steps=STEPS, config_index=st.integers(0, len(CONFIGS) - 1),
       neighbors=st.dictionaries(st.sampled_from(["swp1", "swp2", "swp3", "swp51"]),
                                 st.sampled_from(["n1", "n2.example.com", "N3", "n0", "x"]),
                                 max_size=3),
       tight=st.booleans())
def test_incremental_plan_equals_plan_from_scratch_after_every_change(
        steps: list[tuple[str, Any]], config_index: int, neighbors: dict[str, str],
        tight: bool) -> None:
    config = parse_config(CONFIGS[config_index])
    # A tight table refuses nodes for headroom, so admission's second assembly runs too.
    capacity = {"ipv4_routes": 2, "ipv6_routes": 1} if tight else None
    cache = PlanCache()
    store: dict[str, dict[str, Any]] = {}  # as the informer: name -> object, replaced on change
    services: dict[str, dict[str, Any]] = {}
    slices: dict[str, dict[str, Any]] = {}
    extra: list[dict[str, Any]] = []
    programmed: tuple[str, ...] = ()
    for op, arg in steps:
        if op == "put":
            store[arg["metadata"]["name"]] = arg
        elif op == "delete":
            store.pop(arg, None)
        elif op == "dup":
            extra = [arg]
        elif op == "copy" and arg in store:
            store[arg] = {**store[arg]}  # a new object, equal content
        elif op == "service":
            services[arg["metadata"]["name"]] = arg
        elif op == "no-service":
            services.pop(arg, None)
        elif op == "slice":
            slices[arg["metadata"]["name"]] = arg
        elif op == "no-slice":
            slices.pop(arg, None)
        objects = [*store.values(), *extra]
        got = cache.plan(config, objects, neighbors, capacity=capacity, programmed=programmed,
                         services=services.values(), endpoint_slices=slices.values())
        scratch = cluster_state(objects)
        want = plan(config, scratch, neighbors, capacity=capacity, programmed=programmed,
                    services=service_state(services.values(), slices.values()))
        assert got == (scratch, want)
        programmed = want.admission.admitted if want.admission else ()


def test_a_change_decides_again_the_whole_chain_of_overlapping_cidrs() -> None:
    """x (oldest) keeps 10.244.1.0/24, so w's /16 is refused and z's 10.244.2.0/24, which
    overlaps only w's, is kept. x leaving gives w its /16 and so takes z's /24 away, though z's
    CIDR never overlapped x's."""
    def obj(name: str, cidr: str, stamp: str) -> dict[str, Any]:
        return {"metadata": {"name": name, "creationTimestamp": stamp},
                "spec": {"podCIDRs": [cidr]}}

    config = parse_config(CONFIGS[0])
    x, w, z = (obj("x", "10.244.1.0/24", STAMPS[1]), obj("w", "10.244.0.0/16", STAMPS[2]),
               obj("z", "10.244.2.0/24", STAMPS[3]))
    cache = PlanCache()
    cache.plan(config, [x, w, z])
    _, after = cache.plan(config, [w, z])
    assert [r.name for r in after.refusals if r.kind == "prefix"] == ["z 10.244.2.0/24"]
    assert after == plan(config, cluster_state([w, z]))


def test_a_new_config_is_planned_from_scratch() -> None:
    first, second = (parse_config(c) for c in CONFIGS[:2])
    objs = [{"metadata": {"name": "n1", "creationTimestamp": STAMPS[1], "annotations": {
        SWITCH_PORT_ANNOTATION: "leaf1/swp1"}}, "spec": {"podCIDRs": ["10.244.1.0/24"]}}]
    cache = PlanCache()
    cache.plan(first, objs)
    assert cache.plan(second, objs)[1] == plan(second, cluster_state(objs))


def test_a_change_parses_only_the_node_that_changed(monkeypatch: pytest.MonkeyPatch) -> None:
    import agent.cluster.nodes as nodes

    parsed: list[str] = []
    real = nodes.parse_node

    def counting(obj: Any) -> Any:
        parsed.append(obj["metadata"]["name"])
        return real(obj)

    monkeypatch.setattr(nodes, "parse_node", counting)
    config = parse_config(CONFIGS[0])
    store = {f"n{i}": {"metadata": {"name": f"n{i}", "creationTimestamp": STAMPS[1]},
                       "spec": {"podCIDRs": [f"10.244.{i}.0/24"]}} for i in range(50)}
    cache = PlanCache()
    cache.plan(config, list(store.values()))
    parsed.clear()
    store["n7"] = {**store["n7"], "spec": {"podCIDRs": ["10.244.1.0/24"], "unschedulable": True}}
    _, result = cache.plan(config, list(store.values()))
    assert parsed == ["n7"]
    assert result == plan(config, cluster_state(store.values()))


def test_an_error_while_planning_starts_the_next_plan_from_scratch(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import agent.plan.ownership as ownership

    config = parse_config(CONFIGS[0])
    objs = [{"metadata": {"name": f"n{i}", "creationTimestamp": STAMPS[1]},
             "spec": {"podCIDRs": [f"10.244.{i}.0/24"]}} for i in range(3)]
    cache = PlanCache()
    cache.plan(config, objs[:2])
    with monkeypatch.context() as patch:
        patch.setattr(ownership.Ownership, "_decide_hosts", lambda *a: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            cache.plan(config, objs)
    assert cache.plan(config, objs)[1] == plan(config, cluster_state(objs))


# --- the ownership index against the rule as written before it (pairwise) ---------------


def pairwise_admitted_prefixes(
    nodes: tuple[Node, ...], supernets: list[IPNetwork], include_node_ips: bool,
    rules: HostRouteRules,
) -> tuple[dict[str, list[IPNetwork]], list[Refusal]]:
    """agent.plan.build.admitted_prefixes before issue 15, verbatim: the reference."""
    refusals: list[Refusal] = []
    taken: list[tuple[IPNetwork, str]] = []
    result: dict[str, list[IPNetwork]] = {}

    def owner_of(net: IPNetwork) -> str | None:
        for other, owner in taken:
            if other.version == net.version and other.overlaps(net):
                return owner
        return None

    for node in sorted(nodes, key=lambda n: (n.created, n.name)):
        accepted: list[IPNetwork] = []
        for net in node.pod_cidrs:
            if not any(net.version == s.version and net.subnet_of(s) for s in supernets):
                refusals.append(Refusal("prefix", f"{node.name} {net}",
                                        "outside fabric.pod_supernets"))
                continue
            owner = owner_of(net)
            if owner is not None:
                refusals.append(Refusal("prefix", f"{node.name} {net}",
                                        f"overlaps a pod CIDR of older node {owner}"))
                continue
            accepted.append(net)
        taken.extend((net, node.name) for net in accepted)
        result[node.name] = accepted

    if include_node_ips:
        for node in sorted(nodes, key=lambda n: (n.created, n.name)):
            for addr in node.internal_ips:
                host = host_prefix(addr)
                owner = owner_of(host)
                why = (f"InternalIP lies in address space of node {owner}"
                       if owner is not None and owner != node.name else rules.problem(host))
                if why is not None:
                    refusals.append(Refusal("prefix", f"{node.name} {host}", why))
                    continue
                if owner is None:
                    taken.append((host, node.name))
                    result[node.name].append(host)
    return result, refusals


@st.composite
def hand_made_nodes(draw: st.DrawFn) -> tuple[Node, ...]:
    """Nodes as a test or a file may build them: several CIDRs of a family, repeated ones."""
    names = draw(st.lists(st.sampled_from(NAMES), unique=True, max_size=7))
    cidrs = [ipaddress.ip_network(c, strict=False) for c in CIDRS]
    ips = [ipaddress.ip_address(a) for a in IPS]
    return tuple(Node(name=name, created=draw(st.sampled_from(STAMPS)),
                      pod_cidrs=tuple(draw(st.lists(st.sampled_from(cidrs), max_size=4))),
                      internal_ips=tuple(draw(st.lists(st.sampled_from(ips), max_size=3))),
                      unschedulable=False, routing=None, switch_port=None)
                 for name in names)


@FUZZ
@given(nodes=hand_made_nodes(), include=st.booleans())
def test_ownership_index_decides_as_the_pairwise_rule(nodes: tuple[Node, ...],
                                                      include: bool) -> None:
    config: AgentConfig = parse_config(CONFIGS[0])
    supernets = [ipaddress.ip_network(s) for s in config.fabric.pod_supernets]
    rules = HostRouteRules.from_config(config)
    assert (admitted_prefixes(nodes, supernets, include, rules)
            == pairwise_admitted_prefixes(nodes, supernets, include, rules))


def test_a_service_change_parses_only_what_changed(monkeypatch: pytest.MonkeyPatch) -> None:
    import agent.cluster.services as services

    parsed: list[str] = []
    for name in ("parse_service", "parse_endpoint_slice"):
        real = getattr(services, name)
        monkeypatch.setattr(services, name, lambda obj, real=real: (
            parsed.append(obj["metadata"]["name"]), real(obj))[1])
    config = parse_config(CONFIGS[2])
    nodes = [{"metadata": {"name": f"n{i}", "creationTimestamp": STAMPS[1], "annotations": {
        SWITCH_PORT_ANNOTATION: f"leaf1/swp{i}"}}, "spec": {"podCIDRs": [f"10.244.{i}.0/24"]},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]}} for i in (1, 2)]
    svcs = {f"s{i}": {"metadata": {"namespace": "ns", "name": f"s{i}"}, "spec": {
        "type": "LoadBalancer", "externalTrafficPolicy": "Local"}, "status": {"loadBalancer": {
            "ingress": [{"ip": f"203.0.113.{i}"}]}}} for i in range(10, 40)}
    eps = {f"s{i}-x": {"metadata": {"namespace": "ns", "name": f"s{i}-x", "labels": {
        "kubernetes.io/service-name": f"s{i}"}}, "endpoints": [{"nodeName": "n1"}]}
        for i in range(10, 40)}
    cache = PlanCache()
    cache.plan(config, nodes, services=svcs.values(), endpoint_slices=eps.values())
    parsed.clear()
    eps["s12-x"] = {**eps["s12-x"], "endpoints": [{"nodeName": "n2"}]}  # the endpoint moved
    _, result = cache.plan(config, nodes, services=svcs.values(), endpoint_slices=eps.values())
    assert parsed == ["s12-x"]
    assert result == plan(config, cluster_state(nodes),
                          services=service_state(svcs.values(), eps.values()))
    assert next(v for v in result.services if v.vip == "203.0.113.12").nodes_permitted == ("n2",)
    parsed.clear()
    cache.plan(config, nodes, services=svcs.values(), endpoint_slices=eps.values())
    assert parsed == []  # nothing changed: nothing parsed, nothing assembled again


def test_without_pools_the_cache_reads_no_service() -> None:
    import agent.cluster.services as services

    config = parse_config(CONFIGS[0])
    svc = {"metadata": {"namespace": "ns", "name": "a"}, "spec": {"externalIPs": ["bogus"]}}
    cache = PlanCache()
    _, got = cache.plan(config, [], services=[svc], endpoint_slices=[svc])
    assert got == plan(config, cluster_state([]), services=service_state([svc], [svc]))
    assert not [r for r in got.refusals if r.kind == "service"] and got.services == ()
    assert services.parse_service(svc)[1]  # it would have been refused, had it been read
