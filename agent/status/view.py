"""The daemon's StatusProvider: turns what the agent already holds into the status service's
data. Every method answers from memory (the plan, FRR's last polled session states, the pod
index, the appliers' last results): a status request never waits on FRR or the API server.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

from agent.cluster.nodes import Refusal
from agent.headroom.report import HeadroomInfo
from agent.status.locate import locate
from agent.status.model import (
    AgentStatus,
    AttachmentInfo,
    LocateResult,
    RouteInfo,
    ServiceInfo,
    VtepInfo,
    assess_health,
)
from agent.status.services import service_infos
from agent.status.state import ObservedState


def agent_version() -> str:
    try:
        return version("kube-fabric-agent")
    except PackageNotFoundError:
        return "0+unknown"


class AgentView:
    """The status service's answers, rendered from the observed state (a StatusProvider)."""

    def __init__(self, state: ObservedState) -> None:
        self.s = state

    def status(self) -> AgentStatus:
        k = self.s.kubernetes()
        applies = tuple(self.s.results[name] for name in sorted(self.s.results))
        offload = self.s.offload_message() if self.s.offload_failed_total() else None
        health, reasons = assess_health(k, applies, offload)
        return AgentStatus(
            health=health, version=agent_version(), started_at=self.s.started_at,
            kubernetes=k, health_reasons=reasons, switch_hostname=self.s.hostname,
            last_applies=applies,
            refusals=self.refusals(),
            last_reconcile_latency_seconds=self.s.last_reconcile_latency)

    def refusals(self) -> tuple[Refusal, ...]:
        return self.s.refusals()

    def attachments(self) -> Sequence[AttachmentInfo]:
        plan = self.s.plan
        if plan is None:
            return []
        by_node = self.s.cluster.by_name() if self.s.cluster else {}
        vteps = {p.node: p.public_ip for p in plan.dataplane.vxlan_peers}
        out = []
        for att in plan.attachments:
            peer = self.s.peers.get(att.port)
            if att.routing != "bgp":
                bgp_state, accepted = "not_configured", None
            elif peer is None:
                bgp_state, accepted = "unknown", None
            else:
                bgp_state, accepted = peer.state, peer.accepted
            node = by_node.get(att.node)
            out.append(AttachmentInfo(
                port=att.port, node=att.node, source=att.source, routing=att.routing,
                bgp_state=bgp_state, prefixes=att.prefixes, prefixes_accepted=accepted,
                draining=att.draining,
                node_ips=tuple(str(ip) for ip in node.internal_ips) if node else (),
                vtep=vteps.get(att.node),
                pods=self.s.pods.count(att.node) if self.s.pods_watched else None))
        return out

    def routes(self) -> Sequence[RouteInfo]:
        plan = self.s.plan
        if plan is None:
            return []
        observed = self.s.held.get("routes", frozenset())
        out: list[RouteInfo] = []
        for peer in plan.frr.server_peers:
            if peer.node is None:
                continue
            state = self.s.peers.get(peer.port)
            learned = state is not None and state.state == "established" and state.accepted > 0
            for prefix in (*peer.accept_v4, *peer.accept_v6):
                out.append(RouteInfo(prefix=prefix, owner=peer.node, routing="bgp",
                                     device=peer.port, desired=True, observed=learned))
        for r in plan.dataplane.static_routes:
            out.append(RouteInfo(prefix=r.prefix, owner=r.node, routing="static", next_hop=r.via,
                                 desired=True, observed=r.prefix in observed))
        for p in plan.dataplane.vxlan_peers:
            device = plan.dataplane.vtep.name if plan.dataplane.vtep else ""
            out.append(RouteInfo(prefix=p.pod_cidr, owner=p.node, routing="vxlan",
                                 next_hop=p.gateway, device=device, desired=True,
                                 observed=p.pod_cidr in observed))
        return out

    def vteps(self) -> Sequence[VtepInfo]:
        plan = self.s.plan
        if plan is None or plan.dataplane.vtep is None:
            return []
        vni = plan.dataplane.vtep.vni
        observed = self.s.held.get("fdb", frozenset())
        return [VtepInfo(owner=p.node, vtep_ip=p.public_ip, mac=p.vtep_mac, pod_cidr=p.pod_cidr,
                         vni=vni, desired=True, observed=p.vtep_mac in observed)
                for p in plan.dataplane.vxlan_peers]

    def headroom(self) -> Sequence[HeadroomInfo]:
        return list(self.s.headroom)

    def services(self) -> Sequence[ServiceInfo]:
        plan = self.s.plan
        if plan is None or not plan.services:
            return []
        return service_infos(plan.services, self.attachments(), self.s.vip_fib)

    def locate(self, query: str) -> LocateResult:
        return locate(query, self.s.pods, self.attachments(), self.routes(), self.services())

