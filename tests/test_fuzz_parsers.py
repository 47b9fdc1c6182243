"""Fuzzing the Node, Pod, Service and EndpointSlice parsers and plan() with hostile objects
(hypothesis).

A kubelet may write anything into its own Node, and a Pod's status is whatever the runtime
reported; anyone allowed to create a Service picks its externalIPs. The agent must never crash on
it, and nothing that reaches FRR, netlink or Redis may be malformed. The properties, for any
object:

- parse_node / parse_pod / slim_pod / the pod index / parse_service / parse_endpoint_slice never
  raise (cluster_state and service_state would hide a parser bug as a refusal, so it is checked
  that none says "could not be parsed");
- every value plan() hands on passes the FRR templates' `token` filter (render_frr does not
  raise UnsafeValue) and is semantically valid: canonical prefixes inside the configured space,
  routable unicast addresses, unicast non-zero MACs; a VIP only as an exact /32 or /128 inside
  fabric.service_pools, and only from a node plan() lists as permitted.

CI runs a fixed, derandomized profile of a few hundred examples (a few seconds); for a longer
hunt: KFA_FUZZ_PROFILE=deep pytest tests/test_fuzz_parsers.py.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
from typing import Any

from hypothesis import event, given, settings
from hypothesis import strategies as st

from agent import validate
from agent.apply.frr.render import _token, render_frr
from agent.cluster.nodes import cluster_state, parse_node
from agent.cluster.pod_index import PodIndex, parse_pod, slim_pod
from agent.cluster.services import (
    MAX_VIPS_PER_SERVICE,
    parse_endpoint_slice,
    parse_service,
    service_state,
)
from agent.config import AgentConfig, parse_config
from agent.plan.build import HostRouteRules, plan
from agent.vocabulary import FLANNEL_PREFIX, ROUTING_ANNOTATION, SWITCH_PORT_ANNOTATION
from tests.fuzz_profiles import FUZZ

SERVER_PORTS = ["swp1", "swp2", "swp3", "swp4"]
BASE = {
    "switch": {"hostname": "leaf1", "asn": 65101, "router_id": "10.0.0.1",
               "vtep_ip": "10.0.0.2"},
    "fabric": {"server_ports": SERVER_PORTS, "uplinks": ["swp51"], "lldp": True,
               "pod_supernets": ["10.244.0.0/16", "fd00:10:244::/48"],
               "attachments": {"swp4": "n4"}},
    "dataplane": {"vxlan": {"address": "10.244.250.0/32"}},
}
CONFIGS = [
    parse_config(BASE),
    parse_config({**BASE, "fabric": {
        **BASE["fabric"], "default_routing": "static",
        "node_networks": ["192.168.10.0/24", "fd00:192:168:10::/64"],
        "service_pools": ["203.0.113.0/24", "2001:db8:5::/112"]}}),
    parse_config({**BASE, "fabric": {**BASE["fabric"], "default_routing": "vxlan",
                                     "aggregate_to_supernets": True}}),
    # Service VIPs from BGP nodes, the pools aggregated upstream.
    parse_config({**BASE, "fabric": {
        **BASE["fabric"], "aggregate_to_supernets": True, "vip_ecmp_width": 2,
        "service_pools": ["203.0.113.0/24", "2001:db8:5::/112"]}}),
]

# -- hostile leaves ------------------------------------------------------------------------------
NASTY_TEXT = [
    "", " ", "\n", "x\n neighbor 6.6.6.6 remote-as 1", "a b", "a;b", "{{ frr }}", "%", "/",
    "\x00", "\u202e", "\ufeff", "ñ", "😀", "\uff11\uff10.\uff10.\uff10.\uff11", "٣",
    "0x0a000001", "-1", "1e3",
]
ADDRESSES = [
    "192.168.10.1", "192.168.10.7", "10.0.0.1", "10.0.0.2", "10.244.1.7", "10.244.250.0",
    "203.0.113.9", "198.51.100.7", "169.254.1.1", "fe80::1", "fe80::1%swp1", "fd00::1%2",
    "0.0.0.0", "::", "127.0.0.1", "::1", "224.0.0.5", "ff02::1", "255.255.255.255",
    "::ffff:10.0.0.1", "::ffff:169.254.1.1", "64:ff9b::a00:1", "2001:db8:5::1",
    "fd00:192:168:10::5", "fd00:10:244:1::9", "010.000.000.001", "192.168.10.1 ",
    "192.168.10.1\n", "192.168.10.1/32", "1.2.3", "256.1.1.1",
]
CIDRS = [
    "10.244.1.0/24", "10.244.2.0/24", "10.244.1.0/25", "10.244.0.0/16", "10.99.0.0/24",
    "10.244.1.7/32", "fd00:10:244:1::/64", "fd00:10:244::/48", "0.0.0.0/0", "::/0",
    "10.244.1.1/24", "10.244.1.0/24\n", " 10.244.1.0/24", "10.244.1.0/ 24", "10.244.1.0/024",
    "10.244.1.0/24 permit any", "169.254.0.0/16", "fe80::/64", "224.0.0.0/4", "ff00::/8",
    "10.244.250.0/32", "::ffff:10.244.1.0/120", "10.244.1.0/33", "fd00:10:244:1::%1/64",
]
MACS = [
    "0a:58:0a:f4:07:00", "0A:58:0A:F4:07:00", "00:00:00:00:00:00", "01:00:5e:00:00:01",
    "ff:ff:ff:ff:ff:ff", "33:33:00:00:00:01", "0a:58:0a:f4:07", "0a-58-0a-f4-07-00",
    "0a:58:0a:f4:07:00\n", "0a:58:0a:f4:07:0g", "0a:58:0a:f4:07:00:00",
]
NAMES = ["n1", "n2", "n3", "n4", "N1", "n1\n", "x" * 254, "-a", "a_b", "n1.example.com", ""]


def huge_text() -> st.SearchStrategy[str]:
    return st.builds(lambda ch, n: ch * n, st.sampled_from(["a", "[", "{", "0", "é", "\n"]),
                     st.integers(1000, 70_000))


scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=2**63),
    st.floats(allow_nan=True), st.text(max_size=40), st.sampled_from(NASTY_TEXT), huge_text(),
)
anything = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.one_of(st.text(max_size=8), st.integers()),
                                            inner, max_size=4)),
    max_leaves=12,
)


def generated_ip() -> st.SearchStrategy[str]:
    return st.ip_addresses().map(str)


def sometimes(plausible: st.SearchStrategy[Any], odds: int = 3) -> st.SearchStrategy[Any]:
    """Mostly the plausible value, so the parser goes deep; sometimes anything at all."""
    return st.one_of(*[plausible] * odds, anything)


def noisy(values: list[str], generated: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    text = st.one_of(st.sampled_from(values), generated)
    suffix = st.sampled_from(["", "", "", "\n", " ", "%eth0", "/32", "\x00", "\u00a0"])
    return st.builds(lambda t, s: t + s, text, suffix)


addresses = noisy(ADDRESSES, generated_ip())
cidrs = noisy(CIDRS, st.builds(lambda a, n: f"{a}/{n}", generated_ip(), st.integers(-1, 130)))
macs = noisy(MACS, st.binary(min_size=6, max_size=6).map(lambda b: b.hex(":")))


def backend_data() -> st.SearchStrategy[Any]:
    vni = st.one_of(st.sampled_from([1, 0, 2, 16777215, 16777216, -1, True, 1.0, "1", None]),
                    st.integers())
    obj = st.fixed_dictionaries({}, optional={"VNI": vni, "VtepMAC": sometimes(macs),
                                              "Extra": anything})
    deep = st.builds(lambda open_, n: open_ * n, st.sampled_from(["[", "{\"a\":", "[{\"x\":"]),
                     st.integers(1, 5000))
    return st.one_of(obj.map(json.dumps), deep, st.sampled_from(NASTY_TEXT), anything)


annotation_values = {
    SWITCH_PORT_ANNOTATION: st.one_of(
        st.builds(lambda p: f"leaf1/{p}", st.sampled_from([*SERVER_PORTS, "swp9", "swp1\n"])),
        st.sampled_from(["leaf2/swp1", "leaf1", "/swp1", "leaf1/", "leaf1/swp1/x",
                         "leaf1/swp1\n shutdown", "LEAF1/swp1"])),
    ROUTING_ANNOTATION: st.sampled_from(["bgp", "static", "vxlan", "BGP", "bgp\n", ""]),
    FLANNEL_PREFIX + "backend-type": st.sampled_from(["vxlan", "host-gw", "VXLAN"]),
    FLANNEL_PREFIX + "backend-data": backend_data(),
    FLANNEL_PREFIX + "public-ip": addresses,
    FLANNEL_PREFIX + "public-ip-overwrite": addresses,
}
# Values a plan can do something with: few of them, so nodes collide on names, CIDRs, ports.
good_cidrs = st.one_of(st.integers(0, 4).map(lambda x: f"10.244.{x}.0/24"),
                       st.integers(0, 4).map(lambda x: f"fd00:10:244:{x}::/64"))
good_addresses = st.one_of(st.integers(0, 4).map(lambda x: f"192.168.10.{x}"),
                           st.integers(0, 4).map(lambda x: f"10.244.{x}.7"),
                           st.integers(0, 2).map(lambda x: f"fd00:192:168:10::{x}"),
                           st.sampled_from(["10.0.0.1", "10.0.0.2", "203.0.113.9"]))
good_macs = st.integers(0, 3).map(lambda x: f"0a:58:0a:f4:0{x}:00")


def node_objects(odds: int, cidr: st.SearchStrategy[str], address: st.SearchStrategy[str],
                 mac: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    """Node-shaped dicts; each part hostile once in `odds` + 1 draws."""
    def often(plausible: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return sometimes(plausible, odds)

    values = {**annotation_values,
              FLANNEL_PREFIX + "backend-type": st.sampled_from(["vxlan", "vxlan", "host-gw"]),
              FLANNEL_PREFIX + "backend-data": st.one_of(
                  backend_data(), st.builds(lambda m: json.dumps({"VNI": 1, "VtepMAC": m}), mac)),
              FLANNEL_PREFIX + "public-ip": address,
              FLANNEL_PREFIX + "public-ip-overwrite": address}
    annotations = st.fixed_dictionaries({}, optional={k: often(v) for k, v in values.items()})
    entry = st.fixed_dictionaries(
        {"type": st.sampled_from(["InternalIP", "InternalIP", "ExternalIP", "Hostname", None]),
         "address": often(address)})
    return st.fixed_dictionaries({
        "metadata": often(st.fixed_dictionaries(
            {"name": st.one_of(st.sampled_from(NAMES), *[st.sampled_from(NAMES[:4])] * odds,
                               anything)},
            optional={"annotations": often(annotations),
                      "labels": often(st.dictionaries(st.text(max_size=10), scalars)),
                      "creationTimestamp": often(st.sampled_from(
                          ["2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z", "", "x"]))})),
        "spec": often(st.fixed_dictionaries({}, optional={
            "podCIDRs": often(st.lists(often(cidr), max_size=12)),
            "podCIDR": often(cidr),
            "unschedulable": often(st.booleans())})),
        "status": often(st.fixed_dictionaries({}, optional={
            "addresses": often(st.lists(often(entry), max_size=6))})),
    })


nodes = node_objects(3, cidrs, addresses, macs)
hostile_nodes = st.one_of(nodes, nodes, nodes, anything)


def _plannable(name: str, port: str, routing: str | None, pod_cidrs: list[str],
               ips: list[str], mac: str, public_ip: str, created: str, cordoned: bool,
               ready: str | None, corrupt: tuple[tuple[str, ...], Any] | None) -> dict[str, Any]:
    annotations = {SWITCH_PORT_ANNOTATION: f"leaf1/{port}",
                   FLANNEL_PREFIX + "backend-type": "vxlan",
                   FLANNEL_PREFIX + "backend-data": json.dumps({"VNI": 1, "VtepMAC": mac}),
                   FLANNEL_PREFIX + "public-ip": public_ip}
    if routing is not None:
        annotations[ROUTING_ANNOTATION] = routing
    obj: dict[str, Any] = {
        "metadata": {"name": name, "creationTimestamp": created, "annotations": annotations},
        "spec": {"podCIDRs": pod_cidrs, "unschedulable": cordoned},
        "status": {"addresses": [{"type": "InternalIP", "address": ip} for ip in ips],
                   "conditions": [{"type": "Ready", "status": ready}]}}
    if corrupt is not None:  # one part replaced by anything at all
        path, value = corrupt
        parent = obj
        for key in path[:-1]:
            parent = parent[key]
        parent[path[-1]] = value
    return obj


# For plan(): well-formed Nodes that collide on names, ports, CIDRs and addresses, with hostile
# values mixed in, so that sessions, host routes, static routes and overlay peers are planned.
plannable_nodes = st.builds(
    _plannable, name=st.sampled_from(NAMES[:4]),
    port=st.sampled_from([*SERVER_PORTS, "swp9"]),
    routing=st.sampled_from([None, "bgp", "static", "vxlan", "bogus"]),
    pod_cidrs=st.lists(st.one_of(good_cidrs, good_cidrs, cidrs), max_size=3),
    ips=st.lists(st.one_of(good_addresses, good_addresses, addresses), max_size=3),
    mac=st.one_of(good_macs, macs), public_ip=st.one_of(good_addresses, addresses),
    created=st.sampled_from(["2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z"]),
    cordoned=st.booleans(), ready=st.sampled_from(["True", "True", "False", None]),
    corrupt=st.one_of(st.none(), st.none(), st.tuples(st.sampled_from([
        ("metadata",), ("metadata", "annotations"), ("spec", "podCIDRs"), ("spec",),
        ("status", "addresses"), ("metadata", "annotations", SWITCH_PORT_ANNOTATION),
        ("metadata", "annotations", FLANNEL_PREFIX + "backend-data"),
    ]), anything)))

pods = st.fixed_dictionaries({
    "metadata": sometimes(st.fixed_dictionaries(
        {"name": sometimes(st.sampled_from(["web-1", "web-2", "Web", "a" * 254, "w\n"])),
         "namespace": sometimes(st.sampled_from(["shop", "default", "a" * 64, "Shop", ""]))},
        optional={"creationTimestamp": sometimes(st.sampled_from(
            ["2026-01-01T00:00:00Z", "2026-01-01T00:00:00+01:00", "2026-01-01T00:00:00Z\n"]))})),
    "spec": sometimes(st.fixed_dictionaries(
        {"nodeName": sometimes(st.sampled_from(["n1", "n2", "", "N1", "n1\n"]))},
        optional={"hostNetwork": sometimes(st.booleans())})),
    "status": sometimes(st.fixed_dictionaries({}, optional={
        "phase": sometimes(st.sampled_from(["Running", "Pending", "Succeeded", "Failed",
                                            "Unknown", "running"])),
        "podIP": sometimes(addresses),
        "podIPs": sometimes(st.lists(sometimes(st.one_of(
            st.fixed_dictionaries({"ip": sometimes(addresses)}), addresses)), max_size=5))})),
})
hostile_pods = st.one_of(pods, pods, pods, anything)

# Services: VIPs in the pools (CONFIGS[1]), colliding with node IPs and pod space, hostile ones.
good_vips = st.one_of(st.integers(1, 4).map(lambda x: f"203.0.113.{x}"),
                      st.integers(1, 3).map(lambda x: f"2001:db8:5::{x}"), good_addresses,
                      st.sampled_from(["198.51.100.7", "2001:db8:6::1"]))  # outside the pools
vip_text = st.one_of(good_vips, good_vips, addresses)
SERVICE_NAMES = ["web", "db", "Web", "a" * 64, "1web", "web\n", ""]
services = st.fixed_dictionaries({
    "metadata": sometimes(st.fixed_dictionaries(
        {"name": sometimes(st.sampled_from(SERVICE_NAMES[:2] * 3 + SERVICE_NAMES)),
         "namespace": sometimes(st.sampled_from(["shop", "shop", "Shop", "a" * 64, ""]))},
        optional={"creationTimestamp": sometimes(st.sampled_from(
            ["2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z", ""]))})),
    "spec": sometimes(st.fixed_dictionaries({}, optional={
        "type": sometimes(st.sampled_from(["LoadBalancer", "LoadBalancer", "ClusterIP",
                                           "NodePort", "loadbalancer"])),
        "externalTrafficPolicy": sometimes(st.sampled_from(["Cluster", "Local", "Global", ""])),
        "externalIPs": sometimes(st.lists(sometimes(vip_text), max_size=4))})),
    "status": sometimes(st.fixed_dictionaries({}, optional={"loadBalancer": sometimes(
        st.fixed_dictionaries({}, optional={"ingress": sometimes(st.lists(sometimes(
            st.fixed_dictionaries({}, optional={"ip": sometimes(vip_text),
                                                "hostname": st.just("lb.example.com")})),
            max_size=4))}))})),
})
# Some Services name far more VIPs than any real one: never all read.
flood = st.builds(lambda n, extra: {"metadata": {"namespace": "shop", "name": "flood"},
                                    "spec": {"externalIPs": ["203.0.113.1"] * n, **extra}},
                  st.integers(MAX_VIPS_PER_SERVICE + 1, 3000), st.just({}))
hostile_services = st.one_of(services, services, services, flood, anything)
endpoint = st.fixed_dictionaries({}, optional={
    "nodeName": sometimes(st.sampled_from([*NAMES[:4], *NAMES])),
    "conditions": sometimes(st.fixed_dictionaries({}, optional={
        "ready": sometimes(st.sampled_from([True, False, None, "true", 1])),
        "serving": sometimes(st.sampled_from([True, False, None])),
        "terminating": st.booleans()})),
    "addresses": st.just(["10.244.1.9"])})
endpoint_slices = st.fixed_dictionaries({
    "metadata": sometimes(st.fixed_dictionaries(
        {"name": sometimes(st.sampled_from(["web-abc", "db-x", "web-abc", "Web", ""])),
         "namespace": sometimes(st.sampled_from(["shop", "shop", "Shop"]))},
        optional={"labels": sometimes(st.fixed_dictionaries({}, optional={
            "kubernetes.io/service-name": sometimes(st.sampled_from(SERVICE_NAMES))}))})),
    "endpoints": sometimes(st.lists(sometimes(endpoint), max_size=6)),
}, optional={"apiVersion": st.sampled_from(["discovery.k8s.io/v1", "discovery.k8s.io/v1beta1",
                                            None])})
hostile_slices = st.one_of(endpoint_slices, endpoint_slices, endpoint_slices, anything)
# For plan(): well-formed Services and slices sharing names, VIPs and nodes.
plannable_services = st.builds(
    lambda name, policy, ingress, external: {
        "metadata": {"namespace": "shop", "name": name},
        "spec": {"type": "LoadBalancer", "externalTrafficPolicy": policy,
                 "externalIPs": external},
        "status": {"loadBalancer": {"ingress": [{"ip": ip} for ip in ingress]}}},
    st.sampled_from(["web", "db", "dns"]), st.sampled_from(["Cluster", "Local", None]),
    st.lists(vip_text, max_size=2), st.lists(vip_text, max_size=2))
plannable_slices = st.builds(
    lambda service, index, on: {
        "metadata": {"namespace": "shop", "name": f"{service}-{index}",
                     "labels": {"kubernetes.io/service-name": service}},
        "endpoints": [{"nodeName": n, "conditions": {"ready": r}} for n, r in on]},
    st.sampled_from(["web", "db", "dns"]), st.integers(0, 1),
    st.lists(st.tuples(st.sampled_from(NAMES[:4]), st.sampled_from([True, False, None])),
             max_size=4))
lldp = st.dictionaries(st.sampled_from([*SERVER_PORTS, "swp9", "bad port"]),
                       st.one_of(st.sampled_from(NAMES), st.text(max_size=20)), max_size=4)


# -- what plan() may hand on -----------------------------------------------------------------------
def _strings(value: Any) -> list[Any]:
    """Every leaf value of a (nested) plan dataclass."""
    if dataclasses.is_dataclass(value):
        return [s for f in dataclasses.fields(value) for s in _strings(getattr(value, f.name))]
    if isinstance(value, tuple | list):
        return [s for v in value for s in _strings(v)]
    return [value]


def _prefix(text: str, version: int) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    net = validate.cidr(text)  # canonical, no host bits
    assert net.version == version, text
    assert not (net.is_link_local or net.is_multicast or net.is_loopback), text
    return net


def _host(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    addr = validate.host_address(text)
    assert str(addr) == text  # canonical
    return addr


def check_vip(config: AgentConfig, net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> None:
    """A VIP the leaf accepts or announces: an exact host prefix of a routable unicast address
    inside a pool, outside pod space and none of the switch's own addresses."""
    assert net.prefixlen == net.max_prefixlen, net
    addr = _host(str(net.network_address))
    assert not (addr.version == 6 and addr.ipv4_mapped is not None), net
    pools = [ipaddress.ip_network(n) for n in config.fabric.service_pools]
    assert any(net.version == p.version and net.subnet_of(p) for p in pools), net
    supernets = [ipaddress.ip_network(n) for n in config.fabric.pod_supernets]
    assert not any(net.version == s.version and net.subnet_of(s) for s in supernets), net
    own = [config.switch.router_id, config.switch.vtep_ip]
    assert str(addr) not in own, net


