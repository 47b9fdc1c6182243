"""The headroom core end to end, as the lead will wire it: plan() -> per-node costs ->
capacity (profile + config) -> admission -> thresholds -> report. Pure, no root."""

from __future__ import annotations

from typing import Any

from agent.cluster.nodes import cluster_state
from agent.config import parse_config
from agent.headroom.profiles import capacity_for
from agent.headroom.report import build_report
from agent.headroom.resources import Capacity, Counts
from agent.headroom.thresholds import ThresholdTracker
from agent.headroom.usage import per_node_cost, total
from agent.plan.admission import admit, candidates_for
from agent.plan.build import plan

CONFIG: dict[str, Any] = {
    "switch": {"hostname": "leaf1", "asn": 65101, "router_id": "10.0.0.1"},
    "fabric": {"server_ports": ["swp1", "swp2", "swp3", "swp4"],
               "pod_supernets": ["10.244.0.0/16"]},
    # Contract keys: a profile and a tiny override so three nodes overflow it.
    "headroom": {"profile": "spectrum-2", "capacity": {"ipv4_routes": 6},
                 "reserve_percent": 5},
}


def node(name: str, cidr: str, port: str, ip: str, created: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "creationTimestamp": created,
                         "annotations": {"kube-fabric-agent.io/switch-port": f"leaf1/{port}"}},
            "spec": {"podCIDRs": [cidr]},
            "status": {"addresses": [{"type": "InternalIP", "address": ip}]}}


def test_plan_to_report() -> None:
    config = parse_config(CONFIG)
    state = cluster_state([
        node("n3", "10.244.3.0/24", "swp3", "192.168.1.13", "2026-01-03T00:00:00Z"),
        node("n1", "10.244.1.0/24", "swp1", "192.168.1.11", "2026-01-01T00:00:00Z"),
        node("n2", "10.244.2.0/24", "swp2", "192.168.1.12", "2026-01-02T00:00:00Z"),
    ])
    p = plan(config, state)
    costs = p.costs  # what every node wants, the refused one included
    assert costs["n1"] == Counts(ipv4_routes=2, nexthops=1, neighbors=1)
    assert costs["n3"] == Counts(ipv4_routes=2, nexthops=1, neighbors=1)
    # plan() admitted the two oldest; the newest keeps a session that accepts nothing
    assert p.admission is not None and p.admission.admitted == ("n1", "n2")
    peers = {peer.node: peer for peer in p.frr.server_peers if peer.node}
    assert peers["n3"].accept_v4 == () and peers["n1"].accept_v4
    assert any(r.kind == "headroom" and r.name == "n3" for r in p.refusals)
    assert "10.244.3.0/24" not in p.frr.advertise_v4

    caps = capacity_for(config.headroom.profile, config.headroom.capacity)
    assert caps["ipv4_routes"] == Capacity(6, "config")
    assert caps["remote_vteps"].value == 750

    result = admit(candidates_for(state.nodes, costs), costs, caps,
                            config.headroom.reserve_percent)
    # usable = floor(6 * 0.95) = 5: two nodes of two routes fit, the newest waits
    assert result.admitted == ("n1", "n2")
    assert result.refused_nodes == ("n3",)
    assert "ipv4_routes: needs 2, 1 of 5 left (capacity 6 minus the 5% reserve)" in \
        str(result.refused[0].as_refusal())

    desired = total(costs)
    tracker = ThresholdTracker()
    # Thresholds watch what the cluster wants (as the report's percent does): 6 of 6 routes
    # raises even though only 4 are admitted; the admitted 4 alone (67 %) would not.
    crossings = tracker.update_all(desired.as_dict(), {r: c.value for r, c in caps.items()})
    assert [(c.resource, c.kind) for c in crossings] == [("ipv4_routes", "raised")]

    rows = build_report(caps, desired, per_node_cost(costs),
                                 config.headroom.reserve_percent, thresholds=tracker,
                                 admitted=result.planned)
    v4 = rows[0].to_json()
    assert (v4["desired"], v4["admitted"], v4["capacity"], v4["nodes_left"]) == (6, 4, 6, 0)
    assert v4["threshold"] == "raised" and v4["source"] == "config"
