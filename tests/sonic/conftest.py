"""Fixtures: a real redis-server with SONiC's database layout per test, SonicDb on it, and the
orchagent stand-in on APPL_DB. Without redis-server the tests fail with the reason (CI must
install it), they do not skip. Also the runtime's side of the applier contract, as the tests
need it: a Feedback that records what it is told, and running() for an applier's loops()."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.apply.contract import Applier
from agent.apply.sonic.db import CONFIG_DB, SonicDb, load_database_config
from agent.apply.sonic.schema import TABLE_ORDER
from agent.config import AgentConfig, parse_config
from lab.orchagent import OrchagentStandIn
from lab.redis_server import RedisServer
from tests.recording import RecordingFeedback

FABRIC = {"server_ports": ["Ethernet0", "Ethernet4"], "pod_supernets": ["10.244.0.0/16"]}


def sonic_config(database_config: Path | str = "/nonexistent", **switch: Any) -> AgentConfig:
    """A SONiC agent's config; `switch` keys left out come from CONFIG_DB at start."""
    return parse_config({
        "switch": switch,
        "fabric": FABRIC,
        "dataplane": {"backend": "sonic", "sonic": {"database_config": str(database_config)}},
    })


async def device_metadata(db: SonicDb, loopback: str | None = "10.1.0.32/32",
                          **fields: str) -> None:
    """CONFIG_DB DEVICE_METADATA|localhost `fields` and Loopback0's address."""
    cfg = db.client(CONFIG_DB)
    if fields:
        await cfg.hset("DEVICE_METADATA|localhost", mapping=fields)
    if loopback:
        await cfg.hset("LOOPBACK_INTERFACE|Loopback0", "NULL", "NULL")
        await cfg.hset(f"LOOPBACK_INTERFACE|Loopback0|{loopback}", "NULL", "NULL")


def node(name: str, port: str, routing: str, cidr: str, ip: str) -> dict[str, Any]:
    """A Node object on leaf7's `port`."""
    return {"metadata": {"name": name, "creationTimestamp": "2026-01-01T00:00:00Z",
                         "annotations": {"kube-fabric-agent.io/switch-port": f"leaf7/{port}",
                                         "kube-fabric-agent.io/routing": routing}},
            "spec": {"podCIDRs": [cidr]},
            "status": {"addresses": [{"type": "InternalIP", "address": ip}]}}


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    try:
        server.start()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def database_config(redis_server: RedisServer) -> Path:
    return redis_server.write_database_config()


@pytest.fixture
async def sonic_db(database_config: Path) -> AsyncIterator[SonicDb]:
    db = SonicDb(load_database_config(database_config))
    try:
        yield db
    finally:
        await db.close()


@pytest.fixture
async def orchagent(redis_server: RedisServer) -> AsyncIterator[OrchagentStandIn]:
    stand_in = OrchagentStandIn(str(redis_server.socket), 0, list(TABLE_ORDER))
    await stand_in.start()
    try:
        yield stand_in
    finally:
        await stand_in.stop()


@pytest.fixture
def feedback() -> RecordingFeedback:
    return RecordingFeedback()


@contextlib.asynccontextmanager
async def running(applier: Applier[Any]) -> AsyncIterator[None]:
    """The applier's loops() as tasks, as the runtime runs them: one that ends or raises fails
    the test; all are cancelled on exit."""
    tasks: list[asyncio.Future[None]] = []
    for loop in applier.loops():
        task = asyncio.ensure_future(loop())
        task.set_name(loop.__name__)  # type: ignore[attr-defined]
        tasks.append(task)
    try:
        yield
        for task in tasks:
            if task.done():
                task.result()  # raises what the loop raised
                raise AssertionError(f"{task} ended")
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