def check_plan(config: AgentConfig, p: Any) -> None:
    frr = p.frr
    render_frr(frr)  # raises UnsafeValue on anything the token filter refuses
    for value in _strings(frr):
        if value is not None and not isinstance(value, bool | int):
            _token(value)
    supernets = [ipaddress.ip_network(n) for n in config.fabric.pod_supernets]
    rules = HostRouteRules.from_config(config)
    vips = {v.prefix: v for v in p.services if v.refused is None}
    for v in p.services:
        assert (v.refused is None) or not v.nodes_permitted, v
        assert v.prefix == f"{v.vip}/{ipaddress.ip_address(v.vip).max_prefixlen}"
        if v.refused is None:
            check_vip(config, ipaddress.ip_network(v.prefix))
    if not config.fabric.service_pools:
        assert p.services == () and frr.maximum_paths is None

    def admissible(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> None:
        if str(net) in vips:
            check_vip(config, net)
        elif config.fabric.aggregate_to_supernets and str(net) in config.fabric.service_pools:
            pass  # a pool announced as an aggregate of its VIPs
        elif net.prefixlen == net.max_prefixlen and not any(
                net.version == s.version and net.subnet_of(s) for s in supernets):
            _host(str(net.network_address))
            assert rules.problem(net) is None, net
        else:
            assert any(net.version == s.version and net.subnet_of(s) for s in supernets), net

    for peer in frr.server_peers:
        assert peer.port in config.fabric.server_ports
        if peer.node is not None:
            validate.node_name(peer.node)
        for text in peer.accept_v4:
            admissible(_prefix(text, 4))
        for text in peer.accept_v6:
            admissible(_prefix(text, 6))
        for text, version in [*((t, 4) for t in peer.vips_v4), *((t, 6) for t in peer.vips_v6)]:
            check_vip(config, _prefix(text, version))
            assert peer.node in vips[text].nodes_permitted, (peer, text)
    for family, version in (("v4", 4), ("v6", 6)):
        for key in ("advertise", "aggregate", "redistribute", "originate"):
            for text in getattr(frr, f"{key}_{family}"):
                admissible(_prefix(text, version))
    for att in p.attachments:
        validate.node_name(att.node)
        assert att.port in config.fabric.server_ports
    dp = p.dataplane
    for route in dp.static_routes:
        net = ipaddress.ip_network(route.prefix)
        admissible(_prefix(route.prefix, net.version))
        via = _host(route.via)
        assert via.version == net.version
        assert rules.problem(ipaddress.ip_network(f"{via}/{via.max_prefixlen}")) is None
        assert route.port in config.fabric.server_ports
    macs_seen = set()
    for peer in dp.vxlan_peers:
        validate.node_name(peer.node)
        net = _prefix(peer.pod_cidr, 4)
        admissible(net)
        assert peer.gateway == str(net.network_address)
        assert validate.unicast_mac(peer.vtep_mac) == peer.vtep_mac  # unicast, non-zero, lower
        assert peer.vtep_mac not in macs_seen
        macs_seen.add(peer.vtep_mac)
        public = _host(peer.public_ip)
        assert public.version == 4 and peer.public_ip != config.switch.vtep_ip


# -- the properties ------------------------------------------------------------------------------
@FUZZ
@given(obj=hostile_nodes)
def test_parse_node_never_raises_and_keeps_only_valid_values(obj: Any) -> None:
    node, refusals = parse_node(obj)
    for r in refusals:
        assert "\n" not in r.name and "\n" not in r.reason
        assert len(r.name) < 400 and len(r.reason) < 1000  # printable() bounds what is echoed
    if node is None:
        return
    validate.node_name(node.name)
    assert len(node.pod_cidrs) <= 2 and len({n.version for n in node.pod_cidrs}) == len(
        node.pod_cidrs)
    for net in node.pod_cidrs:
        assert validate.cidr(str(net)) == net
    for addr in node.internal_ips:
        assert validate.host_address(str(addr)) == addr
    if node.flannel is not None:
        assert validate.unicast_mac(node.flannel.vtep_mac) == node.flannel.vtep_mac
        assert 1 <= node.flannel.vni <= 16777215
        validate.host_address(str(node.flannel.public_ip))
    if node.switch_port is not None:
        validate.hostname(node.switch_port.switch)
        validate.interface_name(node.switch_port.port)


@FUZZ
@given(good=st.lists(plannable_nodes, min_size=1, max_size=6),
       bad=st.lists(hostile_nodes, max_size=2), neighbors=lldp,
       config=st.sampled_from([*CONFIGS, CONFIGS[1], CONFIGS[3]]),
       programmed=st.sets(st.sampled_from(NAMES[:4])),
       svcs=st.lists(plannable_services, min_size=1, max_size=4),
       bad_svcs=st.lists(hostile_services, max_size=2),
       slices=st.lists(plannable_slices, max_size=3),
       bad_slices=st.lists(hostile_slices, max_size=2))
def test_plan_of_hostile_nodes_renders_and_holds_only_valid_values(
        good: list[Any], bad: list[Any], neighbors: dict[str, str], config: AgentConfig,
        programmed: set[str], svcs: list[Any], bad_svcs: list[Any], slices: list[Any],
        bad_slices: list[Any]) -> None:
    state = cluster_state([*good, *bad])
    assert not any("could not be parsed" in r.reason for r in state.refusals)
    services_state = service_state([*svcs, *bad_svcs], [*slices, *bad_slices])
    assert not any("could not be parsed" in r.reason for r in services_state.refusals)
    p = plan(config, state, neighbors, programmed=programmed, services=services_state)
    check_plan(config, p)
    # How deep the examples reach (--hypothesis-show-statistics): not asserted, watched.
    event(f"{len(p.attachments)} attachments")
    event(f"accepted: {any(peer.accept_v4 or peer.accept_v6 for peer in p.frr.server_peers)}")
    event(f"static routes: {bool(p.dataplane.static_routes)}")
    event(f"vxlan peers: {bool(p.dataplane.vxlan_peers)}")
    event(f"VIPs announced: {any(peer.vips_v4 or peer.vips_v6 for peer in p.frr.server_peers)}")
    event(f"VIPs: {len(p.services)}, refused: {sum(v.refused is not None for v in p.services)}")
    # Headroom admission refusing nodes takes a second planning pass: fuzz that one too.
    tight = {"ipv4_routes": 3, "ipv6_routes": 2, "nexthops": 2, "neighbors": 1,
             "fdb_entries": 1, "remote_vteps": 1}
    check_plan(config, plan(config, state, neighbors, capacity=tight, programmed=programmed,
                            services=services_state))


@FUZZ
@given(obj=hostile_pods)
def test_parse_pod_never_raises_and_keeps_only_valid_values(obj: Any) -> None:
    pod, refusals = parse_pod(obj)
    # The informer stores slimmed pods: slimming must not change what the parser makes of one.
    assert parse_pod(slim_pod(obj)) == (pod, refusals)
    for r in refusals:
        assert "\n" not in r.name and "\n" not in r.reason
    if pod is None:
        return
    assert pod.key.count("/") == 1 and "\n" not in pod.key
    validate.node_name(pod.node)
    assert len(pod.ips) <= 2
    for ip in pod.ips:
        addr = validate.host_address(ip)
        assert str(addr) == ip


@settings(FUZZ, max_examples=max(1, FUZZ.max_examples // 2))  # the slowest to generate
@given(objs=st.lists(hostile_pods, max_size=8), node_ips=st.lists(addresses, max_size=3))
def test_pod_index_takes_hostile_pods(objs: list[Any], node_ips: list[str]) -> None:
    index = PodIndex(max_pods_per_node=3)
    index.set_node_ips(node_ips)
    index.replace_node("n1", objs)
    for pod in index.on_node("n1"):
        assert pod.node == "n1"
        for ip in pod.ips:
            found = index.by_ip(ip)
            assert found is None or ip in found.ips
    index.refusals()
    index.drop_node("n1")
    assert len(index) == 0


@FUZZ
@given(obj=hostile_services)
def test_parse_service_never_raises_and_keeps_only_valid_values(obj: Any) -> None:
    service, refusals = parse_service(obj)
    for r in refusals:
        assert "\n" not in r.name and "\n" not in r.reason
        assert len(r.name) < 400 and len(r.reason) < 1000
    if service is None:
        return
    assert service.key.count("/") == 1 and "\n" not in service.key
    assert service.policy in ("Cluster", "Local")
    assert len(service.vips) <= MAX_VIPS_PER_SERVICE and len(set(service.vips)) == len(
        service.vips)
    for addr in service.vips:
        assert ipaddress.ip_address(str(addr)) == addr and "%" not in str(addr)


@FUZZ
@given(obj=hostile_slices)
def test_parse_endpoint_slice_never_raises_and_keeps_only_node_names(obj: Any) -> None:
    found, refusals = parse_endpoint_slice(obj)
    for r in refusals:
        assert "\n" not in r.name and "\n" not in r.reason
        assert len(r.name) < 400 and len(r.reason) < 1000
    if found is None:
        return
    assert found.service_key.count("/") == 1
    for name in found.ready_nodes | found.serving_nodes:
        validate.node_name(name)
