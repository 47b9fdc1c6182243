"""Service VIPs: per attached node, the VIPs it may announce, each an exact /32 or /128.

The rules (README, "Services"), for every address a Service names:
- refused for everyone, with the reason, when it is no unicast address a Service can use
  (unspecified, loopback, multicast, link-local, broadcast, 0.0.0.0/8, IPv4-mapped), one of the
  switch's own addresses, inside pod space (naming the node whose pod CIDR holds it), a node's
  InternalIP (naming the node), or outside `fabric.service_pools`;
- otherwise the nodes that may serve it are the attached BGP and static nodes that are Ready
  and not labelled node.kubernetes.io/exclude-from-external-load-balancers (as Kubernetes'
  service controller picks load-balancer nodes), and for externalTrafficPolicy Local only those
  of them with at least one ready endpoint of the Service: a node without one would black-hole
  the traffic kube-proxy does not forward elsewhere. BGP nodes announce it themselves; for
  static nodes the leaf installs the route (agent.plan.vip_routes);
- a VIP several Services name: the union of their nodes (reported as shared, not refused).
With `fabric.service_pools` empty nothing is read at all: no VIP, no refusal (today's
behaviour). Pure: no I/O.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from agent.cluster.nodes import IPAddress, IPNetwork, Node, Refusal
from agent.cluster.services import EXCLUDE_LB_LABEL, Service, ServiceState
from agent.config import AgentConfig
from agent.headroom.resources import Counts
from agent.plan.model import ServiceVip
from agent.plan.ownership import switch_addresses

_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")
_BROADCAST = ipaddress.ip_address("255.255.255.255")
# A Service without a creationTimestamp (a file, a hostile object) counts as the newest.
_NO_AGE = "~"


def host_network(addr: IPAddress) -> IPNetwork:
    """The /32 or /128 of `addr`, built from its integer (3x faster than from a string or a
    tuple: it counts with 5,000 VIPs per plan)."""
    if addr.version == 4:
        return ipaddress.IPv4Network(int(addr))
    return ipaddress.IPv6Network(int(addr))


def address_class_problem(addr: IPAddress) -> str | None:
    """Why `addr` can be no Service VIP whatever the pools say; None if it may be one."""
    if addr.version == 6 and addr.ipv4_mapped is not None:
        return "an IPv4-mapped IPv6 address"
    for test, what in ((addr.is_unspecified, "the unspecified address"),
                       (addr.is_loopback, "a loopback address"),
                       (addr.is_multicast, "a multicast address"),
                       (addr.is_link_local, "a link-local address"),
                       (addr == _BROADCAST, "the broadcast address"),
                       (addr.version == 4 and addr in _THIS_NETWORK,
                        "in 0.0.0.0/8 (this network)")):
        if test:
            return what
    return None


class VipRules:
    """Where a VIP may not lie, from the config and the cluster's Nodes. The node indexes are
    built on first use: a cluster with no Service VIP never pays for them."""

    def __init__(self, config: AgentConfig, nodes: Iterable[Node],
                 prefixes: Mapping[str, Sequence[IPNetwork]]) -> None:
        fabric = config.fabric
        self.pools = tuple(ipaddress.ip_network(p) for p in fabric.service_pools)
        self.supernets = tuple(ipaddress.ip_network(s) for s in fabric.pod_supernets)
        self.switch = switch_addresses(config)
        self._nodes = nodes
        self._prefixes = prefixes
        self._node_ips: dict[IPAddress, str] | None = None
        self._pods: dict[tuple[int, int, int], str] | None = None  # (version, start, len)
        self._lengths: set[tuple[int, int]] = set()  # (version, len) stored in _pods

    def _index(self) -> None:
        # Oldest first, so an address two nodes claim names the node that had it first.
        ordered = sorted(self._nodes, key=lambda n: (n.created, n.name))
        self._node_ips = {}
        self._pods = {}
        for node in ordered:
            for ip in node.internal_ips:
                self._node_ips.setdefault(ip, node.name)
            for net in self._prefixes.get(node.name, ()):
                if net.prefixlen < net.max_prefixlen:  # pod CIDRs; host routes are IPs above
                    key = (net.version, int(net.network_address), net.prefixlen)
                    self._pods.setdefault(key, node.name)
                    self._lengths.add((net.version, net.prefixlen))

    def _pod_owner(self, addr: IPAddress) -> tuple[str, str] | None:
        if self._pods is None:
            self._index()
        assert self._pods is not None
        value = int(addr)
        for version, length in sorted(self._lengths):
            if version != addr.version:
                continue
            shift = addr.max_prefixlen - length
            owner = self._pods.get((version, value >> shift << shift, length))
            if owner is not None:
                net = ipaddress.ip_network((value >> shift << shift, length))
                return owner, str(net)
        return None

    def _node_ip_owner(self, addr: IPAddress) -> str | None:
        if self._node_ips is None:
            self._index()
        assert self._node_ips is not None
        return self._node_ips.get(addr)

    def problem(self, addr: IPAddress) -> str | None:
        """Why no node may announce `addr`; None if the pools admit it."""
        what = address_class_problem(addr)
        if what is not None:
            return f"{addr} is {what}"
        for net, key in self.switch:
            if net.version == addr.version and addr in net:
                return f"{addr} is this switch's {key}"
        if any(s.version == addr.version and addr in s for s in self.supernets):
            found = self._pod_owner(addr)
            if found is not None:
                return f"{addr} lies in node {found[0]}'s pod CIDR {found[1]}"
            return f"{addr} lies in fabric.pod_supernets (pod space)"
        owner = self._node_ip_owner(addr)
        if owner is not None:
            return f"{addr} is node {owner}'s InternalIP"
        if not any(p.version == addr.version and addr in p for p in self.pools):
            return f"{addr} is outside fabric.service_pools"
        return None


@dataclass(frozen=True)
class VipTable:
    """Every VIP with the nodes its Services' policies permit (before headroom), the order in
    which VIPs get room in the route tables (oldest Service first), and the refusals."""

    vips: tuple[ServiceVip, ...] = ()
    ages: Mapping[str, tuple[str, str]] | None = None  # vip -> (created, service key)
    refusals: tuple[Refusal, ...] = ()
    networks: Mapping[str, IPNetwork] | None = None  # vip -> its host prefix, as a network


def _policy(services: Sequence[Service]) -> str:
    policies = {s.policy for s in services}
    return policies.pop() if len(policies) == 1 else "mixed"


def eligible_nodes(nodes: Mapping[str, Node], attached: Iterable[str]) -> frozenset[str]:
    """The attached nodes Kubernetes would put behind a load balancer: Ready and not excluded
    by label (any value of it excludes, as in Kubernetes)."""
    return frozenset(name for name in attached
                     if (node := nodes.get(name)) is not None and node.ready
                     and EXCLUDE_LB_LABEL not in node.labels)


def service_vips(config: AgentConfig, state: ServiceState, nodes: Mapping[str, Node],
                 attached: Iterable[str], prefixes: Mapping[str, Sequence[IPNetwork]]
                 ) -> VipTable:
    """The VIP table. `nodes`: every Node of the cluster by name; `attached`: the nodes on a
    server port that may serve VIPs (BGP and static); `prefixes`: what ownership admitted per
    node."""
    if not config.fabric.service_pools or not state.services:
        return VipTable()
    groups: dict[IPAddress, list[Service]] = {}
    for service in state.services:
        for vip in service.vips:
            groups.setdefault(vip, []).append(service)
    rules = VipRules(config, nodes.values(), prefixes)
    base = eligible_nodes(nodes, attached)
    everyone = tuple(sorted(base))
    vips: list[ServiceVip] = []
    ages: dict[str, tuple[str, str]] = {}
    networks: dict[str, IPNetwork] = {}
    refusals: list[Refusal] = []
    for addr in sorted(groups, key=lambda a: (a.version, a)):
        services = groups[addr]
        names = tuple(sorted(s.key for s in services))
        text, policy = str(addr), _policy(services)
        prefix = f"{text}/{addr.max_prefixlen}"
        why = rules.problem(addr)
        if why is not None:
            vips.append(ServiceVip(text, prefix, names, policy, refused=why))
            refusals.append(Refusal("vip", text, f"{', '.join(names)}: {why}"))
            continue
        if any(s.policy == "Cluster" for s in services):
            permitted = everyone  # a Local Service sharing it adds no node beyond these
        else:
            serving: set[str] = set()
            for s in services:
                serving.update(base.intersection(state.ready_nodes.get(s.key, ())))
            permitted = tuple(sorted(serving))
        vips.append(ServiceVip(text, prefix, names, policy, permitted))
        ages[text] = min((s.created or _NO_AGE, s.key) for s in services)
        networks[text] = host_network(addr)
    return VipTable(tuple(vips), ages, tuple(refusals), networks)


def vip_costs(vips: Iterable[ServiceVip]) -> Counts:
    """One route per VIP some node may announce, of its family."""
    v4 = v6 = 0
    for vip in vips:
        if vip.nodes_permitted and vip.refused is None:
            if ":" in vip.vip:
                v6 += 1
            else:
                v4 += 1
    return Counts(ipv4_routes=v4, ipv6_routes=v6)


def limit_vips(table: VipTable, refused_nodes: Collection[str],
               room: Mapping[str, int | None] | None) -> tuple[tuple[ServiceVip, ...],
                                                               tuple[Refusal, ...]]:
    """The table with the nodes headroom admission refused taken out (their sessions accept
    nothing), and, when `room` is given (admission on), the VIPs whose route finds no room in
    its table after the nodes' entries refused: oldest Service first, so a new Service never
    takes the route of one that was there before it. Nodes come first because a node's pod
    CIDRs are what everything else needs."""
    if not table.vips:
        return (), ()
    vips = list(table.vips)
    if refused_nodes:
        gone = set(refused_nodes)
        vips = [replace(v, nodes_permitted=tuple(n for n in v.nodes_permitted if n not in gone))
                if gone.intersection(v.nodes_permitted) else v for v in vips]
    if room is None:
        return tuple(vips), ()
    left = dict(room)
    ages = table.ages or {}
    refusals: list[Refusal] = []
    position = {v.vip: i for i, v in enumerate(vips)}
    for vip in sorted((v for v in vips if v.refused is None and v.nodes_permitted),
                      key=lambda v: ages.get(v.vip, (_NO_AGE, ""))):
        resource = "ipv6_routes" if ":" in vip.vip else "ipv4_routes"
        free = left.get(resource)
        if free is None:
            continue  # not limited
        if free >= 1:
            left[resource] = free - 1
            continue
        why = (f"headroom: {resource}: no room for its route after the nodes' entries (0 left); "
               "VIPs get what the nodes leave")
        vips[position[vip.vip]] = replace(vip, nodes_permitted=(), refused=why)
        refusals.append(Refusal("vip", vip.vip, f"{', '.join(vip.services)}: {why}"))
    return tuple(vips), tuple(refusals)
