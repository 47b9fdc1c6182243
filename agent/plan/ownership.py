"""Who owns which address space, kept in indexes so a Node change costs work proportional to
the address space it touches, not to the cluster.

The rule (README, "What is refused"): in age order (creationTimestamp, then name) a node keeps
each pod CIDR inside `fabric.pod_supernets` that overlaps no pod CIDR an older node kept; then,
in age order again, it keeps each InternalIP host route `HostRouteRules` allow unless another
node's space (a kept pod CIDR, or the same address kept by an older node) already covers it.

Two CIDRs overlap only when one contains the other, so the prefixes overlapping a given one are
found without comparing it to every other: the containing ones by masking it to each prefix
length stored, the contained ones as a range of a sorted list of start addresses. Whether a pod
CIDR is kept depends only on the CIDRs it overlaps, and theirs in turn: after a change only the
connected groups of overlapping CIDRs the change touches are decided again (in a sane cluster a
group is one CIDR), and only the host routes lying in a CIDR whose owner changed, or equal to
one the change added or removed.
"""

from __future__ import annotations

import ipaddress
from bisect import bisect_left, bisect_right, insort
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from agent.cluster.nodes import IPAddress, IPNetwork, Node, Refusal
from agent.config import AgentConfig

Key = tuple[int, int, int]  # (IP version, first address as an int, prefix length)
_BITS = {4: 32, 6: 128}


def host_prefix(addr: IPAddress) -> IPNetwork:
    return ipaddress.ip_network((addr, addr.max_prefixlen))


def age(node: Node) -> tuple[str, str]:
    """The order claims are decided in: older first, the name breaking ties."""
    return (node.created, node.name)


def switch_addresses(config: AgentConfig) -> list[tuple[IPNetwork, str]]:
    """The switch's own addresses, each with the config key that names it: no node may take
    one as its host route or a VIP (it would pull the switch's own traffic)."""
    switch = config.switch
    found: list[tuple[IPNetwork, str]] = []
    for key, value in (("switch.router_id", switch.router_id),
                       ("switch.vtep_ip", switch.vtep_ip)):
        if value is not None:
            found.append((host_prefix(ipaddress.ip_address(value)), key))
    if config.dataplane.vxlan.address is not None:
        found.append((ipaddress.ip_network(config.dataplane.vxlan.address),
                      "dataplane.vxlan.address"))
    return found


@dataclass(frozen=True)
class HostRouteRules:
    """Where a node's InternalIP host route may not lie, each with the reason a refusal gives.

    A kubelet may rewrite its own Node's addresses, and a host route is accepted from the node
    and announced upstream: inside pod space or a Service pool it would take traffic meant for
    pods or VIPs; on one of the switch's own addresses it would pull the switch's own traffic.
    """

    node_networks: tuple[IPNetwork, ...] | None = None  # None: not configured, unchecked
    forbidden: tuple[tuple[IPNetwork, str], ...] = ()

    @classmethod
    def from_config(cls, config: AgentConfig) -> HostRouteRules:
        fabric = config.fabric
        forbidden: list[tuple[IPNetwork, str]] = [
            (net, f"InternalIP is this switch's {key}") for net, key in switch_addresses(config)]
        forbidden.extend((ipaddress.ip_network(n), "InternalIP inside fabric.pod_supernets "
                          "(pod space)") for n in fabric.pod_supernets)
        forbidden.extend((ipaddress.ip_network(n), "InternalIP inside fabric.service_pools "
                          "(Service VIP space)") for n in fabric.service_pools)
        networks = (None if fabric.node_networks is None
                    else tuple(ipaddress.ip_network(n) for n in fabric.node_networks))
        return cls(networks, tuple(forbidden))

    def problem(self, host: IPNetwork) -> str | None:
        """Why `host` (a /32 or /128) can be no node's host route; None if it may be."""
        for net, why in self.forbidden:
            if host.version == net.version and host.subnet_of(net):
                return why
        if self.node_networks is not None and not any(
                host.version == n.version and host.subnet_of(n)
                for n in self.node_networks):
            return "InternalIP outside fabric.node_networks"
        return None


