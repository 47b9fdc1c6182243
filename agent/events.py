"""Events: what happened, for `fabricctl events` and WatchEvents. Produced by several stages
(pod watches, the reconcile loop, the BGP observer, headroom), kept and fanned out by the
status service's EventLog (agent.status.model)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from agent.vocabulary import EVENT_KINDS, check_word


@dataclass(frozen=True)
class Event:
    kind: str  # EVENT_KINDS
    time: float  # unix time
    subject: str  # node, port, namespace/pod, resource, applier
    message: str
    seq: int = 0  # assigned by EventLog.publish: 1, 2, 3, ... per agent process

    def __post_init__(self) -> None:
        check_word(self.kind, EVENT_KINDS, "event kind")


class EventSink(Protocol):
    """Where a producer puts its events (the status service's EventLog)."""

    def publish(self, event: Event) -> Event: ...
