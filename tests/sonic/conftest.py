"""Fixtures: a real redis-server with SONiC's database layout per test, SonicDb on it, and the
orchagent stand-in on APPL_DB. Without redis-server the tests fail with the reason (CI must
install it), they do not skip."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from agent.apply.sonic.db import SonicDb, load_database_config
from agent.apply.sonic.schema import TABLE_ORDER
from lab.orchagent import OrchagentStandIn
from lab.redis_server import RedisServer


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
