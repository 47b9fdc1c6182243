"""LLDP neighbours from lldpd (`lldpcli -f json show neighbors`): which system is on which port.

lldpd's JSON changes shape with the count: one interface is an object, several are a list of
one-key objects; a chassis is keyed by its system name, or has only an "id" when the neighbour
sends none. System names are hostile input like any other: only valid hostnames are kept.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from agent import validate
from agent.process import run_command

log = logging.getLogger(__name__)


def _items(value: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(value, Mapping):
        yield from value.items()
    elif isinstance(value, list):
        for entry in value:
            if isinstance(entry, Mapping):
                yield from entry.items()


def parse_neighbors(text: str) -> dict[str, str]:
    """port -> neighbour system name. A port with several neighbours (a hub, a mis-cabling) is
    left out: LLDP cannot say which of them is the node."""
    data = json.loads(text)
    interfaces = data.get("lldp", {}).get("interface", {}) if isinstance(data, dict) else {}
    seen: dict[str, set[str]] = {}
    for port, info in _items(interfaces):
        try:
            port = validate.interface_name(port)
        except ValueError:
            continue
        chassis = info.get("chassis") if isinstance(info, Mapping) else None
        for name, details in _items(chassis):
            if name == "id" and isinstance(details, Mapping) and "type" in details:
                continue  # chassis without a system name
            try:
                seen.setdefault(port, set()).add(validate.hostname(name))
            except ValueError:
                log.debug("ignoring LLDP system name %s on %s", validate.printable(name), port)
    return {port: next(iter(names)) for port, names in seen.items() if len(names) == 1}


class LldpPoller:
    """Polls lldpcli; calls on_change when the port -> system name map changes. lldpd being down
    keeps the last known map (attachments must not flap because a helper daemon restarted)."""

    def __init__(self, socket: str | None, on_change: Callable[[], None],
                 interval: float = 5.0, lldpcli: str = "lldpcli") -> None:
        self.argv = [lldpcli, *(["-u", socket] if socket else []), "-f", "json",
                     "show", "neighbors"]
        self.on_change = on_change
        self.interval = interval
        self.neighbors: dict[str, str] = {}
        self.error: str | None = None

    async def poll_once(self) -> None:
        try:
            res = await run_command(self.argv, limit_seconds=10.0)
            if res.returncode != 0:
                raise RuntimeError(res.output or f"exit {res.returncode}")
            neighbors = parse_neighbors(res.stdout)
        except (OSError, RuntimeError, ValueError, TimeoutError) as exc:
            if self.error is None:
                log.warning("LLDP unavailable, keeping last known neighbours: %s", exc)
            self.error = str(exc)
            return
        if self.error is not None:
            log.info("LLDP available again")
        self.error = None
        if neighbors != self.neighbors:
            self.neighbors = neighbors
            self.on_change()

    async def run(self) -> None:
        while True:
            await self.poll_once()
            await asyncio.sleep(self.interval)
