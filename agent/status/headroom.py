"""The daemon's headroom bookkeeping: capacity from the best source, usage, thresholds, report.

Capacity: config overrides > what the device reports (SONiC CRM when that backend runs, then
devlink) > the ASIC profile. Usage: what the data plane observes it owns, what CRM says the ASIC
holds (everyone's entries), and what the plan needs. Thresholds: SONiC's CRM|Config when CRM is
read, else the defaults. Threshold crossings are logged once and become events.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

from agent.config import AgentConfig
from agent.headroom.profiles import capacity_for
from agent.headroom.report import HeadroomInfo, build_report
from agent.headroom.resources import RESOURCES, Capacity, Observed, Resource, check_resource
from agent.headroom.thresholds import ThresholdTracker
from agent.headroom.usage import per_node_cost, total
from agent.plan.costs import desired_total
from agent.plan.model import Plan
from agent.status.model import EventLog

if TYPE_CHECKING:
    from agent.apply.contract import HardwareReading

log = logging.getLogger(__name__)
CRM_SOURCE = "crm"


class HeadroomMonitor:
    """Capacity from the best source, usage, thresholds and the report rows. Hardware readings
    (devlink on Linux, CRM on SONiC) arrive from the data plane backend through the runtime."""

    # Later sources win: on SONiC, CRM is what orchagent reads from the SAI for this ASIC and
    # its current forwarding profile, so it is better than devlink. The config's overrides win
    # over both (capacity_for).
    SOURCE_ORDER = ("devlink", CRM_SOURCE)

    def __init__(self, config: AgentConfig, events: EventLog) -> None:
        self.config = config
        self.events = events
        self._readings: dict[str, HardwareReading] = {}
        self.capacity = self._capacity()
        self.tracker = ThresholdTracker()
        self.rows: list[HeadroomInfo] = []
        self._last: tuple[Plan, dict[str, int]] | None = None

    def refresh(self) -> None:
        """The rows again for the last plan and observation (a new hardware reading)."""
        if self._last is not None:
            self.update(*self._last)

    def _capacity(self) -> dict[Resource, Capacity]:
        discovered: dict[Resource, Capacity] = {}
        for source in sorted(self._readings, key=self._rank):
            discovered.update({check_resource(r): c
                               for r, c in self._readings[source].capacity.items()})
        return capacity_for(self.config.headroom.profile, self.config.headroom.capacity,
                            discovered)

    def _rank(self, source: str) -> int:
        return self.SOURCE_ORDER.index(source) if source in self.SOURCE_ORDER else -1

    def set_hardware(self, reading: HardwareReading) -> bool:
        """Take a reading (it replaces the previous one of its source). CRM|Config's thresholds
        replace the defaults (resources it does not report keep them; the tracker keeps its
        raised/ok state across the change). Returns whether the capacity changed."""
        before = self.capacity
        self._readings[reading.source] = reading
        if reading.thresholds is not None:
            self.tracker.thresholds = dict(reading.thresholds)
        self.capacity = self._capacity()
        return self.capacity != before

    def _hardware_used(self) -> dict[str, Observed]:
        used: dict[str, Observed] = {}
        for source in sorted(self._readings, key=self._rank):
            used.update(self._readings[source].used)
        return used

    def update(self, plan: Plan, observed: Mapping[str, int] | None) -> None:
        """The rows for `plan` and what the data plane `observed` it holds; thresholds crossed
        become events."""
        self._last = (plan, dict(observed or {}))
        desired = desired_total(plan)  # the nodes' costs and the VIPs' routes and groups
        admitted = total([plan.costs[n] for n in (plan.admission.admitted if plan.admission
                                                  else plan.costs) if n in plan.costs])
        seen: dict[str, int | Observed] = dict(observed or {})
        for resource, crm in self._hardware_used().items():
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
        self.rows = report
