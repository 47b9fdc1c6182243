"""Per-resource alarm thresholds with hysteresis, after SONiC's CRM (`CRM|Config`).

Like CRM: a threshold type per resource (percentage | used | free), a high and a low level,
defaults percentage 85 / 70; the alarm raises when the measure reaches high and clears when it
falls to or below low, so a table hovering around one level does not flap.

Where it deliberately differs from orchagent:
- each crossing is reported exactly once (CRM repeats THRESHOLD_EXCEEDED up to a counter);
- `free` means what an operator expects: the alarm raises when free entries fall to or below
  `low` and clears when they climb back to `high` or more (orchagent compares free entries with
  `>= high`, so it raises when *plenty* is free);
- percentage is exact (used * 100 / capacity), not integer-truncated.

ThresholdTracker is a pure state machine: its output depends only on its state and the
arguments; no clock, no logging (the caller logs each Crossing once).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Literal

from agent.headroom.resources import RESOURCES, Resource, check_resource

ThresholdType = Literal["percentage", "used", "free"]
State = Literal["ok", "raised", "unknown"]


@dataclass(frozen=True)
class Threshold:
    type: ThresholdType = "percentage"
    high: float = 85.0
    low: float = 70.0

    def __post_init__(self) -> None:
        if self.type not in ("percentage", "used", "free"):
            raise ValueError(f"threshold type must be percentage, used or free: {self.type}")
        if self.low >= self.high:
            # Equal levels would make raise and clear the same event: no hysteresis.
            raise ValueError(f"threshold low ({self.low}) must be below high ({self.high})")
        if self.low < 0:
            raise ValueError(f"threshold levels cannot be negative: {self.low}")
        if self.type == "percentage" and self.high > 100:
            raise ValueError(f"a percentage threshold cannot exceed 100: {self.high}")


DEFAULT_THRESHOLD = Threshold()


@dataclass(frozen=True)
class Crossing:
    resource: Resource
    kind: Literal["raised", "cleared"]
    threshold: Threshold
    measure: float  # the value compared: percent, used or free entries
    used: int
    capacity: int | None

    def __str__(self) -> str:
        t = self.threshold
        level = t.high if (self.kind == "raised") == (t.type != "free") else t.low
        unit = "%" if t.type == "percentage" else f" {t.type}"
        cap = "unknown" if self.capacity is None else str(self.capacity)
        verb = "exceeded" if self.kind == "raised" else "clear"
        return (f"{self.resource} threshold {verb}: {self.measure:g}{unit} (level {level:g};"
                f" {self.used} used of {cap})")


def measure(threshold: Threshold, used: int, capacity: int | None) -> Fraction | None:
    """The value a threshold compares; None when it cannot be known (no capacity)."""
    if threshold.type == "used":
        return Fraction(used)
    if capacity is None:
        return None
    if threshold.type == "free":
        return Fraction(max(capacity - used, 0))
    if capacity == 0:
        # A table of size zero is full as soon as anything wants it.
        return Fraction(100 if used > 0 else 0)
    return Fraction(used * 100, capacity)


@dataclass
class ThresholdTracker:
    """Raised/ok state per resource; update() returns the crossings, each exactly once."""

    thresholds: Mapping[str, Threshold] = field(default_factory=dict)
    _raised: set[Resource] = field(default_factory=set, init=False, repr=False)
    _seen: set[Resource] = field(default_factory=set, init=False, repr=False)

    def __post_init__(self) -> None:
        for name in self.thresholds:
            check_resource(name)

    def threshold(self, resource: str) -> Threshold:
        return self.thresholds.get(resource, DEFAULT_THRESHOLD)

    def update(self, resource: str, used: int, capacity: int | None) -> list[Crossing]:
        res = check_resource(resource)
        threshold = self.threshold(res)
        value = measure(threshold, used, capacity)
        if value is None:
            return []  # keep the last state: an unknown capacity is not a recovery
        self._seen.add(res)
        if threshold.type == "free":
            rise, fall = value <= threshold.low, value >= threshold.high
        else:
            rise, fall = value >= threshold.high, value <= threshold.low
        raised = res in self._raised
        crossing: Literal["raised", "cleared"] | None = None
        if not raised and rise:
            self._raised.add(res)
            crossing = "raised"
        elif raised and fall:
            self._raised.discard(res)
            crossing = "cleared"
        if crossing is None:
            return []  # between the levels the state holds: that is the hysteresis
        return [Crossing(res, crossing, threshold, float(value), used, capacity)]

    def update_all(
        self, used: Mapping[str, int], capacity: Mapping[str, int | None]
    ) -> list[Crossing]:
        """update() for every resource present in `used`, in report order."""
        crossings: list[Crossing] = []
        for resource in RESOURCES:
            if resource in used:
                crossings += self.update(resource, used[resource], capacity.get(resource))
        return crossings

    def state(self, resource: str) -> State:
        res = check_resource(resource)
        if res in self._raised:
            return "raised"
        return "ok" if res in self._seen else "unknown"
