"""Narrow an apply FRR refuses to the nodes whose lines it refuses ("one value freezes everyone").

One node's value can pass every validator and the templates' `token` filter and still be refused
by FRR (a prefix length FRR's parser does not take). Refusing the whole candidate would freeze
every other node's change with it. Instead, the lines FRR names are mapped to the server peers
that own them, those peers are put back as they were in the last confirmed apply (what is
programmed for that node stays: a refusal never removes anything), and the rest is applied.

How a line is mapped to its peer: every per-node line names its port, either as the neighbour
(`neighbor swp2 ...`) or in a policy object's name (`KFA-NODE-swp2-V4`, contract.md); a nested
line (`set local-preference 0`) belongs to the block it sits in. A refused line that names no
server port (the router's own lines, an uplink's) cannot be narrowed: the apply fails as before.
When FRR's output names no line at all, the applier falls back to elimination (see applier.py).

Pure functions over plain data; the applier (agent.apply.frr.reload) runs the checks.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from agent.plan.model import FrrDesired, ServerPeer

# vtysh -C: "line 5: % Unknown command[4]: ip prefix-list ..." (also Ambiguous, Command incomplete)
_CHECK_LINE = re.compile(r"^line (\d+): (.+)$")
# A per-node policy object's name; the port is what sits between the fixed parts.
_POLICY_NAME = re.compile(r"^KFA-NODE-(?P<port>.+?)-(?:IN-)?V[46]$")
# FRR's words for one node are shown in the status; enough to see the line, not a config dump.
WORDS_LIMIT = 400


@dataclass(frozen=True)
class Complaint:
    """One line FRR refused: the line with the heads of the blocks it sits in, outermost first
    (("router bgp 65101", "address-family ipv4 unicast", "neighbor swp2 ...")); () when FRR
    named no line we can find. `words`: what FRR said about it."""

    path: tuple[str, ...]
    words: str


def check_complaints(text: str, output: str) -> list[Complaint]:
    """The lines of `text` that `vtysh -C` refused, from its output. [] if it names none."""
    lines = text.splitlines()
    out = []
    for raw in output.splitlines():
        m = _CHECK_LINE.match(raw.strip())
        if m is None:
            continue
        n = int(m[1])
        path = _path(lines, n - 1) if 1 <= n <= len(lines) else ()
        out.append(Complaint(path, m[2].strip()))  # "line N" names a staged file: dropped
    return out


def delta_complaints(to_delete: Iterable[str], to_add: Iterable[str]) -> list[Complaint]:
    """Lines FRR did not take after a reload (frr-reload.py's delta, context joined by " > ")."""
    return [*(Complaint(tuple(x.split(" > ")), f"FRR did not take: - {x}") for x in to_delete),
            *(Complaint(tuple(x.split(" > ")), f"FRR did not take: + {x}") for x in to_add)]


def _path(lines: Sequence[str], index: int) -> tuple[str, ...]:
    """lines[index] and the heads of its enclosing blocks (by indentation, as FRR nests them)."""
    path = [lines[index].strip()]
    depth = _indent(lines[index])
    for line in reversed(lines[:index]):
        if depth == 0:
            break
        if not line.strip() or line.strip() == "!":
            continue
        if _indent(line) < depth:
            path.append(line.strip())
            depth = _indent(line)
    return tuple(reversed(path))


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def port_of(line: str, ports: Collection[str]) -> str | None:
    """The server port `line` is about, if it names one: as neighbour or in a policy name."""
    words = line.split()
    if words[:1] == ["no"]:
        words = words[1:]
    if len(words) >= 2 and words[0] == "neighbor" and words[1] in ports:
        return words[1]
    for word in words:
        m = _POLICY_NAME.match(word)
        if m and m["port"] in ports:
            return m["port"]
    return None


def owner(complaint: Complaint, ports: Collection[str]) -> str | None:
    """The port whose lines hold the complaint's line: the innermost part of its path naming
    one (a route map's `set` line belongs to the route map)."""
    for part in reversed(complaint.path):
        port = port_of(part, ports)
        if port is not None:
            return port
    return None


def blame(complaints: Sequence[Complaint], ports: Collection[str]) -> dict[str, str] | None:
    """FRR's words per server port, if every complaint is about a server port's lines; None if
    there are none or one is not (a global line: nothing to narrow, the apply fails)."""
    found: dict[str, list[str]] = {}
    for c in complaints:
        port = owner(c, ports)
        if port is None:
            return None
        found.setdefault(port, []).append(c.words)
    return {port: words_of(w) for port, w in found.items()} or None


def words_of(words: Sequence[str]) -> str:
    text = "; ".join(dict.fromkeys(w.strip() for w in words if w.strip()))
    return text if len(text) <= WORDS_LIMIT else text[:WORDS_LIMIT] + "..."


def previous_peer(port: str, confirmed: FrrDesired | None) -> ServerPeer:
    """What FRR was last confirmed to run on `port`; a session that accepts nothing if none."""
    for peer in confirmed.server_peers if confirmed else ():
        if peer.port == port:
            return peer
    return ServerPeer(port, None)


def revert(desired: FrrDesired, ports: Collection[str], confirmed: FrrDesired | None) -> FrrDesired:
    """`desired` with the peers on `ports` put back as last confirmed."""
    peers = tuple(previous_peer(p.port, confirmed) if p.port in ports else p
                  for p in desired.server_peers)
    return replace(desired, server_peers=peers)


def changed_ports(desired: FrrDesired, confirmed: FrrDesired | None) -> list[str]:
    """Server ports whose peer differs from the last confirmed one, in desired's order."""
    return [p.port for p in desired.server_peers if p != previous_peer(p.port, confirmed)]


def refused_by_node(desired: FrrDesired, blamed: Mapping[str, str]) -> dict[str, str]:
    """Status refusals by node name (the port when no node is known there)."""
    out = {}
    for peer in desired.server_peers:
        if peer.port in blamed:
            out[peer.node or peer.port] = (f"FRR refused its configuration on {peer.port}; "
                                           f"what was programmed stays: {blamed[peer.port]}")
    return out
