"""database_config.json, Table semantics (NULL/NULL, field@ lists) and device defaults."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.apply.sonic.db import (
    APPL_DB,
    CONFIG_DB,
    STATE_DB,
    SonicDb,
    SonicDbConfigError,
    load_database_config,
)
from agent.apply.sonic.device import read_device_defaults
from agent.apply.sonic.table import Table, decode_fields, encode_fields
from lab.redis_server import RedisServer


def test_defaults_when_the_file_is_absent(tmp_path: Path) -> None:
    cfg = load_database_config(tmp_path / "missing.json")
    assert cfg.source is None
    assert {n: (d.id, d.separator) for n, d in cfg.databases.items()} == {
        "APPL_DB": (0, ":"), "ASIC_DB": (1, ":"), "COUNTERS_DB": (2, ":"),
        "CONFIG_DB": (4, "|"), "STATE_DB": (6, "|"), "APPL_STATE_DB": (14, ":"),
    }
    assert cfg.instance_of("APPL_DB").unix_socket_path == "/var/run/redis/redis.sock"


def test_the_file_is_authoritative(tmp_path: Path) -> None:
    path = tmp_path / "database_config.json"
    path.write_text(json.dumps({
        "INSTANCES": {"redis": {"hostname": "127.0.0.1", "port": 6379},
                      "redis2": {"hostname": "127.0.0.1", "port": 6380,
                                 "unix_socket_path": "/var/run/redis/redis2.sock"}},
        "DATABASES": {"APPL_DB": {"id": 0, "separator": ":", "instance": "redis"},
                      "STATE_DB": {"id": 16, "separator": "#", "instance": "redis2"}},
        "VERSION": "1.0",
    }))
    cfg = load_database_config(path)
    assert cfg.db("STATE_DB").id == 16 and cfg.db("STATE_DB").separator == "#"
    assert cfg.instance_of("STATE_DB").port == 6380
    with pytest.raises(SonicDbConfigError, match="CONFIG_DB is not defined"):
        cfg.db("CONFIG_DB")


@pytest.mark.parametrize("text,match", [
    ("{", "not valid JSON"),
    ("[]", "not a JSON object"),
    ('{"INSTANCES": {}, "DATABASES": {"APPL_DB": {"id": 0, "separator": ":"}}}', "unknown"),
    ('{"INSTANCES": {"redis": {}}, "DATABASES": {"APPL_DB": {"separator": ":"}}}', "id"),
])
def test_a_broken_file_is_an_error_not_a_fallback(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "database_config.json"
    path.write_text(text)
    with pytest.raises(SonicDbConfigError, match=match):
        load_database_config(path)


async def test_connections_use_each_databases_id(sonic_db: SonicDb,
                                                 redis_server: RedisServer) -> None:
    await sonic_db.client(APPL_DB).set("probe", "appl")
    await sonic_db.client(STATE_DB).set("probe", "state")
    assert redis_server.sync_client(0).get("probe") == "appl"
    assert redis_server.sync_client(6).get("probe") == "state"


def test_field_encoding_is_configdbconnectors() -> None:
    assert encode_fields({}) == {"NULL": "NULL"}
    assert encode_fields({"a": "1", "ports": ["Ethernet0", "Ethernet4"]}) == {
        "a": "1", "ports@": "Ethernet0,Ethernet4"}
    assert decode_fields({"NULL": "NULL"}) == {}
    assert decode_fields({"a": "1", "ports@": "Ethernet0,Ethernet4", "none@": ""}) == {
        "a": "1", "ports": ["Ethernet0", "Ethernet4"], "none": []}
    with pytest.raises(ValueError):
        encode_fields({"bad": ["a,b"]})


async def test_table_entries(sonic_db: SonicDb, redis_server: RedisServer) -> None:
    t = Table(sonic_db.client(CONFIG_DB), "VLAN_INTERFACE", sonic_db.separator(CONFIG_DB))
    await t.set("Vlan4000", {})
    await t.set("Vlan4000|10.244.0.0/32", {"scope": "global"})
    raw = redis_server.sync_client(4)
    assert raw.hgetall("VLAN_INTERFACE|Vlan4000") == {"NULL": "NULL"}
    assert await t.get("Vlan4000") == {}
    assert await t.get("Vlan9") is None
    assert sorted(await t.keys()) == ["Vlan4000", "Vlan4000|10.244.0.0/32"]
    await t.set("Vlan4000|10.244.0.0/32", {"family": "IPv4"})
    assert await t.get("Vlan4000|10.244.0.0/32") == {"scope": "global", "family": "IPv4"}
    await t.replace("Vlan4000|10.244.0.0/32", {"family": "IPv4"})
    assert await t.get("Vlan4000|10.244.0.0/32") == {"family": "IPv4"}
    await t.delete("Vlan4000")
    assert await t.get_all() == {"Vlan4000|10.244.0.0/32": {"family": "IPv4"}}


async def test_device_defaults(sonic_db: SonicDb) -> None:
    cfg = sonic_db.client(CONFIG_DB)
    empty = await read_device_defaults(sonic_db)
    assert empty.hostname is None and empty.router_id is None
    await cfg.hset("DEVICE_METADATA|localhost", mapping={
        "hostname": "leaf1", "bgp_asn": "65101", "type": "ToRRouter",
        "docker_routing_config_mode": "split"})
    await cfg.hset("LOOPBACK_INTERFACE|Loopback0", "NULL", "NULL")
    await cfg.hset("LOOPBACK_INTERFACE|Loopback0|10.1.0.32/32", "NULL", "NULL")
    await cfg.hset("LOOPBACK_INTERFACE|Loopback0|FC00:1::32/128", "NULL", "NULL")
    await cfg.hset("LOOPBACK_INTERFACE|Loopback1|10.9.9.9/32", "NULL", "NULL")
    d = await read_device_defaults(sonic_db)
    assert (d.hostname, d.bgp_asn, d.docker_routing_config_mode, d.device_type) == (
        "leaf1", 65101, "split", "ToRRouter")
    assert (d.loopback0_ipv4, d.loopback0_ipv6) == ("10.1.0.32", "fc00:1::32")
    assert d.router_id == "10.1.0.32"
    await cfg.hset("DEVICE_METADATA|localhost", "bgp_router_id", "10.1.0.99")
    assert (await read_device_defaults(sonic_db)).router_id == "10.1.0.99"


async def test_replace_is_hset_then_hdel_never_a_del(sonic_db: SonicDb,
                                                    redis_server: RedisServer) -> None:
    # What a SONiC daemon following keyspace events sees: never the entry deleted.
    raw = redis_server.sync_client(6)
    raw.config_set("notify-keyspace-events", "Kgh")  # generic (del) and hash events
    pubsub = raw.pubsub()
    pubsub.psubscribe("__keyspace@6__:KUBE_FABRIC_AGENT|summary")
    assert pubsub.get_message(timeout=1.0)["type"] == "psubscribe"
    t = Table(sonic_db.client(STATE_DB), "KUBE_FABRIC_AGENT", sonic_db.separator(STATE_DB))
    await t.set("summary", {"frr_last_action": "applied", "frr_last_error": "x"})
    await t.replace("summary", {"frr_last_action": "in-sync"})
    assert await t.get("summary") == {"frr_last_action": "in-sync"}
    seen = []
    while (message := pubsub.get_message(timeout=1.0)) is not None:
        seen.append(message["data"])
    assert seen == ["hset", "hset", "hdel"]
    pubsub.close()
