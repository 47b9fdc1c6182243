"""The hardware tables the agent accounts for, and the small value types shared by the
headroom modules.

Names are the contract's (`fabricctl headroom --json`): ipv4_routes, ipv6_routes, nexthops,
nexthop_groups (ECMP groups), neighbors, fdb_entries, remote_vteps. Counts are integers of table
entries; capacities always carry where their figure came from, because a number nobody can trace
is a number nobody can correct.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from fractions import Fraction
from typing import cast

from agent.vocabulary import RESOURCES, Resource

__all__ = ["RESOURCES", "Capacity", "Counts", "Observed", "Resource", "check_resource", "usable"]


def check_resource(name: str) -> Resource:
    """`name` as a Resource, or ValueError naming the known ones (a typo must not pass)."""
    if name not in RESOURCES:
        raise ValueError(f"unknown resource {name!r}; known: {', '.join(RESOURCES)}")
    return cast(Resource, name)


@dataclass(frozen=True)
class Capacity:
    """Entries a table holds, and where that figure comes from: a published table
    ("Cumulus Linux ..."), a labelled estimate, "config", or "devlink:<dev>:<path>"."""

    value: int
    source: str

    def __post_init__(self) -> None:
        if self.value < 0:
            raise ValueError(f"capacity cannot be negative: {self.value}")


@dataclass(frozen=True)
class Observed:
    """Entries in use as something on the switch reports them (devlink occ, SONiC CRM), and
    which source said so."""

    value: int
    source: str


@dataclass(frozen=True)
class Counts:
    """Entries per resource: a node's cost, a total, a budget. Immutable and additive."""

    ipv4_routes: int = 0
    ipv6_routes: int = 0
    nexthops: int = 0
    neighbors: int = 0
    fdb_entries: int = 0
    remote_vteps: int = 0
    # Last, so positional construction written before it existed keeps its meaning.
    nexthop_groups: int = 0

    def __getitem__(self, resource: str) -> int:
        return int(getattr(self, check_resource(resource)))

    def items(self) -> Iterator[tuple[Resource, int]]:
        for resource in RESOURCES:
            yield resource, self[resource]

    def as_dict(self) -> dict[Resource, int]:
        return dict(self.items())

    def __add__(self, other: Counts) -> Counts:
        return Counts(**{f.name: getattr(self, f.name) + getattr(other, f.name)
                         for f in fields(self)})

    def needs(self) -> tuple[Resource, ...]:
        """The resources this count uses at all (cost > 0)."""
        return tuple(r for r, v in self.items() if v > 0)

    @classmethod
    def of(cls, value: Counts | Mapping[str, int]) -> Counts:
        """A Counts from a Counts or a {resource: n} mapping (unknown names are errors)."""
        if isinstance(value, Counts):
            return value
        return cls(**{check_resource(k): int(v) for k, v in value.items()})


def usable(capacity: int, reserve_percent: float) -> int:
    """Entries the agent may plan into: capacity minus the reserve, rounded down so the plan
    never reaches into the reserve. Exact arithmetic: 5 % of 1000 is 50, never 49.99..."""
    if not 0 <= reserve_percent < 100:
        raise ValueError(f"reserve_percent must be in [0, 100): {reserve_percent}")
    share = 1 - Fraction(str(reserve_percent)) / 100
    return math.floor(capacity * share)


def capacity_value(value: Capacity | int | None) -> int | None:
    """The number of a Capacity or a plain int; None stays None (unknown = not limited)."""
    if value is None or isinstance(value, int):
        return value
    return value.value
