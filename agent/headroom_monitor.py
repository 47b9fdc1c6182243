"""The daemon's headroom bookkeeping: capacity from the best source, usage, thresholds, report.

Capacity: config overrides > what the device reports (devlink; SONiC CRM when that backend runs)
> the ASIC profile. Usage: what the data plane observes it owns, and what the plan needs.
Threshold crossings are logged once and become events.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Mapping
from pathlib import Path

from agent.config import AgentConfig
from agent.headroom.admission import build_report
from agent.headroom.devlink import views
from agent.headroom.profiles import capacity_for
from agent.headroom.resources import RESOURCES, Capacity
from agent.headroom.thresholds import ThresholdTracker
from agent.headroom.usage import per_node_cost, total
from agent.plan import Plan
from agent.process import run_command
from agent.status_model import EventLog, HeadroomInfo

log = logging.getLogger(__name__)


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


def kernel_route_counts(proc: Path = Path("/proc/net")) -> dict[str, int]:
    """Routes the kernel holds, counted cheaply from procfs (no dump over netlink): the main
    IPv4 table, and IPv6 routes not on the loopback (the kernel's own local entries)."""
    counts: dict[str, int] = {}
    try:
        with open(proc / "route") as f:
            counts["ipv4_routes"] = max(0, sum(1 for _ in f) - 1)  # minus the header
    except OSError:
        pass
    try:
        with open(proc / "ipv6_route") as f:
            counts["ipv6_routes"] = sum(1 for line in f if line.split()[-1:] != ["lo"])
    except OSError:
        pass
    return counts


class HeadroomMonitor:
    def __init__(self, config: AgentConfig, events: EventLog,
                 discovered: Mapping[str, Capacity] | None = None) -> None:
        self.config = config
        self.events = events
        self.capacity = capacity_for(config.headroom.profile, config.headroom.capacity,
                                     dict(discovered or {}))
        self.tracker = ThresholdTracker()
        self.rows: list[HeadroomInfo] = []

    def set_discovered(self, discovered: Mapping[str, Capacity]) -> None:
        self.capacity = capacity_for(self.config.headroom.profile, self.config.headroom.capacity,
                                     dict(discovered))

    def update(self, plan: Plan, observed: Mapping[str, int] | None) -> None:
        desired = total(plan.costs)
        admitted = total([plan.costs[n] for n in (plan.admission.admitted if plan.admission
                                                  else plan.costs) if n in plan.costs])
        seen = dict(observed or {})
        # Thresholds watch the larger of what is programmed and what the cluster wants, so the
        # alarm rises before anything overflows.
        level = {r: max(getattr(desired, r), seen.get(r, 0)) for r in RESOURCES}
        caps = {r: c.value for r, c in self.capacity.items()}
        for crossing in self.tracker.update_all(level, caps):
            message = str(crossing)
            (log.warning if crossing.kind == "raised" else log.info)("headroom: %s", message)
            self.events.emit("threshold_crossed", crossing.resource, message)
        report = build_report(self.capacity, desired, per_node_cost(plan.costs),
                              self.config.headroom.reserve_percent, observed=seen or None,
                              thresholds=self.tracker, admitted=admitted)
        self.rows = [HeadroomInfo.from_report(row) for row in report]
