"""What the status service serves, as plain data, and the interface the daemon implements.

Pure: no gRPC, no I/O. agent.status.view implements `StatusProvider` from the observed state
(agent.status.state); agent.status.server turns these dataclasses into protobuf messages and
fabricctl turns them back, so both ends share one vocabulary and the JSON that fabricctl prints
is these fields by name.

`EventLog` is the one piece with behaviour: a bounded history (count and age) plus fan-out to
live subscribers, each of which first receives the history. Publishing never blocks and never
awaits: the daemon calls it from its event loop in the middle of a reconcile, and a slow client
must not be able to stall routing. A subscriber that falls too far behind is cut off with
`SubscriberTooSlow` (it can resume with `after_seq`) instead of buffering without bound.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol, runtime_checkable

from agent.apply.contract import ApplyResult
from agent.cluster.nodes import Refusal
from agent.cluster.pod_index import PodInfo
from agent.events import Event
from agent.headroom.report import HeadroomInfo
from agent.informers.limits import CONTACT_STALE_SECONDS
from agent.vocabulary import (
    ATTACHMENT_SOURCES,
    BGP_STATES,
    HEALTH_STATES,
    LOCATE_MATCHES,
    ROUTING_MODES,
    SERVICE_POLICIES,
    SERVICE_STATES,
    check_word,
)

__all__ = [
    "AgentStatus",
    "AttachmentInfo",
    "EventLog",
    "FibHop",
    "HeadroomInfo",
    "InvalidQuery",
    "KubernetesConnection",
    "LocateResult",
    "NotFound",
    "Refusal",
    "RouteInfo",
    "ServiceInfo",
    "StatusProvider",
    "SubscriberTooSlow",
    "Subscription",
    "VtepInfo",
    "assess_health",
    "attachment_events",
    "refusal_events",
]



# ---- GetStatus ----


@dataclass(frozen=True)
class KubernetesConnection:
    connected: bool
    synced: bool  # the first complete Node list has arrived
    last_error: str | None = None
    seconds_since_contact: float | None = None  # None: never
    resource_version: str = ""
    nodes: int = 0

    @property
    def serving_last_known_state(self) -> bool:
        return self.synced and not self.connected


@dataclass(frozen=True)
class AgentStatus:
    health: str  # HEALTH_STATES; see assess_health()
    version: str
    started_at: float  # unix time
    kubernetes: KubernetesConnection
    health_reasons: tuple[str, ...] = ()
    switch_hostname: str = ""
    last_applies: tuple[ApplyResult, ...] = ()
    refusals: tuple[Refusal, ...] = ()
    last_reconcile_latency_seconds: float | None = None

    def __post_init__(self) -> None:
        check_word(self.health, HEALTH_STATES, "health")


def assess_health(
    kubernetes: KubernetesConnection, applies: Sequence[ApplyResult],
    offload_failed: str | None = None, *, contact_stale_after: float = CONTACT_STALE_SECONDS,
) -> tuple[str, tuple[str, ...]]:
    """The agent's health and why, from what it knows. Refusals do not degrade health: they are
    the agent doing its job on bad input, and they are listed on their own.

    A connection that is up but has brought nothing (no list, event or bookmark) for
    `contact_stale_after` degrades health too: a wedged watch looks connected, and the Nodes the
    agent serves may be that old."""
    if not kubernetes.synced:
        waiting = "waiting for the first complete Node list"
        if kubernetes.last_error:
            waiting += f" ({kubernetes.last_error})"
        return "starting", (waiting,)
    reasons: list[str] = []
    if not kubernetes.connected:
        reasons.append("Kubernetes API unreachable, serving last known state")
    elif (kubernetes.seconds_since_contact is not None
          and kubernetes.seconds_since_contact > contact_stale_after):
        reasons.append(f"nothing from the Kubernetes API for "
                       f"{kubernetes.seconds_since_contact:.0f} s (no list, event or bookmark; "
                       f"bound {contact_stale_after:.0f} s): the Node list may be stale")
    for result in applies:
        if not result.ok:
            reasons.append(f"last {result.applier} apply failed: {result.error or result.action}")
    if offload_failed:
        # Routes the ASIC refused go through the CPU: the silent overflow headroom exists to
        # catch. Reported as the data plane's failure, whatever its last apply said.
        reasons.append(f"last dataplane apply failed: {offload_failed}")
    return ("degraded" if reasons else "ok"), tuple(reasons)


# ---- ListAttachments / ListRoutes / ListVteps / GetHeadroom ----


@dataclass(frozen=True)
class AttachmentInfo:
    port: str
    node: str
    source: str  # ATTACHMENT_SOURCES
    routing: str  # ROUTING_MODES
    bgp_state: str = "unknown"  # BGP_STATES
    prefixes: tuple[str, ...] = ()  # what this leaf accepts from the node (plan)
    prefixes_accepted: int | None = None  # observed: BGP-accepted count; None = unknown
    draining: bool = False  # cordoned
    node_ips: tuple[str, ...] = ()
    vtep: str | None = None  # VXLAN nodes: their VTEP's address
    pods: int | None = None  # pods indexed on the node; None = pods not watched

    def __post_init__(self) -> None:
        check_word(self.source, ATTACHMENT_SOURCES, "attachment source")
        check_word(self.routing, ROUTING_MODES, "routing mode")
        check_word(self.bgp_state, BGP_STATES, "BGP state")


@dataclass(frozen=True)
class RouteInfo:
    """One prefix as desired (plan) and/or observed (kernel, FRR): both true is in sync,
    desired only is missing, observed only is stale."""

    prefix: str
    owner: str  # the node; "" when no node owns it
    routing: str  # ROUTING_MODES
    next_hop: str = ""
    device: str = ""
    desired: bool = True
    observed: bool = False

    def __post_init__(self) -> None:
        check_word(self.routing, ROUTING_MODES, "routing mode")

    @property
    def state(self) -> str:
        return _entry_state(self.desired, self.observed)


def _entry_state(desired: bool, observed: bool) -> str:
    """A route's or VTEP's state: ok (desired and there), missing, or stale (there only)."""
    if desired and observed:
        return "ok"
    return "missing" if desired else "stale"


@dataclass(frozen=True)
class VtepInfo:
    owner: str
    vtep_ip: str
    mac: str = ""
    pod_cidr: str = ""
    vni: int = 0
    desired: bool = True
    observed: bool = False

    @property
    def state(self) -> str:
        return _entry_state(self.desired, self.observed)


# ---- ListServices ----


class FibHop(NamedTuple):
    """One next hop of a VIP's route in the leaf's FIB (agent.status.announcers reads them)."""

    source: str  # "bgp": learned from a node's session; "agent": the agent's own route
    device: str  # the port the hop leaves by ("" when the kernel named none)
    gateway: str | None  # the next hop address (a link-local one for BGP unnumbered)



@dataclass(frozen=True, kw_only=True)
class ServiceInfo:
    """One Service VIP as `fabricctl services` shows it: the plan's verdict (who may announce
    it) next to what the leaf's FIB forwards it to. One entry per VIP: a VIP shared by several
    Services names them all in `services`, and `service` is the first (usually the only one).
    Field order is the JSON's order."""

    vip: str
    service: str = ""  # "namespace/name": services[0] when not given
    services: tuple[str, ...]  # "namespace/name", sorted
    policy: str  # SERVICE_POLICIES
    nodes_permitted: tuple[str, ...] = ()
    # The nodes the leaf's FIB forwards the VIP to; None: not known (the FIB was not read).
    nodes_announcing: tuple[str, ...] | None = None
    state: str = "unknown"  # SERVICE_STATES, or "unknown" when nodes_announcing is None
    reason: str | None = None  # why refused
    prefix: str  # the exact /32 or /128 a node may announce
    ports: Mapping[str, str] = field(default_factory=dict)  # node -> port, nodes named above

    def __post_init__(self) -> None:
        check_word(self.state, SERVICE_STATES, "service VIP state")
        check_word(self.policy, SERVICE_POLICIES, "traffic policy")
        if not self.service and self.services:
            object.__setattr__(self, "service", self.services[0])


