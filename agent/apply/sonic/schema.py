"""DataplaneDesired -> APPL_DB entries: which tables, keys and fields the SONiC backend writes.

Pure (no Redis): the applier diffs these entries against what it owns.

Static nodes: `ROUTE_TABLE:<pod CIDR>` {nexthop: InternalIP, ifname: the port the node is attached
to (StaticRoute.port, filled by plan()), protocol: the agent's route protocol number}.

Service VIPs over static nodes: `ROUTE_TABLE:<VIP>` {nexthop: the InternalIPs, comma-separated,
ifname: their ports, comma-separated in the same order, protocol}: an ECMP route as fpmsyncd
writes one. The key is spelt as fpmsyncd spells a host route (libnl's nl_addr2str leaves a full
/32 or /128 out: `ROUTE_TABLE:203.0.113.10`), so that FRR's route for the same VIP would be the
same key, which the agent then never overwrites, rather than a second key orchagent would
program over it.

Overlay (flannel-compatible VXLAN) nodes. SONiC does L2 VXLAN through a VLAN mapped to the VNI,
so the overlay's VNI is bridged into one VLAN, `Vlan<overlay.vlan_id>` (default Vlan4000, see
OverlayMapping), and each of flannel's three kernel objects becomes SONiC entries on that VLAN:
- the switch's VTEP: `VXLAN_TUNNEL_TABLE:<vtep>` {src_ip}, the EVPN NVO naming it as source
  (orchagent accepts remote VTEPs and remote FDB entries only once an NVO exists), and
  `VXLAN_TUNNEL_MAP_TABLE:<vtep>:map_<vni>_Vlan<N>` {vni, vlan};
- per remote public IP: `VXLAN_REMOTE_VNI_TABLE:Vlan<N>:<public ip>` {vni} (flood list member);
- flannel's FDB entry VtepMAC -> public IP: `VXLAN_FDB_TABLE:Vlan<N>:<VtepMAC>`
  {remote_vtep, type: static, vni};
- flannel's neighbour <subnet>.0 -> VtepMAC: `NEIGH_TABLE:Vlan<N>:<subnet>.0` {neigh, family};
- flannel's onlink route: `ROUTE_TABLE:<pod CIDR>` {nexthop: <subnet>.0, ifname: Vlan<N>}.
The VLAN itself (CONFIG_DB VLAN|Vlan<N> and VLAN_INTERFACE|Vlan<N>) is the operator's: the
agent checks it and says when it is missing, it does not create CONFIG_DB configuration.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from agent.plan.model import DataplaneDesired

ROUTE_TABLE = "ROUTE_TABLE"
NEIGH_TABLE = "NEIGH_TABLE"
VXLAN_TUNNEL_TABLE = "VXLAN_TUNNEL_TABLE"
VXLAN_EVPN_NVO_TABLE = "VXLAN_EVPN_NVO_TABLE"
VXLAN_TUNNEL_MAP_TABLE = "VXLAN_TUNNEL_MAP_TABLE"
VXLAN_REMOTE_VNI_TABLE = "VXLAN_REMOTE_VNI_TABLE"
VXLAN_FDB_TABLE = "VXLAN_FDB_TABLE"

# Creation order: what orchagent needs first comes first (it retries out-of-order entries, but
# in order nothing is logged as a failure). Deletions go in reverse.
TABLE_ORDER: tuple[str, ...] = (
    VXLAN_TUNNEL_TABLE,
    VXLAN_EVPN_NVO_TABLE,
    VXLAN_TUNNEL_MAP_TABLE,
    VXLAN_REMOTE_VNI_TABLE,
    VXLAN_FDB_TABLE,
    NEIGH_TABLE,
    ROUTE_TABLE,
)

# orchagent does not program routes out of these (management and host interfaces).
_UNPROGRAMMABLE_IFNAME = re.compile(r"^(eth0|docker0|lo|Loopback\d*)$")
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,32}$")

Fields = dict[str, str]
Entries = dict[str, dict[str, Fields]]  # table -> key -> fields


@dataclass(frozen=True)
class OverlayMapping:
    """How the flannel overlay lands in SONiC's VXLAN model.

    vlan_id: the VLAN the overlay VNI is bridged into. Default 4000: far from the server VLANs of
    SONiC's templates (Vlan1000) and not VLAN 1, which SAI keeps as the switch's default VLAN.
    vtep_name / nvo_name: the tunnel and EVPN NVO entry names. When the operator already has a
    VXLAN_TUNNEL with the same src_ip (and an NVO naming it), use those names: identical entries
    another producer wrote are used as they are, never overwritten or deleted.
    """

    vlan_id: int = 4000
    vtep_name: str = "kfavtep"
    nvo_name: str = "nvo1"

    def __post_init__(self) -> None:
        if not 2 <= self.vlan_id <= 4094:
            raise ValueError(f"overlay VLAN {self.vlan_id} is not in 2..4094")
        for what, name in (("vtep_name", self.vtep_name), ("nvo_name", self.nvo_name)):
            if not _NAME.match(name):
                raise ValueError(f"{what} {name!r} must be 1-32 letters, digits, '_' or '-'")

    @property
    def vlan(self) -> str:
        return f"Vlan{self.vlan_id}"


@dataclass(frozen=True)
class Rendered:
    entries: Entries
    skipped: tuple[str, ...] = field(default=())  # desired objects that cannot be written, why


def empty_entries() -> Entries:
    return {table: {} for table in TABLE_ORDER}


def _family(ip: str) -> str:
    return "IPv4" if ipaddress.ip_address(ip).version == 4 else "IPv6"


def host_key(prefix: str) -> str:
    """A ROUTE_TABLE key as fpmsyncd writes it: a full-length prefix without its length."""
    address, _, length = prefix.partition("/")
    full = "128" if ":" in address else "32"
    return address if length == full else prefix


def prefix_of(key: str) -> str:
    """The canonical prefix of a ROUTE_TABLE key (host_key's inverse)."""
    if "/" in key:
        return key
    return f"{key}/{128 if ':' in key else 32}"


def render(
    desired: DataplaneDesired,
    overlay: OverlayMapping,
    separator: str = ":",
) -> Rendered:
    entries = empty_entries()
    skipped: list[str] = []
    protocol = str(desired.route_protocol)

    def add(table: str, key: str, fields: Fields, what: str) -> None:
        if key in entries[table]:
            if entries[table][key] != fields:
                skipped.append(f"{table}{separator}{key}: {what} conflicts with another desired "
                               "entry for the same key")
            return
        entries[table][key] = fields

    for route in desired.static_routes:
        port = route.port
        key = route.prefix
        if port is None:
            skipped.append(f"ROUTE_TABLE{separator}{key}: no port known that leads to {route.via} "
                           f"(node {route.node})")
            continue
        if _UNPROGRAMMABLE_IFNAME.match(port):
            skipped.append(f"ROUTE_TABLE{separator}{key}: {route.via} is behind {port}, which "
                           "orchagent does not program routes through")
            continue
        add(ROUTE_TABLE, key, {"nexthop": route.via, "ifname": port, "protocol": protocol},
            f"static route of node {route.node}")

    for vip in desired.vip_routes:
        key = host_key(vip.prefix)
        why = next((f"no port known that leads to {h.via} (node {h.node})" if h.port is None
                    else f"{h.via} is behind {h.port}, which orchagent does not program routes "
                    "through" for h in vip.nexthops
                    if h.port is None or _UNPROGRAMMABLE_IFNAME.match(h.port)), None)
        if why is not None:
            skipped.append(f"ROUTE_TABLE{separator}{key}: {why}")
            continue
        add(ROUTE_TABLE, key, {"nexthop": ",".join(h.via for h in vip.nexthops),
                               "ifname": ",".join(str(h.port) for h in vip.nexthops),
                               "protocol": protocol},
            f"route of Service VIP {vip.vip}")

    vtep = desired.vtep
    if vtep is None:
        for peer in desired.vxlan_peers:
            skipped.append(f"ROUTE_TABLE{separator}{peer.pod_cidr}: overlay node {peer.node} "
                           "without a VTEP")
        return Rendered(entries, tuple(skipped))

    vlan = overlay.vlan
    vni = str(vtep.vni)
    add(VXLAN_TUNNEL_TABLE, overlay.vtep_name, {"src_ip": vtep.local}, "VTEP")
    add(VXLAN_EVPN_NVO_TABLE, overlay.nvo_name, {"source_vtep": overlay.vtep_name}, "EVPN NVO")
    add(VXLAN_TUNNEL_MAP_TABLE, f"{overlay.vtep_name}{separator}map_{vni}_{vlan}",
        {"vni": vni, "vlan": vlan}, "VNI-VLAN map")
    for peer in desired.vxlan_peers:
        add(VXLAN_REMOTE_VNI_TABLE, f"{vlan}{separator}{peer.public_ip}", {"vni": vni},
            f"remote VTEP of node {peer.node}")
        add(VXLAN_FDB_TABLE, f"{vlan}{separator}{peer.vtep_mac}",
            {"remote_vtep": peer.public_ip, "type": "static", "vni": vni},
            f"VTEP MAC of node {peer.node}")
        add(NEIGH_TABLE, f"{vlan}{separator}{peer.gateway}",
            {"neigh": peer.vtep_mac, "family": _family(peer.gateway)},
            f"overlay gateway of node {peer.node}")
        add(ROUTE_TABLE, peer.pod_cidr,
            {"nexthop": peer.gateway, "ifname": vlan, "protocol": protocol},
            f"overlay route of node {peer.node}")
    return Rendered(entries, tuple(skipped))
