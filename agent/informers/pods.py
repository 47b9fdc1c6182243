"""Pod visibility: one field-selected Pod watch per node attached to this leaf.

Only the pods of this leaf's nodes are cached (and slimmed to the fields the index reads), so
memory follows the leaf's 48 ports, not the cluster's 5,000 nodes (frr-k8s was OOM-killed
caching a whole cluster). Watches start and stop as attachments change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable

from agent.cluster.pod_index import (
    PodDiff,
    PodIndex,
    pod_field_selector,
    slim_pod,
    watched_nodes_diff,
)
from agent.events import EventSink
from agent.informers.informer import Informer
from agent.informers.kubeapi import KubeApi

log = logging.getLogger(__name__)


class PodWatcher:
    def __init__(self, api: KubeApi, index: PodIndex, events: EventSink,
                 on_change: Callable[[], None], watch_timeout: float = 300.0) -> None:
        self.api = api
        self.index = index
        self.events = events
        self.on_change = on_change
        self.watch_timeout = watch_timeout
        self._watches: dict[str, tuple[Informer, asyncio.Task[None]]] = {}

    @property
    def nodes(self) -> list[str]:
        return sorted(self._watches)

    def sync(self, attached: Iterable[str]) -> None:
        """Watch exactly the pods of `attached` nodes."""
        start, stop = watched_nodes_diff(self._watches, attached)
        for node in stop:
            informer, task = self._watches.pop(node)
            task.cancel()
            self._publish(self.index.drop_node(node))
        for node in start:
            informer = Informer(
                self.api, "/api/v1/pods", field_selector=pod_field_selector(node),
                on_change=lambda n=node: self._changed(n), watch_timeout=self.watch_timeout,
                transform=slim_pod,
            )
            task = asyncio.create_task(informer.run(), name=f"pods-{node}")
            self._watches[node] = (informer, task)
        if start or stop:
            log.info("watching pods of %d nodes (+%s -%s)", len(self._watches),
                     ",".join(start) or "0", ",".join(stop) or "0")

    def _changed(self, node: str) -> None:
        entry = self._watches.get(node)
        if entry is None:
            return
        self._publish(self.index.replace_node(node, entry[0].store.values()))
        self.on_change()

    def _publish(self, diff: PodDiff) -> None:
        for event in diff.events(time.time()):
            self.events.publish(event)

    async def close(self) -> None:
        tasks = [task for _, task in self._watches.values()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._watches.clear()