def key_of(net: IPNetwork) -> Key:
    return (net.version, int(net.network_address), net.prefixlen)


class PrefixIndex:
    """Prefixes and who holds each; answers "which stored prefixes overlap this one" in
    O(prefix lengths stored + log n + answer), never by comparing with every prefix."""

    def __init__(self) -> None:
        self._holders: dict[Key, set[str]] = {}
        self._lengths: dict[int, Counter[int]] = {4: Counter(), 6: Counter()}
        self._starts: dict[int, list[tuple[int, int]]] = {4: [], 6: []}  # sorted (start, len)

    def add(self, key: Key, holder: str) -> None:
        holders = self._holders.get(key)
        if holders is None:
            self._holders[key] = {holder}
            self._lengths[key[0]][key[2]] += 1
            insort(self._starts[key[0]], (key[1], key[2]))
        else:
            holders.add(holder)

    def remove(self, key: Key, holder: str) -> None:
        holders = self._holders.get(key)
        if holders is None:
            return  # a hand-made Node listing one CIDR twice
        holders.discard(holder)
        if holders:
            return
        del self._holders[key]
        lengths = self._lengths[key[0]]
        lengths[key[2]] -= 1
        if not lengths[key[2]]:
            del lengths[key[2]]
        starts = self._starts[key[0]]
        del starts[bisect_left(starts, (key[1], key[2]))]

    def holders(self, key: Key) -> set[str]:
        return self._holders.get(key, set())

    def containing(self, key: Key) -> Iterable[Key]:
        """Stored prefixes containing `key` (itself included)."""
        version, start, length = key
        bits = _BITS[version]
        for stored in self._lengths[version]:
            if stored <= length:
                shift = bits - stored
                candidate = (version, start >> shift << shift, stored)
                if candidate in self._holders:
                    yield candidate

    def overlapping(self, key: Key) -> set[Key]:
        """Stored prefixes overlapping `key`: containing it or contained in it."""
        found = set(self.containing(key))
        version, start, length = key
        end = start | ((1 << (_BITS[version] - length)) - 1)
        starts = self._starts[version]
        for first, plen in starts[bisect_left(starts, (start, length)):
                                  bisect_right(starts, (end, _BITS[version] + 1))]:
            if plen >= length:
                found.add((version, first, plen))
        return found


@dataclass(frozen=True)
class _Pods:
    """One node's pod CIDRs as pass 1 sees them, computed once per Node."""

    candidates: tuple[tuple[int, IPNetwork, Key], ...]  # (index in pod_cidrs, net, key)
    outside: tuple[tuple[int, Refusal], ...]  # (index in pod_cidrs, refusal)


