"""Desired data-plane state: what plan() asks the kernel (netlink) or SONiC (APPL_DB) to hold.

Plain frozen data, every field already validated by plan(): appliers may put these values into
netlink messages or Redis keys as they are. Nodes in `bgp` mode need nothing here (FRR does it);
`static` nodes need a route per pod CIDR via the node's InternalIP; `vxlan` (flannel-compatible)
nodes need, in flannel's order, a neighbour `<subnet>.0 -> VtepMAC` on the VTEP device, an FDB
entry `VtepMAC -> public IP`, and a route `pod CIDR via <subnet>.0 onlink` on the VTEP device.
"""

from __future__ import annotations

from dataclasses import dataclass


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


@dataclass(frozen=True)
class DataplaneDesired:
    route_protocol: int  # the agent's own rtnetlink protocol number: it owns these routes only
    static_routes: tuple[StaticRoute, ...] = ()
    vtep: VtepDevice | None = None  # None when no overlay node is attached
    vxlan_peers: tuple[VxlanPeer, ...] = ()

    @property
    def prefixes(self) -> tuple[str, ...]:
        """Every pod CIDR this data plane routes (FRR redistributes exactly these upstream)."""
        return tuple(r.prefix for r in self.static_routes) + tuple(
            p.pod_cidr for p in self.vxlan_peers
        )
