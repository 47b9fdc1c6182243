"""What each node's desired state takes in the hardware tables, per node name.

Pure, over plan()'s output (the attachments with their accepted prefixes) and the data plane's
desired state (static routes, VXLAN peers), with agent.headroom.usage's cost model:
- a node behind the leaf (attached to a server port, any routing mode): each of its routes (its
  pod CIDRs, and its host route when the plan accepts one), one neighbour and one nexthop (the
  node itself, the next hop of those routes);
- an overlay (VXLAN) node: one remote VTEP, one FDB entry (its VTEP MAC), one neighbour
  (`<subnet>.0` -> VTEP MAC), one route (its pod CIDR) and one nexthop (`<subnet>.0` onlink;
  SONiC's CRM counts VXLAN routes as routes and nexthops too).
A node both attached and in the overlay pays both. A prefix appearing twice for one node (the
plan's pod CIDR and the data plane's static route for it) is one route. Service VIPs are no
node's cost: Plan.vip_costs holds them (desired_total adds both).
"""

from __future__ import annotations

from collections.abc import Iterable

from agent.headroom.resources import Counts
from agent.headroom.usage import DEFAULT_COST_MODEL, CostModel, total
from agent.plan.model import DataplaneDesired, Plan, PlannedAttachment


def _route_counts(prefixes: Iterable[str]) -> tuple[int, int]:
    v4 = v6 = 0
    for prefix in set(prefixes):
        # Canonical CIDRs from plan(): only IPv6 has a colon; no parse per prefix per plan.
        if ":" not in prefix:
            v4 += 1
        else:
            v6 += 1
    return v4, v6


def node_costs(
    attachments: Iterable[PlannedAttachment],
    dataplane: DataplaneDesired | None = None,
    model: CostModel = DEFAULT_COST_MODEL,
) -> dict[str, Counts]:
    """Per node name, the entries its desired state takes. Nodes appear in name order."""
    prefixes: dict[str, set[str]] = {}
    attached: set[str] = set()
    overlay: dict[str, int] = {}
    for att in attachments:
        attached.add(att.node)
        prefixes.setdefault(att.node, set()).update(att.prefixes)
    if dataplane is not None:
        for route in dataplane.static_routes:
            prefixes.setdefault(route.node, set()).add(route.prefix)
        for peer in dataplane.vxlan_peers:
            prefixes.setdefault(peer.node, set()).add(peer.pod_cidr)
            overlay[peer.node] = overlay.get(peer.node, 0) + 1

    costs: dict[str, Counts] = {}
    for node in sorted(prefixes):
        v4, v6 = _route_counts(prefixes[node])
        is_attached = int(node in attached)
        peers = overlay.get(node, 0)
        costs[node] = Counts(
            ipv4_routes=v4,
            ipv6_routes=v6,
            nexthops=is_attached * model.attached_nexthops + peers * model.overlay_nexthops,
            neighbors=is_attached * model.attached_neighbors + peers * model.overlay_neighbors,
            fdb_entries=peers * model.overlay_fdb_entries,
            remote_vteps=peers * model.overlay_remote_vteps,
        )
    return costs


def desired_total(plan: Plan) -> Counts:
    """What the whole desired state takes, the headroom report's "desired": every served
    node's entries, admitted or not, plus the Service VIPs' (a route each, wherever it comes
    from, and the ECMP groups of their node sets), counted once."""
    return total(plan.costs) + plan.vip_costs
