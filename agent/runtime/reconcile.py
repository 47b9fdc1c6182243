"""The reconcile loop: cluster state -> plan() -> appliers -> observed state.

Single-flight and coalescing: changes mark `Dirty`; one loop plans from the latest state and
applies (data plane first, so the routes FRR redistributes already exist, then FRR). The first
change after a quiet period is applied at once; changes that arrive during a pass cause exactly
one more pass, at least `frr.debounce_ms` after it, never a queue, so a flapping object cannot
start a reload storm. The loop owns the only apply lock: applies and
resyncs never overlap, and appliers take no lock of their own.

Nothing is applied before the first complete Node list: an empty store would mean withdrawing
every session, and the agent never withdraws because the API server is down or slow. Anything
may mark the plan dirty before that (on SONiC the first CRM reading does); the loop consumes the
mark and waits, and the informer's first complete list marks it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from agent.apply.contract import Applier, ApplyResult, HardwareReading, Outcome
from agent.cluster.nodes import ClusterState, cluster_state
from agent.cluster.services import service_state
from agent.config import AgentConfig
from agent.headroom.resources import Capacity
from agent.informers.informer import Informer
from agent.informers.lldp import LldpPoller
from agent.informers.pods import PodWatcher
from agent.informers.services import ServiceWatch
from agent.plan.build import plan
from agent.plan.incremental import PlanCache
from agent.plan.model import DataplaneDesired, FrrDesired, Plan, originated_only
from agent.status.headroom import HeadroomMonitor
from agent.status.metrics import Metrics
from agent.status.model import EventLog, attachment_events, refusal_events
from agent.status.services import service_events
from agent.status.state import ObservedState
from agent.status.view import AgentView

log = logging.getLogger(__name__)

# Resync results that say nothing was wrong: not recorded, so the status keeps the last apply.
QUIET_ACTIONS = ("in-sync", "unchanged")
# A failed pass is retried after 2 s, then 4, 8, ... at most every minute.
RETRY_FIRST_SECONDS = 2.0
RETRY_MAX_SECONDS = 60.0


async def settled_resync(applier: Applier[Any],
                         lock: asyncio.Lock | None = None) -> ApplyResult | None:
    """One resync of `applier` (under `lock`); a result asking for a second look gets it after
    its settle time, with the lock released meanwhile so applies go on."""
    guard: contextlib.AbstractAsyncContextManager[object] = lock or contextlib.nullcontext()
    while True:
        async with guard:
            result = await applier.resync()
        if result is None or result.recheck_after is None:
            return result
        await asyncio.sleep(result.recheck_after)


class Dirty:
    """A change waiting for the reconcile loop, and since when (a change's latency runs from
    its first mark to the end of the pass that applied it)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self.since: float | None = None

    def mark(self) -> None:
        if self.since is None:
            self.since = time.monotonic()
        self._event.set()

    @property
    def pending(self) -> bool:
        return self._event.is_set()

    async def wait(self) -> None:
        await self._event.wait()

    def take(self) -> float | None:
        """Consume the mark; returns when the first change it stood for arrived."""
        self._event.clear()
        since, self.since = self.since, None
        return since


class RuntimeFeedback:
    """agent.apply.contract.Feedback: how appliers talk back to the runtime."""

    def __init__(self, dirty: Dirty, headroom: HeadroomMonitor, state: ObservedState,
                 events: EventLog) -> None:
        self.dirty = dirty
        self.headroom = headroom
        self.state = state
        self.events = events

    def replan(self, reason: str) -> None:
        log.debug("planning again: %s", reason)
        self.dirty.mark()

    def hardware(self, reading: HardwareReading) -> None:
        """Admission is decided in plan() against the capacity: a larger table must admit the
        nodes waiting for room at once, a smaller one must stop admitting, without waiting for
        the next Node change."""
        before = dict(self.headroom.capacity)
        changed_capacity = self.headroom.set_hardware(reading)
        self.headroom.refresh()  # used and thresholds may have changed even if capacity did not
        self.state.headroom = self.headroom.rows
        if not changed_capacity:
            return
        after = self.headroom.capacity
        changed = sorted(str(r) for r in {*before, *after} if before.get(r) != after.get(r))
        log.info("%s changed the hardware capacity of %s; planning again", reading.source,
                 ", ".join(changed))
        self.dirty.mark()

    def offload_failed(self, per_family: Mapping[int, int]) -> None:
        """Routes the ASIC refused (rt_offload_failed) make the data plane's health fail: their
        traffic goes through the CPU, the silent overflow headroom exists to catch. One
        threshold_crossed event when the count becomes non-zero, one when it is zero again."""
        before = self.state.offload_failed_total()
        self.state.offload_failed = {v: n for v, n in per_family.items() if n}
        failed = self.state.offload_failed_total()
        if failed == before:
            return
        if failed:
            message = self.state.offload_message()
            if before:
                log.info("%s", message)
            else:
                log.warning("%s; their traffic goes through the CPU", message)
                self.events.emit("threshold_crossed", "rt_offload_failed", message)
        else:
            message = "every route is offloaded to the ASIC again (no rt_offload_failed)"
            log.info("%s", message)
            self.events.emit("threshold_crossed", "rt_offload_failed", message)


