"""The desired state plan() returns: FRR's (sessions, prefix lists, what to announce) and the
data plane's (what plan() asks the kernel through netlink or SONiC through APPL_DB to hold).

Plain frozen data, every field already validated by plan(): appliers may put these values into
netlink messages or Redis keys as they are. Nodes in `bgp` mode need nothing here (FRR does it);
`static` nodes need a route per pod CIDR via the node's InternalIP; `vxlan` (flannel-compatible)
nodes need, in flannel's order, a neighbour `<subnet>.0 -> VtepMAC` on the VTEP device, an FDB
entry `VtepMAC -> public IP`, and a route `pod CIDR via <subnet>.0 onlink` on the VTEP device.
A Service VIP that only `static` nodes may serve is routed by the leaf itself: one route, ECMP
over those nodes' InternalIPs (VipRoute).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from typing import NamedTuple

from agent.cluster.nodes import Refusal
from agent.headroom.resources import Counts
from agent.plan.admission import AdmissionResult


@dataclass(frozen=True)
class StaticRoute:
    """A pod CIDR of a `static` node, reached through the node's InternalIP (same family)."""

    node: str
    prefix: str  # canonical CIDR, e.g. "10.244.5.0/24"
    via: str  # the node's InternalIP, e.g. "192.168.10.5"
    # The server port the node is attached to (SONiC's ROUTE_TABLE names its egress port; the
    # Linux kernel resolves the next hop itself and ignores it). None: not known.
    port: str | None = None


@dataclass(frozen=True)
class VtepDevice:
    """The switch's own VXLAN device (one, shared by every overlay node)."""

    name: str  # interface name, e.g. "flannel.1"
    vni: int
    port: int  # UDP destination port (flannel: 8472)
    local: str  # source address: switch.vtep_ip
    mtu: int
    mac: str | None  # fixed MAC so overlay nodes can keep pointing at it; None = kernel's
    address: str | None  # the switch's own overlay address "<subnet>.0/32", or None


@dataclass(frozen=True)
class VxlanPeer:
    """A flannel-style overlay node."""

    node: str
    pod_cidr: str  # its first pod CIDR of the VTEP's family, e.g. "10.244.7.0/24"
    gateway: str  # the first address of pod_cidr ("<subnet>.0"), the route's onlink next hop
    vtep_mac: str  # flannel.alpha.coreos.com/backend-data VtepMAC, lower case
    public_ip: str  # flannel.alpha.coreos.com/public-ip: where its VXLAN packets go


class VipNexthop(NamedTuple):
    """One next hop of a VIP route: a static node's InternalIP of the VIP's family."""

    via: str  # e.g. "192.168.10.5"
    port: str | None  # the server port the node is attached to (SONiC's ifname)
    node: str


@dataclass(frozen=True)
class VipRoute:
    """A Service VIP the leaf routes itself, because only `static` nodes (no BGP speaker) may
    serve it: one route, ECMP over their InternalIPs, in the agent's route protocol."""

    vip: str  # "203.0.113.10"
    prefix: str  # the exact /32 or /128
    # In address order (lowest first), at most fabric.vip_ecmp_width; one next hop is a plain
    # route, two or more a multipath route (an ECMP group in the ASIC).
    nexthops: tuple[VipNexthop, ...]

    @property
    def group(self) -> frozenset[str] | None:
        """The next hop set as the ASIC shares ECMP groups (by set); None: no group needed."""
        return frozenset(h.via for h in self.nexthops) if len(self.nexthops) > 1 else None


@dataclass(frozen=True)
class DataplaneDesired:
    route_protocol: int  # the agent's own rtnetlink protocol number: it owns these routes only
    static_routes: tuple[StaticRoute, ...] = ()
    vtep: VtepDevice | None = None  # None when no overlay node is attached
    vxlan_peers: tuple[VxlanPeer, ...] = ()
    vip_routes: tuple[VipRoute, ...] = ()  # in address order, IPv4 first

    @property
    def prefixes(self) -> tuple[str, ...]:
        """Every prefix this data plane routes: pod CIDRs and VIPs (FRR redistributes, or on
        SONiC originates, exactly these upstream)."""
        return (tuple(r.prefix for r in self.static_routes)
                + tuple(p.pod_cidr for p in self.vxlan_peers)
                + tuple(v.prefix for v in self.vip_routes))


