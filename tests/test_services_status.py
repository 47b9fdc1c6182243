"""Service VIPs in the status (issue 12, item 6), without gRPC: the rows of `fabricctl
services` from a real plan and FIB reading, `locate <VIP>`, the events between two plans
(input/expected pairs), the status file's bounded part, and the proto's words for every state
and event kind. Reading the FIB itself: tests/test_services_status_fib.py.
"""

from __future__ import annotations

import dataclasses

import pytest

from agent.events import Event
from agent.plan.model import ServiceVip
from agent.status.file import status_document, summary_line
from agent.status.grpc_gen import status_pb2 as pb
from agent.status.model import AttachmentInfo, FibHop, ServiceInfo
from agent.status.server import (
    event_from_proto,
    event_to_proto,
    service_from_proto,
    service_to_proto,
)
from agent.status.services import (
    EVENTS_PER_KIND,
    SUMMARY_MAX_VIPS,
    announcing_nodes,
    service_events,
    service_infos,
    services_summary,
)
from agent.status.view import AgentView
from agent.vocabulary import EVENT_KINDS, LOCATE_MATCHES, SERVICE_STATES
from tests.test_services_plan import THREE, endpoints, node, plan_of, service
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


# ---- events between two plans -----------------------------------------------------------------

def sv(address: str, *nodes: str, refused: str | None = None,
       services: tuple[str, ...] = ("shop/web",), policy: str = "Cluster") -> ServiceVip:
    return ServiceVip(address, f"{address}/32", services, policy, nodes, refused)


A, B = "203.0.113.10", "203.0.113.20"
CASES = [
    ("a new VIP", [], [sv(A, "n1", "n2")],
     [("service_vip_added", A, "shop/web (Cluster); nodes permitted: n1, n2")]),
    ("a new VIP nobody may announce yet (Local, no endpoint)", [], [sv(A, policy="Local")],
     [("service_vip_added", A, "shop/web (Local); nodes permitted: none yet")]),
    ("a VIP no Service names any more", [sv(A, "n1"), sv(B, "n1")], [sv(B, "n1")],
     [("service_vip_removed", A, "no longer named by shop/web (Cluster)")]),
    ("a new refused VIP", [], [sv(A, refused="outside fabric.service_pools")],
     [("vip_refused", A, "shop/web (Cluster): outside fabric.service_pools")]),
    ("an accepted VIP becomes refused (no room left)", [sv(A, "n1")],
     [sv(A, refused="headroom: ipv4_routes: no room")],
     [("vip_refused", A, "shop/web (Cluster): headroom: ipv4_routes: no room")]),
    ("a refused VIP is accepted", [sv(A, refused="headroom")], [sv(A, "n1")],
     [("service_vip_added", A, "shop/web (Cluster); nodes permitted: n1")]),
    ("refused for another reason", [sv(A, refused="one")], [sv(A, refused="two")],
     [("vip_refused", A, "shop/web (Cluster): two")]),
    ("refused for the same reason: nothing new", [sv(A, refused="one")], [sv(A, refused="one")],
     []),
    ("only the permitted nodes change: no event", [sv(A, "n1")], [sv(A, "n2", "n3")], []),
    ("a second Service on a VIP: no event", [sv(A, "n1")],
     [sv(A, "n1", services=("shop/a", "shop/web"))], []),
    ("a refused VIP goes away", [sv(A, refused="one")], [],
     [("service_vip_removed", A, "no longer named by shop/web (Cluster)")]),
    ("removals first, then the rest in address order",
     [sv(B, "n1")], [sv(A, "n1"), sv("203.0.113.30", refused="x")],
     [("service_vip_removed", B, "no longer named by shop/web (Cluster)"),
      ("service_vip_added", A, "shop/web (Cluster); nodes permitted: n1"),
      ("vip_refused", "203.0.113.30", "shop/web (Cluster): x")]),
]


@pytest.mark.parametrize(("name", "before", "after", "expected"), CASES,
                         ids=[c[0] for c in CASES])
def test_service_events(name: str, before: list[ServiceVip], after: list[ServiceVip],
                        expected: list[tuple[str, str, str]]) -> None:
    events = service_events(before, after, 1234.5)
    assert [(e.kind, e.subject, e.message) for e in events] == expected
    assert all(e.time == 1234.5 for e in events)


