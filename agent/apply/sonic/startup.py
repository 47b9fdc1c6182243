"""SONiC start-up, before anything else runs: open the databases, fill the switch's identity
from CONFIG_DB, and decide whether FRR may be managed here (prepare()).

CONFIG_DB is input like the config file: its values go through the same validators, and a
value it refuses stops the agent like a bad config file would (StartupError, EXIT_CONFIG).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from redis.exceptions import RedisError

from agent import validate
from agent.apply.sonic.db import (
    APPL_DB,
    CONFIG_DB,
    COUNTERS_DB,
    STATE_DB,
    SonicDb,
    SonicDbConfigError,
    open_sonic_db,
)
from agent.apply.sonic.device import DeviceDefaults, read_device_defaults
from agent.apply.sonic.table import Table
from agent.config import AgentConfig, ConfigError, SwitchConfig, ipv4_address
from agent.errors import EXIT_CONFIG, EXIT_FAILURE, StartupError

log = logging.getLogger(__name__)

# Modes in which bgpcfgd does not render FRR's configuration from CONFIG_DB (docker-fpm-frr's
# docker_init.sh): "split" keeps per-daemon files, "split-unified" one frr.conf (the file the
# agent writes, so the closest match). In "unified" / "separated" / unset, bgpcfgd owns FRR.
FRR_MANAGED_MODES = ("split", "split-unified")

CONFIG_DB_WAIT_SECONDS = 30.0

_DECIMAL = re.compile(r"[0-9]{1,10}")


class ConfigDbDefaultsError(ConfigError):
    """A switch key neither the config file nor CONFIG_DB supplies (or CONFIG_DB's value is
    refused); one line per key, each naming the key and where it was looked for."""


class ConfigDbUnavailable(Exception):
    """CONFIG_DB could not be read at start-up within the wait."""


def _where(db: SonicDb, table: str, key: str, field: str | None = None) -> str:
    """How an operator finds the value: `CONFIG_DB DEVICE_METADATA|localhost bgp_asn`."""
    text = f"{table}{db.separator(CONFIG_DB)}{key}"
    return f"{text} {field}" if field else text


async def read_defaults(
    db: SonicDb, wait_seconds: float = CONFIG_DB_WAIT_SECONDS
) -> DeviceDefaults:
    """read_device_defaults(), retried while Redis is not reachable yet: at boot the agent can
    start before SONiC's database, and exiting at once would spend systemd's restart budget."""
    deadline = time.monotonic() + wait_seconds
    delay = 0.5
    while True:
        try:
            return await read_device_defaults(db)
        except (RedisError, OSError) as exc:
            if time.monotonic() + delay > deadline:
                raise ConfigDbUnavailable(
                    f"cannot read CONFIG_DB ({db.config.source or 'built-in database layout'}) "
                    f"within {wait_seconds:g} s: {exc}") from None
            log.info("CONFIG_DB not reachable yet (%s); retrying in %.1f s", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def fill_from_config_db(
    config: AgentConfig, db: SonicDb, defaults: DeviceDefaults | None = None
) -> AgentConfig:
    """The config with what the file leaves out of `switch` taken from CONFIG_DB, SONiC's own
    source of truth for the switch's identity:

    - hostname: DEVICE_METADATA|localhost hostname (replaces the gethostname() default, never a
      hostname the file gives; without one in CONFIG_DB the default stays);
    - asn: DEVICE_METADATA|localhost bgp_asn;
    - router_id: DEVICE_METADATA|localhost bgp_router_id, else Loopback0's IPv4 address
      (SONiC's own rule);
    - vtep_ip: Loopback0's IPv4 address (optional: without it vxlan nodes are refused, as on
      Linux).

    Values the file gives always win (a disagreement with CONFIG_DB is logged). CONFIG_DB is
    input like the file: its values go through the same validators, and a refused value is an
    error rather than a silent fallback. asn or router_id still missing is an error naming the
    key and where it was looked for (ConfigDbDefaultsError, one line per key)."""
    if defaults is None:
        defaults = await read_defaults(db)
    switch = config.switch
    given = switch.model_fields_set
    meta = await Table(db.client(CONFIG_DB), "DEVICE_METADATA",
                       db.separator(CONFIG_DB)).get_raw("localhost") or {}
    problems: list[str] = []
    filled: dict[str, object] = {}

    def take(key: str, raw: str | None, where: str, check: Callable[[str], object]) -> None:
        if raw is None:
            return
        try:
            value = check(raw)
        except ValueError as exc:
            problems.append(f"switch.{key}: CONFIG_DB {where} {validate.printable(raw)} is "
                            f"refused: {exc} (correct CONFIG_DB, or set switch.{key} in the "
                            "config file)")
            return
        filled[key] = value
        log.info("switch.%s %s from CONFIG_DB %s", key, value, where)

    md = "DEVICE_METADATA"
    if "hostname" not in given:
        take("hostname", defaults.hostname, _where(db, md, "localhost", "hostname"),
             validate.hostname)
    if switch.asn is None:
        # The raw field, not DeviceDefaults.bgp_asn: int() forgives whitespace and drops what it
        # cannot parse, so "65000\nrouter bgp 1" would read as "no ASN" instead of being refused.
        take("asn", meta.get("bgp_asn") or None, _where(db, md, "localhost", "bgp_asn"), _asn)
        if "asn" not in filled and not any(p.startswith("switch.asn:") for p in problems):
            problems.append(f"switch.asn: not in the config file, and CONFIG_DB "
                            f"{_where(db, md, 'localhost')} has no bgp_asn")
    else:
        _disagree("asn", switch.asn, meta.get("bgp_asn"), _asn)
    loopback = _where(db, "LOOPBACK_INTERFACE", "Loopback0")
    if switch.router_id is None:
        if defaults.bgp_router_id is not None:
            take("router_id", defaults.bgp_router_id,
                 _where(db, md, "localhost", "bgp_router_id"), ipv4_address)
        else:
            take("router_id", defaults.loopback0_ipv4, f"{loopback} IPv4 address", ipv4_address)
        if "router_id" not in filled and not any(
                p.startswith("switch.router_id:") for p in problems):
            problems.append(f"switch.router_id: not in the config file, and CONFIG_DB has "
                            f"neither {_where(db, md, 'localhost', 'bgp_router_id')} nor an IPv4"
                            f" address on {loopback}")
    else:
        _disagree("router_id", switch.router_id, defaults.router_id, ipv4_address)
    if switch.vtep_ip is None:
        take("vtep_ip", defaults.loopback0_ipv4, f"{loopback} IPv4 address", ipv4_address)
    if problems:
        raise ConfigDbDefaultsError(problems)
    if not filled:
        return config
    try:
        new_switch = SwitchConfig.model_validate({**switch.model_dump(), **filled})
    except ValueError as exc:  # the validators above are the model's: this is a bug
        raise ConfigDbDefaultsError([f"switch: {exc}"]) from None
    return config.model_copy(update={"switch": new_switch})


def _asn(raw: str) -> int:
    if not _DECIMAL.fullmatch(raw):
        raise ValueError("not a decimal ASN")
    return validate.asn(int(raw))


def _disagree(key: str, given: object, raw: str | None,
              check: Callable[[str], object]) -> None:
    if raw is None:
        return
    try:
        value = check(raw)
    except ValueError:
        return  # not used, so not refused: the file's value is what runs
    if value != given:
        log.warning("switch.%s %s (config file) differs from CONFIG_DB's %s; the config file "
                    "wins", key, given, value)


def frr_refusal(defaults: DeviceDefaults) -> str | None:
    """Why the agent must not manage FRR on this SONiC switch, or None when it may.

    Decision: outside a split routing config mode bgpcfgd renders FRR from CONFIG_DB, and the
    agent's full-file reload would delete bgpcfgd's sessions (uplinks included) while bgpcfgd
    re-adds them: a fight in which the switch loses its routing. So the agent does not touch
    FRR there, but it does not exit either: the data plane (static and vxlan nodes, written to
    APPL_DB) does not depend on FRR, and a running agent says why on its status socket, in
    STATE_DB and in its health (degraded while a node wants a BGP session), where an exiting
    one would only leave a restart loop in the journal."""
    mode = defaults.docker_routing_config_mode
    if mode in FRR_MANAGED_MODES:
        return None
    shown = validate.printable(mode) if mode is not None else "not set (unified)"
    return (f"FRR not managed: CONFIG_DB DEVICE_METADATA|localhost docker_routing_config_mode is "
            f"{shown}, so bgpcfgd renders FRR from CONFIG_DB and would undo the agent's "
            f"changes; set it to {' or '.join(FRR_MANAGED_MODES)} to let the agent manage FRR "
            "(the data plane runs either way)")


# Every database the backend reads or writes: one missing from database_config.json is a
# configuration problem found at start, not a crash at first use.
USED_DATABASES = (APPL_DB, CONFIG_DB, COUNTERS_DB, STATE_DB)


@dataclass(frozen=True)
class SonicStart:
    """What prepare() found: the config with the switch's identity filled in, the open
    databases (SonicDataplane takes them over and closes them), and why FRR must not be
    managed here (None: it may be)."""

    config: AgentConfig
    db: SonicDb
    frr_refusal: str | None

    @property
    def frr_managed(self) -> bool:
        return self.frr_refusal is None


async def prepare(
    config: AgentConfig, wait_seconds: float = CONFIG_DB_WAIT_SECONDS
) -> SonicStart:
    """SONiC start-up: open the databases, fill the switch's identity from CONFIG_DB and decide
    whether FRR may be managed. Raises StartupError, whose problems name the key and where it
    was looked for, one per line: EXIT_CONFIG (like a bad config file) when database_config.json
    cannot be used, a key is still missing, or CONFIG_DB's value is refused; EXIT_FAILURE when
    CONFIG_DB cannot be read within `wait_seconds` (systemd restarts the agent). The databases
    are closed when it raises. FRR not being manageable is logged (ERROR) and returned, not
    raised: the data plane runs either way (frr_refusal())."""
    where = "dataplane.sonic.database_config"
    try:
        db = open_sonic_db(config.dataplane.sonic.database_config)
        for name in USED_DATABASES:
            db.config.instance_of(name)
    except SonicDbConfigError as exc:
        raise StartupError(f"{where}: {exc}", EXIT_CONFIG) from None
    try:
        defaults = await read_defaults(db, wait_seconds)
        config = await fill_from_config_db(config, db, defaults)
    except ConfigError as exc:
        await db.close()
        raise StartupError(exc.problems, EXIT_CONFIG) from None
    except ConfigDbUnavailable as exc:
        await db.close()
        raise StartupError(str(exc), EXIT_FAILURE) from None
    refusal = frr_refusal(defaults)
    if refusal is not None:
        log.error("%s", refusal)
    return SonicStart(config, db, refusal)
