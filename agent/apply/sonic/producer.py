"""ProducerStateTable: how fpmsyncd and friends write APPL_DB, step for step.

orchagent reads APPL_DB tables with ConsumerStateTable, which only ever looks at what a producer
left in the key set and the staging hashes; a writer that HSETs `T:key` directly is never seen
(and its fields are later clobbered). So every write here is one of the Lua scripts of
swss-common's ProducerStateTable (common/producerstatetable.cpp), for table T in database N:

- set(key, fields): SADD T_KEY_SET key -> added; HSET _T:key f v for each field;
  PUBLISH T_CHANNEL@N "G" if added.
- delete(key): SADD T_KEY_SET key -> added; SADD T_DEL_SET key; DEL _T:key; publish if added.
- set_batch / delete_batch: the same for many keys in ONE script call with ONE publish.

The trap: a set only merges fields into what the consumer already holds. Dropping a field needs
a delete followed by a set (the consumer then DELs `T:key` before it HSETs the new fields); a
batched "del + set" of one key does not do that. `replace()` is the only way this class offers to
drop fields, and `set()` refuses to be called with no fields (the consumer would read an empty
staging hash as a DEL). Callers that do not know whether fields shrank use `write()`, which picks
set or replace from the previous fields.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.commands.core import AsyncScript

UPDATE_MESSAGE = "G"  # what swss-common publishes; consumers ignore the payload

# KEYS[1] key set, KEYS[2] staging hash; ARGV[1] channel, ARGV[2] message, ARGV[3] key,
# ARGV[4..] field, value pairs.
_SET = """
local added = redis.call('SADD', KEYS[1], ARGV[3])
for i = 4, #ARGV, 2 do
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
end
if added > 0 then
    redis.call('PUBLISH', ARGV[1], ARGV[2])
end
return added
"""

# KEYS[1] key set, KEYS[2] delete set, KEYS[3] staging hash; ARGV[1] channel, ARGV[2] message,
# ARGV[3] key.
_DEL = """
local added = redis.call('SADD', KEYS[1], ARGV[3])
redis.call('SADD', KEYS[2], ARGV[3])
redis.call('DEL', KEYS[3])
if added > 0 then
    redis.call('PUBLISH', ARGV[1], ARGV[2])
end
return added
"""

# KEYS[1] key set, KEYS[2..] one staging hash per key; ARGV[1] channel, ARGV[2] message, then
# per key: key, number of fields, field, value pairs.
_BATCH_SET = """
local added = 0
local idx = 3
for k = 2, #KEYS do
    local n = tonumber(ARGV[idx + 1])
    added = added + redis.call('SADD', KEYS[1], ARGV[idx])
    for j = 0, n - 1 do
        redis.call('HSET', KEYS[k], ARGV[idx + 2 + 2 * j], ARGV[idx + 3 + 2 * j])
    end
    idx = idx + 2 + 2 * n
end
if added > 0 then
    redis.call('PUBLISH', ARGV[1], ARGV[2])
end
return added
"""

# KEYS[1] key set, KEYS[2] delete set, KEYS[3..] one staging hash per key; ARGV[1] channel,
# ARGV[2] message, ARGV[3..] keys (same order as the staging hashes).
_BATCH_DEL = """
local added = 0
for k = 3, #KEYS do
    local key = ARGV[k]
    added = added + redis.call('SADD', KEYS[1], key)
    redis.call('SADD', KEYS[2], key)
    redis.call('DEL', KEYS[k])
end
if added > 0 then
    redis.call('PUBLISH', ARGV[1], ARGV[2])
