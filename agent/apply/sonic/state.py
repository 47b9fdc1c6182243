"""The agent's own state in STATE_DB, where SONiC tools and operators look first.

Table `KUBE_FABRIC_AGENT` (Table semantics, so `redis-cli -n 6 keys 'KUBE_FABRIC_AGENT*'` and
`sonic-db-cli STATE_DB hgetall 'KUBE_FABRIC_AGENT|summary'` show it):
- `KUBE_FABRIC_AGENT|attachment|<port>`: node, routing, source, draining, prefixes@ (a list, the
  ConfigDBConnector way); one per attached port, removed when the port has no node any more;
- `KUBE_FABRIC_AGENT|summary`: updated, attachments, and per applier `<applier>_<objects>`
  counts and `<applier>_last_action|_ok|_at|_duration|_error`.

StateDbPublisher writes both after each reconcile and resync (SonicDataplane.report()).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from redis.exceptions import RedisError

from agent.apply.contract import ApplyResult
from agent.apply.sonic.db import STATE_DB, SonicDb
from agent.apply.sonic.table import FieldValue, Table

log = logging.getLogger(__name__)

STATE_TABLE = "KUBE_FABRIC_AGENT"
ATTACHMENT = "attachment"
SUMMARY = "summary"


class AttachmentLike(Protocol):
    """agent.plan.PlannedAttachment satisfies this."""

    @property
    def port(self) -> str: ...
    @property
    def node(self) -> str: ...
    @property
    def routing(self) -> str: ...
    @property
    def prefixes(self) -> Sequence[str]: ...


@dataclass(frozen=True)
class ApplierSummary:
    name: str  # e.g. "frr", "sonic"
    objects: Mapping[str, int] = field(default_factory=dict)  # e.g. {"routes": 12}
    last_action: str | None = None
    last_ok: bool | None = None
    last_at: float | None = None  # wall clock: when the last apply started
    last_duration: float | None = None
    last_error: str | None = None

    @classmethod
    def from_result(
        cls, name: str, result: ApplyResult | None, objects: Mapping[str, int] | None = None
    ) -> ApplierSummary:
        """From an applier's latest result (None: none yet, only the object counts)."""
        if result is None:
            return cls(name, dict(objects or {}))
        return cls(name, dict(objects or {}), result.action, result.ok, result.started,
                   result.duration, result.error)


class AgentStateWriter:
    def __init__(self, db: SonicDb, table: str = STATE_TABLE) -> None:
        self.sep = db.separator(STATE_DB)
        self.table = Table(db.client(STATE_DB), table, self.sep)

    def attachment_key(self, port: str) -> str:
        return f"{ATTACHMENT}{self.sep}{port}"

    async def write_attachments(self, attachments: Iterable[AttachmentLike]) -> None:
        """Exactly these attachments afterwards: entries are replaced (a node's fields never
        linger on a port), and ports no longer attached are deleted."""
        wanted: dict[str, dict[str, FieldValue]] = {}
        for a in attachments:
            fields: dict[str, FieldValue] = {
                "node": a.node,
                "routing": a.routing,
                "prefixes": list(a.prefixes),
            }
            for extra in ("source", "draining"):
                value = getattr(a, extra, None)
                if value is not None:
                    fields[extra] = str(value).lower() if isinstance(value, bool) else str(value)
            wanted[self.attachment_key(a.port)] = fields
        prefix = ATTACHMENT + self.sep
        current = {k for k in await self.table.keys() if k.startswith(prefix)}
        for key in sorted(current - wanted.keys()):
            await self.table.delete(key)
        for key, fields in wanted.items():
            if await self.table.get(key) != fields:  # unchanged entries are not rewritten
                await self.table.replace(key, fields)

    async def write_summary(self, appliers: Sequence[ApplierSummary], attachments: int) -> None:
        fields: dict[str, FieldValue] = {
            "updated": f"{time.time():.3f}",
            "attachments": str(attachments),
        }
        for ap in appliers:
            for obj, count in ap.objects.items():
                fields[f"{ap.name}_{obj}"] = str(count)
            last = {
                "last_action": ap.last_action,
                "last_ok": None if ap.last_ok is None else str(ap.last_ok).lower(),
                "last_at": None if ap.last_at is None else f"{ap.last_at:.3f}",
                "last_duration": None if ap.last_duration is None else f"{ap.last_duration:.3f}",
                "last_error": ap.last_error,
            }
            for name, value in last.items():
                if value is not None:
                    fields[f"{ap.name}_{name}"] = value
        # Replace, so an applier's error from last time does not outlive its recovery.
        await self.table.replace(SUMMARY, fields)


class StateDbPublisher:
    """Writes the agent's attachments and summary to STATE_DB. Never raises for Redis trouble:
    STATE_DB is a report, and a reconcile must not fail because the report could not be
    written. A failure is logged once, and the recovery once."""

    def __init__(self, db: SonicDb) -> None:
        self.writer = AgentStateWriter(db)
        self._lock = asyncio.Lock()  # reconcile and the resync loop both publish
        self.error: str | None = None

    async def publish(self, attachments: Iterable[AttachmentLike],
                      appliers: Sequence[ApplierSummary]) -> bool:
        items = list(attachments)
        async with self._lock:
            try:
                await self.writer.write_attachments(items)
                await self.writer.write_summary(appliers, len(items))
            except (RedisError, OSError) as exc:
                if self.error is None:
                    log.warning("cannot write the agent's state to STATE_DB: %s", exc)
                self.error = str(exc)
                return False
        if self.error is not None:
            log.info("STATE_DB state written again")
            self.error = None
        return True
