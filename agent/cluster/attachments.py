"""Which Kubernetes node sits behind which server port.

Three sources, in the contract's precedence: the config's static map, the node's
kube-fabric-agent.io/switch-port annotation, then LLDP (the neighbour's system name matched to
the node name). A node claiming two ports, or two nodes claiming one port at the same
precedence, is refused: guessing would route one node's pods to another's port.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
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
    refusals: list[Refusal] = []
    claims: list[_Claim] = [_Claim(0, port, node) for port, node in static.items()]

    for node in nodes:
        sp = node.switch_port
        if sp is None or sp.switch.lower() != switch_hostname.lower():
            continue  # attached to another switch, or not annotated
        if sp.port not in ports:
            refusals.append(
                Refusal("attachment", node.name, f"annotation names port {sp.port}, "
                        "which is not one of this switch's server ports")
            )
            continue
        claims.append(_Claim(1, sp.port, node.name))

    node_names = [n.name for n in nodes]
    for port, system_name in sorted(lldp_neighbors.items()):
        if port not in ports:
            continue  # uplinks and management ports see LLDP neighbours too
        name = match_lldp_name(system_name, node_names)
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
    age = {n.name: (n.created, n.name) for n in nodes}
    by_port: dict[str, list[_Claim]] = defaultdict(list)
    for claim in per_node:
        by_port[claim.port].append(claim)
    attachments: list[Attachment] = []
    for port, port_claims in sorted(by_port.items()):
        winner = min(port_claims, key=lambda c: (c.rank, age.get(c.node, ("", c.node))))
        for c in sorted(port_claims, key=lambda c: c.node):
            if c is winner:
                continue
            why = (f"{winner.source}, which takes precedence over {c.source}"
                   if c.rank > winner.rank else f"older node, both by {c.source}")
            refusals.append(
                Refusal("attachment", c.node, f"port {port} belongs to {winner.node} ({why})"))
        attachments.append(Attachment(port, winner.node, winner.source))
    return attachments, refusals

