"""The cluster's need: how many hardware entries the desired state takes, per node and in
total, and how many more nodes fit.

Pure functions over plan()'s output (the FRR plan's attachments with their accepted prefixes)
and the data plane's desired state (static routes, VXLAN peers). The cost model is the one of
../shared/reference/asic-scale.md:
- a node behind the leaf (attached to a server port, any routing mode): each of its routes (its
  pod CIDRs, and its host route when the plan accepts one), one neighbour and one nexthop (the
  node itself, the next hop of those routes);
- an overlay (VXLAN) node: one remote VTEP, one FDB entry (its VTEP MAC), one neighbour
  (`<subnet>.0` -> VTEP MAC), one route (its pod CIDR) and one nexthop (`<subnet>.0` onlink;
  SONiC's CRM counts VXLAN routes as routes and nexthops too).
A node both attached and in the overlay pays both. A prefix appearing twice for one node (the
plan's pod CIDR and the data plane's static route for it) is one route.

Per-node costs are additive on purpose: admission refuses whole nodes, so it needs what each
node alone would add. Sharing (two overlay nodes behind one public IP) makes the real total
smaller, never larger: the model errs on the safe side.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING

from agent.headroom.resources import RESOURCES, Capacity, Counts, Resource, capacity_value, usable

if TYPE_CHECKING:  # plan() imports this module: typing-only imports avoid the cycle
    from agent.plan.build import PlannedAttachment
    from agent.plan.model import DataplaneDesired


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


def _route_counts(prefixes: Iterable[str]) -> tuple[int, int]:
    v4 = v6 = 0
    for prefix in set(prefixes):
        if ipaddress.ip_network(prefix, strict=False).version == 4:
            v4 += 1
        else:
            v6 += 1
    return v4, v6


def node_costs(
    attachments: Iterable[PlannedAttachment],
    dataplane: DataplaneDesired | None = None,
    model: CostModel = DEFAULT_COST_MODEL,
) -> dict[str, Counts]:
    """Per node name, the entries its desired state takes. Nodes appear in name order."""
    prefixes: dict[str, set[str]] = {}
    attached: set[str] = set()
    overlay: dict[str, int] = {}
    for att in attachments:
        attached.add(att.node)
        prefixes.setdefault(att.node, set()).update(att.prefixes)
    if dataplane is not None:
        for route in dataplane.static_routes:
            prefixes.setdefault(route.node, set()).add(route.prefix)
        for peer in dataplane.vxlan_peers:
            prefixes.setdefault(peer.node, set()).add(peer.pod_cidr)
            overlay[peer.node] = overlay.get(peer.node, 0) + 1

    costs: dict[str, Counts] = {}
    for node in sorted(prefixes):
        v4, v6 = _route_counts(prefixes[node])
        is_attached = int(node in attached)
        peers = overlay.get(node, 0)
        costs[node] = Counts(
            ipv4_routes=v4,
            ipv6_routes=v6,
            nexthops=is_attached * model.attached_nexthops + peers * model.overlay_nexthops,
            neighbors=is_attached * model.attached_neighbors + peers * model.overlay_neighbors,
            fdb_entries=peers * model.overlay_fdb_entries,
            remote_vteps=peers * model.overlay_remote_vteps,
        )
    return costs


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


@dataclass(frozen=True)
class ResourceForecast:
    resource: Resource
    baseline: int  # the larger of observed and desired usage
    nodes_left_worst: int | None
    nodes_left_average: int | None


@dataclass(frozen=True)
class Forecast:
    resources: tuple[ResourceForecast, ...]
    limiting: Resource | None  # the resource that runs out first (worst case); None: none does
    nodes_left: int | None  # min over resources (worst case)


def baseline(desired: Counts, observed: Mapping[str, int] | None) -> dict[Resource, int]:
    """Per resource the larger of what the hardware holds and what the cluster wants. Observed
    usage includes entries that are not the cluster's (uplink routes, the leaf's own
    neighbours), desired may not be programmed yet: the larger is the safe base."""
    observed = observed or {}
    return {r: max(desired[r], int(observed.get(r, 0))) for r in RESOURCES}


def limiting(values: Mapping[Resource, int | None]) -> tuple[Resource | None, int | None]:
    """The resource with the fewest nodes left (ties: report order), and that number."""
    best: tuple[Resource | None, int | None] = (None, None)
    for resource in RESOURCES:
        value = values.get(resource)
        if value is not None and (best[1] is None or value < best[1]):
            best = (resource, value)
    return best


def forecast(
    capacity: Mapping[str, Capacity | int],
    reserve_percent: float,
    desired: Counts,
    per_node: PerNodeCost,
    observed: Mapping[str, int] | None = None,
) -> Forecast:
    """nodes_left per resource, worst case and average, and the limiting resource."""
    base = baseline(desired, observed)
    rows = []
    for r in RESOURCES:
        cap = capacity.get(r)
        rows.append(ResourceForecast(
            resource=r,
            baseline=base[r],
            nodes_left_worst=nodes_left(cap, reserve_percent, base[r], per_node.worst[r]),
            nodes_left_average=nodes_left(cap, reserve_percent, base[r], per_node.average[r]),
        ))
    which, left = limiting({f.resource: f.nodes_left_worst for f in rows})
    return Forecast(tuple(rows), which, left)
