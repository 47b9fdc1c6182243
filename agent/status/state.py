"""The agent's one observed state: what it knows and what it did, in one place.

The runtime writes it (the plan and cluster after each reconcile, each applier's latest result,
what the data plane holds, BGP sessions, headroom rows, routes the ASIC refused, the Service
VIPs' next hops in the FIB); every output is rendered from it and from nothing else: the status
file and systemd's STATUS line (agent.status.file), the gRPC view (agent.status.view), metrics
(agent.status.metrics) and, on SONiC, STATE_DB (the applier's report()).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.apply.contract import ApplyResult, Held
from agent.apply.frr.observer import PeerState
from agent.cluster.nodes import ClusterState, Refusal
from agent.cluster.pod_index import PodIndex
from agent.headroom.report import HeadroomInfo
from agent.informers.informer import Informer
from agent.plan.model import Plan
from agent.status.model import FibHop, KubernetesConnection


@dataclass
class ObservedState:
    started_at: float  # unix time
    hostname: str
    nodes: Informer  # read for the API connection's state, never written here
    plan: Plan | None = None
    cluster: ClusterState | None = None
    peers: dict[str, PeerState] = field(default_factory=dict)  # FRR's sessions, by port
    pods: PodIndex = field(default_factory=PodIndex)
    pods_watched: bool = False
    # Each applier's latest result, by ApplyResult.applier ("frr", "dataplane").
    results: dict[str, ApplyResult] = field(default_factory=dict)
    frr_last_error: str | None = None  # the last error an FRR result carried (kept)
    held: Held = field(default_factory=dict)  # what the data plane observed it holds
    headroom: list[HeadroomInfo] = field(default_factory=list)
    offload_failed: dict[int, int] = field(default_factory=dict)  # IP version -> routes
    last_reconcile_latency: float | None = None  # a change's arrival to its applied state
    lldp_error: str | None = None
    # The next hops of each Service VIP's route in the leaf's FIB, by prefix (polled by
    # agent.status.announcers); None: not known, never read or the last read failed.
    vip_fib: dict[str, tuple[FibHop, ...]] | None = None

    def kubernetes(self) -> KubernetesConnection:
        nodes = self.nodes
        return KubernetesConnection(
            connected=nodes.connected, synced=nodes.synced, last_error=nodes.last_error,
            seconds_since_contact=nodes.snapshot().get("seconds_since_contact"),
            resource_version=nodes.resource_version, nodes=len(nodes.store))

    def record(self, result: ApplyResult) -> ApplyResult | None:
        """Keep `result` as its applier's latest; returns the one it replaces. An "unchanged"
        result (nothing was looked at) does not replace a successful one: the status keeps
        saying what the last real apply did."""
        previous = self.results.get(result.applier)
        if result.action == "unchanged" and previous is not None and previous.ok:
            return previous
        self.results[result.applier] = result
        if result.applier == "frr" and result.error:
            self.frr_last_error = result.error
        return previous

    def refusals(self) -> tuple[Refusal, ...]:
        """The plan's refusals, and the nodes whose lines FRR itself refused on the latest
        apply (the plan cannot know those: FRR decides after it); a fixed value clears them.
        The one list the status, the status file, the log and the events all show."""
        planned = self.plan.refusals if self.plan else ()
        frr = self.results.get("frr")
        by_frr = sorted(frr.refused.items()) if frr is not None else []
        return (*planned, *(Refusal("node", node, why) for node, why in by_frr))

    def offload_failed_total(self) -> int:
        return sum(self.offload_failed.values())

    def offload_message(self) -> str:
        v4, v6 = self.offload_failed.get(4, 0), self.offload_failed.get(6, 0)
        return (f"{v4 + v6} routes not offloaded to the ASIC (rt_offload_failed): "
                f"IPv4 {v4}, IPv6 {v6}")