end
return added
"""

# One script call holds Redis for its whole run (orchagent's pops wait behind it); 1000 keys take
# a few milliseconds, which keeps a 100k-route resync from stalling everyone else.
DEFAULT_BATCH_SIZE = 1000

Fields = Mapping[str, str]


def _flat(fields: Fields) -> list[str]:
    if not fields:
        # An empty staging hash is how the consumer recognises a DEL: a set without fields
        # would delete the entry.
        raise ValueError("a set needs at least one field; use delete() to remove an entry")
    out: list[str] = []
    for name, value in fields.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise TypeError(f"fields must be str -> str, got {name!r}: {value!r}")
        out += (name, value)
    return out


def needs_replace(old: Fields | None, new: Fields) -> bool:
    """A set merges; only a delete-then-set drops fields the new entry no longer has."""
    return old is not None and any(name not in new for name in old)


class ProducerStateTable:
    """One APPL_DB table, written as swss-common's ProducerStateTable does."""

    def __init__(
        self,
        client: aioredis.Redis,
        table: str,
        db_id: int,
        separator: str = ":",
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.client = client
        self.table = table
        self.separator = separator
        self.batch_size = batch_size
        self.key_set = f"{table}_KEY_SET"
        self.del_set = f"{table}_DEL_SET"
        self.channel = f"{table}_CHANNEL@{db_id}"
        self._staging_prefix = f"_{table}{separator}"
        self._set: AsyncScript = client.register_script(_SET)
        self._del: AsyncScript = client.register_script(_DEL)
        self._batch_set: AsyncScript = client.register_script(_BATCH_SET)
        self._batch_del: AsyncScript = client.register_script(_BATCH_DEL)

    def full_key(self, key: str) -> str:
        """The consumer's hash for key: `T:key`."""
        return f"{self.table}{self.separator}{key}"

    def staging_key(self, key: str) -> str:
        """The producer's staging hash for key: `_T:key`."""
        return self._staging_prefix + key

    # -- single keys ---------------------------------------------------------------------------

    def _set_call(self, key: str, fields: Fields) -> tuple[list[str], list[str]]:
        return [self.key_set, self.staging_key(key)], [
            self.channel, UPDATE_MESSAGE, key, *_flat(fields)
        ]

    def _del_call(self, key: str) -> tuple[list[str], list[str]]:
        return [self.key_set, self.del_set, self.staging_key(key)], [
            self.channel, UPDATE_MESSAGE, key
        ]

    async def set(self, key: str, fields: Fields, pipe: Pipeline | None = None) -> None:
        """Create the entry or merge fields into it (fields it already has and that are not
        given here stay). With `pipe`, queued on that pipeline instead of sent."""
        keys, args = self._set_call(key, fields)
        await self._set(keys, args, client=pipe)

    async def delete(self, key: str, pipe: Pipeline | None = None) -> None:
        keys, args = self._del_call(key)
        await self._del(keys, args, client=pipe)

    async def replace(self, key: str, fields: Fields) -> None:
        """Make the entry exactly `fields`: the unbatched delete then the unbatched set, sent as
        one MULTI/EXEC so the consumer can never pop between them (it would see the entry
        vanish, and a route would be withdrawn for a moment)."""
        set_keys, set_args = self._set_call(key, fields)  # validates before anything is sent
        del_keys, del_args = self._del_call(key)
        async with self.client.pipeline(transaction=True) as pipe:
            await self._del(del_keys, del_args, client=pipe)
            await self._set(set_keys, set_args, client=pipe)
            await pipe.execute()

    async def write(self, key: str, fields: Fields, previous: Fields | None) -> None:
        """set() when the new fields cover the previous ones, replace() when some were dropped."""
        if needs_replace(previous, fields):
            await self.replace(key, fields)
        else:
            await self.set(key, fields)

    # -- batches -------------------------------------------------------------------------------

    async def set_batch(
        self, entries: Sequence[tuple[str, Fields]], pipe: Pipeline | None = None
    ) -> None:
        """Many sets in ONE script call and one publish. Merge semantics, like set()."""
        if not entries:
            return
        keys = [self.key_set]
        args = [self.channel, UPDATE_MESSAGE]
        for key, fields in entries:
            flat = _flat(fields)
            keys.append(self.staging_key(key))
            args += (key, str(len(flat) // 2), *flat)
        await self._batch_set(keys, args, client=pipe)

    async def delete_batch(self, keys: Sequence[str], pipe: Pipeline | None = None) -> None:
        """Many deletes in ONE script call and one publish."""
        if not keys:
            return
        await self._batch_del(
            [self.key_set, self.del_set, *(self.staging_key(k) for k in keys)],
            [self.channel, UPDATE_MESSAGE, *keys],
            client=pipe,
        )

    async def set_many(self, entries: Iterable[tuple[str, Fields]]) -> int:
        """set_batch over chunks of batch_size, all chunks in one round trip (a non-transactional
        pipeline: each chunk is still atomic and publishes once). Returns the number of keys."""
        items = list(entries)
        if not items:
            return 0
        async with self.client.pipeline(transaction=False) as pipe:
            for i in range(0, len(items), self.batch_size):
                await self.set_batch(items[i : i + self.batch_size], pipe)
            await pipe.execute()
        return len(items)

    async def delete_many(self, keys: Iterable[str]) -> int:
        items = list(keys)
        if not items:
            return 0
        async with self.client.pipeline(transaction=False) as pipe:
            for i in range(0, len(items), self.batch_size):
                await self.delete_batch(items[i : i + self.batch_size], pipe)
            await pipe.execute()
        return len(items)
