"""ProducerStateTable against a real redis-server, read back by the ConsumerStateTable stand-in."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from agent.apply.sonic.db import APPL_DB, SonicDb
from agent.apply.sonic.producer import ProducerStateTable, needs_replace
from lab.orchagent import OrchagentStandIn, Pop


def route_table(db: SonicDb, batch_size: int = 1000) -> ProducerStateTable:
    return ProducerStateTable(db.client(APPL_DB), "ROUTE_TABLE", db.db_id(APPL_DB),
                              db.separator(APPL_DB), batch_size)


async def published(pubsub: Any, expected: int, settle: float = 0.3) -> list[str]:
    """Messages on the subscribed channel: wait (deadline 5 s) for `expected`, then `settle`
    seconds more to catch any extra one (the only way to show that something did NOT happen)."""
    got: list[str] = []
    deadline = time.monotonic() + 5
    while len(got) < expected and time.monotonic() < deadline:
        msg = await pubsub.get_message(timeout=0.1)  # None also for ignored subscribe acks
        if msg is not None:
            got.append(msg["data"])
    end = time.monotonic() + settle
    while time.monotonic() < end:
        msg = await pubsub.get_message(timeout=0.05)
        if msg is not None:
            got.append(msg["data"])
    return got


def pop(key: str, **fields: str) -> Pop:
    return Pop("ROUTE_TABLE", key, "SET" if fields else "DEL", tuple(sorted(fields.items())))


async def test_set_writes_only_key_set_staging_hash_and_one_publish(sonic_db: SonicDb) -> None:
    """Before any consumer runs: the names and contents are exactly swss-common's."""
    client = sonic_db.client(APPL_DB)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe("ROUTE_TABLE_CHANNEL@0")
    try:
        table = route_table(sonic_db)
        await table.set("10.244.1.0/24", {"nexthop": "192.168.10.1", "ifname": "Ethernet0"})
        await table.set("10.244.1.0/24", {"nexthop": "192.168.10.1", "ifname": "Ethernet0"})
        assert await client.smembers("ROUTE_TABLE_KEY_SET") == {"10.244.1.0/24"}
        assert await client.hgetall("_ROUTE_TABLE:10.244.1.0/24") == {
            "nexthop": "192.168.10.1", "ifname": "Ethernet0"}
        assert await client.exists("ROUTE_TABLE:10.244.1.0/24") == 0  # the consumer's, not ours
        assert await client.exists("ROUTE_TABLE_DEL_SET") == 0
        # The second set found the key already in the key set: no second publish.
        assert await published(pubsub, 1) == ["G"]
    finally:
        await pubsub.aclose()


async def test_set_update_delete_pops(sonic_db: SonicDb, orchagent: OrchagentStandIn) -> None:
    table = route_table(sonic_db)
    await table.set("10.244.1.0/24", {"nexthop": "192.168.10.1", "ifname": "Ethernet0"})
    assert await orchagent.quiesce() == [
        pop("10.244.1.0/24", nexthop="192.168.10.1", ifname="Ethernet0")]

    await table.set("10.244.1.0/24", {"nexthop": "192.168.10.9", "ifname": "Ethernet4"})
    assert await orchagent.quiesce() == [
        pop("10.244.1.0/24", nexthop="192.168.10.9", ifname="Ethernet4")]
    assert await orchagent.main_table("ROUTE_TABLE") == {
        "10.244.1.0/24": {"nexthop": "192.168.10.9", "ifname": "Ethernet4"}}

    await table.delete("10.244.1.0/24")
    assert await orchagent.quiesce() == [pop("10.244.1.0/24")]
    assert await orchagent.main_table("ROUTE_TABLE") == {}


async def test_set_merges_so_dropped_fields_stay(sonic_db: SonicDb,
                                                 orchagent: OrchagentStandIn) -> None:
    """The trap replace() exists for: a plain set (or batched set) never removes a field."""
    table = route_table(sonic_db)
    await table.set("10.244.2.0/24", {"nexthop": "10.0.0.1", "ifname": "Ethernet0",
                                       "weight": "5"})
    await orchagent.quiesce()
    await table.set_many([("10.244.2.0/24", {"nexthop": "10.0.0.2", "ifname": "Ethernet4"})])
    await orchagent.quiesce()
    held = (await orchagent.main_table("ROUTE_TABLE"))["10.244.2.0/24"]
    assert held == {"nexthop": "10.0.0.2", "ifname": "Ethernet4", "weight": "5"}  # stale weight


