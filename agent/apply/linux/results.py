"""What one apply, resync or repair did, as the applier contract's ApplyResult: counts per
table, the objects that failed (details["errors"], one line each) and a one-line summary.

A pass never stops at one object's failure: everything else is still applied, and the failed
object stays pending until the next pass.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from agent.apply.contract import ApplyResult, TableCounts

APPLIER = "dataplane"


@dataclass(frozen=True)
class ObjectError:
    table: str
    object: str  # e.g. "10.1.0.0/24 via 203.0.113.9"
    error: str  # e.g. "ENETUNREACH: Nexthop has invalid gateway"

    def __str__(self) -> str:
        return f"{self.table} {self.object}: {self.error}"


@dataclass
class Tally:
    """One table's counts while a pass runs (written, and taken back by flannel's undo)."""

    added: int = 0
    changed: int = 0
    removed: int = 0

    @property
    def total(self) -> int:
        return self.added + self.changed + self.removed


class Pass:
    """The clock, counts and errors of one pass."""

    def __init__(self, tables: Iterable[str]) -> None:
        self.started = time.time()
        self.t0 = time.monotonic()
        self.counts = {t: Tally() for t in tables}
        self.errors: list[ObjectError] = []

    def result(self, done: str, nothing: str) -> ApplyResult:
        """`done` when something changed, `nothing` when not; "partial" with object errors."""
        changed = any(c.total for c in self.counts.values())
        if self.errors:
            errors = self.errors
            more = f" (+{len(errors) - 3} more)" if len(errors) > 3 else ""
            summary = "; ".join(str(e) for e in errors[:3]) + more
            return self._result(False, "partial", summary)
        return self._result(True, done if changed else nothing, None)

    def failed(self, error: str, *, counts: bool = True) -> ApplyResult:
        """Nothing (more) could be done: the socket failed, or the desired state is not this
        data plane's (then `counts` is False: nothing was looked at)."""
        return self._result(False, "failed", error, counts=counts)

    def _result(self, ok: bool, action: str, error: str | None, *,
                counts: bool = True) -> ApplyResult:
        table_counts: Mapping[str, TableCounts] = {
            t: TableCounts(c.added, c.changed, c.removed) for t, c in self.counts.items()
        } if counts else {}
        details = {"errors": tuple(str(e) for e in self.errors)} if self.errors else {}
        return ApplyResult(APPLIER, ok, action, self.started, time.monotonic() - self.t0,
                           table_counts, error, details)
