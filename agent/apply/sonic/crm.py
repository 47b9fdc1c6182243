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
| nexthop_groups | nexthop_group |
| neighbors | ipv4_neighbor + ipv6_neighbor |
| fdb_entries | fdb_entry |

remote_vteps has no CRM resource (SONiC counts VXLAN as routes, nexthops and nexthop groups):
its capacity must come from the headroom profile.

For a resource made of two SONiC resources, `used` is the sum, and `available` the smaller of
the two: ASICs commonly serve IPv4 and IPv6 nexthops (and neighbours) from one pool, each
reporting the same remaining space, so summing would count free space twice. Taking the minimum
never promises room that is not there.

CrmPoller reads CRM every CRM|Config polling_interval (5 s to 300 s) and hands each reading to
the runtime as a HardwareReading (source "crm": capacity, used, thresholds) through
Feedback.hardware(); headroom prefers it over devlink and the profile.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import cast

from redis.exceptions import RedisError

from agent.apply.contract import Feedback, HardwareReading
from agent.apply.sonic.db import CONFIG_DB, COUNTERS_DB, SonicDb, raise_if_cancelled
from agent.apply.sonic.table import Table
from agent.headroom.resources import Capacity, Observed
from agent.headroom.thresholds import Threshold, ThresholdType

log = logging.getLogger(__name__)

CRM_SOURCE = "crm"  # HardwareReading.source, and the source of its capacities and usage

AGENT_RESOURCES: dict[str, tuple[str, ...]] = {
    "ipv4_routes": ("ipv4_route",),
    "ipv6_routes": ("ipv6_route",),
    "nexthops": ("ipv4_nexthop", "ipv6_nexthop"),
    "nexthop_groups": ("nexthop_group",),
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

# CRM|Config allows intervals down to 1 s: headroom gains nothing from reading Redis that often.
CRM_POLL_MIN_SECONDS = 5.0
# orchagent's default; a longer interval set there would leave the headroom stale for too long.
CRM_POLL_MAX_SECONDS = 300.0
CRM_RETRY_SECONDS = 30.0  # after a failed read, sooner than a whole interval


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


def crm_poll_seconds(snapshot: CrmSnapshot | None) -> float:
    """How often to read CRM: its own CRM|Config polling_interval (reading faster than orchagent
    writes sees nothing new), at least 5 s and at most 300 s."""
    interval = CRM_POLL_MAX_SECONDS if snapshot is None else float(snapshot.polling_interval)
    return min(max(interval, CRM_POLL_MIN_SECONDS), CRM_POLL_MAX_SECONDS)


def crm_threshold(counters: tuple[CrmCounter, ...]) -> Threshold:
    """One agent resource's threshold from its SONiC counters' (nexthops and neighbors have an
    IPv4 and an IPv6 one). Equal, as usual: that one. Same type, different levels: the one that
    raises first (lowest high, or for `free` the highest low) with the matching clear level, so
    the combined resource alarms no later than either counter would. Different types: the
    first counter's (the IPv4 one)."""
    types = {c.threshold.type for c in counters}
    if len(types) > 1:
        t = counters[0].threshold
        return Threshold(cast(ThresholdType, t.type), float(t.high), float(t.low))
    kind = cast(ThresholdType, types.pop())  # parse_crm admits only the three types
    if kind == "free":
        high, low = max(c.threshold.high for c in counters), max(c.threshold.low for c in counters)
    else:
        high, low = min(c.threshold.high for c in counters), min(c.threshold.low for c in counters)
    return Threshold(kind, float(high), float(low))


def crm_reading(snapshot: CrmSnapshot) -> HardwareReading:
    """CRM's view per agent resource: capacity (used + available), used, threshold, and notes
    on what could not be used. A table of size 0 (used and available both 0) is taken as "not
    reported" rather than as a table that holds nothing: no ASIC has a route table of size 0,
    and believing it would raise every alarm. Resources CRM does not report (yet) are a note:
    their capacity comes from the profile. `thresholds` holds only the resources with a usable
    CRM|Config threshold; the others keep the defaults."""
    capacity: dict[str, Capacity] = {}
    used: dict[str, Observed] = {}
    thresholds: dict[str, Threshold] = {}
    notes: list[str] = list(snapshot.problems)
    for name, res in snapshot.resources.items():
        if res.capacity <= 0:
            notes.append(f"CRM reports no {name} table (used 0, available 0): not used")
            continue
        capacity[name] = Capacity(res.capacity, CRM_SOURCE)
        used[name] = Observed(res.used, CRM_SOURCE)
        try:
            thresholds[name] = crm_threshold(res.counters)
        except ValueError as exc:  # e.g. low >= high in CRM|Config: the defaults apply
            notes.append(f"CRM|Config threshold for {name} not used: {exc}")
    if snapshot.missing:
        notes.append(f"CRM does not report {', '.join(snapshot.missing)} (yet): "
                     "their capacity comes from the profile")
    return HardwareReading(CRM_SOURCE, capacity, used, thresholds, tuple(notes))


class CrmPoller:
    """Reads CRM every CRM|Config polling_interval and gives each reading to
    `feedback.hardware`. A failed read gives nothing (headroom keeps the last reading) and is
    retried after CRM_RETRY_SECONDS; the failure, the recovery and each note are logged once."""

    def __init__(self, db: SonicDb, feedback: Feedback) -> None:
        self.db = db
        self.feedback = feedback
        self._failing = False
        self._logged: set[str] = set()

    async def poll(self) -> float:
        """One read; returns how many seconds to wait before the next."""
        try:
            snapshot = await read_crm(self.db)
        except (RedisError, OSError) as exc:
            if not self._failing:
                log.warning("cannot read CRM: %s; headroom keeps the last reading", exc)
            self._failing = True
            return CRM_RETRY_SECONDS
        if self._failing:
            log.info("CRM readable again")
        self._failing = False
        reading = crm_reading(snapshot)
        self.feedback.hardware(reading)
        for note in reading.notes:
            if note not in self._logged:
                log.info("CRM: %s", note)
        self._logged = set(reading.notes)
        return crm_poll_seconds(snapshot)

    async def run(self) -> None:
        """Until cancelled."""
        while True:
            wait = await self.poll()
            raise_if_cancelled()
            await asyncio.sleep(wait)
