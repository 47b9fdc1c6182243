"""Expected JSON, compared the way FRR's topotests compare it.

An expected file under tests/integration/expected/ holds the part of a command's JSON output
that matters (json_cmp semantics, lab/topotest.py: a subset; ``null`` means the key must be
absent; ``"*"`` any value). ``expect_json`` polls until the output matches, with a deadline;
``assert_json`` checks once, where the test asserts a state it has already waited for.

Files are named ``<node>-<what>.json``; what they hold is the lab's fixed data
(lab/agent_lab.py: SERVERS, STATIC_NODES, FLANNEL_NODES), written out as an engineer would read
it in vtysh or ``ip -j``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from lab.agent_lab import LEAF, AgentLab
from lab.topotest import hold, json_cmp, run_and_expect

EXPECTED = Path(__file__).resolve().parent / "expected"
SPINE = "spine1"


def expected(name: str) -> Any:
    """The expected JSON of ``expected/<name>.json``."""
    return json.loads((EXPECTED / f"{name}.json").read_text())


def expect_json(env: AgentLab, func: Callable[[], Any], want: Any, timeout: float,
                desc: str) -> Any:
    """Poll ``func`` until its JSON matches ``want`` (a dict or list; see expected()) and
    return that output. On timeout the error has json_cmp's last difference and the lab's
    state, as AgentLab.wait gives it."""
    try:
        return run_and_expect(func, want, timeout, desc=desc)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- lab state ---\n{env.diagnostics()}") from None


def hold_lab(env: AgentLab, invariant: Callable[[], None], **window: Any) -> Any:
    """lab.topotest.hold (an invariant checked at every poll of a window), with the lab's state
    in the error when it fails."""
    try:
        return hold(invariant, **window)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- lab state ---\n{env.diagnostics()}") from exc


def assert_json(output: Any, want: Any, desc: str) -> None:
    diff = json_cmp(output, want)
    assert diff is None, f"{desc}:\n{diff}"


# -- what the expected files are compared with ---------------------------------------------------
def bgp_summary(env: AgentLab, node: str = LEAF) -> Any:
    return env.lab.vtysh_json(node, "show bgp ipv4 unicast summary json")


def bgp_table(env: AgentLab, node: str) -> Any:
    return env.lab.vtysh_json(node, "show bgp ipv4 unicast json")


def bgp_prefix(env: AgentLab, node: str, prefix: str) -> Any:
    return env.lab.vtysh_json(node, f"show bgp ipv4 unicast {prefix} json")


def bgp_neighbor(env: AgentLab, port: str, node: str = LEAF) -> Any:
    return env.lab.vtysh_json(node, f"show bgp neighbors {port} json")


def prefix_lists(env: AgentLab, node: str = LEAF) -> Any:
    """Every IPv4 prefix list as zebra and bgpd hold it: {"ZEBRA": {...}, "BGP": {...}}."""
    return env.lab.vtysh_json(node, "show ip prefix-list json")


def owned_routes(env: AgentLab, proto: str = "233") -> dict[str, Any]:
    """The leaf's main-table routes of the agent's data plane (dataplane.route_protocol), by
    destination."""
    return {r["dst"]: r for r in env.lab.ip_json(LEAF, "route", "show", "proto", proto)}


def session_counters(env: AgentLab, node: str = LEAF) -> dict[str, dict[str, Any]]:
    """Each BGP neighbour's state and how often its session came up and went down (FRR's
    connectionsEstablished/connectionsDropped): unchanged counters mean no flap, not even one
    that came back between two polls."""
    return {
        port: {"state": n.get("bgpState"), "established": n.get("connectionsEstablished"),
               "dropped": n.get("connectionsDropped")}
        for port, n in env.lab.vtysh_json(node, "show bgp neighbors json").items()
    }


def agent_settings(env: AgentLab) -> dict[str, Any]:
    """The config file the lab's agent runs with (timings a window must outlast)."""
    return yaml.safe_load(env.config_path.read_text())
