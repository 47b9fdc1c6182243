"""Service VIPs in the status (issue 12, item 6), without gRPC: the rows of `fabricctl
services` from a real plan and FIB reading, `locate <VIP>`, and the proto's words for every
state and event kind. Reading the FIB itself: tests/test_services_status_fib.py.
"""

from __future__ import annotations

import dataclasses

import pytest

from agent.events import Event
from agent.plan.model import ServiceVip
from agent.status.grpc_gen import status_pb2 as pb
from agent.status.model import AttachmentInfo, FibHop, ServiceInfo
from agent.status.server import (
    event_from_proto,
    event_to_proto,
    service_from_proto,
    service_to_proto,
)
from agent.status.services import announcing_nodes, service_infos
from agent.status.view import AgentView
from agent.vocabulary import EVENT_KINDS, LOCATE_MATCHES, SERVICE_STATES
from tests.test_services_plan import THREE, endpoints, plan_of, service
from tests.test_services_status_fib import LL, state_with

# ---- the rows of `fabricctl services` ---------------------------------------------------------

ATTACHED = (
    AttachmentInfo("swp1", "n1", "annotation", "bgp", node_ips=("192.168.10.1",)),
    AttachmentInfo("swp2", "n2", "annotation", "bgp", node_ips=("192.168.10.2",)),
    AttachmentInfo("swp3", "n3", "annotation", "static", node_ips=("192.168.10.3",)),
)


def test_announcing_nodes_by_port_for_bgp_and_by_internal_ip_for_the_agents_routes() -> None:
    port_node = {a.port: a.node for a in ATTACHED}
    ip_node = {"192.168.10.3": "n3", "192.168.10.1": "n1"}
    hops = (FibHop("bgp", "swp2", LL), FibHop("bgp", "swp51", "fe80::51"),  # a spine: no node
            FibHop("agent", "swp3", "192.168.10.3"),
            FibHop("agent", "swp1", "10.0.0.9"),  # not a node's address
            FibHop("bgp", "swp3", "192.168.10.1"))  # bgp by port: swp3 is n3
    assert announcing_nodes(hops, port_node, ip_node) == ("n2", "n3")


@pytest.mark.parametrize(("vip", "hops", "state", "announcing"), [
    (ServiceVip("203.0.113.10", "203.0.113.10/32", ("a/web",), "Cluster", ("n1", "n2")),
     (FibHop("bgp", "swp2", LL),), "ok", ("n2",)),
    (ServiceVip("203.0.113.10", "203.0.113.10/32", ("a/web",), "Local", ("n1",)),
     (), "no-announcer", ()),
    # Announced only by a node the plan does not permit (yet): no permitted node serves it.
    (ServiceVip("203.0.113.10", "203.0.113.10/32", ("a/web",), "Local", ("n1",)),
     (FibHop("bgp", "swp2", LL),), "no-announcer", ("n2",)),
    (ServiceVip("203.0.113.10", "203.0.113.10/32", ("a/web",), "Local", ()),
     (), "no-announcer", ()),
    (ServiceVip("203.0.113.10", "203.0.113.10/32", ("a/web",), "Cluster",
                refused="203.0.113.10 is outside fabric.service_pools"),
     (FibHop("bgp", "swp1", LL),), "refused", ("n1",)),  # what the FIB says is still shown
    (ServiceVip("203.0.113.10", "203.0.113.10/32", ("a/web",), "Cluster", ("n3",)),
     (FibHop("agent", "swp3", "192.168.10.3"),), "ok", ("n3",)),
])
def test_the_state_of_a_vip(vip: ServiceVip, hops: tuple[FibHop, ...], state: str,
                            announcing: tuple[str, ...]) -> None:
    (row,) = service_infos([vip], ATTACHED, {vip.prefix: hops})
    assert (row.state, row.nodes_announcing) == (state, announcing)
    assert row.reason == vip.refused
    assert row.ports == {n: f"swp{n[1]}" for n in sorted({*vip.nodes_permitted, *announcing})}


def test_without_a_fib_reading_announcers_and_state_are_unknown_not_guessed() -> None:
    vips = [ServiceVip("203.0.113.10", "203.0.113.10/32", ("a/web",), "Cluster", ("n1",)),
            ServiceVip("203.0.113.11", "203.0.113.11/32", ("a/bad",), "Cluster",
                       refused="why")]
    rows = service_infos(vips, ATTACHED, None)
    assert [(r.state, r.nodes_announcing) for r in rows] == [("unknown", None),
                                                              ("refused", None)]


