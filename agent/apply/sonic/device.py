"""What CONFIG_DB already says about this switch: identity defaults, and whether Redis writes can
reach orchagent at all.

SONiC's own configuration (DEVICE_METADATA, LOOPBACK_INTERFACE) is the source of truth for the
switch's hostname, AS and router id; start-up (agent.apply.sonic.startup.prepare) fills missing
agent config from it instead of making the operator type them twice (and get them wrong once).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from agent.apply.sonic.db import CONFIG_DB, SonicDb
from agent.apply.sonic.table import Table
from agent.errors import EXIT_FAILURE, StartupError


class SwssZmqEnabled(StartupError):
    """orchagent reads ROUTE_TABLE over ZMQ: APPL_DB writes would be accepted and ignored.
    The agent cannot run (exit status 1: systemd retries, and a switch whose operator turns
    swss_zmq off is picked up by the next start)."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem, EXIT_FAILURE)


@dataclass(frozen=True)
class DeviceDefaults:
    hostname: str | None
    bgp_asn: int | None
    bgp_router_id: str | None
    docker_routing_config_mode: str | None  # "split": FRR's own frr.conf is authoritative
    loopback0_ipv4: str | None  # from LOOPBACK_INTERFACE|Loopback0|<ip>/32
    loopback0_ipv6: str | None
    device_type: str | None  # DEVICE_METADATA type, e.g. ToRRouter

    @property
    def router_id(self) -> str | None:
        """SONiC's own rule: bgp_router_id when set, else Loopback0's IPv4 address."""
        return self.bgp_router_id or self.loopback0_ipv4


def _str(fields: dict[str, object] | None, name: str) -> str | None:
    value = (fields or {}).get(name)
    return value if isinstance(value, str) and value else None


async def read_device_defaults(db: SonicDb) -> DeviceDefaults:
    sep = db.separator(CONFIG_DB)
    client = db.client(CONFIG_DB)
    meta = await Table(client, "DEVICE_METADATA", sep).get("localhost")
    asn_text = _str(meta, "bgp_asn")
    try:
        asn = int(asn_text) if asn_text else None
    except ValueError:
        asn = None
    v4: str | None = None
    v6: str | None = None
    # Keys are LOOPBACK_INTERFACE|Loopback0 (the interface) and LOOPBACK_INTERFACE|Loopback0|<ip>.
    for key in sorted(await Table(client, "LOOPBACK_INTERFACE", sep).keys()):
        parts = key.split(sep, 1)
        if parts[0] != "Loopback0" or len(parts) != 2:
            continue
        try:
            iface = ipaddress.ip_interface(parts[1])
        except ValueError:
            continue
        if iface.version == 4 and v4 is None:
            v4 = str(iface.ip)
        elif iface.version == 6 and v6 is None:
            v6 = str(iface.ip)
    return DeviceDefaults(
        hostname=_str(meta, "hostname"),
        bgp_asn=asn,
        bgp_router_id=_str(meta, "bgp_router_id"),
        docker_routing_config_mode=_str(meta, "docker_routing_config_mode"),
        loopback0_ipv4=v4,
        loopback0_ipv6=v6,
        device_type=_str(meta, "type"),
    )


async def swss_zmq_enabled(db: SonicDb) -> bool:
    fields = await Table(db.client(CONFIG_DB), "SYSTEM_DEFAULTS", db.separator(CONFIG_DB)).get(
        "swss_zmq"
    )
    return _str(fields, "status") == "enabled"


async def refuse_if_swss_zmq(db: SonicDb) -> None:
    if await swss_zmq_enabled(db):
        raise SwssZmqEnabled(
            "CONFIG_DB SYSTEM_DEFAULTS|swss_zmq has status=enabled: orchagent reads ROUTE_TABLE "
            "over ZMQ, so routes written to Redis APPL_DB would never reach the ASIC. The SONiC "
            "backend refuses to run; disable swss_zmq (the default) or use dataplane.backend: linux"
        )
