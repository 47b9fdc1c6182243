"""The cluster's need: how many hardware entries the desired state takes, in
total, and how many more nodes fit.

The cost model (CostModel: what a node adds per table, as switchdev and SONiC's CRM count
entries; README, "Hardware table headroom"); per-node costs of a plan are
computed by agent.plan.costs with it. Per-node costs are additive on purpose: admission refuses
whole nodes, so it needs what each node alone would add. Sharing (two overlay nodes behind one
public IP) makes the real total smaller, never larger: the model errs on the safe side.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction

from agent.headroom.resources import RESOURCES, Capacity, Counts, Resource, capacity_value, usable


@dataclass(frozen=True)
class CostModel:
    """Entries per node beyond its routes; the defaults are the reference's model. A BGP
    unnumbered leaf on SONiC may hold two neighbour entries per node (the IPv6 link-local and
    the 169.254.0.1 stand-in for IPv4 routes): set attached_neighbors=2 there."""

    attached_neighbors: int = 1
    attached_nexthops: int = 1
    overlay_neighbors: int = 1
    overlay_nexthops: int = 1
    overlay_fdb_entries: int = 1
    overlay_remote_vteps: int = 1


DEFAULT_COST_MODEL = CostModel()


def total(costs: Mapping[str, Counts] | Iterable[Counts]) -> Counts:
    """The sum of per-node costs: the desired usage of the cluster."""
    items = costs.values() if isinstance(costs, Mapping) else costs
    result = Counts()
    for cost in items:
        result = result + cost
    return result


def nominal_node_cost(model: CostModel = DEFAULT_COST_MODEL) -> Counts:
    """What a typical new node costs when there is no node to learn from: an attached BGP node
    with one IPv4 pod CIDR and its host route."""
    return Counts(ipv4_routes=2, nexthops=model.attached_nexthops,
                  neighbors=model.attached_neighbors)


@dataclass(frozen=True)
class PerNodeCost:
    """Cost of one more node, learned from the current ones: `average` for the expected
    forecast, `worst` (the most expensive node, per resource) for the safe one."""

    nodes: int
    average: Mapping[Resource, Fraction]
    worst: Counts

    def average_float(self) -> dict[Resource, float]:
        return {r: float(v) for r, v in self.average.items()}


def per_node_cost(
    costs: Mapping[str, Counts], model: CostModel = DEFAULT_COST_MODEL
) -> PerNodeCost:
    """Average and worst case per resource over the current nodes; with no node yet, both are
    the nominal node (a forecast for an empty leaf still says something)."""
    if not costs:
        nominal = nominal_node_cost(model)
        return PerNodeCost(0, {r: Fraction(v) for r, v in nominal.items()}, nominal)
    n = len(costs)
    summed = total(costs)
    worst = Counts(**{r: max(c[r] for c in costs.values()) for r in RESOURCES})
    return PerNodeCost(n, {r: Fraction(summed[r], n) for r in RESOURCES}, worst)


def nodes_left(
    capacity: Capacity | int | None,
    reserve_percent: float,
    used_or_desired: int,
    per_node_cost: float | int | Fraction,
) -> int | None:
    """How many more nodes of `per_node_cost` fit below capacity minus the reserve: rounded
    down, never negative. None when this resource does not limit (capacity unknown, or a node
    costs none of it)."""
    cap = capacity_value(capacity)
    cost = Fraction(per_node_cost) if not isinstance(per_node_cost, Fraction) else per_node_cost
    if cap is None or cost <= 0:
        return None
    room = usable(cap, reserve_percent) - used_or_desired
    if room <= 0:
        return 0
    return math.floor(Fraction(room) / cost)


def baseline(desired: Counts, observed: Mapping[str, int] | None) -> dict[Resource, int]:
    """Per resource the larger of what the hardware holds and what the cluster wants. Observed
    usage includes entries that are not the cluster's (uplink routes, the leaf's own
    neighbours), desired may not be programmed yet: the larger is the safe base."""
    observed = observed or {}
    return {r: max(desired[r], int(observed.get(r, 0))) for r in RESOURCES}
