"""Service VIPs in the status: the plan's verdict next to what the leaf's FIB forwards.

Pure functions of the plan's `ServiceVip`s, the attachments and the FIB reading
(agent.status.announcers): `service_infos` builds `fabricctl services`' rows, `service_events`
the events between two plans, `services_summary` the status file's bounded part.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from agent.events import Event
from agent.plan.model import ServiceVip
from agent.status.model import AttachmentInfo, FibHop, ServiceInfo
from agent.vocabulary import SERVICE_STATES, UNKNOWN

# The status file lists at most this many VIPs (problems first): with 5,000 VIPs it would
# otherwise be megabytes rewritten after every reconcile. The counts cover them all.
SUMMARY_MAX_VIPS = 100
_PROBLEMS_FIRST = {"refused": 0, "no-announcer": 1, UNKNOWN: 2, "ok": 3}
# Events of one kind a plan change publishes at most (see service_events).
EVENTS_PER_KIND = 100
_KIND_WORDS = {"service_vip_added": "VIPs added", "service_vip_removed": "VIPs removed",
               "vip_refused": "VIPs refused"}


def announcing_nodes(hops: Sequence[FibHop], port_node: Mapping[str, str],
                     ip_node: Mapping[str, str]) -> tuple[str, ...]:
    """The nodes behind a VIP route's next hops: a BGP hop by the server port it leaves by
    (unnumbered: its gateway is a link-local address), one of the agent's own routes by its
    gateway, a node's InternalIP. Hops to anything else (uplinks, unknown ports) name no node:
    a route via the spines is no node of this leaf announcing."""
    nodes = set()
    for hop in hops:
        node = port_node.get(hop.device) if hop.source == "bgp" else ip_node.get(
            hop.gateway or "")
        if node is not None:
            nodes.add(node)
    return tuple(sorted(nodes))


def service_infos(vips: Sequence[ServiceVip], attachments: Sequence[AttachmentInfo],
                  fib: Mapping[str, Sequence[FibHop]] | None) -> list[ServiceInfo]:
    """One row per VIP, in the plan's order (address order, IPv4 first). `fib` None: the FIB
    was not read, so who announces is unknown and so is the state of a VIP not refused."""
    port_node = {a.port: a.node for a in attachments}
    node_port = {a.node: a.port for a in attachments}
    ip_node = {ip: a.node for a in attachments for ip in a.node_ips}
    rows = []
    # Most VIPs of a leaf share their next hops (one tuple, agent.status.announcers) and their
    # permitted nodes (every Cluster VIP: the same tuple, from the plan): what follows from
    # them is worked out once per distinct pair, not once per VIP.
    known: dict[int, tuple[str, ...]] = {}
    shared: dict[tuple[tuple[str, ...], tuple[str, ...] | None], tuple[bool, dict[str, str]]] = {}
    for vip in vips:
        announcing = None
        if fib is not None:
            hops = fib.get(vip.prefix, ())
            announcing = known.get(id(hops))
            if announcing is None:
                announcing = known[id(hops)] = announcing_nodes(hops, port_node, ip_node)
        key = (vip.nodes_permitted, announcing)
        if key not in shared:
            named = sorted({*vip.nodes_permitted, *(announcing or ())})
            shared[key] = (bool(set(announcing or ()) & set(vip.nodes_permitted)),
                           {n: node_port[n] for n in named if n in node_port})
        served, ports = shared[key]
        if vip.refused is not None:
            state = "refused"
        elif announcing is None:
            state = UNKNOWN
        else:
            state = "ok" if served else "no-announcer"
        rows.append(ServiceInfo(
            vip=vip.vip, services=vip.services, policy=vip.policy,
            nodes_permitted=vip.nodes_permitted, nodes_announcing=announcing, state=state,
            reason=vip.refused, prefix=vip.prefix, ports=ports))  # shared: never mutated
    return rows


def _who(vip: ServiceVip) -> str:
    return f"{', '.join(vip.services)} ({vip.policy})"


def service_events(before: Sequence[ServiceVip], after: Sequence[ServiceVip],
                   now: float, limit: int = EVENTS_PER_KIND) -> list[Event]:
    """The events between two plans' VIPs, keyed by address:
    - service_vip_added: a VIP some node may announce appeared, or stopped being refused;
    - service_vip_removed: no Service names the VIP any more;
    - vip_refused: a VIP is refused that was not (new, or accepted before), or for a new
      reason.
    A change of the permitted nodes alone is no event: it follows every endpoint and node
    readiness change, and `fabricctl services` shows it. At most `limit` events of a kind: past
    it, the last one says how many more there were (the first plan of a cluster with 5,000
    VIPs must not push every other event out of the bounded history). Pure: the reconcile loop
    calls it with the previous and the new plan's `services`."""
    old = {v.vip: v for v in before}
    new = {v.vip: v for v in after}
    events: list[Event] = []
    for address, was in old.items():  # removals first, each in the plans' address order
        if address not in new:
            events.append(Event("service_vip_removed", now, address,
                                f"no longer named by {_who(was)}"))
    for address, vip in new.items():
        was = old.get(address)
        if vip.refused is not None:
            if was is None or was.refused != vip.refused:
                events.append(Event("vip_refused", now, address, f"{_who(vip)}: {vip.refused}"))
        elif was is None or was.refused is not None:
            nodes = ", ".join(vip.nodes_permitted) or "none yet"
            events.append(Event("service_vip_added", now, address,
                                f"{_who(vip)}; nodes permitted: {nodes}"))
    return _bounded(events, limit)


def _bounded(events: list[Event], limit: int) -> list[Event]:
    total = Counter(e.kind for e in events)
    kept: Counter[str] = Counter()
    out = []
    for event in events:
        if total[event.kind] <= limit or kept[event.kind] < limit - 1:
            kept[event.kind] += 1
            out.append(event)
    for kind, n in total.items():
        if n > limit:
            more = n - kept[kind]
            out.append(Event(kind, events[0].time, f"{more} more VIPs",
                             f"{more} more {_KIND_WORDS[kind]} (fabricctl services lists them)"))
    return out


def state_counts(rows: Sequence[ServiceInfo]) -> dict[str, int]:
    """VIPs per state, every state present (0 when none): a series must not vanish."""
    counts = Counter(r.state for r in rows)
    return {state: counts.get(state, 0) for state in (*SERVICE_STATES, UNKNOWN)}


def services_summary(rows: Sequence[ServiceInfo], limit: int = SUMMARY_MAX_VIPS
                     ) -> dict[str, Any]:
    """The status file's "services": counts of every VIP by state, and at most `limit` VIPs,
    problems first (refused, no announcer, unknown), then in address order."""
    shown = sorted(range(len(rows)), key=lambda i: (_PROBLEMS_FIRST[rows[i].state], i))[:limit]
    return {
        "vips": len(rows),
        "by_state": state_counts(rows),
        "listed": [{
            "vip": r.vip, "services": list(r.services), "policy": r.policy, "state": r.state,
            "nodes_permitted": list(r.nodes_permitted),
            "nodes_announcing": None if r.nodes_announcing is None else list(
                r.nodes_announcing),
            "reason": r.reason,
        } for r in (rows[i] for i in shown)],
        "truncated": len(rows) > limit,
    }
