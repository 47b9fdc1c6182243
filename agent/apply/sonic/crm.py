"""CRM: what the ASIC itself says about its tables, as orchagent's CrmOrch publishes it.

COUNTERS_DB `CRM:STATS` holds `crm_stats_<res>_used` and `crm_stats_<res>_available` per SONiC
resource (refreshed every CRM|Config polling_interval, 300 s by default); CONFIG_DB `CRM|Config`
holds the thresholds orchagent warns at (`<res>_threshold_type` percentage|used|free,
`<res>_low_threshold` 70, `<res>_high_threshold` 85 by default).

Mapped to the agent's headroom resources:

| agent | SONiC resources |
|---|---|
| ipv4_routes | ipv4_route |
| ipv6_routes | ipv6_route |
| nexthops | ipv4_nexthop + ipv6_nexthop |
| neighbors | ipv4_neighbor + ipv6_neighbor |
| fdb_entries | fdb_entry |

remote_vteps has no CRM resource (SONiC counts VXLAN as routes, nexthops and nexthop groups):
its capacity must come from the headroom profile.

For a resource made of two SONiC resources, `used` is the sum, and `available` the smaller of
the two: ASICs commonly serve IPv4 and IPv6 nexthops (and neighbours) from one pool, each
reporting the same remaining space, so summing would count free space twice. Taking the minimum
never promises room that is not there.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.apply.sonic.db import CONFIG_DB, COUNTERS_DB, SonicDb
from agent.apply.sonic.table import Table

AGENT_RESOURCES: dict[str, tuple[str, ...]] = {
    "ipv4_routes": ("ipv4_route",),
    "ipv6_routes": ("ipv6_route",),
    "nexthops": ("ipv4_nexthop", "ipv6_nexthop"),
    "neighbors": ("ipv4_neighbor", "ipv6_neighbor"),
    "fdb_entries": ("fdb_entry",),
}
WITHOUT_CRM_RESOURCE: tuple[str, ...] = ("remote_vteps",)

# orchagent's defaults (crmorch.cpp).
DEFAULT_POLLING_INTERVAL = 300
DEFAULT_THRESHOLD_TYPE = "percentage"
DEFAULT_LOW_THRESHOLD = 70
DEFAULT_HIGH_THRESHOLD = 85
_THRESHOLD_TYPES = ("percentage", "used", "free")


def crm_percentage(used: int, available: int) -> int:
    """orchagent's integer percentage: used*100/(used+available), 0 when nothing is used or the
    table has no size."""
    total = used + available
    if used == 0 or total == 0:
        return 0
    return (used * 100) // total


@dataclass(frozen=True)
class CrmThreshold:
    type: str  # percentage | used | free
    low: int
    high: int


@dataclass(frozen=True)
class CrmCounter:
    """One SONiC CRM resource as COUNTERS_DB has it."""

    name: str  # SONiC's resource name, e.g. ipv4_route
    used: int
    available: int
    threshold: CrmThreshold

    @property
    def capacity(self) -> int:
        return self.used + self.available

    @property
    def percentage(self) -> int:
        return crm_percentage(self.used, self.available)

    @property
    def utilization(self) -> int:
        """The number orchagent compares with the thresholds, per the threshold type."""
        return {"percentage": self.percentage, "used": self.used, "free": self.available}[
            self.threshold.type
        ]

    @property
    def above_high(self) -> bool:
        """orchagent logs THRESHOLD_EXCEEDED at utilization >= high."""
        return self.utilization >= self.threshold.high


@dataclass(frozen=True)
class CrmResource:
    """One agent resource, from one or two SONiC counters."""

    resource: str  # the agent's name, e.g. nexthops
    used: int
    available: int
    counters: tuple[CrmCounter, ...]

    @property
    def capacity(self) -> int:
        return self.used + self.available

    @property
    def percentage(self) -> int:
        return crm_percentage(self.used, self.available)

    @property
    def above_high(self) -> bool:
        return any(c.above_high for c in self.counters)


@dataclass(frozen=True)
class CrmSnapshot:
    polling_interval: int
    resources: dict[str, CrmResource]  # by agent resource name; absent when CRM has no counters
    missing: tuple[str, ...]  # agent resources CRM did not report (yet: first poll, or no SAI)
    problems: tuple[str, ...] = ()  # CRM|Config values that could not be used (defaults taken)


def _int(value: str | None, default: int, what: str, problems: list[str]) -> int:
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        problems.append(f"{what}={value!r} is not an integer; using {default}")
        return default


def parse_crm(stats: dict[str, str], config: dict[str, str]) -> CrmSnapshot:
    """Pure: the two hashes -> the snapshot (tested without Redis too)."""
    problems: list[str] = []
    interval = _int(config.get("polling_interval"), DEFAULT_POLLING_INTERVAL,
                    "polling_interval", problems)
    resources: dict[str, CrmResource] = {}
    missing: list[str] = []
    for agent_name, sonic_names in AGENT_RESOURCES.items():
        counters = []
        for res in sonic_names:
            used = stats.get(f"crm_stats_{res}_used")
            avail = stats.get(f"crm_stats_{res}_available")
            if used is None or avail is None:
                continue
            ttype = config.get(f"{res}_threshold_type") or DEFAULT_THRESHOLD_TYPE
            if ttype not in _THRESHOLD_TYPES:
                problems.append(f"{res}_threshold_type={ttype!r} is unknown; using percentage")
                ttype = DEFAULT_THRESHOLD_TYPE
            threshold = CrmThreshold(
                ttype,
                _int(config.get(f"{res}_low_threshold"), DEFAULT_LOW_THRESHOLD,
                     f"{res}_low_threshold", problems),
                _int(config.get(f"{res}_high_threshold"), DEFAULT_HIGH_THRESHOLD,
                     f"{res}_high_threshold", problems),
            )
            counters.append(CrmCounter(
                res,
                _int(used, 0, f"crm_stats_{res}_used", problems),
                _int(avail, 0, f"crm_stats_{res}_available", problems),
                threshold,
            ))
        if not counters:
            missing.append(agent_name)
            continue
        resources[agent_name] = CrmResource(
            agent_name,
            used=sum(c.used for c in counters),
            available=min(c.available for c in counters),
            counters=tuple(counters),
        )
    return CrmSnapshot(interval, resources, tuple(missing), tuple(problems))


async def read_crm(db: SonicDb) -> CrmSnapshot:
    stats: dict[str, str] = await Table(
        db.client(COUNTERS_DB), "CRM", db.separator(COUNTERS_DB)
    ).get_raw("STATS") or {}
    config: dict[str, str] = await Table(
        db.client(CONFIG_DB), "CRM", db.separator(CONFIG_DB)
    ).get_raw("Config") or {}
    return parse_crm(stats, config)
