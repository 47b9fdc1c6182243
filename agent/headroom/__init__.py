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