# ---- Locate ----


@dataclass(frozen=True)
class LocateResult:
    query: str
    matched: str  # LOCATE_MATCHES
    node: str
    port: str
    routing: str  # ROUTING_MODES
    route_prefix: str = ""  # the route carrying the queried address; "" for a node name
    next_hop: str = ""
    vtep: str | None = None
    pod: PodInfo | None = None
    node_ips: tuple[str, ...] = ()
    node_prefixes: tuple[str, ...] = ()
    bgp_state: str = "unknown"
    service: ServiceInfo | None = None  # set when a Service VIP matched

    def __post_init__(self) -> None:
        check_word(self.matched, LOCATE_MATCHES, "locate match")
        check_word(self.routing, ROUTING_MODES, "routing mode")
        check_word(self.bgp_state, BGP_STATES, "BGP state")


class InvalidQuery(ValueError):
    """A Locate query that is not a pod IP, namespace/pod, node name, node IP or Service VIP (or
    is ambiguous)."""


class NotFound(LookupError):
    """Nothing behind this leaf matches a Locate query."""


# ---- the provider ----


@runtime_checkable
class StatusProvider(Protocol):
    """What the daemon implements for the status service.

    Every method is called on the daemon's event loop and must return at once from state the
    daemon already holds (no I/O, no await): a status request must never wait on FRR or on the
    API server, which are what an operator is trying to diagnose.
    """

    def status(self) -> AgentStatus: ...

    def attachments(self) -> Sequence[AttachmentInfo]: ...

    def routes(self) -> Sequence[RouteInfo]: ...

    def vteps(self) -> Sequence[VtepInfo]: ...

    def headroom(self) -> Sequence[HeadroomInfo]: ...

    def services(self) -> Sequence[ServiceInfo]: ...

    def locate(self, query: str) -> LocateResult:
        """Raise InvalidQuery for a malformed query, NotFound when nothing matches
        (agent.cluster.pod_index.locate does both)."""
        ...


