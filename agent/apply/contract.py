"""The one contract every applier keeps (FRR, the Linux kernel, SONiC's Redis), and its one
result type.

The runtime's reconcile loop (agent.runtime.reconcile) owns the apply lock: it calls apply()
and resync() one at a time, never concurrently, for all appliers. An applier whose own loops
write too (the Linux event repair, SONiC's replay after a Redis restart) serialises those
writes with its applies itself; nothing else takes a lock.

- start(): open what it needs (sockets, databases) and observe what is already there: a
  restarted agent adopts the state it finds, it does not rewrite it. Raises StartupError when
  it cannot run at all.
- apply(desired): change only the difference between `desired` and what it observes.
- resync(): compare what is there with the last desired state again and repair drift; None
  when nothing was out of sync. A result with `recheck_after` asks to be called again that many
  seconds later (the loop waits with the lock released), so drift that heals by itself (a
  daemon restarted by watchfrr reloading its own file) is not repaired twice.
- close(): release sockets and connections only: forwarding state stays exactly as it is.
- held(): what it has *observed* that it holds, per kind ("routes": prefixes, "fdb": MACs):
  never what it was asked for. The status view and SONiC's FRR origination read it.
- counts(): observed table usage per headroom resource (agent.vocabulary.RESOURCES), for
  headroom's USED column; {} where another reader knows better (SONiC: CRM, through Feedback).
- loops(): background tasks the runtime runs beside the reconcile loop (event readers,
  pollers). Each runs until cancelled; one that returns or raises takes the agent down.
- report(outcome): after each reconcile and resync, publish what it needs to its own side
  (SONiC: STATE_DB). Never raises.

Appliers talk back only through `Feedback` (given at construction): observed tampering or a
hardware capacity change asks for a new plan; routes the ASIC refused are reported as counts.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, TypeVar

if TYPE_CHECKING:
    from agent.headroom.resources import Capacity, Observed
    from agent.headroom.thresholds import Threshold
    from agent.plan.model import Plan

# What an applier's result may say it did (status, events, STATE_DB and metrics show it).
# Not enforced on the type: fabricctl decodes results of newer agents, with newer actions.
ACTIONS = (
    "unchanged",  # the desired state is what was applied last: nothing was looked at
    "in-sync",  # looked, nothing to change
    "applied",
    # FRR refused some nodes' lines: those nodes keep what was programmed (ApplyResult.refused),
    # everyone else's changes applied
    "applied-narrowed",
    "partial",  # some objects failed (their errors in details["errors"]); the rest applied
    "repaired",  # resync found drift and put it right
    "replayed",  # a restarted dependency (Redis) lost our entries; written again
    "drift-suspected",  # resync saw drift; looks again after recheck_after before repairing
    "rejected",  # the dependency refused the desired state (FRR's syntax check)
    "refused",  # the applier refused to write (another producer owns the keys, ZMQ mode)
    "failed",
    "not-managed",  # this applier does not write here (SONiC: bgpcfgd owns FRR)
)

Held = Mapping[str, frozenset[str]]


@dataclass(frozen=True)
class TableCounts:
    """Objects changed in one table (or object kind) by one apply or resync."""

    added: int = 0
    changed: int = 0
    removed: int = 0
    repaired: int = 0  # owned objects written again (lost to a restart, changed by someone)

    @property
    def total(self) -> int:
        return self.added + self.changed + self.removed + self.repaired


@dataclass(frozen=True)
class ApplyResult:
    applier: str  # "frr" | "dataplane"
    ok: bool
    action: str  # one of ACTIONS
    started: float  # wall clock (time.time())
    duration: float  # seconds
    counts: Mapping[str, TableCounts] = field(default_factory=dict)
    error: str | None = None  # one line for people: why it failed, or the first problems
    # Per-object lines by kind: "errors" (objects that failed), "conflicts" (keys another
    # producer holds), "skipped" (desired objects the backend cannot express), "warnings"
    # (prerequisites outside the agent's remit), "delta" (FRR: the lines changed).
    details: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    recheck_after: float | None = None  # resync only: call resync() again after this
    # Nodes whose desired configuration the dependency refused (FRR), by node name, with its
    # words: they keep what was programmed before. The status lists them with the plan's
    # refusals; an apply that takes their values again clears them.
    refused: Mapping[str, str] = field(default_factory=dict)

    @property
    def changes(self) -> int:
        return sum(c.total for c in self.counts.values())

    def summary(self) -> dict[str, object]:
        """The result as the status file, `fabricctl status --json` and STATE_DB show it."""
        return {"applier": self.applier, "ok": self.ok, "action": self.action,
                "at": self.started, "duration_seconds": round(self.duration, 3),
                "changes": self.changes, "error": self.error}


@dataclass(frozen=True)
class HardwareReading:
    """What a backend read about the ASIC's tables: capacities (devlink, SONiC CRM), and on
    SONiC what the tables hold and CRM|Config's thresholds. `source` names the reader."""

    source: str  # "devlink" | "crm"
    capacity: Mapping[str, Capacity]
    used: Mapping[str, Observed] = field(default_factory=dict)
    thresholds: Mapping[str, Threshold] | None = None  # None: the defaults stay
    notes: tuple[str, ...] = ()  # what could not be used, for the log


@dataclass(frozen=True)
class Outcome:
    """What the runtime tells the appliers after each reconcile and resync."""

    plan: Plan
    results: Mapping[str, ApplyResult]  # each applier's latest, by ApplyResult.applier


class Feedback(Protocol):
    """The runtime's side, the only way an applier talks back."""

    def replan(self, reason: str) -> None:
        """Something the applier observed needs a new pass (tampering, a lost dependency)."""

    def hardware(self, reading: HardwareReading) -> None:
        """A new reading of the hardware's tables; a changed capacity re-plans admission."""

    def offload_failed(self, per_family: Mapping[int, int]) -> None:
        """Routes the ASIC refused (rt_offload_failed), by IP version; {} or zeros: none."""


D = TypeVar("D", contravariant=True)


class Applier(Protocol[D]):
    name: str  # "frr" | "dataplane": the key of its results in the status

    async def start(self) -> None: ...

    async def apply(self, desired: D) -> ApplyResult: ...

    async def resync(self) -> ApplyResult | None: ...

    async def close(self) -> None: ...

    def held(self) -> Held: ...

    def counts(self) -> Mapping[str, int]: ...

    def loops(self) -> Sequence[Callable[[], Awaitable[None]]]: ...

    async def report(self, outcome: Outcome) -> None: ...


class NothingOfItsOwn:
    """The contract's defaults for an applier with nothing to open, observe, run or publish of
    its own (the FRR appliers: sessions are observed by BgpObserver, not by them)."""

    async def start(self) -> None:
        """Nothing to open."""

    async def close(self) -> None:
        """Nothing to release."""

    def held(self) -> Held:
        return {}

    def counts(self) -> Mapping[str, int]:
        return {}

    def loops(self) -> Sequence[Callable[[], Awaitable[None]]]:
        return ()

    async def report(self, outcome: Outcome) -> None:
        """Nothing to publish."""
