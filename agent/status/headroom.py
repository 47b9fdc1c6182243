"""The daemon's headroom bookkeeping: capacity from the best source, usage, thresholds, report.

Capacity: config overrides > what the device reports (SONiC CRM when that backend runs, then
devlink) > the ASIC profile. Usage: what the data plane observes it owns, what CRM says the ASIC
holds (everyone's entries), and what the plan needs. Thresholds: SONiC's CRM|Config when CRM is
read, else the defaults. Threshold crossings are logged once and become events.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, cast

from agent.config import AgentConfig
from agent.headroom.devlink import views
from agent.headroom.profiles import capacity_for
from agent.headroom.report import build_report
from agent.headroom.resources import RESOURCES, Capacity, Observed, Resource, check_resource
from agent.headroom.thresholds import Threshold, ThresholdTracker, ThresholdType
from agent.headroom.usage import per_node_cost, total
from agent.plan.build import Plan
from agent.process import run_command
from agent.status.model import EventLog, HeadroomInfo

if TYPE_CHECKING:
    from agent.apply.sonic.crm import CrmCounter, CrmSnapshot

log = logging.getLogger(__name__)
CRM_SOURCE = "crm"


async def discover_devlink() -> dict[str, Capacity]:
    """Per-resource capacities the switch ASIC's driver reports through devlink, if any."""
    devlink = shutil.which("devlink")
    if devlink is None:
        return {}
    try:
        res = await run_command([devlink, "-j", "resource", "show"], limit_seconds=10.0)
        if res.returncode != 0 or not res.stdout.strip():
            return {}
        found: dict[str, Capacity] = {}
        for view in views(json.loads(res.stdout)):
            for note in view.notes:
                log.info("devlink %s", note)
            found.update(view.capacities)
        return found
    except (OSError, ValueError, TimeoutError) as exc:
        log.info("no devlink resources: %s", exc)
        return {}


# /proc/net/ipv6_route flags (include/uapi/linux/ipv6_route.h).
_RTF_CACHE = 0x01000000


def _ipv6_route_takes_a_slot(fields: list[str]) -> bool:
    """Whether a switchdev driver programs this IPv6 route, by mlxsw's rule
    (mlxsw_sp_fib6_rt_should_ignore, since Linux 5.8: multicast destinations and cached
    clones are ignored; link-local host entries are programmed as traps), and not the
    loopback's own entries (::1, the null route)."""
    if len(fields) < 10:
        return False
    dst, flags, dev = fields[0].lower(), int(fields[8], 16), fields[9]
    return not (dev == "lo" or dst.startswith("ff") or flags & _RTF_CACHE)


def kernel_route_counts(proc: Path = Path("/proc/net")) -> dict[str, int]:
    """Routes the kernel holds, counted cheaply from procfs (no dump over netlink): the main
    IPv4 table, and the IPv6 routes an ASIC would hold (_ipv6_route_takes_a_slot)."""
    counts: dict[str, int] = {}
    try:
        with open(proc / "route") as f:
            counts["ipv4_routes"] = max(0, sum(1 for _ in f) - 1)  # minus the header
    except OSError:
        pass
    try:
        with open(proc / "ipv6_route") as f:
            counts["ipv6_routes"] = sum(1 for line in f
                                        if _ipv6_route_takes_a_slot(line.split()))
    except OSError:
        pass
    return counts


class HeadroomMonitor:
    def __init__(self, config: AgentConfig, events: EventLog,
                 discovered: Mapping[str, Capacity] | None = None) -> None:
        self.config = config
        self.events = events
        self._discovered: dict[str, Capacity] = dict(discovered or {})
        self._crm_capacity: dict[str, Capacity] = {}
        self._crm_used: dict[str, Observed] = {}
        self.capacity = self._capacity()
        self.tracker = ThresholdTracker()
        self.rows: list[HeadroomInfo] = []

    def _capacity(self) -> dict[Resource, Capacity]:
        # CRM over devlink: on SONiC, CRM is what orchagent reads from the SAI for this ASIC
        # and its current forwarding profile. The config's overrides win over both.
        discovered = {check_resource(r): c
                      for r, c in {**self._discovered, **self._crm_capacity}.items()}
        return capacity_for(self.config.headroom.profile, self.config.headroom.capacity,
                            discovered)

    def set_discovered(self, discovered: Mapping[str, Capacity]) -> None:
        self._discovered = dict(discovered)
        self.capacity = self._capacity()

    def set_crm(self, snapshot: CrmSnapshot) -> list[str]:
        """Take a CRM reading: capacity and used per resource CRM reports (source "crm"), and
        CRM|Config's thresholds (resources CRM does not report keep the defaults; the tracker
        keeps its raised/ok state across the change). Returns notes for the caller to log."""
        capacity, used, thresholds, notes = crm_headroom(snapshot)
        self._crm_capacity, self._crm_used = capacity, used
        self.tracker.thresholds = thresholds
        self.capacity = self._capacity()
        return notes

    def update(self, plan: Plan, observed: Mapping[str, int] | None) -> None:
        desired = total(plan.costs)
        admitted = total([plan.costs[n] for n in (plan.admission.admitted if plan.admission
                                                  else plan.costs) if n in plan.costs])
        seen: dict[str, int | Observed] = dict(observed or {})
        for resource, crm in self._crm_used.items():
            # CRM counts the whole table (uplink routes, the leaf's own entries) but only every
            # polling interval; the data plane's count is live but only its own: the larger.
            own = seen.get(resource, 0)
            if crm.value >= (own.value if isinstance(own, Observed) else own):
                seen[resource] = crm
        used = {r: v.value if isinstance(v, Observed) else v for r, v in seen.items()}
        # Thresholds watch the larger of what is programmed and what the cluster wants, so the
        # alarm rises before anything overflows.
        level = {r: max(getattr(desired, r), used.get(r, 0)) for r in RESOURCES}
        caps = {r: c.value for r, c in self.capacity.items()}
        for crossing in self.tracker.update_all(level, caps):
            message = str(crossing)
            (log.warning if crossing.kind == "raised" else log.info)("headroom: %s", message)
            self.events.emit("threshold_crossed", crossing.resource, message)
        report = build_report(self.capacity, desired, per_node_cost(plan.costs),
                              self.config.headroom.reserve_percent, observed=seen or None,
                              thresholds=self.tracker, admitted=admitted)
        self.rows = [HeadroomInfo.from_report(row) for row in report]
