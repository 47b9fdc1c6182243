"""SONiC start-up against a real redis-server: the config model's SONiC leniency, identity from
CONFIG_DB (and refusing what CONFIG_DB should not say), FRR management by routing config mode,
and prepare()'s StartupError exit codes."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from agent.apply.sonic.db import CONFIG_DB, SonicDb
from agent.apply.sonic.device import read_device_defaults
from agent.apply.sonic.startup import (
    ConfigDbDefaultsError,
    fill_from_config_db,
    frr_refusal,
    prepare,
)
from agent.config import ConfigError, parse_config
from agent.errors import EXIT_CONFIG, EXIT_FAILURE, StartupError
from lab.redis_server import SONIC_DATABASES
from tests.sonic.conftest import FABRIC, device_metadata, sonic_config

# ---- the config model ------------------------------------------------------------------------


def test_linux_still_requires_asn_and_router_id_with_their_key_paths() -> None:
    for dataplane in ({}, {"backend": "linux"}):
        with pytest.raises(ConfigError) as err:
            parse_config({"switch": {"hostname": "leaf1"}, "fabric": FABRIC,
                          "dataplane": dataplane})
        assert err.value.problems == ["switch.asn: required key is missing",
                                      "switch.router_id: required key is missing"]
    # Reported together with the file's other problems, in the file's order.
    with pytest.raises(ConfigError) as err:
        parse_config({"switch": {"asn": 65101, "router_id": None}, "fabric": {"uplinks": []},
                      "frr": {"debounce_ms": -1}})
    problems = err.value.problems
    assert problems[0] == "switch.router_id: required key is missing"
    assert any(p.startswith("fabric.server_ports:") for p in problems)
    assert problems[-1].startswith("frr.debounce_ms:")


def test_sonic_may_leave_identity_to_config_db() -> None:
    cfg = sonic_config()
    assert cfg.switch.asn is None and cfg.switch.router_id is None
    assert "hostname" not in cfg.switch.model_fields_set  # gethostname() is only a default
    # What the file does give is still validated.
    with pytest.raises(ConfigError) as err:
        sonic_config(asn=23456)
    assert err.value.problems[0].startswith("switch.asn: ASN 23456")


def test_check_config_reports_the_missing_keys(tmp_path: Path) -> None:
    path = tmp_path / "linux.yaml"
    path.write_text("switch: {hostname: leaf1}\nfabric: {server_ports: [swp1], "
                    "pod_supernets: [10.244.0.0/16]}\n")
    res = subprocess.run([sys.executable, "-m", "agent.cli", "check-config", "--config",
                          str(path)], capture_output=True, text=True)
    assert res.returncode == 2
    assert res.stderr.splitlines() == ["switch.asn: required key is missing",
                                       "switch.router_id: required key is missing"]


# ---- identity from CONFIG_DB -----------------------------------------------------------------


async def test_left_out_keys_come_from_config_db(sonic_db: SonicDb) -> None:
    await device_metadata(sonic_db, hostname="leaf7", bgp_asn="65107",
                          bgp_router_id="10.1.0.99")
    cfg = await fill_from_config_db(sonic_config(), sonic_db)
    s = cfg.switch
    assert (s.hostname, s.asn, s.router_id, s.vtep_ip) == ("leaf7", 65107, "10.1.0.99",
                                                           "10.1.0.32")
    assert cfg.dataplane.backend == "sonic" and cfg.fabric.server_ports == ["Ethernet0",
                                                                              "Ethernet4"]


async def test_router_id_falls_back_to_loopback0(sonic_db: SonicDb) -> None:
    await device_metadata(sonic_db, bgp_asn="65107")
    cfg = await fill_from_config_db(sonic_config(hostname="leaf1"), sonic_db)
    assert (cfg.switch.hostname, cfg.switch.router_id, cfg.switch.vtep_ip) == (
        "leaf1", "10.1.0.32", "10.1.0.32")


async def test_the_config_file_wins(sonic_db: SonicDb, caplog: pytest.LogCaptureFixture) -> None:
    await device_metadata(sonic_db, hostname="leaf7", bgp_asn="65107",
                          bgp_router_id="10.1.0.99")
    given = sonic_config(hostname="leaf1", asn=65101, router_id="10.0.0.1", vtep_ip="10.0.0.2")
    with caplog.at_level(logging.WARNING):
        cfg = await fill_from_config_db(given, sonic_db)
    assert cfg == given
    assert "switch.asn 65101 (config file) differs from CONFIG_DB's 65107" in caplog.text
    # A value the file gives is not read from CONFIG_DB, so a bad one there does not matter.
    await sonic_db.client(CONFIG_DB).hset("DEVICE_METADATA|localhost", "bgp_asn",
                                          "65000\nrouter bgp 1")
    assert await fill_from_config_db(given, sonic_db) == given


@pytest.mark.parametrize(("field", "value", "key"), [
    ("bgp_asn", "65000\nrouter bgp 1", "asn"),
    ("bgp_asn", " 65000", "asn"),  # int() would forgive it; the validators do not
    ("bgp_asn", "23456", "asn"),
    ("bgp_router_id", "10.1.0.99\n", "router_id"),
    ("bgp_router_id", "fd00::1", "router_id"),
    ("hostname", "leaf1\nrouter bgp 1", "hostname"),
])
async def test_hostile_config_db_values_are_refused(
    sonic_db: SonicDb, field: str, value: str, key: str
) -> None:
    fields = {"hostname": "leaf7", "bgp_asn": "65107", field: value}
    await device_metadata(sonic_db, **fields)
    with pytest.raises(ConfigDbDefaultsError) as err:
        await fill_from_config_db(sonic_config(), sonic_db)
    (problem,) = err.value.problems
    assert problem.startswith(f"switch.{key}: CONFIG_DB DEVICE_METADATA|localhost {field} "
                              f"{value!r} is refused: ")
    assert "\n" not in problem  # the value is shown escaped, never as a second log line


async def test_missing_everywhere_names_the_key_and_where(sonic_db: SonicDb) -> None:
    await device_metadata(sonic_db, loopback=None, hostname="leaf7")
    with pytest.raises(ConfigDbDefaultsError) as err:
        await fill_from_config_db(sonic_config(), sonic_db)
    assert err.value.problems == [
        "switch.asn: not in the config file, and CONFIG_DB DEVICE_METADATA|localhost has no "
        "bgp_asn",
        "switch.router_id: not in the config file, and CONFIG_DB has neither "
        "DEVICE_METADATA|localhost bgp_router_id nor an IPv4 address on "
        "LOOPBACK_INTERFACE|Loopback0",
    ]


async def test_prepare_fills_the_identity_and_refuses_like_a_bad_config_file(
    sonic_db: SonicDb, database_config: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await device_metadata(sonic_db, hostname="leaf7", bgp_asn="65000\nrouter bgp 1",
                          docker_routing_config_mode="split")
    with pytest.raises(StartupError) as err:
        await prepare(sonic_config(database_config))
    assert err.value.exit_code == EXIT_CONFIG == 2
    (problem,) = err.value.problems
    assert problem.startswith("switch.asn: CONFIG_DB DEVICE_METADATA|localhost bgp_asn")

    await sonic_db.client(CONFIG_DB).hset("DEVICE_METADATA|localhost", "bgp_asn", "65107")
    with caplog.at_level(logging.INFO, logger="agent.apply.sonic.startup"):
        start = await prepare(sonic_config(database_config))
    try:
        cfg = start.config
        assert (cfg.switch.hostname, cfg.switch.asn, cfg.switch.router_id) == (
            "leaf7", 65107, "10.1.0.32")
        assert start.frr_refusal is None and start.frr_managed
        assert await start.db.client(CONFIG_DB).ping()  # open, for the applier to take over
        assert "switch.asn 65107 from CONFIG_DB DEVICE_METADATA|localhost bgp_asn" in caplog.text
    finally:
        await start.db.close()


async def test_prepare_refuses_keys_missing_everywhere_with_exit_config(
    sonic_db: SonicDb, database_config: Path
) -> None:
    await device_metadata(sonic_db, loopback=None, hostname="leaf7")
    with pytest.raises(StartupError) as err:
        await prepare(sonic_config(database_config))
    assert err.value.exit_code == EXIT_CONFIG
    assert [p.split(":")[0] for p in err.value.problems] == ["switch.asn", "switch.router_id"]


def without_database(source: Path, name: str, path: Path) -> Path:
    layout = json.loads(source.read_text())
    del layout["DATABASES"][name]
    path.write_text(json.dumps(layout))
    return path


async def test_prepare_refuses_an_unusable_database_config_with_exit_config(
    tmp_path: Path, database_config: Path
) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(StartupError) as err:
        await prepare(sonic_config(broken))
    assert err.value.exit_code == EXIT_CONFIG
    (problem,) = err.value.problems
    assert problem.startswith(f"dataplane.sonic.database_config: {broken} is not valid JSON")

    # A layout without a database the backend uses is refused at start, not at first use.
    partial = without_database(database_config, "COUNTERS_DB", tmp_path / "partial.json")
    with pytest.raises(StartupError) as err:
        await prepare(sonic_config(partial))
    assert err.value.exit_code == EXIT_CONFIG
    assert err.value.problems == [
        f"dataplane.sonic.database_config: COUNTERS_DB is not defined in {partial}"]


async def test_prepare_gives_up_on_an_unreachable_config_db_with_exit_failure(
    tmp_path: Path,
) -> None:
    # No socket there and nothing listening on the TCP port: CONFIG_DB cannot be read.
    layout = {
        "INSTANCES": {"redis": {"hostname": "127.0.0.1", "port": 1,
                                "unix_socket_path": str(tmp_path / "absent.sock")}},
        "DATABASES": {name: {"id": db_id, "separator": sep, "instance": "redis"}
                      for name, (db_id, sep) in SONIC_DATABASES.items()},
    }
    path = tmp_path / "database_config.json"
    path.write_text(json.dumps(layout))
    with pytest.raises(StartupError) as err:
        await prepare(sonic_config(path), wait_seconds=1.0)
    assert err.value.exit_code == EXIT_FAILURE == 1
    (problem,) = err.value.problems
    assert problem.startswith(f"cannot read CONFIG_DB ({path}) within 1 s: ")


async def test_prepare_says_why_frr_is_not_managed(
    sonic_db: SonicDb, database_config: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await device_metadata(sonic_db, hostname="leaf7", bgp_asn="65107")
    with caplog.at_level(logging.ERROR, logger="agent.apply.sonic.startup"):
        start = await prepare(sonic_config(database_config))
    try:
        assert start.frr_refusal is not None and not start.frr_managed
        assert start.frr_refusal.startswith("FRR not managed: ")
        assert start.frr_refusal in caplog.text  # logged, and the agent starts anyway
    finally:
        await start.db.close()


@pytest.mark.parametrize(("mode", "managed"), [
    ("split", True), ("split-unified", True), ("separated", False), ("unified", False),
    (None, False), ("split\nx", False),
])
async def test_frr_is_managed_only_in_a_split_mode(
    sonic_db: SonicDb, mode: str | None, managed: bool
) -> None:
    if mode is not None:
        await device_metadata(sonic_db, docker_routing_config_mode=mode)
    why = frr_refusal(await read_device_defaults(sonic_db))
    assert (why is None) == managed
    if why is not None:
        assert why.startswith("FRR not managed: CONFIG_DB DEVICE_METADATA|localhost "
                              "docker_routing_config_mode is ")
        assert "\n" not in why and "split" in why
