"""Which Kubernetes node sits behind which server port.

Three sources, in the contract's precedence: the config's static map, the node's
kube-fabric-agent.io/switch-port annotation, then LLDP (the neighbour's system name matched to
the node name). A node claiming two ports, or two nodes claiming one port at the same
precedence, is refused: guessing would route one node's pods to another's port.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass

from agent.cluster.nodes import Node, Refusal
from agent.vocabulary import ATTACHMENT_SOURCES


@dataclass(frozen=True)
class Attachment:
    port: str
    node: str
    source: str  # one of ATTACHMENT_SOURCES


@dataclass(frozen=True)
class _Claim:
    rank: int
    port: str
    node: str

    @property
    def source(self) -> str:
        return ATTACHMENT_SOURCES[self.rank]


def match_lldp_name(system_name: str, node_names: Iterable[str]) -> str | None:
    """Node for an LLDP system name: exact match first, else a unique match of the first DNS
    label (servers often advertise a short hostname while the Node is named by FQDN)."""
    names = list(node_names)
    if system_name in names:
        return system_name
    lowered = system_name.lower()
    if lowered in names:
        return lowered
    short = lowered.split(".", 1)[0]
    candidates = [n for n in names if n.split(".", 1)[0] == short]
    return candidates[0] if len(candidates) == 1 else None


class NameIndex:
    """Node names as match_lldp_name reads them, indexed by name and by first DNS label, so
    matching an LLDP system name costs a lookup, not a walk over every Node."""

    def __init__(self, names: Iterable[str] = ()) -> None:
        self._names: set[str] = set()
        self._short: dict[str, set[str]] = defaultdict(set)
        for name in names:
            self.add(name)

    def add(self, name: str) -> None:
        self._names.add(name)
        self._short[name.split(".", 1)[0]].add(name)

    def discard(self, name: str) -> None:
        self._names.discard(name)
        short = name.split(".", 1)[0]
        self._short[short].discard(name)
        if not self._short[short]:
            del self._short[short]

    def match(self, system_name: str) -> str | None:
        """match_lldp_name(system_name, <the names>)."""
        if system_name in self._names:
            return system_name
        lowered = system_name.lower()
        if lowered in self._names:
            return lowered
        candidates = self._short.get(lowered.split(".", 1)[0], ())
        return next(iter(candidates)) if len(candidates) == 1 else None


def annotation_claim(node: Node, switch_hostname: str,
                     ports: Collection[str]) -> tuple[str | None, Refusal | None]:
    """The server port `node`'s switch-port annotation claims on this switch, or why not."""
    sp = node.switch_port
    if sp is None or sp.switch.lower() != switch_hostname.lower():
        return None, None  # attached to another switch, or not annotated
    if sp.port not in ports:
        return None, Refusal("attachment", node.name, f"annotation names port {sp.port}, "
                             "which is not one of this switch's server ports")
    return sp.port, None


def resolve(
    *,
    switch_hostname: str,
    server_ports: Iterable[str],
    static: Mapping[str, str],
    nodes: Iterable[Node],
    lldp_neighbors: Mapping[str, str],
) -> tuple[list[Attachment], list[Refusal]]:
    ports = set(server_ports)
    nodes = list(nodes)
    annotated: list[tuple[str, str]] = []
    refusals: list[Refusal] = []
    for node in nodes:
        port, why = annotation_claim(node, switch_hostname, ports)
        if why is not None:
            refusals.append(why)
        elif port is not None:
            annotated.append((node.name, port))
    age = {n.name: (n.created, n.name) for n in nodes}
    return decide(ports=ports, static=static, annotated=annotated, refusals=refusals,
                  lldp_neighbors=lldp_neighbors, match=NameIndex(age).match,
                  age=lambda name: age.get(name, ("", name)))


def decide(
    *,
    ports: Collection[str],
    static: Mapping[str, str],
    annotated: Iterable[tuple[str, str]],
    refusals: list[Refusal],
    lldp_neighbors: Mapping[str, str],
    match: Callable[[str], str | None],
    age: Callable[[str], tuple[str, str]],
) -> tuple[list[Attachment], list[Refusal]]:
    """The attachments from the claims: the static map, the annotations (node, port) in node
    name order, LLDP neighbours matched to Node names by `match`; `refusals` so far are
    extended. `age`: a Node's (creationTimestamp, name), ("", name) for one not in the cluster."""
    claims: list[_Claim] = [_Claim(0, port, node) for port, node in static.items()]
    claims.extend(_Claim(1, port, node) for node, port in annotated)
    for port, system_name in sorted(lldp_neighbors.items()):
        if port not in ports:
            continue  # uplinks and management ports see LLDP neighbours too
        name = match(system_name)
        if name is not None:
            claims.append(_Claim(2, port, name))

    # Each node keeps only its claims of the best precedence; several ports there is a conflict.
    by_node: dict[str, list[_Claim]] = defaultdict(list)
    for claim in claims:
        by_node[claim.node].append(claim)
    per_node: list[_Claim] = []
    for node_name, node_claims in sorted(by_node.items()):
        best = min(c.rank for c in node_claims)
        top = {c.port: c for c in node_claims if c.rank == best}
        if len(top) > 1:
            refusals.append(
                Refusal("attachment", node_name,
                        f"{ATTACHMENT_SOURCES[best]} puts it on several ports "
                        f"({', '.join(sorted(top))}); refusing all of them")
            )
            continue
        (winner,) = top.values()
        for c in node_claims:
            if c.rank > best and c.port != winner.port:
                refusals.append(
                    Refusal("attachment", node_name, f"{c.source} says {c.port} but "
                            f"{winner.source} says {winner.port}; {winner.source} wins")
                )
        per_node.append(winner)

    # Each port goes to the best-precedence claim. Two claims of the same precedence (two
    # Nodes annotating themselves onto one port; a kubelet may write its own annotations): the
    # older Node keeps the port, as the older Node keeps an overlapping pod CIDR, so a newcomer
    # can never take a working node's port, routes and session away.
    by_port: dict[str, list[_Claim]] = defaultdict(list)
    for claim in per_node:
        by_port[claim.port].append(claim)
    attachments: list[Attachment] = []
    for port, port_claims in sorted(by_port.items()):
        winner = min(port_claims, key=lambda c: (c.rank, age(c.node)))
        for c in sorted(port_claims, key=lambda c: c.node):
            if c is winner:
                continue
            why = (f"{winner.source}, which takes precedence over {c.source}"
                   if c.rank > winner.rank else f"older node, both by {c.source}")
            refusals.append(
                Refusal("attachment", c.node, f"port {port} belongs to {winner.node} ({why})"))
        attachments.append(Attachment(port, winner.node, winner.source))
    return attachments, refusals