async def test_replace_leaves_no_stale_field(sonic_db: SonicDb,
                                             orchagent: OrchagentStandIn) -> None:
    table = route_table(sonic_db)
    await table.set("10.244.2.0/24", {"nexthop": "10.0.0.1", "ifname": "Ethernet0",
                                       "weight": "5"})
    await orchagent.quiesce()
    await table.replace("10.244.2.0/24", {"nexthop": "10.0.0.2", "ifname": "Ethernet4"})
    # One pop: the consumer DELs T:key (pending delete) then HSETs exactly the new fields.
    assert await orchagent.quiesce() == [
        pop("10.244.2.0/24", nexthop="10.0.0.2", ifname="Ethernet4")]
    assert await orchagent.main_table("ROUTE_TABLE") == {
        "10.244.2.0/24": {"nexthop": "10.0.0.2", "ifname": "Ethernet4"}}


async def test_write_picks_replace_only_when_fields_shrink(
    sonic_db: SonicDb, orchagent: OrchagentStandIn
) -> None:
    assert needs_replace({"a": "1", "b": "2"}, {"a": "1"})
    assert not needs_replace({"a": "1"}, {"a": "2", "b": "2"})
    assert not needs_replace(None, {"a": "1"})
    table = route_table(sonic_db)
    await table.write("k", {"nexthop": "1.1.1.1", "ifname": "Ethernet0", "weight": "1"}, None)
    await table.write("k", {"nexthop": "1.1.1.2", "ifname": "Ethernet0"},
                      {"nexthop": "1.1.1.1", "ifname": "Ethernet0", "weight": "1"})
    await orchagent.quiesce()
    assert await orchagent.main_table("ROUTE_TABLE") == {
        "k": {"nexthop": "1.1.1.2", "ifname": "Ethernet0"}}


async def test_empty_set_is_refused(sonic_db: SonicDb) -> None:
    table = route_table(sonic_db)
    with pytest.raises(ValueError):
        await table.set("10.244.3.0/24", {})
    with pytest.raises(ValueError):
        await table.set_many([("10.244.3.0/24", {})])
    assert await sonic_db.client(APPL_DB).exists("ROUTE_TABLE_KEY_SET") == 0


async def test_batches_one_script_one_publish_per_chunk(
    sonic_db: SonicDb, orchagent: OrchagentStandIn
) -> None:
    client = sonic_db.client(APPL_DB)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe("ROUTE_TABLE_CHANNEL@0")
    try:
        table = route_table(sonic_db, batch_size=250)
        entries = [(f"10.{i // 256}.{i % 256}.0/24",
                    {"nexthop": "192.168.0.1", "ifname": f"Ethernet{i % 4 * 4}"})
                   for i in range(1000)]
        assert await table.set_many(entries) == 1000
        pops = await orchagent.quiesce()
        assert sorted(pops, key=lambda p: p.key) == sorted(
            (pop(k, **f) for k, f in entries), key=lambda p: p.key)
        assert await published(pubsub, 4) == ["G"] * 4  # 1000 keys in chunks of 250

        await table.delete_many(k for k, _ in entries[:600])
        pops = await orchagent.quiesce()
        assert sorted(p.key for p in pops) == sorted(k for k, _ in entries[:600])
        assert all(p.op == "DEL" for p in pops)
        assert len(await orchagent.main_table("ROUTE_TABLE")) == 400
    finally:
        await pubsub.aclose()


async def test_pending_entries_are_popped_when_the_consumer_starts(
    sonic_db: SonicDb, redis_server: object
) -> None:
    table = route_table(sonic_db)
    await table.set_many([("10.1.0.0/24", {"nexthop": "1.1.1.1", "ifname": "Ethernet0"})])
    await table.delete("10.2.0.0/24")
    stand_in = OrchagentStandIn(str(redis_server.socket), 0, ["ROUTE_TABLE"])  # type: ignore[attr-defined]
    await stand_in.start()
    try:
        assert sorted(await stand_in.quiesce(), key=lambda p: p.key) == [
            pop("10.1.0.0/24", nexthop="1.1.1.1", ifname="Ethernet0"), pop("10.2.0.0/24")]
    finally:
        await stand_in.stop()


async def test_concurrent_replaces_never_expose_a_missing_entry(
    sonic_db: SonicDb, orchagent: OrchagentStandIn
) -> None:
    """replace() is one transaction: however the consumer interleaves, it never pops a DEL."""
    table = route_table(sonic_db)
    await table.set("k", {"nexthop": "1.1.1.1", "ifname": "Ethernet0", "weight": "1"})
    await orchagent.quiesce()
    await asyncio.gather(*(table.replace("k", {"nexthop": f"1.1.1.{i}", "ifname": "Ethernet0"})
                           for i in range(2, 40)))
    pops = await orchagent.quiesce()
    assert pops and all(p.op == "SET" for p in pops)
    held = (await orchagent.main_table("ROUTE_TABLE"))["k"]
    # Connections run in any order; whichever replace came last, nothing stale is left.
    assert set(held) == {"nexthop", "ifname"}
    assert held["nexthop"] in {f"1.1.1.{i}" for i in range(2, 40)}
