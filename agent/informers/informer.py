"""A list/watch informer for one collection, built like client-go's reflector.

The agent's routing must follow the cluster, but it must never withdraw routes because the
API server is unreachable: losing the API is not evidence that nodes are gone. So the store
survives every error and only a successful (re)list replaces it.

The cycle: list (store := items, rv := list rv) -> watch from rv -> apply events -> when the
watch ends normally re-watch from the last rv (no relist) -> on 410 Gone relist -> on any
other error back off exponentially and resume the watch from the last rv. A watch that brings
nothing, not even a bookmark, for `silence_timeout` is presumed dead and re-opened from the last
rv; an event too large to decode is skipped by relisting (agent.informers.kubeapi).

`last_contact` is the last time something was decoded (a list, an event, a bookmark): an
answered request alone is no proof that the data still flows.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from contextlib import aclosing
from typing import Any

from agent.informers.kubeapi import ApiError, ApiGone, EventTooLarge, KubeApi
from agent.informers.limits import WATCH_SILENCE_SECONDS

log = logging.getLogger(__name__)


class Backoff:
    """Exponential backoff with full jitter in [delay/2, delay], reset after a success."""

    def __init__(self, initial: float, maximum: float, rng: random.Random) -> None:
        self.initial = initial
        self.maximum = maximum
        self._rng = rng
        self._next = initial

    def reset(self) -> None:
        self._next = self.initial

    def next_delay(self) -> float:
        delay = self._next
        self._next = min(self._next * 2, self.maximum)
        # Jitter so that many agents (one per leaf) do not hammer a recovering apiserver in step.
        return delay * (0.5 + 0.5 * self._rng.random())


# A key is kept for every stored object: longer than a DNS subdomain (253) plus a namespace
# (63) it cannot name a Node or a Pod, and would cost its size in the store's keys.
MAX_KEY = 320


def object_key(obj: dict) -> str | None:
    """'namespace/name' (or 'name' when cluster-scoped); None for objects we cannot key."""
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict):
        return None
    name = metadata.get("name")
    if not isinstance(name, str) or not name:
        return None
    namespace = metadata.get("namespace")
    key = f"{namespace}/{name}" if isinstance(namespace, str) and namespace else name
    return key if len(key) <= MAX_KEY else None


def _resource_version(obj: dict) -> str | None:
    metadata = obj.get("metadata")
    rv = metadata.get("resourceVersion") if isinstance(metadata, dict) else None
    return rv if isinstance(rv, str) and rv else None


class Informer:
    """Keeps `store` in sync with one API collection; call `run()` in a task."""

    def __init__(
        self,
        api: KubeApi,
        path: str,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        on_change: Callable[[], None],
        watch_timeout: float = 300.0,
        watch_timeout_jitter: float = 1.0,
        backoff_initial: float = 0.8,
        backoff_max: float = 30.0,
        list_limit: int = 500,
        rng: random.Random | None = None,
        transform: Callable[[dict], dict] | None = None,
        silence_timeout: float = WATCH_SILENCE_SECONDS,
    ) -> None:
        self.api = api
        self.path = path
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.on_change = on_change
        self.watch_timeout = watch_timeout
        self.watch_timeout_jitter = watch_timeout_jitter
        self.list_limit = list_limit
        # Applied to every object before it is stored (client-go's SetTransform): a Pod store
        # keeps a few fields instead of 5-15 KB of JSON per pod.
        self.transform = transform
        # A watch that delivers nothing (no event, no bookmark) this long is re-opened.
        self.silence_timeout = silence_timeout
        self._rng = rng or random.Random()
        self._backoff = Backoff(backoff_initial, backoff_max, self._rng)
        # The same dict object for the informer's whole life: holders of a reference see
        # relists too, and every replacement happens without an await (atomic for asyncio).
        self.store: dict[str, dict] = {}
        self.synced = False
        self.connected = False
        self.last_error: str | None = None
        self.last_contact = 0.0
        self.resource_version = ""
        self._outage_logged = False
        self._healthy_once = False  # a list or an event has been decoded at least once
        self._events_since_list = 0

    def __repr__(self) -> str:
        return f"Informer({self.path!r}, rv={self.resource_version!r}, objects={len(self.store)})"

    async def run(self) -> None:
        """Run until cancelled; never returns and never raises except CancelledError."""
        need_list = True
        while True:
            try:
                if need_list:
                    await self._list()
                    need_list = False
                await self._watch()
            except EventTooLarge as err:
                # The event cannot be decoded, so which object it changed is unknown, and
                # resuming from our rv would meet it again: relist (it is older than the list's
                # rv), after a backoff, as the object may keep changing.
                log.warning("%s: %s; relisting", self.path, err)
                need_list = True
                self.last_error = str(err)
                await asyncio.sleep(self._backoff.next_delay())
            except ApiGone as err:
                if need_list:
                    # Even the list is "gone": a broken server or proxy. Back off instead of
                    # relisting in a tight loop.
                    await self._failed(str(err), err.retry_after)
                    continue
                # Our rv is out of the server's window: only a fresh list can tell us what
                # was deleted meanwhile. Relisting at once is what client-go does.
                log.info(
                    "%s: resourceVersion %s expired (%s), relisting",
                    self.path,
                    self.resource_version,
                    err,
                )
                need_list = True
                if self._events_since_list == 0:
                    # Gone right after a fresh list: relisting at once could loop against a
                    # misbehaving server, one full list per iteration.
                    await asyncio.sleep(self._backoff.next_delay())
            except ApiError as err:
                await self._failed(str(err), err.retry_after)
            except Exception as err:
                # The agent must outlive its own bugs and odd servers: log loudly, retry.
                log.exception("%s: unexpected error in informer", self.path)
                await self._failed(f"{type(err).__name__}: {err}", None)

    async def _list(self) -> None:
        rv, items = await self.api.list(
            self.path,
            label_selector=self.label_selector,
            field_selector=self.field_selector,
            limit=self.list_limit,
        )
        fresh: dict[str, dict] = {}
        for item in items:
            key = object_key(item)
            if key is None:
                log.warning(
                    "%s: ignoring listed object without metadata.name: %.200r", self.path, item
                )
                continue
            fresh[key] = self.transform(item) if self.transform else item
        # No await between clear() and update(): nobody can observe a half-replaced store.
        self.store.clear()
        self.store.update(fresh)
        self.resource_version = rv
        self._events_since_list = 0
        first = not self.synced
        self.synced = True
        self._mark_connected()
        log.info(
            "%s: %s %d objects at resourceVersion %s",
            self.path,
            "listed" if first else "relisted",
            len(fresh),
            rv,
        )
        self._notify()

    async def _watch(self) -> None:
        # Randomised like client-go's reflector (minWatchTimeout * [1, 2)) so that watches of
        # many agents do not all expire at the same moment. The API takes whole seconds.
        timeout = self.watch_timeout * (1.0 + self.watch_timeout_jitter * self._rng.random())
        events = self.api.watch(
            self.path,
            resource_version=self.resource_version,
            label_selector=self.label_selector,
            field_selector=self.field_selector,
            timeout_seconds=max(1, int(timeout)),
            on_open=self._mark_open,
        )
        started = time.monotonic()
        received = 0
        async with aclosing(events):
            while True:
                try:
                    async with asyncio.timeout(self.silence_timeout):
                        event_type, obj = await anext(events)
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    self._silent()
                    return
                self.last_contact = time.monotonic()
                received += 1
                if received == 1:
                    self._mark_connected()  # an event decoded: the server really answers
                self._events_since_list += 1
                self._apply(event_type, obj)
        log.debug("%s: watch ended at rv %s, re-watching", self.path, self.resource_version)
        if received == 0 and time.monotonic() - started < 1.0:
            # A server (or proxy) that ends every watch at once would otherwise be polled in a
            # tight loop; client-go treats such "very short watches" the same way.
            await asyncio.sleep(self._backoff.next_delay())

    def _apply(self, event_type: str, obj: dict) -> None:
        rv = _resource_version(obj)
        if event_type == "BOOKMARK":
            if rv is not None:
                self.resource_version = rv
            return
        if event_type not in ("ADDED", "MODIFIED", "DELETED"):
            log.warning("%s: ignoring watch event of unknown type %.50r", self.path, event_type)
            return
        # Even an event we cannot use has been consumed: resuming past it is correct.
        if rv is not None:
            self.resource_version = rv
        key = object_key(obj)
        if key is None:
            log.warning(
                "%s: ignoring %s event for an object without metadata.name: %.200r",
                self.path,
                event_type,
                obj,
            )
            return
        if event_type == "DELETED":
            if self.store.pop(key, None) is None:
                return
        else:
            if self.transform is not None:
                obj = self.transform(obj)
            if self.store.get(key) == obj:
                return
            self.store[key] = obj
        self._notify()

    def _silent(self) -> None:
        """No event and no bookmark for silence_timeout: the stream is presumed dead (half-open
        TCP, a wedged proxy). Leaving _watch() closes it; run() re-watches from our rv at once,
        no relist. Not connected until the new watch is answered; last_contact stays old, so
        the status shows the silence."""
        self.connected = False
        self.last_error = f"watch silent for {self.silence_timeout:.0f} s, re-opened"
        log.warning("%s: no event or bookmark for %.0f s; re-opening the watch from rv %s",
                    self.path, self.silence_timeout, self.resource_version)

    def _notify(self) -> None:
        try:
            self.on_change()
        except Exception:  # a consumer bug must not stop the watch
            log.exception("%s: on_change callback failed", self.path)

    def _mark_open(self) -> None:
        """The server answered a watch with 200: connected, but not yet proven sane (and no
        contact: a proxy that answers and then stalls must not look fresh)."""
        self.connected = True
        self.last_error = None

    def _mark_connected(self) -> None:
        """A list or a watch event decoded. Only this resets the backoff and ends the outage:
        a server (or proxy) that opens every watch and then sends garbage would otherwise be
        retried at once, forever, with a warning each time."""
        if self._outage_logged or not self._healthy_once:
            log.info("%s: connected to the API server", self.path)
        self._mark_open()
        self.last_contact = time.monotonic()
        self._backoff.reset()
        self._outage_logged = False
        self._healthy_once = True

    async def _failed(self, error: str, retry_after: float | None) -> None:
        self.last_error = error
        self.connected = False
        if not self._outage_logged:
            # One line per outage, not per retry.
            self._outage_logged = True
            log.warning(
                "%s: API server unavailable (%s); keeping %d known objects",
                self.path,
                error,
                len(self.store),
            )
        else:
            log.debug("%s: still unavailable: %s", self.path, error)
        delay = self._backoff.next_delay()
        if retry_after is not None:
            delay = max(delay, min(retry_after, self._backoff.maximum))
        await asyncio.sleep(delay)

    def snapshot(self) -> dict[str, Any]:
        """Status for health reporting."""
        return {
            "path": self.path,
            "synced": self.synced,
            "connected": self.connected,
            "last_error": self.last_error,
            "resource_version": self.resource_version,
            "objects": len(self.store),
            "seconds_since_contact": time.monotonic() - self.last_contact
            if self.last_contact
            else None,
        }
