"""Desired vs dataplane for one table, with the difference kept up to date incrementally.

A `DeltaTracker` holds, per table, what the agent wants (desired) and what it believes the kernel
holds (dataplane, refreshed by dumps, by events and by its own acknowledged writes), and keeps the
difference: pending updates (keys to add or change) and pending deletions (owned keys nobody
wants). This is Calico felix's design: an apply sends exactly the pending delta, an unchanged
desired state costs no netlink message, and a failed write simply stays pending until the next
pass.

Plain data in, plain data out: no netlink here, so it is tested on its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class DeltaTracker(Generic[K, V]):
    """Desired vs dataplane for one table, with the difference maintained on every change.

    Values are compared with ==, so they must be normalised (canonical address strings, lower
    case MACs) by whoever builds them from the desired state and from the kernel.
    """

    def __init__(self) -> None:
        self._desired: dict[K, V] = {}
        self._dataplane: dict[K, V] = {}
        self._updates: dict[K, V] = {}
        self._deletions: set[K] = set()

    @property
    def desired(self) -> Mapping[K, V]:
        return self._desired

    @property
    def dataplane(self) -> Mapping[K, V]:
        return self._dataplane

    @property
    def in_sync(self) -> bool:
        return not self._updates and not self._deletions

    def pending_updates(self) -> list[tuple[K, V]]:
        """Keys to add or change, with their desired value (a snapshot: safe to write through)."""
        return list(self._updates.items())

    def pending_deletions(self) -> list[K]:
        return list(self._deletions)

    def replace_desired(self, desired: dict[K, V]) -> None:
        self._desired = desired
        self._rediff()

    def replace_dataplane(self, observed: dict[K, V]) -> None:
        """A full dump of the table: everything not in it is gone from the kernel."""
        self._dataplane = observed
        self._rediff()

    def dataplane_set(self, key: K, value: V) -> None:
        self._dataplane[key] = value
        self._recompute(key)

    def dataplane_delete(self, key: K) -> None:
        self._dataplane.pop(key, None)
        self._recompute(key)

    def _rediff(self) -> None:
        # Whole-table diff in comprehensions and set operations (C loops): 100,000 routes in
        # ~20 ms, where a per-key recompute costs ten times that.
        plane = self._dataplane
        missing = object()
        self._updates = {k: v for k, v in self._desired.items() if plane.get(k, missing) != v}
        self._deletions = plane.keys() - self._desired.keys()

    def _recompute(self, key: K) -> None:
        if key not in self._desired:
            self._updates.pop(key, None)
            if key in self._dataplane:
                self._deletions.add(key)
            else:
                self._deletions.discard(key)
            return
        self._deletions.discard(key)
        want = self._desired[key]
        if key in self._dataplane and self._dataplane[key] == want:
            self._updates.pop(key, None)
        else:
            self._updates[key] = want
