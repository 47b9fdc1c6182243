"""Log lines for a repeating problem are rate limited: a dead API server, a full disk or a
hostile Node that keeps coming back must not flood a switch's journal (and its flash) with the
same line every second, nor hide the other lines in it.

`RepeatFilter` lets a warning or error through once per window per (logger, level, text); the
first one after the window says how many were held back. Lines below WARNING pass untouched:
they describe progress (each reconcile, each apply), where every line is news.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

WINDOW_SECONDS = 60.0
# Distinct lines remembered; the oldest are forgotten first (a hostile cluster can make many
# distinct refusal lines, and this must not grow with it).
MAX_REMEMBERED = 1024


@dataclass
class _Seen:
    since: float
    held: int = 0


class RepeatFilter(logging.Filter):
    def __init__(self, window: float = WINDOW_SECONDS,
                 clock: Callable[[], float] = time.monotonic,
                 max_remembered: int = MAX_REMEMBERED) -> None:
        super().__init__()
        self.window = window
        self.clock = clock
        self.max_remembered = max_remembered
        self._seen: OrderedDict[tuple[str, int, str], _Seen] = OrderedDict()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        text = record.getMessage()
        key = (record.name, record.levelno, text)
        now = self.clock()
        seen = self._seen.get(key)
        if seen is not None and now - seen.since < self.window:
            seen.held += 1
            return False
        if seen is not None and seen.held:
            record.msg = (f"{text} (and {seen.held} more times in the last "
                          f"{now - seen.since:.0f}s)")
            record.args = ()
        self._seen[key] = _Seen(now)
        self._seen.move_to_end(key)
        while len(self._seen) > self.max_remembered:
            self._seen.popitem(last=False)
        return True


def install(handler: logging.Handler, window: float = WINDOW_SECONDS) -> RepeatFilter:
    """Rate limit what `handler` writes (the root handler: every logger goes through it)."""
    for existing in handler.filters:
        if isinstance(existing, RepeatFilter):
            return existing  # main() run twice in one process (tests) installs it once
    repeat = RepeatFilter(window)
    handler.addFilter(repeat)
    return repeat
