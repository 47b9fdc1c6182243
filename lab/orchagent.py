"""A stand-in for orchagent's side of APPL_DB: ConsumerStateTable, step for step.

One Lua script per pop (swss-common's common/consumer_state_table_pops.lua; newer versions also
return a DEL ahead of the SET when a key was deleted and set again before the pop):
1. SPOP T_KEY_SET 128
2. for each key: if SREM T_DEL_SET key returned 1 -> DEL T:key
3. fv = HGETALL _T:key; HSET T:key each field of fv; DEL _T:key
4. return (key, fv); an empty fv means DEL, otherwise SET.
It subscribes to T_CHANNEL@N and pops whatever is already pending when it starts. A publish may
stand for more keys than one pop takes (a batch of 1000 publishes once), so after a notification
it pops until a pop comes back empty, as orchagent keeps draining a table that still has data.
Every pop is recorded as (table, key, op, fields) for the tests to compare.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

import redis.asyncio as aioredis

POP_BATCH_SIZE = 128

# KEYS[1] T_KEY_SET, KEYS[2] "T:" (table + separator), KEYS[3] T_DEL_SET;
# ARGV[1] batch size, ARGV[2] the staging prefix "_".
POP = """
local ret = {}
local keys = redis.call('SPOP', KEYS[1], ARGV[1])
for i = 1, #keys do
    local key = keys[i]
    if redis.call('SREM', KEYS[3], key) == 1 then
        redis.call('DEL', KEYS[2] .. key)
    end
    local fv = redis.call('HGETALL', ARGV[2] .. KEYS[2] .. key)
    for j = 1, #fv, 2 do
        redis.call('HSET', KEYS[2] .. key, fv[j], fv[j + 1])
    end
    redis.call('DEL', ARGV[2] .. KEYS[2] .. key)
    table.insert(ret, {key, fv})
end
return ret
"""


@dataclass(frozen=True)
class Pop:
    table: str
    key: str
    op: str  # SET | DEL
    fields: tuple[tuple[str, str], ...]  # sorted

    @property
    def field_dict(self) -> dict[str, str]:
        return dict(self.fields)


class OrchagentStandIn:
    def __init__(self, socket: str, db_id: int, tables: list[str], separator: str = ":") -> None:
        self.client = aioredis.Redis(unix_socket_path=socket, db=db_id, decode_responses=True)
        self.db_id = db_id
        self.tables = tables
        self.sep = separator
        self.pops: list[Pop] = []
        self.notifications = 0
        self._pop = self.client.register_script(POP)
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self._inflight = 0  # pops sent to Redis whose result is not recorded yet
        self._stopping = False

    def channel(self, table: str) -> str:
        return f"{table}_CHANNEL@{self.db_id}"

    async def pop_table(self, table: str) -> int:
        """Pop until empty; returns the number of entries popped."""
        total = 0
        while True:
            self._inflight += 1
            try:
                ret = await self._pop(
                    [f"{table}_KEY_SET", f"{table}{self.sep}", f"{table}_DEL_SET"],
                    [POP_BATCH_SIZE, "_"],
                )
            finally:
                self._inflight -= 1
            if not ret:
                return total
            for key, fv in ret:
                fields = tuple(sorted(zip(fv[::2], fv[1::2], strict=True)))
                self.pops.append(Pop(table, key, "SET" if fields else "DEL", fields))
            total += len(ret)
            self._changed.set()

    async def start(self) -> None:
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        by_channel = {self.channel(t): t for t in self.tables}
        await pubsub.subscribe(*by_channel)
        for table in self.tables:  # what was pending before we subscribed
            await self.pop_table(table)

        async def run() -> None:
            try:
                while not self._stopping:
                    msg = await pubsub.get_message(timeout=0.2)
                    if msg is None:
                        continue
                    self.notifications += 1
                    await self.pop_table(by_channel[str(msg["channel"])])
            finally:
                await pubsub.aclose()

        self._task = asyncio.create_task(run(), name="orchagent-stand-in")

    async def stop(self) -> None:
        # A flag as well as cancel(): a cancellation that lands while redis-py's read timeout
        # expires can be lost, and a test must never hang in its teardown.
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=5)
            self._task = None
        await self.client.aclose()

    def take(self) -> list[Pop]:
        out, self.pops = self.pops, []
        return out

    async def quiesce(self, within: float = 10.0) -> list[Pop]:
        """Everything written so far popped (key sets empty), then take the pops."""
        deadline = time.monotonic() + within
        while True:
            pending = 0
            for table in self.tables:
                pending += await self.client.scard(f"{table}_KEY_SET")
            if pending == 0 and not self._busy():
                return self.take()
            if time.monotonic() > deadline:
                raise AssertionError(f"{pending} keys still pending after {within} s")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), 0.05)

    def _busy(self) -> bool:
        return self._inflight > 0

    async def main_table(self, table: str) -> dict[str, dict[str, str]]:
        """What the consumer holds: T:key hashes."""
        out = {}
        async for full in self.client.scan_iter(match=f"{table}{self.sep}*", count=1000):
            out[full[len(table) + len(self.sep):]] = await self.client.hgetall(full)
        return out
