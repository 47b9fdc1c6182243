"""The status data model without gRPC: EventLog semantics, health, vocabulary checks."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import pytest

from agent.cluster.nodes import Refusal
from agent.events import Event
from agent.informers.limits import CONTACT_STALE_SECONDS, WATCH_SILENCE_SECONDS
from agent.status.model import (
    AttachmentInfo,
    EventLog,
    HeadroomInfo,
    KubernetesConnection,
    StatusProvider,
    SubscriberTooSlow,
    Subscription,
    assess_health,
    attachment_events,
    refusal_events,
)
from tests.fake_status import FakeProvider


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def take(sub: AsyncIterator[Event], n: int) -> list[Event]:
    async with asyncio.timeout(2):
        return [await anext(sub) for _ in range(n)]


async def test_publish_assigns_sequence_numbers_and_keeps_a_bounded_history() -> None:
    log = EventLog(max_events=3, clock=Clock())
    for i in range(5):
        stored = log.emit("pod_added", f"shop/web-{i}", "added")
        assert stored.seq == i + 1
    assert [e.subject for e in log.history()] == ["shop/web-2", "shop/web-3", "shop/web-4"]
    assert [e.seq for e in log.history(after_seq=4)] == [5]


async def test_history_drops_events_older_than_max_age() -> None:
    clock = Clock()
    log = EventLog(max_age_seconds=3600, clock=clock)
    log.emit("session_up", "swp1", "node-a established")
    clock.now += 3000
    log.emit("session_down", "swp1", "node-a idle")
    clock.now += 1000  # the first is now 4000 s old
    assert [e.kind for e in log.history()] == ["session_down"]


async def test_a_subscriber_gets_history_then_live_events_in_order() -> None:
    log = EventLog(clock=Clock())
    log.emit("node_attached", "node-a", "swp1 (annotation)")
    log.emit("session_up", "swp1", "node-a established")
    sub = log.subscribe()
    assert [e.seq for e in await take(sub, 2)] == [1, 2]
    for i in range(50):
        log.emit("pod_added", f"shop/p{i}", "added")
    assert [e.seq for e in await take(sub, 50)] == list(range(3, 53))
    sub.close()
    with pytest.raises(StopAsyncIteration):
        await anext(sub)
    assert log.subscribers == 0


async def test_a_waiting_subscriber_wakes_on_publish() -> None:
    log = EventLog(clock=Clock())
    sub = log.subscribe(history=False)
    waiter = asyncio.create_task(anext(sub))
    await asyncio.sleep(0)  # the subscriber is now parked
    assert not waiter.done()
    log.emit("apply_result", "frr", "reloaded in 0.71 s")
    event = await asyncio.wait_for(waiter, 2)
    assert event.kind == "apply_result"


async def test_late_subscriber_and_resume_after_seq() -> None:
    log = EventLog(clock=Clock())
    for i in range(5):
        log.emit("refusal", f"node-{i}", "bad name")
    late = log.subscribe(after_seq=3)
    assert [e.seq for e in await take(late, 2)] == [4, 5]
    restarted = log.subscribe(after_seq=900)  # a client of the previous agent process
    assert [e.seq for e in await take(restarted, 5)] == [1, 2, 3, 4, 5]
    restarted.close()
    live_only = log.subscribe(history=False)
    log.emit("refusal", "node-5", "bad name")
    assert [e.seq for e in await take(live_only, 1)] == [6]
    assert [e.seq for e in await take(late, 1)] == [6]


async def test_a_slow_subscriber_is_cut_off_and_told_where_to_resume() -> None:
    log = EventLog(subscriber_buffer=3, clock=Clock())
    log.emit("pod_added", "shop/a", "")
    sub = log.subscribe()
    fast = log.subscribe()
    for i in range(10):  # publish never blocks, whatever the subscribers do
        log.emit("pod_added", f"shop/{i}", "")
    assert log.subscribers == 0  # both overflowed: 1 history + 10 > 1 + 3
    got = [e.seq async for e in _until_error(sub)]
    assert got == [1, 2, 3, 4]  # what it had buffered, then the error
    with pytest.raises(SubscriberTooSlow, match="after_seq=4"):
        await anext(sub)
    fast.close()


async def _until_error(sub: Subscription) -> AsyncIterator[Event]:
    while sub._pending:
        yield await anext(sub)


async def test_close_ends_every_subscription() -> None:
    log = EventLog(clock=Clock())
    subs = [log.subscribe() for _ in range(3)]
    waiters = [asyncio.create_task(anext(s)) for s in subs]
    await asyncio.sleep(0)
    log.close()
    for waiter in waiters:
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(waiter, 2)


def test_event_kinds_are_checked() -> None:
    with pytest.raises(ValueError, match="event kind"):
        Event(kind="pod_addded", time=0.0, subject="x", message="")
    with pytest.raises(ValueError):
        AttachmentInfo("swp1", "node-a", "annotation", "bgpp")
    with pytest.raises(ValueError):
        HeadroomInfo("ipv4_routes", -1, 0, 10, "config")
    # "unknown" is what a client decodes from a value a newer agent sends.
    assert Event(kind="unknown", time=0.0, subject="x", message="").kind == "unknown"


def test_health() -> None:
    k = KubernetesConnection(connected=False, synced=False, last_error="connection refused")
    assert assess_health(k, []) == (
        "starting", ("waiting for the first complete Node list (connection refused)",)
    )
    k = KubernetesConnection(connected=False, synced=True)
    health, reasons = assess_health(k, [])
    assert health == "degraded" and "serving last known state" in reasons[0]
    provider = FakeProvider()
    assert provider.status().health == "ok"


def test_health_degrades_when_a_connected_api_has_said_nothing_for_too_long() -> None:
    """Case 5: a wedged watch (half-open TCP, a stuck proxy) looks connected; the age of the
    last list, event or bookmark tells. Bound: 2 x the watch watchdog's silence bound."""
    assert CONTACT_STALE_SECONDS == 2 * WATCH_SILENCE_SECONDS
    fresh = KubernetesConnection(connected=True, synced=True, seconds_since_contact=1.0)
    assert assess_health(fresh, []) == ("ok", ())
    stale = KubernetesConnection(connected=True, synced=True,
                                 seconds_since_contact=CONTACT_STALE_SECONDS + 1)
    health, reasons = assess_health(stale, [])
    assert health == "degraded"
    assert len(reasons) == 1 and "nothing from the Kubernetes API for 241 s" in reasons[0]
    # The bound is a parameter; a disconnected API says "unreachable", once.
    assert assess_health(fresh, [], contact_stale_after=0.5)[0] == "degraded"
    lost = KubernetesConnection(connected=False, synced=True, seconds_since_contact=1000.0)
    assert len(assess_health(lost, [])[1]) == 1


