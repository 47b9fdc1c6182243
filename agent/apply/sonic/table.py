"""Table: how SONiC reads and writes CONFIG_DB and STATE_DB.

These databases hold plain hashes `TABLE<sep>key` (the separator comes from
database_config.json, `|` in both): no key sets, no staging hashes, no publish. Conventions of
swss-common's ConfigDBConnector that other tools (sonic-cfggen, `show`, `config`) rely on:

- an entry with no fields is stored as {"NULL": "NULL"} (Redis has no empty hash), and the
  NULL field is dropped when read;
- a list is stored in the field `name@` as one comma-joined string.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import redis.asyncio as aioredis

FieldValue = str | Sequence[str]

_GLOB_SPECIAL = str.maketrans({c: "\\" + c for c in "*?[]\\"})


def glob_escape(text: str) -> str:
    """Table names and keys go into SCAN MATCH patterns; they must match literally."""
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
        """Make the entry exactly `fields` as ConfigDBConnector's set_entry does: HSET the new
        fields, then HDEL the ones dropped. Never DEL then HSET: SONiC daemons that follow
        keyspace events see a `del` as the object removed, then a new one set."""
        full = self.full_key(key)
        raw = encode_fields(fields)
        dropped = [f for f in await self.client.hkeys(full) if f not in raw]
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(full, mapping=raw)
            if dropped:
                pipe.hdel(full, *dropped)
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
