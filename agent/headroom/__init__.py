"""Hardware table headroom: the ASIC's capacity, the cluster's need, thresholds. Pure, root-free.

- resources: the resources tracked (routes, next hops, neighbours, FDB, remote VTEPs) and counts;
- profiles: built-in ASIC capacity profiles with sources; capacity_for() with overrides;
- devlink: `devlink -j resource show` parsing and mapping onto the agent's resources;
- thresholds: CRM-like thresholds with hysteresis;
- usage: the desired usage per node and in total, per-node cost, nodes_left;
- report: the headroom report rows.
Admission (which nodes fit) is part of plan() (agent.plan.admission); the monitor that feeds
observed usage and thresholds is agent.status.headroom; routes the ASIC refused are observed by
the Linux applier (agent.apply.linux.offload).
"""
