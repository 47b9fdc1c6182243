"""SONiC's Redis databases by name: database_config.json, and one asyncio connection per database.

SONiC does not hard-code database numbers or separators: `database_config.json` names the Redis
instances (TCP and unix socket) and, per database, its id, key separator and instance. A third
party must read it the same way swss-common does (SonicDBConfig), because a multi-instance or
multi-ASIC image moves databases between instances. Without the file (a development box, or an
image that never wrote it) the defaults are the single-instance layout of SONiC's own
database_config.json (sonic-buildimage dockers/docker-database/database_config.json.j2), which is
what every single-instance SONiC image uses.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

DEFAULT_DATABASE_CONFIG = "/var/run/redis/sonic-db/database_config.json"
DEFAULT_INSTANCE = "redis"

APPL_DB = "APPL_DB"
ASIC_DB = "ASIC_DB"
COUNTERS_DB = "COUNTERS_DB"
CONFIG_DB = "CONFIG_DB"
STATE_DB = "STATE_DB"
APPL_STATE_DB = "APPL_STATE_DB"


@dataclass(frozen=True)
class RedisInstance:
    name: str
    hostname: str = "127.0.0.1"
    port: int = 6379
    unix_socket_path: str | None = "/var/run/redis/redis.sock"


@dataclass(frozen=True)
class DatabaseInfo:
    name: str
    id: int
    separator: str
    instance: str = DEFAULT_INSTANCE


# SONiC's single-instance layout (database_config.json.j2), used only when the file is absent.
_DEFAULT_DATABASES: tuple[DatabaseInfo, ...] = (
    DatabaseInfo(APPL_DB, 0, ":"),
    DatabaseInfo(ASIC_DB, 1, ":"),
    DatabaseInfo(COUNTERS_DB, 2, ":"),
    DatabaseInfo(CONFIG_DB, 4, "|"),
    DatabaseInfo(STATE_DB, 6, "|"),
    DatabaseInfo(APPL_STATE_DB, 14, ":"),
)


class SonicDbConfigError(Exception):
    """database_config.json exists but cannot be used; the message says what is wrong."""


@dataclass(frozen=True)
class SonicDbConfig:
    instances: Mapping[str, RedisInstance]
    databases: Mapping[str, DatabaseInfo]
    source: str | None = None  # the file read; None = the built-in defaults

    def db(self, name: str) -> DatabaseInfo:
        try:
            return self.databases[name]
        except KeyError:
            where = self.source or "the built-in defaults"
            raise SonicDbConfigError(f"{name} is not defined in {where}") from None

    def instance_of(self, name: str) -> RedisInstance:
        info = self.db(name)
        try:
            return self.instances[info.instance]
        except KeyError:
            raise SonicDbConfigError(
                f"{name} names instance {info.instance!r}, which "
                f"{self.source or 'the defaults'} does not define"
            ) from None


def default_config() -> SonicDbConfig:
    return SonicDbConfig(
        instances={DEFAULT_INSTANCE: RedisInstance(DEFAULT_INSTANCE)},
        databases={d.name: d for d in _DEFAULT_DATABASES},
    )


def _parse(data: Any, source: str) -> SonicDbConfig:
    if not isinstance(data, dict):
        raise SonicDbConfigError(f"{source}: not a JSON object")
    raw_instances = data.get("INSTANCES")
    raw_databases = data.get("DATABASES")
    if not isinstance(raw_instances, dict) or not isinstance(raw_databases, dict):
        raise SonicDbConfigError(f"{source}: needs INSTANCES and DATABASES objects")
    instances: dict[str, RedisInstance] = {}
    for name, inst in raw_instances.items():
        if not isinstance(inst, dict):
            raise SonicDbConfigError(f"{source}: INSTANCES.{name} is not an object")
        try:
            instances[name] = RedisInstance(
                name=name,
                hostname=str(inst.get("hostname", "127.0.0.1")),
                port=int(inst.get("port", 6379)),
                unix_socket_path=inst.get("unix_socket_path") or None,
            )
        except (TypeError, ValueError) as exc:
            raise SonicDbConfigError(f"{source}: INSTANCES.{name}: {exc}") from None
    databases: dict[str, DatabaseInfo] = {}
    for name, db in raw_databases.items():
        if not isinstance(db, dict):
            raise SonicDbConfigError(f"{source}: DATABASES.{name} is not an object")
        try:
            databases[name] = DatabaseInfo(
                name=name,
                id=int(db["id"]),
                separator=str(db["separator"]),
                instance=str(db.get("instance", DEFAULT_INSTANCE)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise SonicDbConfigError(f"{source}: DATABASES.{name}: bad or missing {exc}") from None
        if databases[name].instance not in instances:
            raise SonicDbConfigError(
                f"{source}: DATABASES.{name} names unknown instance {databases[name].instance!r}"
            )
    return SonicDbConfig(instances=instances, databases=databases, source=source)


def load_database_config(path: str | Path | None = DEFAULT_DATABASE_CONFIG) -> SonicDbConfig:
    """The file when it exists (authoritative: a database it lacks is an error when used), else
    SONiC's single-instance defaults. A file that exists but is broken is an error, never a silent
    fallback: the defaults could point the agent at the wrong database."""
    if path is None or not Path(path).exists():
        return default_config()
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise SonicDbConfigError(f"cannot read {path}: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SonicDbConfigError(f"{path} is not valid JSON: {exc}") from None
    return _parse(data, str(path))


@dataclass
class SonicDb:
    """Connections by database name, created on first use and shared (redis-py pools them).

    The unix socket is preferred (no TCP stack, and SONiC's redis is reachable on it from the
    host); TCP is used when the instance has no socket or it does not exist here.
    """

    config: SonicDbConfig
    socket_timeout: float = 5.0
    _clients: dict[str, aioredis.Redis] = field(default_factory=dict, repr=False)

    def separator(self, name: str) -> str:
        return self.config.db(name).separator

    def db_id(self, name: str) -> int:
        return self.config.db(name).id

    def client(self, name: str) -> aioredis.Redis:
        if name not in self._clients:
            info = self.config.db(name)
            inst = self.config.instance_of(name)
            common: dict[str, Any] = {
                "db": info.id,
                "decode_responses": True,
                "socket_timeout": self.socket_timeout,
                "socket_connect_timeout": self.socket_timeout,
            }
            if inst.unix_socket_path and os.path.exists(inst.unix_socket_path):
                self._clients[name] = aioredis.Redis(
                    unix_socket_path=inst.unix_socket_path, **common
                )
            else:
                self._clients[name] = aioredis.Redis(host=inst.hostname, port=inst.port, **common)
        return self._clients[name]

    def instance_name(self, name: str) -> str:
        return self.config.db(name).instance

    async def close(self) -> None:
        clients, self._clients = self._clients, {}
        for client in clients.values():
            await client.aclose()


def open_sonic_db(path: str | Path | None = DEFAULT_DATABASE_CONFIG) -> SonicDb:
    return SonicDb(load_database_config(path))


def raise_if_cancelled() -> None:
    """Honour a cancellation redis-py swallowed. redis-py (8.1 seen) can lose a task's
    cancellation that lands during a command: the command returns normally and the task runs
    on, still marked as cancelling, and a loop cancelled at shutdown would then never end.
    Loops and the applier's passes call this after their Redis calls."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
