"""Admission and the headroom report (agent/plan/admission.py): tiny capacities so every
decision is visible."""

from __future__ import annotations

import itertools
import random

import pytest

from agent.cluster.nodes import Node
from agent.headroom.report import build_report
from agent.headroom.resources import Capacity, Counts, Observed
from agent.headroom.thresholds import ThresholdTracker
from agent.headroom.usage import per_node_cost, total
from agent.plan.admission import Candidate, admit, candidates_for

VTEP = Counts(ipv4_routes=1, nexthops=1, neighbors=1, fdb_entries=1, remote_vteps=1)
BGP = Counts(ipv4_routes=2, nexthops=1, neighbors=1)


def cands(*names: str) -> list[Candidate]:
    """Candidates created one day apart, in the order given (first = oldest)."""
    return [Candidate(n, f"2026-01-{i + 1:02d}T00:00:00Z") for i, n in enumerate(names)]


def test_tiny_capacity_admits_oldest_and_refuses_newest_with_numbers() -> None:
    c = cands("a", "b", "c", "d", "e")
    result = admit(c, {n.node: VTEP for n in c}, {"remote_vteps": 3}, 0)
    assert result.admitted == ("a", "b", "c")
    assert result.refused_nodes == ("d", "e")
    first = result.refused[0]
    assert first.resources == ("remote_vteps",) and not first.was_programmed
    assert "remote_vteps: needs 1, 0 of 3 left (capacity 3 minus the 0% reserve)" in first.reason
    assert "waits behind older node d" in result.refused[1].reason
    assert result.planned == Counts(3, 0, 3, 3, 3, 3)
    assert result.budget["remote_vteps"] == 3 and result.budget["ipv4_routes"] is None


def test_age_is_creation_time_then_name() -> None:
    same = "2026-01-01T00:00:00Z"
    c = [Candidate("zed", same), Candidate("amy", same), Candidate("old", "2025-06-01T00:00:00Z")]
    result = admit(c, {n.node: VTEP for n in c}, {"remote_vteps": 2}, 0)
    assert result.admitted == ("old", "amy")
    assert result.refused_nodes == ("zed",)


def test_reserve_is_honoured() -> None:
    c = cands(*[f"n{i}" for i in range(12)])
    costs = {n.node: Counts(ipv4_routes=10) for n in c}
    result = admit(c, costs, {"ipv4_routes": Capacity(100, "config")}, 5)
    assert len(result.admitted) == 9  # 95 usable, not 100
    assert result.planned.ipv4_routes == 90
    assert "5% reserve" in result.refused[0].reason
    assert "5 of 95 left (capacity 100" in result.refused[0].reason
    assert len(admit(c, costs, {"ipv4_routes": 100}, 0).admitted) == 10


def test_programmed_nodes_are_kept_even_when_older_nodes_wait() -> None:
    c = cands("old1", "old2", "new1", "new2")
    costs = {n.node: VTEP for n in c}
    result = admit(c, costs, {"remote_vteps": 2}, 0, programmed={"new1", "new2"})
    assert result.admitted == ("new1", "new2")  # working state is not evicted
    assert result.refused_nodes == ("old1", "old2")
    assert not any(r.was_programmed for r in result.refused)


def test_refused_node_is_admitted_when_room_returns() -> None:
    c = cands("a", "b", "c")
    costs = {n.node: VTEP for n in c}
    first = admit(c, costs, {"remote_vteps": 2}, 0)
    assert first.admitted == ("a", "b") and first.refused_nodes == ("c",)
    # b leaves the cluster; the same pure call, re-run with the new state, admits c.
    remaining = [x for x in c if x.node != "b"]
    second = admit(remaining, costs, {"remote_vteps": 2}, 0, programmed=first.admitted)
    assert second.admitted == ("a", "c") and second.refused == ()