@dataclass(frozen=True)
class ServerPeer:
    """One server port's BGP session. node None: nothing known is cabled there, so the session
    exists (a node can come up before its Node object) but accepts and announces nothing."""

    port: str
    node: str | None
    accept_v4: tuple[str, ...] = ()
    accept_v6: tuple[str, ...] = ()
    draining: bool = False
    # Service VIPs (/32, /128) the node may announce besides its own prefixes; the same
    # inbound prefix list takes them, so a change is a soft refresh, never a session reset.
    vips_v4: tuple[str, ...] = ()
    vips_v6: tuple[str, ...] = ()


@dataclass(frozen=True)
class FrrDesired:
    hostname: str
    asn: int
    router_id: str
    server_peers: tuple[ServerPeer, ...]
    uplinks: tuple[str, ...]
    advertise_v4: tuple[str, ...]  # prefixes the spines may receive from this leaf
    advertise_v6: tuple[str, ...]
    aggregate_v4: tuple[str, ...]
    aggregate_v6: tuple[str, ...]
    max_prefixes: int
    max_prefix_restart_minutes: int
    # Pod CIDRs the agent routes itself (static and overlay nodes): zebra sees the agent's
    # kernel routes as "kernel" routes; exactly these are redistributed.
    redistribute_v4: tuple[str, ...] = ()
    redistribute_v6: tuple[str, ...] = ()
    # On SONiC those routes live in APPL_DB and never reach zebra, so BGP originates them with
    # `network` statements instead; only the ones the data plane holds (originated_only()).
    originate_v4: tuple[str, ...] = ()
    originate_v6: tuple[str, ...] = ()
    # BGP maximum-paths per address family: how many nodes a VIP is spread over. None: not
    # rendered (no fabric.service_pools, so the config stays as it was before VIPs).
    maximum_paths: int | None = None


def originated_only(frr: FrrDesired, programmed: Collection[str]) -> FrrDesired:
    """``frr`` originating only the prefixes the data plane really holds: announcing a pod CIDR
    whose route was refused (another producer's APPL_DB key, a Redis error) would draw the
    fabric's traffic into a hole. Linux needs no such step: zebra redistributes only the kernel
    routes that exist."""
    return replace(
        frr,
        originate_v4=tuple(p for p in frr.originate_v4 if p in programmed),
        originate_v6=tuple(p for p in frr.originate_v6 if p in programmed),
    )


@dataclass(frozen=True)
class PlannedAttachment:
    port: str
    node: str
    source: str
    routing: str
    prefixes: tuple[str, ...]  # accepted from this node
    draining: bool


@dataclass(frozen=True)
class ServiceVip:
    """One Service VIP and who may announce it: what `fabricctl services` reports (with what
    BGP says is announced). Shared by several Services, the nodes are the union of theirs."""

    vip: str  # the address, canonical: "203.0.113.10", "2001:db8:5::10"
    prefix: str  # what a node may announce: the exact /32 or /128
    services: tuple[str, ...]  # "namespace/name", sorted
    policy: str  # externalTrafficPolicy: Cluster | Local | mixed (Services of both)
    nodes_permitted: tuple[str, ...] = ()  # sorted; empty: no node may announce it now
    refused: str | None = None  # why no node may announce it at all
    # The static nodes the leaf's own route (VipRoute) sends it to, sorted; empty: none (BGP
    # nodes announce it, or no static node may serve it).
    nodes_routed: tuple[str, ...] = ()
    # Why some permitted static nodes get none of its traffic from the leaf: BGP nodes announce
    # it, beyond fabric.vip_ecmp_width, no InternalIP of its family. None: nothing left out.
    routing_note: str | None = None

    @property
    def state(self) -> str:
        return "refused" if self.refused is not None else "ok"

    @property
    def shared(self) -> bool:
        return len(self.services) > 1


@dataclass(frozen=True)
class Plan:
    frr: FrrDesired
    attachments: tuple[PlannedAttachment, ...]
    refusals: tuple[Refusal, ...]
    dataplane: DataplaneDesired
    admission: AdmissionResult | None = None
    # What every served node wants, refused ones included: the headroom report's "desired".
    costs: Mapping[str, Counts] = field(default_factory=dict)
    # Every VIP named by a Service, in address order (IPv4 first), refused ones included.
    services: tuple[ServiceVip, ...] = ()
    # Routes the VIPs want on the leaf (one per VIP some node may announce, refused for room
    # or not) and the ECMP groups their node sets make: not any one node's cost, so not in
    # `costs`; the headroom's "desired" adds it (agent.plan.costs.desired_total).
    vip_costs: Counts = field(default_factory=Counts)