# ---- events ----


def attachment_events(
    before: Sequence[AttachmentInfo], after: Sequence[AttachmentInfo], now: float
) -> list[Event]:
    """The events between two attachment snapshots (the daemon keeps the last one): nodes
    attached / detached (a recabled node is both), BGP sessions reaching or leaving
    Established. Pure, so the daemon's wiring is one call per reconcile."""
    old = {(a.port, a.node): a for a in before}
    new = {(a.port, a.node): a for a in after}
    events: list[Event] = []
    for key in sorted(old.keys() - new.keys()):
        a = old[key]
        events.append(Event("node_detached", now, a.node, f"from {a.port}"))
    for key in sorted(new.keys() - old.keys()):
        a = new[key]
        events.append(Event("node_attached", now, a.node,
                            f"on {a.port} ({a.source}, routing {a.routing})"))
    for key in sorted(new.keys()):
        a, was = new[key], old.get(key)
        was_up = was is not None and was.bgp_state == "established"
        if a.bgp_state == "established" and not was_up:
            events.append(Event("session_up", now, a.port, f"{a.node} Established"))
        elif was_up and a.bgp_state != "established":
            events.append(Event("session_down", now, a.port, f"{a.node} {a.bgp_state}"))
    for key in sorted(old.keys() - new.keys()):
        if old[key].bgp_state == "established":
            events.append(Event("session_down", now, old[key].port, f"{old[key].node} detached"))
    return events


def refusal_events(
    before: Sequence[Refusal], after: Sequence[Refusal], now: float
) -> list[Event]:
    """One `refusal` event per refusal that appeared (cleared ones are only logged). A refused
    Service VIP is its own bounded `vip_refused` event (agent.status.services), not this."""
    seen = set(before)
    return [Event("refusal", now, r.name, f"{r.kind}: {r.reason}") for r in after
            if r not in seen and r.kind != "vip"]


class SubscriberTooSlow(Exception):
    """A subscriber's buffer overflowed; it missed events after `last_seq`."""

    def __init__(self, last_seq: int, limit: int) -> None:
        super().__init__(
            f"client too slow: more than {limit} events pending; resume with after_seq={last_seq}"
        )
        self.last_seq = last_seq