def test_raised_capacity_admits_the_waiting_oldest_first() -> None:
    c = cands("a", "b", "c", "d")
    costs = {n.node: VTEP for n in c}
    first = admit(c, costs, {"remote_vteps": 1}, 0)
    second = admit(c, costs, {"remote_vteps": 3}, 0, programmed=first.admitted)
    assert second.admitted == ("a", "b", "c") and second.refused_nodes == ("d",)


def test_programmed_node_that_no_longer_fits_is_withdrawn_and_says_so() -> None:
    c = cands("a", "b", "c")
    costs = {n.node: VTEP for n in c}
    result = admit(c, costs, {"remote_vteps": 2}, 0, programmed={"a", "b", "c"})
    assert result.admitted == ("a", "b")
    (refusal,) = result.refused
    assert refusal.node == "c" and refusal.was_programmed
    assert "no longer fits" in refusal.reason


def test_a_newer_programmed_node_refused_does_not_block_an_older_waiting_one() -> None:
    c = cands("a", "w", "p")  # p is the newest
    costs = {"a": Counts(remote_vteps=2), "w": Counts(remote_vteps=1),
             "p": Counts(remote_vteps=2)}
    result = admit(c, costs, {"remote_vteps": 3}, 0, programmed={"a", "p"})
    assert result.admitted == ("a", "w")
    assert result.refused_nodes == ("p",) and result.refused[0].was_programmed


def test_newer_small_node_waits_behind_an_older_large_one_for_the_same_resource() -> None:
    c = cands("big", "small", "bgp")
    costs = {"big": Counts(ipv4_routes=50, remote_vteps=1), "small": Counts(ipv4_routes=1),
             "bgp": Counts(ipv6_routes=1)}
    result = admit(c, costs, {"ipv4_routes": 10, "ipv6_routes": 10}, 0)
    # small would fit, but jumping the queue would starve big forever; bgp needs no IPv4 route
    # and is admitted: a full table only stops the nodes that need it.
    assert result.admitted == ("bgp",)
    assert result.refused_nodes == ("big", "small")
    assert "ipv4_routes: needs 50, 10 of 10 left" in result.refused[0].reason
    assert "waits behind older node big" in result.refused[1].reason


def test_every_short_resource_is_named() -> None:
    c = cands("a")
    result = admit(c, {"a": VTEP}, {"remote_vteps": 0, "fdb_entries": 0, "ipv4_routes": 5}, 0)
    assert result.refused[0].resources == ("fdb_entries", "remote_vteps")
    assert "fdb_entries" in result.refused[0].reason and "remote_vteps" in result.refused[0].reason


def test_baseline_used_by_others_shrinks_the_budget() -> None:
    c = cands("a", "b")
    costs = {n.node: BGP for n in c}
    result = admit(c, costs, {"ipv4_routes": 10}, 0, baseline={"ipv4_routes": 7})
    assert result.admitted == ("a",)
    assert "7 used outside the cluster" in result.refused[0].reason


def test_unlimited_resources_and_zero_cost_nodes() -> None:
    c = cands("a", "b")
    result = admit(c, {"a": BGP, "b": Counts()}, {}, 5)
    assert result.admitted == ("a", "b")
    # a node needing none of an exhausted resource is not affected by it
    full = admit(c, {"a": Counts(), "b": BGP}, {"remote_vteps": 0}, 0,
                 baseline={"remote_vteps": 9})
    assert full.admitted == ("a", "b")


def test_deterministic_under_input_reordering() -> None:
    rng = random.Random(7)
    c = [Candidate(f"n{i:02d}", f"2026-01-{rng.randint(1, 5):02d}T00:00:00Z")
         for i in range(12)]
    costs = {x.node: rng.choice([VTEP, BGP, Counts(ipv4_routes=5, remote_vteps=1)]) for x in c}
    caps = {"ipv4_routes": 30, "remote_vteps": 4}
    programmed = {"n03", "n07", "n11"}
    expected = admit(c, costs, caps, 5, programmed)
    assert expected.refused  # the case is not trivial
    for _ in range(20):
        shuffled = c[:]
        rng.shuffle(shuffled)
        cost_items = list(costs.items())
        rng.shuffle(cost_items)
        assert admit(shuffled, dict(cost_items), caps, 5, list(programmed)) == expected