class Ownership:
    """Pod CIDR and host route ownership over a changing set of Nodes. `update()` with the
    Nodes that changed (None: deleted); `prefixes` and `refusals()` are then exactly what
    deciding every node again in age order would give (`admitted_prefixes`)."""

    def __init__(self, supernets: Sequence[IPNetwork], include_node_ips: bool,
                 rules: HostRouteRules | None = None) -> None:
        self.supernets = tuple(supernets)
        self.include_node_ips = include_node_ips
        self.rules = rules or HostRouteRules()
        self.nodes: dict[str, Node] = {}
        self._pods_of: dict[str, _Pods] = {}
        self._pods = PrefixIndex()  # every node's pod CIDRs inside the supernets
        self._hosts = PrefixIndex()  # every node's InternalIP host routes
        self._verdict: dict[tuple[str, Key], str | None] = {}  # None: kept, else older owner
        self._kept: dict[Key, str] = {}  # kept pod CIDR -> its node
        self._pass1: dict[str, tuple[tuple[IPNetwork, ...], tuple[Refusal, ...]]] = {}
        self._pass2: dict[str, tuple[tuple[IPNetwork, ...], tuple[Refusal, ...]]] = {}
        # Only the nodes with refusals: listing them must not walk the whole cluster.
        self._refused1: dict[str, tuple[Refusal, ...]] = {}
        self._refused2: dict[str, tuple[Refusal, ...]] = {}
        self.prefixes: dict[str, tuple[IPNetwork, ...]] = {}
        self._refusals: tuple[Refusal, ...] | None = ()

    def _pods_for(self, node: Node) -> _Pods:
        candidates, outside = [], []
        for index, net in enumerate(node.pod_cidrs):
            if any(net.version == s.version and net.subnet_of(s) for s in self.supernets):
                candidates.append((index, net, key_of(net)))
            else:
                outside.append((index, Refusal("prefix", f"{node.name} {net}",
                                               "outside fabric.pod_supernets")))
        return _Pods(tuple(candidates), tuple(outside))

    def _host_keys(self, node: Node | None) -> list[Key]:
        if node is None or not self.include_node_ips:
            return []
        return [key_of(host_prefix(a)) for a in node.internal_ips]

    def update(self, changed: Mapping[str, Node | None]) -> None:
        pod_seeds: set[Key] = set()
        host_seeds: set[Key] = set()
        for name, node in changed.items():
            old = self.nodes.get(name)
            if old is node:
                continue
            if old is not None:
                for _, _, key in self._pods_of.pop(name).candidates:
                    self._pods.remove(key, name)
                    self._verdict.pop((name, key), None)
                    pod_seeds.add(key)
                for key in self._host_keys(old):
                    self._hosts.remove(key, name)
                    host_seeds.add(key)
                del self.nodes[name]
            if node is not None:
                self.nodes[name] = node
                pods = self._pods_of[name] = self._pods_for(node)
                for _, _, key in pods.candidates:
                    self._pods.add(key, name)
                    pod_seeds.add(key)
                for key in self._host_keys(node):
                    self._hosts.add(key, name)
                    host_seeds.add(key)
        touched = {n for n in changed if n in self.nodes or n in self._pass1}
        moved = self._decide_pods(pod_seeds, touched)
        for name in touched:
            self._assemble_pass1(name)
        if self.include_node_ips:
            for key in moved:
                host_seeds.update(self._hosts.overlapping(key))
            again = set(touched)
            for key in host_seeds:
                again.update(self._hosts.holders(key))
            for name in again:
                self._decide_hosts(name)
        for name in touched:
            self._publish(name)
        self._refusals = None

    def _decide_pods(self, seeds: set[Key], touched: set[str]) -> set[Key]:
        """Decide again every group of overlapping pod CIDRs a seed overlaps, oldest node
        first as the rule says; returns the CIDRs whose owner changed. Adds the nodes whose
        verdicts were decided again to `touched`."""
        group: set[Key] = set()
        todo = list(seeds)
        while todo:
            for key in self._pods.overlapping(todo.pop()):
                if key not in group:
                    group.add(key)
                    todo.append(key)
        before = {k: self._kept[k] for k in seeds | group if k in self._kept}
        for key in seeds | group:
            self._kept.pop(key, None)
        entries = []
        for key in group:
            for name in self._pods.holders(key):
                node = self.nodes[name]
                index = next(i for i, _, k in self._pods_of[name].candidates if k == key)
                entries.append((age(node), index, name, key))
                touched.add(name)
        entries.sort()
        # The rule's walk, in age order: `taken` holds the CIDRs kept so far, indexed, and the
        # owner named is the first kept one (in walk order) that overlaps.
        taken = PrefixIndex()
        first: dict[Key, tuple[int, str]] = {}
        pending: list[tuple[Key, str]] = []
        for position, (_, _, name, key) in enumerate(entries):
            owners = [first[k] for k in taken.overlapping(key)]
            owner = min(owners)[1] if owners else None
            self._verdict[(name, key)] = owner
            if owner is None:
                pending.append((key, name))
            # A node's own CIDRs join `taken` after all of them are decided, as in the walk.
            if position + 1 == len(entries) or entries[position + 1][2] != name:
                for k, n in pending:
                    taken.add(k, n)
                    first.setdefault(k, (position, n))
                pending = []
        for key, (_, name) in first.items():
            self._kept[key] = name
        return {k for k in seeds | group if before.get(k) != self._kept.get(k)}

    def _assemble_pass1(self, name: str) -> None:
        node = self.nodes.get(name)
        if node is None:
            self._pass1.pop(name, None)
            return
        pods = self._pods_of[name]
        found: list[tuple[int, IPNetwork | None, Refusal | None]] = list(
            (i, None, r) for i, r in pods.outside)
        for index, net, key in pods.candidates:
            owner = self._verdict[(name, key)]
            found.append((index, net, None) if owner is None else (index, None, Refusal(
                "prefix", f"{name} {net}", f"overlaps a pod CIDR of older node {owner}")))
        found.sort(key=lambda f: f[0])
        self._pass1[name] = (tuple(n for _, n, _ in found if n is not None),
                             tuple(r for _, _, r in found if r is not None))

    def _pod_owner(self, key: Key) -> str | None:
        owners = [(age(self.nodes[o]), o) for k in self._pods.containing(key)
                  if (o := self._kept.get(k)) is not None]
        return min(owners)[1] if owners else None

    def _decide_hosts(self, name: str) -> None:
        node = self.nodes.get(name)
        if node is None:
            self._pass2.pop(name, None)
            return
        kept: list[IPNetwork] = []
        refused: list[Refusal] = []
        for addr in node.internal_ips:
            host = host_prefix(addr)
            if host in kept:
                continue  # listed twice (a hand-made Node): the walk found itself the owner
            key = key_of(host)
            owner = self._pod_owner(key)
            problem = self.rules.problem(host) if owner in (None, name) else None
            if owner is None and problem is None:
                # The oldest node with this address keeps it; the others are impersonating.
                owner = min((age(self.nodes[h]), h) for h in self._hosts.holders(key))[1]
                if owner == name:
                    kept.append(host)
                    continue
            # Another node's space is named first: it says who is being impersonated.
            why = (f"InternalIP lies in address space of node {owner}"
                   if owner is not None and owner != name else problem)
            if why is not None:
                refused.append(Refusal("prefix", f"{name} {host}", why))
        self._pass2[name] = (tuple(kept), tuple(refused))
        self._publish(name)

    def _publish(self, name: str) -> None:
        if name not in self.nodes:
            for table in (self.prefixes, self._pass2, self._refused1, self._refused2):
                table.pop(name, None)
            self._refusals = None
            return
        kept, refused = self._pass2.get(name, ((), ())) if self.include_node_ips else ((), ())
        self.prefixes[name] = self._pass1[name][0] + kept
        for table, found in ((self._refused1, self._pass1[name][1]), (self._refused2, refused)):
            if found:
                table[name] = found
            else:
                table.pop(name, None)
        self._refusals = None

    def refusals(self) -> tuple[Refusal, ...]:
        """Every node's pod CIDR refusals in age order, then every host route refusal."""
        if self._refusals is None:
            out: list[Refusal] = []
            for refused in (self._refused1, self._refused2):
                for _, name in sorted(age(self.nodes[n]) for n in refused):
                    out.extend(refused[name])
            self._refusals = tuple(out)
        return self._refusals


def admitted_prefixes(
    nodes: tuple[Node, ...], supernets: list[IPNetwork], include_node_ips: bool,
    rules: HostRouteRules | None = None,
) -> tuple[dict[str, list[IPNetwork]], list[Refusal]]:
    """Per node, the prefixes it may announce: its pod CIDRs inside the supernets, not
    overlapping an older node's, plus its InternalIP host routes that `rules` allow unless
    another node's space already covers them. From scratch: O(n log n), not pairwise."""
    ownership = Ownership(supernets, include_node_ips, rules)
    ownership.update({n.name: n for n in nodes})
    return ({n: list(p) for n, p in ownership.prefixes.items()}, list(ownership.refusals()))
