"""The Linux kernel data plane through rtnetlink (pyroute2): the applier `LinuxDataplane`
(agent.apply.linux.applier) and its parts.

- applier: LinuxDataplane, the applier contract (agent.apply.contract) over the parts below
- desired: the plan's DataplaneDesired as the kernel tables want it
- view: what the agent wants and believes the kernel holds; held() and counts() read it
- delta: DeltaTracker, desired vs dataplane for one table (Calico felix style)
- channel: the batched netlink command channel
- codec: the rtnetlink messages of routes, neighbours, FDB entries and dumps
- observe: dumps into the view
- events: the event socket, and the judge that decides what the repair re-dumps
- vtep: the VTEP device
- results: one pass's counts and per-object errors as an ApplyResult
- offload: rt_offload_failed accounting and the fib_notify sysctl
- devlink: the ASIC's table sizes from `devlink resource show`
- route_counts: every route the kernel holds, from procfs
"""
