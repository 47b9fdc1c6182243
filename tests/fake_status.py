"""A StatusProvider with the data of a realistic leaf, for the status service tests.

A plain class implementing the Protocol (not a mock): four nodes in the four situations the
agent distinguishes (BGP annotated, BGP from LLDP and cordoned, static, VXLAN), the routes and
VTEP that go with them (one route missing, one stale), six headroom resources, real pods fed
through agent.cluster.pod_index so that locate() is the production function, and Service VIPs
in every state, built by the production agent.status.services from plan VIPs and FIB hops.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from agent.apply.contract import ApplyResult
from agent.cluster.nodes import Refusal
from agent.cluster.pod_index import PodIndex
from agent.plan.model import ServiceVip
from agent.status.locate import locate
from agent.status.model import (
    AgentStatus,
    AttachmentInfo,
    FibHop,
    HeadroomInfo,
    KubernetesConnection,
    LocateResult,
    RouteInfo,
    ServiceInfo,
    StatusProvider,
    VtepInfo,
    assess_health,
)
from agent.status.services import service_infos

STARTED = 1_795_000_000.0  # a fixed start: outputs are stable


def pod(
    name: str,
    namespace: str,
    node: str,
    ips: Sequence[str] = (),
    *,
    phase: str = "Running",
    host_network: bool = False,
    created: str = "2026-11-20T10:00:00Z",
) -> dict:
    """A Pod as the informer stores it (raw dict from the API server)."""
    status: dict = {"phase": phase}
    if ips:
        status["podIP"] = ips[0]
        status["podIPs"] = [{"ip": ip} for ip in ips]
    spec: dict = {"nodeName": node, "containers": [{"name": "main", "image": "nginx"}]}
    if host_network:
        spec["hostNetwork"] = True
    return {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {"name": name, "namespace": namespace, "creationTimestamp": created},
        "spec": spec,
        "status": status,
    }


ATTACHMENTS = (
    AttachmentInfo(
        port="swp1",
        node="node-a",
        source="annotation",
        routing="bgp",
        bgp_state="established",
        prefixes=("10.244.1.0/24", "fd00:10:244:1::/64", "192.168.10.11/32"),
        prefixes_accepted=3,
        node_ips=("192.168.10.11",),
    ),
    AttachmentInfo(
        port="swp2",
        node="node-b",
        source="lldp",
        routing="bgp",
        bgp_state="established",
        prefixes=("10.244.2.0/24", "192.168.10.12/32"),
        prefixes_accepted=2,
        draining=True,
        node_ips=("192.168.10.12",),
    ),
    AttachmentInfo(
        port="swp3",
        node="node-c",
        source="static",
        routing="static",
        bgp_state="not_configured",
        prefixes=("10.244.3.0/24",),
        node_ips=("192.168.10.13",),
    ),
    AttachmentInfo(
        port="swp4",
        node="node-d",
        source="annotation",
        routing="vxlan",
        bgp_state="not_configured",
        prefixes=("10.244.4.0/24",),
        node_ips=("192.168.10.14",),
        vtep="192.168.10.14",
    ),
)

ROUTES = (
    RouteInfo("10.244.1.0/24", "node-a", "bgp", "fe80::a8c1:abff:fe12:3401", "swp1", True, True),
    RouteInfo("fd00:10:244:1::/64", "node-a", "bgp", "fe80::a8c1:abff:fe12:3401", "swp1",
              True, True),
    RouteInfo("10.244.2.0/24", "node-b", "bgp", "fe80::a8c1:abff:fe12:3402", "swp2", True, True),
    RouteInfo("10.244.3.0/24", "node-c", "static", "192.168.10.13", "", True, True),
    RouteInfo("10.244.4.0/24", "node-d", "vxlan", "10.244.4.0", "flannel.1", True, False),
    RouteInfo("10.244.9.0/24", "", "static", "192.168.10.19", "", False, True),
)

VTEPS = (
    VtepInfo("node-d", "192.168.10.14", "aa:bb:cc:00:00:04", "10.244.4.0/24", 1, True, True),
)

SPECTRUM2 = "Spectrum-2 (Cumulus Linux 5 scale, lpm-balanced profile)"
HEADROOM = (
    HeadroomInfo("ipv4_routes", 1204, 1206, 81920, SPECTRUM2, 26900, 1.5, "ok", 4096, 1206,
                 40300, "devlink:pci/0000:03:00.0:/kvd/hash_single"),
    HeadroomInfo("ipv6_routes", 310, 311, 40960, SPECTRUM2, 38600, 0.8, "ok", 2048, 311),
    HeadroomInfo("nexthops", 64, 66, 4096, SPECTRUM2, 1300, 1.6, "ok", 204, 66),
    HeadroomInfo("neighbors", None, 96, 32768, "config", 10900, 0.3, "ok", 1638, 96),
    HeadroomInfo("fdb_entries", None, 12, None, "unknown", None, None, "unknown", 0, 12),
    HeadroomInfo("remote_vteps", 1, 1, 128, "config", 120, 0.8, "ok", 6, 1),
)

# The plan's VIPs: ok with ECMP over two nodes, a Local one whose node does not announce it
# (no-announcer), one shared by two Services (mixed policy), one refused, and an IPv6 one.
SERVICE_VIPS = (
    ServiceVip("203.0.113.10", "203.0.113.10/32", ("shop/web",), "Cluster", ("node-a", "node-b")),
    ServiceVip("203.0.113.20", "203.0.113.20/32", ("shop/db",), "Local", ("node-a",)),
    ServiceVip("203.0.113.30", "203.0.113.30/32", ("shop/api", "shop/api-canary"), "mixed",
               ("node-a", "node-b")),
    ServiceVip("198.51.100.7", "198.51.100.7/32", ("shop/legacy",), "Cluster",
               refused="198.51.100.7 is outside fabric.service_pools"),
    ServiceVip("2001:db8:5::10", "2001:db8:5::10/128", ("shop/web",), "Cluster", ("node-a",)),
)
_LL = "fe80::a8c1:abff:fe12:34"
# What the leaf's FIB holds for them: BGP next hops on the nodes' ports (one via an uplink).
VIP_FIB = {
    "203.0.113.10/32": (FibHop("bgp", "swp1", _LL + "01"), FibHop("bgp", "swp2", _LL + "02")),
    "203.0.113.20/32": (FibHop("bgp", "swp51", "fe80::1"),),  # via a spine: no node here
    "203.0.113.30/32": (FibHop("bgp", "swp2", _LL + "02"),),
    "2001:db8:5::10/128": (FibHop("bgp", "swp1", _LL + "01"),),
}

PODS = {
    "node-a": [
        pod("web-1", "shop", "node-a", ["10.244.1.17", "fd00:10:244:1::17"]),
        pod("coredns-5d78c9869d-x2x7q", "kube-system", "node-a", ["10.244.1.2"]),
        pod("kube-proxy-7kq2p", "kube-system", "node-a", ["192.168.10.11"], host_network=True),
    ],
    "node-b": [pod("db-0", "shop", "node-b", ["10.244.2.9"])],
    "node-c": [pod("batch-7", "jobs", "node-c", ["10.244.3.40"])],
    "node-d": [pod("cache-0", "shop", "node-d", ["10.244.4.5"])],
}


class FakeProvider:
    """Implements agent.status.model.StatusProvider with fixed, realistic data."""

    def __init__(self) -> None:
        self.index = PodIndex()
        self.index.set_node_ips(ip for a in ATTACHMENTS for ip in a.node_ips)
        for node, pods in PODS.items():
            self.index.replace_node(node, pods)
        self.kubernetes = KubernetesConnection(
            connected=True,
            synced=True,
            seconds_since_contact=0.4,
            resource_version="48213",
            nodes=212,
        )
        self.applies = (
            ApplyResult("frr", True, "reloaded", STARTED + 61.5, 0.712),
            ApplyResult("dataplane", True, "applied", STARTED + 61.2, 0.014),
        )
        self.refusals = (
            Refusal("node", "'node-x\\nrouter bgp 1'", "node name 'node-x\\nrouter bgp 1' is "
                    "not a DNS-1123 subdomain"),
            Refusal("prefix", "node-b 10.99.0.0/24", "outside fabric.pod_supernets"),
        )
        self.calls: list[str] = []

    def status(self) -> AgentStatus:
        self.calls.append("status")
        health, reasons = assess_health(self.kubernetes, self.applies)
        return AgentStatus(
            health=health,
            health_reasons=reasons,
            version="0.1.0",
            started_at=STARTED,
            switch_hostname="leaf1",
            kubernetes=self.kubernetes,
            last_applies=self.applies,
            refusals=self.refusals,
            last_reconcile_latency_seconds=0.874,
        )

    def attachments(self) -> Sequence[AttachmentInfo]:
        self.calls.append("attachments")
        return [dataclasses.replace(a, pods=self.index.count(a.node)) for a in ATTACHMENTS]

    def routes(self) -> Sequence[RouteInfo]:
        return ROUTES

    def vteps(self) -> Sequence[VtepInfo]:
        return VTEPS

    def headroom(self) -> Sequence[HeadroomInfo]:
        return HEADROOM

    def services(self) -> Sequence[ServiceInfo]:
        return service_infos(SERVICE_VIPS, ATTACHMENTS, VIP_FIB)

    def locate(self, query: str) -> LocateResult:
        return locate(query, self.index, self.attachments(), ROUTES, self.services())


def check_protocol() -> StatusProvider:
    # Typed assignment: a type checker flags FakeProvider drifting from the Protocol.
    provider: StatusProvider = FakeProvider()
    return provider