def test_the_fake_provider_implements_the_protocol() -> None:
    assert isinstance(FakeProvider(), StatusProvider)


def test_headroom_from_the_headroom_report() -> None:
    # The headroom report's rows are what the status service serves: one type, no mapping.
    from agent.headroom.report import build_report
    from agent.headroom.resources import RESOURCES, Capacity, Counts
    from agent.headroom.usage import per_node_cost

    capacity = {r: Capacity(1000, "config") for r in RESOURCES}
    node = Counts(**dict.fromkeys(RESOURCES, 2))
    desired = Counts(**dict.fromkeys(RESOURCES, 10))
    reports = build_report(capacity, desired, per_node_cost({"node-a": node}), 5)
    rows = list(reports)
    assert all(isinstance(r, HeadroomInfo) for r in rows)
    assert [r.resource for r in rows] == list(RESOURCES)
    assert all(r.capacity == 1000 and r.desired == 10 for r in rows)
    assert all(r.nodes_left is not None and r.nodes_left > 0 for r in rows)
    assert [r.to_json() for r in reports] == [vars(row) for row in rows]


def test_attachment_events() -> None:
    a = AttachmentInfo("swp1", "node-a", "annotation", "bgp", "active")
    b = AttachmentInfo("swp2", "node-b", "lldp", "bgp", "established")
    up = dataclasses.replace(a, bgp_state="established")
    moved = dataclasses.replace(b, port="swp3", bgp_state="idle")
    assert [(e.kind, e.subject) for e in attachment_events([], [a, b], 1.0)] == [
        ("node_attached", "node-a"), ("node_attached", "node-b"), ("session_up", "swp2"),
    ]
    events = attachment_events([a, b], [up, moved], 2.0)
    assert [(e.kind, e.subject, e.message) for e in events] == [
        ("node_detached", "node-b", "from swp2"),
        ("node_attached", "node-b", "on swp3 (lldp, routing bgp)"),
        ("session_up", "swp1", "node-a Established"),
        ("session_down", "swp2", "node-b detached"),
    ]
    assert attachment_events([up], [up], 3.0) == []
    down = attachment_events([up], [dataclasses.replace(up, bgp_state="idle")], 4.0)
    assert [(e.kind, e.message) for e in down] == [("session_down", "node-a idle")]


def test_refusal_events() -> None:
    old = Refusal("node", "'x\\n'", "not a DNS-1123 subdomain")
    new = Refusal("prefix", "node-b 10.99.0.0/24", "outside fabric.pod_supernets")
    assert [(e.subject, e.message) for e in refusal_events([old], [old, new], 5.0)] == [
        ("node-b 10.99.0.0/24", "prefix: outside fabric.pod_supernets")
    ]
