"""The fast apply path: only the delta is sent, and one `show running-config` confirms it.

The full path (agent.apply.frr.reload) runs frr-reload.py three times per change; each run
starts Python, parses both configurations and asks every daemon for its running config (0.9 s a
change on the lab leaf). Here the diff is frr-reload.py's own, run in-process (agent.apply.frr.
library) between the text FRR was last confirmed to run and the candidate; the delta and a
`show running-config` go to FRR in one vtysh call; that running config, diffed in-process
against the candidate, must come back empty. Anything else -- vtysh refusing a command, FRR
running something the diff did not expect (a hand edit since the last confirmation), a line not
taken -- is a miss: the caller then takes the full path, which starts from FRR's own running
config and rolls back to the last good file if it must.

The syntax check of the whole candidate (`vtysh -C`) is the caller's and comes first: a
candidate FRR refuses never reaches this module, so no part of it touches FRR.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from agent.apply.frr.delta import Delta, parse_delta
from agent.apply.frr.library import Library
from agent.apply.frr.timeouts import Timeouts
from agent.process import CommandResult

Runner = Callable[[list[str], float, str], Awaitable[CommandResult]]
SHOW_RUNNING = "show running-config no-header"


class Miss(Exception):
    """The fast path could not confirm the change; the message says what happened."""


class FastPath:
    def __init__(self, library: Library, vtysh: list[str], timeouts: Timeouts,
                 run: Runner) -> None:
        self.library = library
        self.vtysh = vtysh  # vtysh and its pathspace arguments
        self.timeouts = timeouts
        self.run = run
        # The last candidate confirmed, parsed: the next change is diffed against it without
        # parsing it again (9 ms of a 48-port leaf's 10 ms diff).
        self._parsed: tuple[str, Any] | None = None

    def _parse(self, text: str) -> Any:
        if self._parsed is not None and self._parsed[0] == text:
            return self._parsed[1]
        return self.library.parse(text)

    async def apply(self, confirmed: str, text: str) -> Delta:
        """Turn FRR from `confirmed` (what it was last confirmed to run) into `text`; the delta
        applied, or Miss if FRR does not run `text` afterwards."""
        new = self._parse(text)
        add, delete = self.library.compare(new, self._parse(confirmed))
        delta = parse_delta(self.library.test_output(add, delete))
        commands = self.library.commands(add, delete) if add or delete else []
        argv = [*self.vtysh, *(x for c in [*commands, SHOW_RUNNING] for x in ("-c", c))]
        res = await self.run(argv, self.timeouts.for_delta(len(commands)), "vtysh (delta)")
        if res.returncode != 0:
            raise Miss(f"vtysh refused the delta ({delta.summary(4)}): {res.output[-300:]}")
        running = self.library.parse_running(res.stdout)
        left_add, left_delete = self.library.compare(new, running)
        left = parse_delta(self.library.test_output(left_add, left_delete))
        if not left.empty:
            self._parsed = None
            raise Miss(f"FRR does not run the candidate after the delta: {left.summary(4)}")
        self._parsed = (text, new)
        return delta