def test_never_plans_beyond_capacity_minus_reserve() -> None:
    c = cands(*[f"n{i}" for i in range(8)])
    for combo in itertools.product([VTEP, BGP, Counts(ipv4_routes=7)], repeat=3):
        costs = {x.node: combo[i % 3] for i, x in enumerate(c)}
        for programmed in ({"n7"}, {"n0", "n5"}, set()):
            result = admit(c, costs, {"ipv4_routes": 20, "remote_vteps": 3}, 10, programmed)
            assert result.planned.ipv4_routes <= 18
            assert result.planned.remote_vteps <= 2
            assert set(result.admitted) | set(result.refused_nodes) == {x.node for x in c}


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="more than once"):
        admit([Candidate("a", "1"), Candidate("a", "2")], {"a": BGP}, {}, 0)
    with pytest.raises(ValueError, match="no cost"):
        admit(cands("a"), {}, {}, 0)


def test_refusal_converts_to_a_plan_refusal() -> None:
    result = admit(cands("a"), {"a": VTEP}, {"remote_vteps": 0}, 0)
    refusal = result.refused[0].as_refusal()
    assert (refusal.kind, refusal.name) == ("headroom", "a")
    assert str(refusal).startswith("headroom a: remote_vteps")


def test_candidates_for_validated_nodes() -> None:
    nodes = [Node("a", "2026-01-02T00:00:00Z", (), (), False, None, None),
             Node("b", "2026-01-01T00:00:00Z", (), (), False, None, None)]
    assert candidates_for(nodes, {"b": BGP}) == [Candidate("b", "2026-01-01T00:00:00Z")]


# ---- report --------------------------------------------------------------------------------


def test_report_rows_have_the_contract_fields() -> None:
    costs = {"a": BGP, "b": VTEP}
    caps = {"ipv4_routes": Capacity(100, "config"), "ipv6_routes": Capacity(50, "p"),
            "nexthops": Capacity(10, "p"), "neighbors": Capacity(10, "p"),
            "fdb_entries": Capacity(10, "p"), "remote_vteps": Capacity(4, "Cumulus HER")}
    tracker = ThresholdTracker()
    tracker.update("remote_vteps", 4, 4)
    rows = build_report(caps, total(costs), per_node_cost(costs), 5,
                        observed={"ipv4_routes": Observed(40, "crm"), "nexthops": 1},
                        thresholds=tracker)
    assert [r.resource for r in rows] == ["ipv4_routes", "ipv6_routes", "nexthops",
                                          "nexthop_groups", "neighbors", "fdb_entries",
                                          "remote_vteps"]
    v4 = rows[0].to_json()
    for key in ("resource", "used", "desired", "capacity", "source", "nodes_left"):
        assert key in v4
    assert (v4["used"], v4["desired"], v4["capacity"], v4["source"]) == (40, 3, 100, "config")
    assert v4["nodes_left"] == 27  # (95 - 40) // 2, worst-case node
    assert v4["percent"] == 40.0 and v4["used_source"] == "crm" and v4["reserve"] == 5
    vteps = rows[6]
    assert (vteps.used, vteps.desired, vteps.nodes_left, vteps.threshold) == \
        (None, 1, 2, "raised")  # usable 3 (4 minus 5 % rounded down), 1 desired
    assert rows[1].nodes_left is None  # no node needs IPv6: not limiting
    assert rows[1].threshold == "unknown"


def test_report_without_capacity_or_observation() -> None:
    rows = build_report({}, Counts(ipv4_routes=3), per_node_cost({}), 5)
    assert rows[0].capacity is None and rows[0].source == "unknown"
    assert rows[0].nodes_left is None and rows[0].percent is None
    assert rows[0].used is None and rows[0].admitted == 3
