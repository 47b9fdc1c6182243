"""systemd: READY=1 after the first apply, STATUS= from the observed state, the watchdog.

The watchdog is petted from the event loop itself, so a wedged loop stops the pets and systemd
restarts the agent.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable

import sdnotify

log = logging.getLogger(__name__)
# The API server may be down at boot: report ready anyway after this (with the reason in
# STATUS) rather than let systemd kill an agent that is waiting correctly.
STARTUP_GRACE_SECONDS = 20.0
STATUS_INTERVAL_SECONDS = 5.0


class Systemd:
    def __init__(self, notifier: sdnotify.SystemdNotifier | None = None) -> None:
        self._notifier = notifier or sdnotify.SystemdNotifier()
        self.ready_sent = False

    def ready(self) -> None:
        if not self.ready_sent:
            self._notifier.notify("READY=1")
            self.ready_sent = True

    def status(self, line: str) -> None:
        self._notifier.notify(f"STATUS={line}")

    def stopping(self) -> None:
        self._notifier.notify("STOPPING=1")

    async def status_loop(self, publish: Callable[[], None]) -> None:
        """Publishes the status every few seconds (and pets the watchdog when systemd asks
        for one), and says READY after the grace time if no apply did."""
        watchdog_usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
        interval = (min(STATUS_INTERVAL_SECONDS, watchdog_usec / 2e6) if watchdog_usec
                    else STATUS_INTERVAL_SECONDS)
        started = time.monotonic()
        while True:
            publish()
            if not self.ready_sent and time.monotonic() - started > STARTUP_GRACE_SECONDS:
                self.ready()
            if watchdog_usec:
                self._notifier.notify("WATCHDOG=1")
            await asyncio.sleep(interval)