class Subscription(AsyncIterator[Event]):
    """One subscriber: the history snapshot, then live events, until close() or overflow.

    The snapshot and the registration for live events happen in one step without an await (see
    EventLog.subscribe), so nothing published in between can be lost or delivered twice.
    """

    def __init__(self, log: EventLog, replay: list[Event], limit: int, resume_from: int) -> None:
        self._log = log
        self._pending: collections.deque[Event] = collections.deque(replay)
        self._limit = limit + len(replay)  # the replay itself never counts as falling behind
        self._wake = asyncio.Event()
        self._closed = False
        self._overflow = False
        self._last_seq = resume_from  # what a client resumes from if it falls behind
        self.delivered = 0

    def _offer(self, event: Event) -> None:
        if self._closed or self._overflow:
            return
        if len(self._pending) >= self._limit:
            self._overflow = True
            self._log._unsubscribe(self)
        else:
            self._pending.append(event)
        self._wake.set()

    def close(self) -> None:
        """End the iteration after what is already queued; idempotent."""
        self._closed = True
        self._log._unsubscribe(self)
        self._wake.set()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        while True:
            if self._pending:
                event = self._pending.popleft()
                self._last_seq = event.seq
                self.delivered += 1
                return event
            if self._overflow:
                self._closed = True
                raise SubscriberTooSlow(self._last_seq, self._limit)
            if self._closed:
                raise StopAsyncIteration
            self._wake.clear()
            await self._wake.wait()


class EventLog:
    """Bounded event history (the last `max_events`, none older than `max_age_seconds`) with
    fan-out to subscribers. Use from one event loop only (the daemon's)."""

    def __init__(
        self,
        *,
        max_events: int = 1000,
        max_age_seconds: float = 3600.0,
        subscriber_buffer: int = 1000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_events < 1 or subscriber_buffer < 1 or max_age_seconds <= 0:
            raise ValueError("max_events, subscriber_buffer and max_age_seconds must be positive")
        self.max_events = max_events
        self.max_age_seconds = max_age_seconds
        self.subscriber_buffer = subscriber_buffer  # live events a subscriber may have pending
        self.clock = clock
        self._history: collections.deque[Event] = collections.deque(maxlen=max_events)
        self._subscribers: set[Subscription] = set()
        self._seq = 0

    @property
    def last_seq(self) -> int:
        return self._seq

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def publish(self, event: Event) -> Event:
        """Store the event with the next sequence number and hand it to every subscriber.
        Never blocks; returns the event as stored."""
        self._seq += 1
        stored = dataclasses.replace(event, seq=self._seq)
        self._history.append(stored)
        self._expire()
        for sub in list(self._subscribers):
            sub._offer(stored)
        return stored

    def emit(self, kind: str, subject: str, message: str) -> Event:
        """publish() with the time taken from the log's clock."""
        return self.publish(Event(kind=kind, time=self.clock(), subject=subject, message=message))

    def history(self, *, after_seq: int = 0) -> list[Event]:
        """The retained events (oldest first) with seq > after_seq. An after_seq beyond the
        last event comes from a client of a previous agent process (numbering restarts at 1
        with the process): it gets the whole history rather than silence."""
        self._expire()
        if after_seq > self._seq:
            after_seq = 0
        return [e for e in self._history if e.seq > after_seq]

    def subscribe(self, *, history: bool = True, after_seq: int = 0) -> Subscription:
        """An async iterator: the history (unless history=False), then every event published
        from now on, in order. close() it when done (async for ... break does not)."""
        replay = self.history(after_seq=after_seq) if history else []
        resume_from = (after_seq if after_seq <= self._seq else 0) if history else self._seq
        sub = Subscription(self, replay, self.subscriber_buffer, resume_from)
        self._subscribers.add(sub)  # no await since the snapshot: no gap, no duplicate
        return sub

    def close(self) -> None:
        """End every subscription (they first drain what is queued)."""
        for sub in list(self._subscribers):
            sub.close()

    def _unsubscribe(self, sub: Subscription) -> None:
        self._subscribers.discard(sub)

    def _expire(self) -> None:
        cutoff = self.clock() - self.max_age_seconds
        while self._history and self._history[0].time < cutoff:
            self._history.popleft()
