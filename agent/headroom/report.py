"""The headroom report (`fabricctl headroom --json`): per resource what the tables hold, what the
cluster wants, the capacity and its source, and how many more nodes fit."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

from agent.headroom.resources import (
    RESOURCES,
    Capacity,
    Counts,
    Observed,
    Resource,
    capacity_value,
    check_resource,
    usable,
)
from agent.headroom.thresholds import State, ThresholdTracker
from agent.headroom.usage import PerNodeCost, baseline, nodes_left


@dataclass(frozen=True)
class HeadroomInfo:
    """One row of `fabricctl headroom --json`: the contract's fields (resource, used, desired,
    capacity, source, nodes_left) and what an operator needs to act on them. The status
    service sends these rows as they are, and fabricctl decodes them into the same type."""

    resource: str  # agent.vocabulary.RESOURCES (others are allowed: a newer agent's tables)
    used: int | None  # observed in hardware (devlink occ, SONiC CRM); None: nothing observes it
    desired: int  # what every planned node wants, admitted or not
    capacity: int | None  # None: unknown, not limited
    source: str  # where the capacity figure comes from
    nodes_left: int | None = None  # worst case: more nodes like the most expensive one
    percent: float | None = None  # max(used, desired) as a percentage of capacity
    threshold: str = "unknown"  # ok | raised | unknown
    reserve: int = 0  # entries kept free (capacity minus usable)
    admitted: int = 0  # entries the admitted nodes take
    nodes_left_average: int | None = None  # the same forecast for an average node
    used_source: str | None = None  # what observed `used`

    def __post_init__(self) -> None:
        for name in ("used", "desired", "capacity", "nodes_left", "reserve", "admitted",
                     "nodes_left_average"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"headroom {self.resource}: {name} is negative")

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def _percent(level: int, capacity: int | None) -> float | None:
    if capacity is None:
        return None
    if capacity == 0:
        return 100.0 if level > 0 else 0.0
    return round(level * 100 / capacity, 1)


def build_report(
    capacity: Mapping[str, Capacity],
    desired: Counts,
    per_node: PerNodeCost,
    reserve_percent: float,
    observed: Mapping[str, Observed | int] | None = None,
    thresholds: ThresholdTracker | Mapping[str, State] | None = None,
    admitted: Counts | None = None,
) -> list[HeadroomInfo]:
    """The headroom report, one row per resource in the contract's order."""
    seen: dict[Resource, int] = {}
    seen_source: dict[Resource, str | None] = {}
    for name, value in (observed or {}).items():
        r = check_resource(name)
        seen[r] = value.value if isinstance(value, Observed) else int(value)
        seen_source[r] = value.source if isinstance(value, Observed) else None
    base = baseline(desired, seen)
    rows = []
    for r in RESOURCES:
        cap = capacity.get(r)
        value = capacity_value(cap)
        if isinstance(thresholds, ThresholdTracker):
            state: State = thresholds.state(r)
        else:
            state = (thresholds or {}).get(r, "unknown")
        rows.append(HeadroomInfo(
            resource=r,
            used=seen.get(r),
            desired=desired[r],
            capacity=value,
            source=cap.source if cap is not None else "unknown",
            nodes_left=nodes_left(value, reserve_percent, base[r], per_node.worst[r]),
            percent=_percent(base[r], value),
            threshold=state,
            reserve=0 if value is None else value - usable(value, reserve_percent),
            admitted=(admitted or desired)[r],
            nodes_left_average=nodes_left(value, reserve_percent, base[r],
                                          per_node.average[r]),
            used_source=seen_source.get(r),
        ))
    return rows
