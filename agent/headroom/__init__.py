"""Hardware table headroom: know the ASIC's capacity, forecast the cluster's need, never
overflow silently.

Pure, root-free core (no I/O except offload.enable_fib_notify, which writes two sysctls):
- profiles: built-in ASIC capacity profiles with sources; capacity_for() with overrides;
- devlink: `devlink -j resource show` parsing and mapping onto the agent's resources;
- offload: rtnetlink route flags (offload / trap / offload-failed) and the notify sysctl;
- thresholds: CRM-like thresholds with hysteresis;
- usage: the desired usage per node and in total, per-node cost, nodes_left forecast;
- admission: which nodes fit (oldest first, working state kept) and the headroom report.
"""

from agent.headroom.admission import (
    AdmissionRefusal,
    AdmissionResult,
    Candidate,
    HeadroomReport,
    admit,
    build_report,
    candidates_for,
)
from agent.headroom.profiles import (
    PROFILES,
    Profile,
    UnknownProfileError,
    capacity_for,
    get_profile,
    profile_names,
)
from agent.headroom.resources import RESOURCES, Capacity, Counts, Observed, Resource, usable
from agent.headroom.thresholds import Crossing, Threshold, ThresholdTracker
from agent.headroom.usage import (
    CostModel,
    PerNodeCost,
    forecast,
    node_costs,
    nodes_left,
    per_node_cost,
    total,
)

__all__ = [
    "PROFILES",
    "RESOURCES",
    "AdmissionRefusal",
    "AdmissionResult",
    "Candidate",
    "Capacity",
    "CostModel",
    "Counts",
    "Crossing",
    "HeadroomReport",
    "Observed",
    "PerNodeCost",
    "Profile",
    "Resource",
    "Threshold",
    "ThresholdTracker",
    "UnknownProfileError",
    "admit",
    "build_report",
    "candidates_for",
    "capacity_for",
    "forecast",
    "get_profile",
    "node_costs",
    "nodes_left",
    "per_node_cost",
    "profile_names",
    "total",
    "usable",
]