def test_services_from_a_real_plan_and_fib() -> None:
    """A Cluster Service on three nodes, a Local one whose only endpoint is on n3, a shared
    VIP and a refused one: the plan's verdict, the FIB's next hops, the state."""
    slices = [endpoints("db", ("n3", True))]
    plan = plan_of(THREE, [service("web", "203.0.113.10"),
                           service("db", "203.0.113.20", policy="Local"),
                           service("api", "203.0.113.30"), service("api2", "203.0.113.30"),
                           service("bad", "127.0.0.1")], slices)
    state = state_with(plan)
    state.vip_fib = {
        "203.0.113.10/32": (FibHop("bgp", "swp1", LL), FibHop("bgp", "swp2", "fe80::2")),
        "203.0.113.20/32": (FibHop("bgp", "swp1", LL),),  # n1 still has it; n3 does not
        "203.0.113.30/32": (FibHop("bgp", "swp3", "fe80::3"),),
    }
    rows = {r.vip: r for r in AgentView(state).services()}
    assert list(rows) == ["127.0.0.1", "203.0.113.10", "203.0.113.20", "203.0.113.30"]
    web = rows["203.0.113.10"]
    assert dataclasses.asdict(web) == {
        "vip": "203.0.113.10", "service": "shop/web", "services": ("shop/web",),
        "policy": "Cluster", "nodes_permitted": ("n1", "n2", "n3"),
        "nodes_announcing": ("n1", "n2"), "state": "ok", "reason": None,
        "prefix": "203.0.113.10/32", "ports": {"n1": "swp1", "n2": "swp2", "n3": "swp3"}}
    db = rows["203.0.113.20"]
    assert (db.policy, db.nodes_permitted, db.nodes_announcing, db.state) == (
        "Local", ("n3",), ("n1",), "no-announcer")
    api = rows["203.0.113.30"]
    assert (api.service, api.services, api.state) == ("shop/api", ("shop/api", "shop/api2"), "ok")
    bad = rows["127.0.0.1"]
    assert (bad.state, bad.reason, bad.nodes_permitted) == (
        "refused", "127.0.0.1 is a loopback address", ())
    # locate <VIP> from the same view: the serving node and its port first.
    found = AgentView(state).locate("203.0.113.10")
    assert (found.matched, found.node, found.port, found.routing) == (
        "service_vip", "n1", "swp1", "bgp")
    assert found.service == web
    db_found = AgentView(state).locate("203.0.113.20")
    assert (db_found.node, db_found.port) == ("n1", "swp1")  # announcing, though not permitted


def test_locate_prefers_a_node_or_pod_at_the_address_over_a_vip() -> None:
    plan = plan_of(THREE, [service("web", "192.168.10.2", "203.0.113.10")])
    state = state_with(plan)
    state.vip_fib = {}
    view = AgentView(state)
    assert view.locate("192.168.10.2").matched == "node_ip"  # refused as n2's InternalIP
    assert view.locate("203.0.113.10").matched == "service_vip"
    assert view.locate("203.0.113.10").node == "n1"  # no announcer: the first permitted


def test_the_codec_keeps_unknown_apart_from_empty() -> None:
    vip = ServiceVip("203.0.113.10", "203.0.113.10/32", ("a/web", "b/web"), "mixed", ("n1",))
    for fib in (None, {}, {vip.prefix: (FibHop("bgp", "swp1", LL),)}):
        (row,) = service_infos([vip], ATTACHED, fib)
        assert service_from_proto(service_to_proto(row)) == row


@pytest.mark.parametrize("state", SERVICE_STATES)
def test_every_state_has_its_proto_value(state: str) -> None:
    row = ServiceInfo(vip="203.0.113.10", services=("a/web",), policy="Cluster",
                      nodes_announcing=(), state=state, prefix="203.0.113.10/32")
    assert service_to_proto(row).state != pb.SERVICE_VIP_STATE_UNSPECIFIED
    assert service_from_proto(service_to_proto(row)).state == state


@pytest.mark.parametrize("kind", EVENT_KINDS)
def test_every_event_kind_has_its_proto_value(kind: str) -> None:
    message = event_to_proto(Event(kind, 1.0, "s", "m"))
    assert message.kind != pb.EVENT_KIND_UNSPECIFIED
    assert event_from_proto(message).kind == kind


def test_every_locate_match_has_its_proto_value() -> None:
    names = {pb.LocateMatch.Name(v)[len("LOCATE_MATCH_"):].lower()
             for v in pb.LocateMatch.values() if v}
    assert names == set(LOCATE_MATCHES)