def test_service_events_between_two_real_plans() -> None:
    first = plan_of(THREE, [service("web", "203.0.113.10"), service("old", "203.0.113.40")])
    nodes = [node("n1", 1), node("n2", 2, ready="False"), node("n3", 3)]
    second = plan_of(nodes, [service("web", "203.0.113.10"), service("new", "203.0.113.20"),
                             service("bad", "198.51.100.1")])
    events = service_events(first.services, second.services, 1.0)
    assert [(e.kind, e.subject) for e in events] == [
        ("service_vip_removed", "203.0.113.40"),
        ("vip_refused", "198.51.100.1"),
        ("service_vip_added", "203.0.113.20"),
    ]
    assert events[2].message == "shop/new (Cluster); nodes permitted: n1, n3"
    assert service_events(second.services, second.services, 2.0) == []


def test_a_plan_with_thousands_of_new_vips_publishes_a_bounded_number_of_events() -> None:
    after = [sv(f"10.0.{i // 256}.{i % 256}", "n1") for i in range(250)]
    after += [sv(f"10.1.0.{i}", refused="outside fabric.service_pools") for i in range(5)]
    events = service_events([], after, 1.0)
    kinds = [e.kind for e in events]
    assert kinds.count("service_vip_added") == EVENTS_PER_KIND
    assert kinds.count("vip_refused") == 5  # under the bound: every one
    assert [e.subject for e in events[:2]] == ["10.0.0.0", "10.0.0.1"]
    last = events[-1]
    assert (last.kind, last.subject, last.message) == (
        "service_vip_added", "151 more VIPs",
        "151 more VIPs added (fabricctl services lists them)")
    assert len(service_events([], after[:EVENTS_PER_KIND], 1.0)) == EVENTS_PER_KIND  # no summary


# ---- the status file --------------------------------------------------------------------------

def test_the_status_file_lists_vips_bounded_problems_first() -> None:
    many = [ServiceInfo(vip=f"203.0.113.{i}", services=("shop/web",), policy="Cluster",
                        nodes_permitted=("n1",), nodes_announcing=("n1",), state="ok",
                        prefix=f"203.0.113.{i}/32") for i in range(1, 201)]
    many[150] = dataclasses.replace(many[150], state="no-announcer", nodes_announcing=())
    many[199] = dataclasses.replace(many[199], state="refused", reason="why",
                                    nodes_permitted=())
    doc = services_summary(many)
    assert doc["vips"] == 200 and doc["truncated"] is True
    assert doc["by_state"] == {"ok": 198, "no-announcer": 1, "refused": 1, "unknown": 0}
    assert len(doc["listed"]) == SUMMARY_MAX_VIPS
    assert [e["vip"] for e in doc["listed"][:3]] == ["203.0.113.200", "203.0.113.151",
                                                       "203.0.113.1"]
    assert doc["listed"][0] == {"vip": "203.0.113.200", "services": ["shop/web"],
                                "policy": "Cluster", "state": "refused", "nodes_permitted": [],
                                "nodes_announcing": ["n1"], "reason": "why"}


def test_the_status_file_and_systemd_status_show_the_services() -> None:
    state = state_with(plan_of(THREE, [service("web", "203.0.113.10"),
                                       service("bad", "127.0.0.1")]))
    state.vip_fib = {"203.0.113.10/32": (FibHop("bgp", "swp1", LL),)}
    doc = status_document(state)
    assert doc["services"]["by_state"] == {"ok": 1, "no-announcer": 0, "refused": 1,
                                           "unknown": 0}
    assert [e["vip"] for e in doc["services"]["listed"]] == ["127.0.0.1", "203.0.113.10"]
    assert "; 2 Service VIPs (1 ok, 1 refused);" in summary_line(state)
    quiet = state_with(plan_of(THREE, []))
    assert status_document(quiet)["services"] == {
        "vips": 0, "by_state": {"ok": 0, "no-announcer": 0, "refused": 0, "unknown": 0},
        "listed": [], "truncated": False}
    assert "Service VIPs" not in summary_line(quiet)
