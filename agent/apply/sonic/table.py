"""Table: how SONiC reads and writes CONFIG_DB and STATE_DB, and how it watches them.

These databases hold plain hashes `TABLE<sep>key` (the separator comes from
database_config.json, `|` in both): no key sets, no staging hashes, no publish. Conventions of
swss-common's ConfigDBConnector that other tools (sonic-cfggen, `show`, `config`) rely on:

- an entry with no fields is stored as {"NULL": "NULL"} (Redis has no empty hash), and the
  NULL field is dropped when read;
- a list is stored in the field `name@` as one comma-joined string.

Readers learn about changes from keyspace notifications (redis started with
notify-keyspace-events AKE): `PSUBSCRIBE __keyspace@<db>__:TABLE|*` delivers the operation
("hset", "del", ...) for each changed key; the reader then re-reads the key.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

FieldValue = str | Sequence[str]

_GLOB_SPECIAL = str.maketrans({c: "\\" + c for c in "*?[]\\"})


def glob_escape(text: str) -> str:
    """Table names and keys go into MATCH/PSUBSCRIBE patterns; they must match literally."""
    return text.translate(_GLOB_SPECIAL)


def encode_fields(fields: Mapping[str, FieldValue]) -> dict[str, str]:
    """ConfigDBConnector's typed_to_raw: lists become `name@` = comma-joined, {} becomes NULL."""
    if not fields:
        return {"NULL": "NULL"}
    raw: dict[str, str] = {}
    for name, value in fields.items():
        if isinstance(value, str):
            raw[name] = value
        else:
            items = list(value)
            if any("," in item for item in items):
                raise ValueError(f"list field {name} has an item containing ','")
            raw[name + "@"] = ",".join(items)
    return raw


def decode_fields(raw: Mapping[str, str]) -> dict[str, FieldValue]:
    """ConfigDBConnector's raw_to_typed: drop NULL, split `name@` lists."""
    typed: dict[str, FieldValue] = {}
    for name, value in raw.items():
        if name == "NULL":
            continue
        if name.endswith("@"):
            typed[name[:-1]] = value.split(",") if value else []
        else:
            typed[name] = value
    return typed


class Table:
    """One CONFIG_DB / STATE_DB table."""

    def __init__(self, client: aioredis.Redis, table: str, separator: str = "|") -> None:
        self.client = client
        self.table = table
        self.separator = separator
        self._prefix = f"{table}{separator}"

    def full_key(self, key: str) -> str:
        return self._prefix + key

    def key_of(self, full_key: str) -> str | None:
        """The entry key of a Redis key of this table, or None when it belongs to another."""
        return full_key[len(self._prefix):] if full_key.startswith(self._prefix) else None

    async def get_raw(self, key: str) -> dict[str, str] | None:
        raw: dict[str, str] = await self.client.hgetall(self.full_key(key))
        return raw or None

    async def get(self, key: str) -> dict[str, FieldValue] | None:
        """Fields of the entry (NULL dropped, lists split), or None when it does not exist."""
        raw = await self.get_raw(key)
        return None if raw is None else decode_fields(raw)

    async def set(self, key: str, fields: Mapping[str, FieldValue]) -> None:
        """Merge fields into the entry (ConfigDBConnector's mod_entry)."""
        await self.client.hset(self.full_key(key), mapping=encode_fields(fields))

    async def replace(self, key: str, fields: Mapping[str, FieldValue]) -> None:
        """Make the entry exactly `fields` (ConfigDBConnector's set_entry), atomically so a
        reader never sees it missing."""
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.delete(self.full_key(key))
            pipe.hset(self.full_key(key), mapping=encode_fields(fields))
            await pipe.execute()

    async def delete(self, key: str) -> None:
        await self.client.delete(self.full_key(key))

    async def keys(self) -> list[str]:
        """Entry keys, by SCAN (KEYS would block Redis on a big database)."""
        out = []
        async for full in self.client.scan_iter(match=glob_escape(self._prefix) + "*", count=1000):
            key = self.key_of(full)
            if key is not None:
                out.append(key)
        return out

    async def get_all(self) -> dict[str, dict[str, FieldValue]]:
        keys = await self.keys()
        async with self.client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hgetall(self.full_key(key))
            raws = await pipe.execute()
        return {k: decode_fields(r) for k, r in zip(keys, raws, strict=True) if r}


class _ConnectFlag:
    def __init__(self) -> None:
        self.is_set = False

    async def on_connect(self, _connection: object) -> None:
        self.is_set = True


@dataclass(frozen=True)
class KeyEvent:
    """A change to `key` of the watched table. op "resync" (key None) means notifications may
    have been lost (first subscription, or a reconnect): re-read the whole table."""

    key: str | None
    op: str


class KeyspaceWatcher:
    """Keyspace notifications for one table of one database, with reconnects.

    Notifications are fire-and-forget: whatever happens while the subscription is down is lost,
    so every (re)subscription is followed by a "resync" event and the reader re-reads the table.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        db_id: int,
        table: str,
        separator: str = "|",
        retry_seconds: float = 1.0,
    ) -> None:
        self.client = client
        self.db_id = db_id
        self.table = Table(client, table, separator)
        self.pattern = f"__keyspace@{db_id}__:" + glob_escape(f"{table}{separator}") + "*"
        self._channel_prefix = f"__keyspace@{db_id}__:"
        self.retry_seconds = retry_seconds
        self._stopping = False

    async def notifications_enabled(self) -> bool:
        """Whether the server sends keyspace events for hashes (K plus A or h, and g for DEL)."""
        conf = await self.client.config_get("notify-keyspace-events")
        flags = str(conf.get("notify-keyspace-events", ""))
        return "K" in flags and ("A" in flags or ("h" in flags and "g" in flags))

    def stop(self) -> None:
        """Ends events() within retry_seconds. Cancelling the consumer works too, but a cancel
        that lands as redis-py's read timeout expires can be lost; this cannot."""
        self._stopping = True

    async def events(self) -> AsyncIterator[KeyEvent]:
        while not self._stopping:
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            # redis-py reconnects and re-subscribes by itself, silently: without this flag the
            # reader would never learn that notifications were lost meanwhile.
            reconnected = _ConnectFlag()
            try:
                await pubsub.psubscribe(self.pattern)
                assert pubsub.connection is not None
                # redis-py keeps only a weak reference; `reconnected` lives as long as this loop.
                pubsub.connection.register_connect_callback(reconnected.on_connect)
                yield KeyEvent(None, "resync")
                while not self._stopping:
                    msg = await pubsub.get_message(timeout=self.retry_seconds)
                    if reconnected.is_set:
                        reconnected.is_set = False
                        yield KeyEvent(None, "resync")
                    if msg is None:
                        continue
                    channel = str(msg["channel"])
                    key = self.table.key_of(channel[len(self._channel_prefix):])
                    if key is not None:
                        yield KeyEvent(key, str(msg["data"]))
            except (RedisError, OSError) as exc:
                log.warning("keyspace subscription %s lost (%s); retrying", self.pattern, exc)
                await asyncio.sleep(self.retry_seconds)
            finally:
                await pubsub.aclose()
