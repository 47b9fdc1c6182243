"""nexthop_groups: ECMP groups as a headroom resource of their own (issue 12, item 5). Desired is
the distinct multipath next-hop sets the plan asks for, used what the hardware reports (CRM on
SONiC, the agent's own multipath routes on Linux), capacity a profile figure or CRM's; the row
is built like every other resource's."""

from __future__ import annotations

from agent.headroom.profiles import capacity_for
from agent.headroom.report import HeadroomInfo, build_report
from agent.headroom.resources import RESOURCES, Capacity, Observed
from agent.headroom.thresholds import ThresholdTracker
from agent.headroom.usage import per_node_cost
from agent.plan.costs import desired_total
from tests.test_services_plan import service
from tests.test_vip_routes_plan import STATIC3, config, plan_of, static


def row(rows: list[HeadroomInfo], resource: str) -> HeadroomInfo:
    return next(r for r in rows if r.resource == resource)


def test_nexthop_groups_is_a_resource_between_nexthops_and_neighbors() -> None:
    assert RESOURCES.index("nexthop_groups") == RESOURCES.index("nexthops") + 1


def test_the_report_row_has_the_plans_groups_as_desired_and_crms_as_used() -> None:
    nodes = [*STATIC3, static("s4", 4), static("s5", 5)]
    p = plan_of(nodes, [service("web", "203.0.113.10"), service("api", "203.0.113.11")],
                cfg=config(vip_ecmp_width=2))
    caps = capacity_for("generic")
    desired = desired_total(p)
    rows = build_report(caps, desired, per_node_cost(p.costs), 5,
                        observed={"nexthop_groups": Observed(3, "crm")})
    groups = row(rows, "nexthop_groups")
    assert (groups.desired, groups.used, groups.used_source) == (1, 3, "crm")
    assert (groups.capacity, groups.source) == (512, caps["nexthop_groups"].source)
    assert groups.percent == 0.6  # the larger of used and desired: 3 of 512
    # No node costs a group by itself: the forecast in nodes is not limited by groups.
    assert groups.nodes_left is None
    # The VIP routes counted once each in the route table, beside the nodes' own.
    assert row(rows, "ipv4_routes").desired == sum(c.ipv4_routes for c in p.costs.values()) + 2


def test_a_full_group_table_raises_its_threshold() -> None:
    tracker = ThresholdTracker()
    crossings = tracker.update_all({"nexthop_groups": 450}, {"nexthop_groups": 512})
    assert [(c.resource, c.kind) for c in crossings] == [("nexthop_groups", "raised")]
    rows = build_report({"nexthop_groups": Capacity(512, "crm")}, desired_total(
        plan_of(STATIC3, [])), per_node_cost({}), 5, thresholds=tracker)
    assert row(rows, "nexthop_groups").threshold == "raised"
