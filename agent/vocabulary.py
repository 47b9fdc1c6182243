"""The words every stage shares, defined once: the contract's names (routing modes, attachment
sources, headroom resources, annotations) and the status service's states and event kinds.

Everything else imports them from here; the proto's enums spell the same values in capitals.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, get_args

# -- Kubernetes annotations the agent reads (contract) ------------------------------------------
ANNOTATION_PREFIX = "kube-fabric-agent.io/"
SWITCH_PORT_ANNOTATION = ANNOTATION_PREFIX + "switch-port"
ROUTING_ANNOTATION = ANNOTATION_PREFIX + "routing"
FLANNEL_PREFIX = "flannel.alpha.coreos.com/"

# -- how the switch reaches a node's pods (annotation kube-fabric-agent.io/routing) -------------
ROUTING_MODES = ("bgp", "static", "vxlan")

# -- where an attachment (node behind a port) comes from, in precedence order -------------------
ATTACHMENT_SOURCES = ("static", "annotation", "lldp")

# -- the hardware tables headroom accounts for (`fabricctl headroom --json` resource names) -----
# Report order: routes first (what runs out first in a routed fabric), overlay tables last.
# nexthop_groups: ECMP groups (a route over several next hops), e.g. a VIP over static nodes.
Resource = Literal[
    "ipv4_routes", "ipv6_routes", "nexthops", "nexthop_groups", "neighbors", "fdb_entries",
    "remote_vteps",
]
RESOURCES: tuple[Resource, ...] = get_args(Resource)

# -- the status service ------------------------------------------------------------------------
HEALTH_STATES = ("starting", "ok", "degraded")
# "unknown": not observed yet; "not_configured": no session on this port (static / vxlan node).
BGP_STATES = (
    "unknown",
    "not_configured",
    "idle",
    "connect",
    "active",
    "open_sent",
    "open_confirm",
    "established",
)
LOCATE_MATCHES = ("pod_ip", "pod", "node", "node_ip", "pod_prefix", "service_vip")
EVENT_KINDS = (
    "node_attached",
    "node_detached",
    "pod_added",
    "pod_removed",
    "session_up",
    "session_down",
    "apply_result",
    "threshold_crossed",
    "refusal",
    "service_vip_added",
    "service_vip_removed",
    "vip_refused",
)
# A Service VIP as `fabricctl services` reports it: ok (a permitted node announces it and the
# leaf forwards to it), no-announcer (no permitted node's route is in the leaf's FIB, or no
# node is permitted), refused (by the plan, with the reason). UNKNOWN: the FIB was not read.
SERVICE_STATES = ("ok", "no-announcer", "refused")
# externalTrafficPolicy as Kubernetes spells it; "mixed": a VIP shared by Services of both.
SERVICE_POLICIES = ("Cluster", "Local", "mixed")
# A value this version cannot name: what a client shows for an enum value added by a newer
# agent (or left unspecified). Accepted everywhere so decoding never fails on it.
UNKNOWN = "unknown"


def check_word(value: str, allowed: Sequence[str], what: str) -> None:
    """ValueError unless `value` is one of `allowed` (or UNKNOWN). Checked where status data is
    built, so that a typo in the daemon fails in its tests, not as an "unspecified" enum on the
    wire that nobody notices."""
    if value not in allowed and value != UNKNOWN:
        raise ValueError(f"{what} {value!r} is not one of {', '.join(allowed)}")