@dataclass(frozen=True)
class PlanInputs:
    """What one plan is made from, copied off the live stores."""

    nodes: tuple[dict[str, Any], ...]
    neighbors: dict[str, str] | None
    capacity: dict[str, Capacity]
    programmed: Collection[str]
    # Raw (slim) Services and EndpointSlices; empty when fabric.service_pools is (no watch).
    services: tuple[dict[str, Any], ...] = ()
    endpoint_slices: tuple[dict[str, Any], ...] = ()


def plan_cluster(config: AgentConfig, inputs: PlanInputs,
                 cache: PlanCache | None = None) -> tuple[ClusterState, Plan]:
    """cluster_state() then plan(), through `cache` when given (the same result, with work
    proportional to what changed since its last plan); may run in a worker thread."""
    if cache is not None:
        return cache.plan(config, inputs.nodes, inputs.neighbors, capacity=inputs.capacity,
                          programmed=inputs.programmed, services=inputs.services,
                          endpoint_slices=inputs.endpoint_slices)
    cluster = cluster_state(inputs.nodes)
    return cluster, plan(config, cluster, inputs.neighbors, capacity=inputs.capacity,
                         programmed=inputs.programmed,
                         services=service_state(inputs.services, inputs.endpoint_slices))


class Reconciler:
    def __init__(self, config: AgentConfig, *, state: ObservedState, view: AgentView,
                 nodes: Informer, lldp: LldpPoller | None, pods: PodWatcher | None,
                 services: ServiceWatch | None,
                 frr: Applier[FrrDesired], dataplane: Applier[DataplaneDesired],
                 dirty: Dirty, headroom: HeadroomMonitor, events: EventLog, metrics: Metrics,
                 on_reconciled: Callable[[], None]) -> None:
        self.config = config
        self.state = state
        self.view = view
        self.nodes = nodes
        self.lldp = lldp
        self.pods = pods
        self.services = services
        self.frr = frr
        self.dataplane = dataplane
        self.dirty = dirty
        self.headroom = headroom
        self.events = events
        self.metrics = metrics
        self.on_reconciled = on_reconciled  # publishes the status (and READY=1 the first time)
        self._lock = asyncio.Lock()  # the only apply lock
        self._programmed: tuple[str, ...] = ()  # nodes whose entries the hardware holds
        self._plan_cache = PlanCache()  # what the last plan derived, for the next one
        self._known_refusals: set[str] = set()
        self.retry_first_seconds = RETRY_FIRST_SECONDS
        self._failures = 0  # failed passes in a row
        self._retry: asyncio.TimerHandle | None = None

    @property
    def synced(self) -> bool:
        """Every input listed once. Before, a plan would lack what is not yet listed and
        withdraw it: Nodes' sessions, or every Service VIP the leaf carries."""
        return self.nodes.synced and (self.services is None or self.services.synced)

    def _service_inputs(self) -> dict[str, tuple[dict[str, Any], ...]]:
        if self.services is None:
            return {}
        services, slices = self.services.snapshot()
        return {"services": services, "endpoint_slices": slices}

    @property
    def appliers(self) -> tuple[Applier[Any], ...]:
        return (self.dataplane, self.frr)

    async def run(self) -> None:
        """Leading-edge coalescing: the first change after a quiet period is planned and
        applied at once (a trailing debounce added its whole length to every change); changes
        that arrive while a pass runs, or within `frr.debounce_ms` after it, become exactly one
        more pass, started no sooner than `frr.debounce_ms` after the previous one ended. So a
        burst costs at most two passes and never a queue, and a flapping object cannot drive
        back-to-back reloads."""
        gap = self.config.frr.debounce_ms / 1000.0
        ended = float("-inf")  # no pass yet: the first change goes at once
        while True:
            await self.dirty.wait()
            rest = ended + gap - time.monotonic()
            if rest > 0:
                await asyncio.sleep(rest)  # the rest of a burst joins this pass
            since = self.dirty.take()
            if not self.synced:
                continue  # the first complete list marks dirty again
            try:
                await self.reconcile(since)
            finally:
                ended = time.monotonic()

    async def reconcile(self, since: float | None = None) -> None:
        started = time.monotonic()
        # Parsing and planning the whole cluster is the one CPU-heavy step (seconds with
        # thousands of Nodes): it runs in a worker thread on a snapshot of its inputs, so the
        # status service, the watchdog and the informers keep being served meanwhile. The
        # snapshot is taken here, on the loop, where nothing can change it halfway; the
        # informer replaces stored objects and never mutates them, so a shallow copy suffices.
        inputs = PlanInputs(
            nodes=tuple(self.nodes.store.values()),
            neighbors=dict(self.lldp.neighbors) if self.lldp else None,
            # Admission uses the best capacity known (config > CRM > devlink > profile).
            capacity=dict(self.headroom.capacity),
            programmed=self._programmed,
            **self._service_inputs(),
        )
        cluster, new = await asyncio.to_thread(plan_cluster, self.config, inputs,
                                               self._plan_cache)
        before_attachments = self.view.attachments()
        before_refusals = self.state.refusals()
        before_services = self.state.plan.services if self.state.plan else ()
        self.state.plan, self.state.cluster = new, cluster
        for event in attachment_events(before_attachments, self.view.attachments(), time.time()):
            self.events.publish(event)
        for event in service_events(before_services, new.services, time.time()):
            self.events.publish(event)

        async with self._lock:
            dataplane = self.record(await self.dataplane.apply(new.dataplane))
            self.state.held = self.dataplane.held()
            # SONiC originates the data plane's pod CIDRs with `network` statements: only those
            # it holds (on Linux there are none; zebra redistributes the kernel's routes).
            frr = self.record(await self.frr.apply(
                originated_only(new.frr, self.state.held.get("routes", frozenset()))))
        # Admission relies on what the hardware holds: the data plane's entries, and FRR's
        # where the agent manages FRR.
        frr_ok = frr.ok or frr.action == "not-managed"
        # Refusals after the apply: FRR may have refused a node's lines the plan accepted.
        refusals = self.state.refusals()
        self._log_refusals([str(r) for r in refusals])
        for event in refusal_events(before_refusals, refusals, time.time()):
            self.events.publish(event)
        if dataplane.ok and frr_ok and new.admission is not None:
            self._programmed = new.admission.admitted
        self._retry_if_failed(dataplane.ok and frr_ok)
        self.refresh_headroom()
        await self.report()
        if self.pods is not None:
            self.pods.sync(a.node for a in new.attachments)
        self.metrics.observe_reconcile(time.monotonic() - started)
        if since is not None:
            latency = round(time.monotonic() - since, 3)
            self.state.last_reconcile_latency = latency
            log.info("change to applied state: %.3fs", latency)
        self.on_reconciled()

    def _retry_if_failed(self, ok: bool) -> None:
        """A failed apply is tried again by itself, with backoff: the fault (a reload that
        failed, a full disk, a Redis hiccup) may clear without any Node changing."""
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        if ok:
            self._failures = 0
            return
        self._failures += 1
        delay = min(RETRY_MAX_SECONDS, self.retry_first_seconds * 2 ** (self._failures - 1))
        log.warning("apply failed (%d in a row); trying again in %.1f s", self._failures, delay)
        self._retry = asyncio.get_running_loop().call_later(delay, self.dirty.mark)

    async def resync(self, applier: Applier[Any]) -> ApplyResult | None:
        return await settled_resync(applier, self._lock)

    async def resync_loop(self, applier: Applier[Any], interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            if self.state.plan is None:
                continue  # nothing applied yet: nothing to drift from
            result = await self.resync(applier)
            if applier is self.dataplane:
                self.state.held = self.dataplane.held()
            if result is not None and result.action not in QUIET_ACTIONS:
                self.record(result)
            # Also rewrites what a restarted dependency lost (STATE_DB after a Redis restart).
            await self.report()
            self.on_reconciled()

    def record(self, result: ApplyResult) -> ApplyResult:
        previous = self.state.record(result)
        self.metrics.observe_apply(result.applier, result.ok, result.action, result.duration)
        # One line per change of outcome, not per pass: a data plane "in-sync" or FRR
        # "not-managed" every reconcile would flood the journal.
        if result.changes or previous is None or (previous.ok, previous.action) != (
                result.ok, result.action):
            (log.info if result.ok else log.error)(
                "%s %s in %.2fs%s", result.applier, result.action, result.duration,
                f": {result.error}" if result.error else "")
        if previous is None or previous.ok != result.ok or result.changes:
            changes = f" ({result.changes} changes)" if result.changes else ""
            error = f": {result.error}" if result.error else ""
            self.events.emit("apply_result", result.applier, f"{result.action}{error}{changes}")
        return result

    def refresh_headroom(self) -> None:
        """What the tables hold against what the cluster wants; after each reconcile and each
        BGP poll, so "used" follows the tables."""
        if self.state.plan is not None:
            self.headroom.update(self.state.plan, dict(self.dataplane.counts()))
            self.state.headroom = self.headroom.rows

    async def report(self) -> None:
        if self.state.plan is None:
            return
        outcome = Outcome(self.state.plan, dict(self.state.results))
        for applier in self.appliers:
            await applier.report(outcome)

    def _log_refusals(self, refusals: list[str]) -> None:
        current = set(refusals)
        for line in sorted(current - self._known_refusals):
            log.warning("refused: %s", line)
        for line in sorted(self._known_refusals - current):
            log.info("no longer refused: %s", line)
        self._known_refusals = current
