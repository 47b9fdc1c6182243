"""Admission: which nodes the leaf programs when the hardware cannot hold them all.

admit() is pure and total: the reconcile loop re-runs it with the current state every pass,
so a node refused for lack of room is admitted by the same call as soon as room returns (a
node left, a capacity override grew); there is no queue to keep consistent.

The rules, in order:
1. Never plan into the reserve: per resource the budget is capacity minus `reserve_percent`
   (rounded down) minus entries used by others (`baseline`: uplink routes, the leaf's own).
2. Working state is kept: nodes already programmed are admitted first (oldest first) as long
   as each still fits, even when older nodes are waiting. Evicting a node whose pods are being
   routed to make room for one that is not yet routed trades a working node for a waiting one.
   Only a programmed node that no longer fits at all (capacity lowered, its cost grew) is
   refused.
3. The rest are admitted oldest first (creationTimestamp, then name, as plan() orders claims).
   A node that does not fit is refused, and every newer node that needs one of the resources it
   lacks waits behind it (also refused), so the newest are refused first and a large old node
   is not starved by a stream of small new ones. A newer node needing none of the exhausted
   resources is still admitted (a full VTEP table does not stop a BGP node).
Every refusal names the resource, what the node needs, what is left, the capacity and the
reserve. Input order never matters.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agent.cluster.nodes import Node, Refusal
from agent.headroom.resources import (
    RESOURCES,
    Capacity,
    Counts,
    Resource,
    capacity_value,
    usable,
)


@dataclass(frozen=True)
class Candidate:
    """A node that wants hardware entries, with the age that orders it."""

    node: str
    created: str  # RFC 3339 creationTimestamp

    @property
    def age_key(self) -> tuple[str, str]:
        return (self.created, self.node)


def candidates_for(nodes: Iterable[Node], costs: Mapping[str, Any]) -> list[Candidate]:
    """Candidates for the nodes that have a cost (the planned ones), from validated Nodes."""
    return [Candidate(n.name, n.created) for n in nodes if n.name in costs]


@dataclass(frozen=True)
class AdmissionRefusal:
    node: str
    resources: tuple[Resource, ...]  # the resources it lacks (or waits for)
    reason: str
    was_programmed: bool  # True: working state is withdrawn (it no longer fits)

    def as_refusal(self) -> Refusal:
        """The plan's refusal type, so headroom refusals are logged and listed like others."""
        return Refusal("headroom", self.node, self.reason)


@dataclass(frozen=True)
class AdmissionResult:
    admitted: tuple[str, ...]  # oldest first
    refused: tuple[AdmissionRefusal, ...]  # oldest first
    planned: Counts  # entries the admitted nodes take (baseline not included)
    budget: Mapping[Resource, int | None]  # per resource: usable minus baseline; None = no limit

    def is_admitted(self, node: str) -> bool:
        return node in self.admitted

    @property
    def refused_nodes(self) -> tuple[str, ...]:
        return tuple(r.node for r in self.refused)


@dataclass(frozen=True)
class _Limits:
    capacity: Mapping[Resource, int | None]
    usable: Mapping[Resource, int | None]
    baseline: Mapping[Resource, int]
    reserve_percent: float

    def describe(self, resource: Resource, left: int) -> str:
        cap = self.capacity[resource]
        others = self.baseline[resource]
        text = (f"{left} of {self.usable[resource]} left (capacity {cap} minus the"
                f" {self.reserve_percent:g}% reserve")
        return text + (f", {others} used outside the cluster)" if others else ")")


def admit(
    candidates: Iterable[Candidate],
    costs: Mapping[str, Counts | Mapping[str, int]],
    capacity: Mapping[str, Capacity | int | None],
    reserve_percent: float,
    programmed: Collection[str] = (),
    baseline: Mapping[str, int] | None = None,
) -> AdmissionResult:
    """Decide which candidates get hardware entries. See the module docstring for the rules.

    `costs`: per node, its entries (costs.node_costs). `capacity`: per resource (a missing
    resource or None is not limited). `programmed`: nodes whose entries are in hardware now
    (the previous result's admitted nodes). `baseline`: entries used by others per resource."""
    ordered = sorted(candidates, key=lambda c: c.age_key)
    names = [c.node for c in ordered]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"candidates listed more than once: {', '.join(dupes)}")
    missing = [n for n in names if n not in costs]
    if missing:
        raise ValueError(f"no cost for candidates: {', '.join(missing)}")
    node_cost = {n: Counts.of(costs[n]) for n in names}

    base = {r: int((baseline or {}).get(r, 0)) for r in RESOURCES}
    caps = {r: capacity_value(capacity.get(r)) for r in RESOURCES}
    use = {r: None if caps[r] is None else usable(caps[r], reserve_percent) for r in RESOURCES}
    limits = _Limits(caps, use, base, reserve_percent)
    budget: dict[Resource, int | None] = {
        r: None if use[r] is None else use[r] - base[r] for r in RESOURCES
    }
    left = dict(budget)

    admitted: set[str] = set()
    refused: dict[str, AdmissionRefusal] = {}
    blocked: dict[Resource, Candidate] = {}  # resource -> oldest node refused for lack of it

    def shortfall(cost: Counts) -> list[Resource]:
        return [r for r in RESOURCES
                if cost[r] > 0 and (room := left[r]) is not None and cost[r] > room]

    def take(cand: Candidate, cost: Counts) -> None:
        admitted.add(cand.node)
        for r in RESOURCES:
            room = left[r]
            if room is not None:
                left[r] = room - cost[r]

    def block(cand: Candidate, short: Sequence[Resource]) -> None:
        for r in short:
            if r not in blocked or cand.age_key < blocked[r].age_key:
                blocked[r] = cand

    programmed_set = set(programmed)
    # Rule 2: working state first.
    for cand in ordered:
        if cand.node not in programmed_set:
            continue
        cost = node_cost[cand.node]
        short = shortfall(cost)
        if not short:
            take(cand, cost)
            continue
        reason = "no longer fits, its entries are withdrawn: " + "; ".join(
            f"{r}: needs {cost[r]}, {limits.describe(r, max(left[r] or 0, 0))}" for r in short)
        refused[cand.node] = AdmissionRefusal(cand.node, tuple(short), reason, True)
        block(cand, short)

    # Rule 3: the others, oldest first; the newest are refused first.
    for cand in ordered:
        if cand.node in programmed_set:
            continue
        cost = node_cost[cand.node]
        waits = [r for r in cost.needs()
                 if r in blocked and blocked[r].age_key < cand.age_key]
        if waits:
            reason = "; ".join(
                f"{r}: waits behind older node {blocked[r].node} (needs {cost[r]},"
                f" {limits.describe(r, max(left[r] or 0, 0))})" for r in waits)
            refused[cand.node] = AdmissionRefusal(cand.node, tuple(waits), reason, False)
            continue
        short = shortfall(cost)
        if short:
            reason = "; ".join(
                f"{r}: needs {cost[r]}, {limits.describe(r, max(left[r] or 0, 0))}"
                for r in short)
            refused[cand.node] = AdmissionRefusal(cand.node, tuple(short), reason, False)
            block(cand, short)
            continue
        take(cand, cost)

    admitted_order = tuple(c.node for c in ordered if c.node in admitted)
    planned = Counts()
    for node in admitted_order:
        planned = planned + node_cost[node]
    return AdmissionResult(
        admitted=admitted_order,
        refused=tuple(refused[c.node] for c in ordered if c.node in refused),
        planned=planned,
        budget=budget,
    )
