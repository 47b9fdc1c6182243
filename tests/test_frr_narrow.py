"""One value FRR refuses must not freeze every node's change: the refused lines are mapped to
the server peers that own them, those peers stay as last confirmed, and the status names them.

FRR's own syntax check (`vtysh -C`, no daemon needed) judges the rendered candidates here; the
full apply against running daemons is tests/integration/test_frr_applier.py.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import replace
from pathlib import Path
from typing import cast

from agent.apply.contract import ApplyResult
from agent.apply.frr import narrow
from agent.apply.frr.narrow import Complaint
from agent.apply.frr.reload import FrrApplier, Objection
from agent.apply.frr.render import render_frr
from agent.config import FrrConfig
from agent.informers.informer import Informer
from agent.informers.kubeapi import KubeApi
from agent.plan.model import FrrDesired, ServerPeer
from agent.status.state import ObservedState
from agent.status.view import AgentView

# A prefix length FRR's parser does not take, though every character passes the `token` filter.
BAD = "10.244.2.0/40"


def desired(*peers: ServerPeer) -> FrrDesired:
    return FrrDesired(hostname="leaf1", asn=65101, router_id="10.0.0.1", server_peers=peers,
                      uplinks=("swp51",), advertise_v4=("10.244.0.0/16",), advertise_v6=(),
                      aggregate_v4=(), aggregate_v6=(), max_prefixes=100,
                      max_prefix_restart_minutes=5)


GOOD = desired(ServerPeer("swp1", "srv1", ("10.244.1.0/24",)),
               ServerPeer("swp2", "srv2", ("10.244.2.0/24",)),
               ServerPeer("swp3", "srv3", ("10.244.3.0/24",), draining=True))
# srv1 and srv3 change as they should; srv2's new value is one FRR refuses.
CHANGED = desired(ServerPeer("swp1", "srv1", ("10.244.1.0/24", "10.244.11.0/24")),
                  ServerPeer("swp2", "srv2", (BAD,)),
                  ServerPeer("swp3", "srv3", ("10.244.3.0/24", "10.244.33.0/24"), draining=True))
PORTS = {"swp1", "swp2", "swp3"}


def vtysh_check(text: str, tmp_path: Path) -> str:
    path = tmp_path / "candidate.conf"
    path.write_text(text)
    res = subprocess.run(["vtysh", "-C", "-f", str(path)], capture_output=True, text=True,
                         timeout=30, check=False)
    assert res.returncode != 0, "FRR takes the candidate: the test's bad value is not bad"
    return res.stdout + res.stderr


def test_frr_refuses_the_value_the_token_filter_lets_through(tmp_path: Path) -> None:
    text = render_frr(CHANGED)  # no UnsafeValue
    output = vtysh_check(text, tmp_path)
    assert BAD in output


def test_the_lines_frr_names_are_mapped_to_the_peer_that_owns_them(tmp_path: Path) -> None:
    text = render_frr(CHANGED)
    complaints = narrow.check_complaints(text, vtysh_check(text, tmp_path))
    assert complaints and all(BAD in c.words for c in complaints)
    assert "line " not in complaints[0].words  # the staged file's line number is not FRR's point
    blamed = narrow.blame(complaints, PORTS)
    assert blamed is not None and set(blamed) == {"swp2"}
    assert "Unknown command" in blamed["swp2"] and BAD in blamed["swp2"]


def test_a_nested_line_belongs_to_its_block_and_a_global_line_to_no_peer() -> None:
    text = render_frr(GOOD)
    lines = text.splitlines()
    gshut = lines.index(" set local-preference 0") + 1  # swp3 is draining: its route map
    router_id = lines.index(" bgp router-id 10.0.0.1") + 1
    uplink = next(i for i, x in enumerate(lines, 1) if x.strip().startswith("neighbor swp51"))
    complaints = narrow.check_complaints(text, f"line {gshut}: % Unknown command[4]: x\n")
    assert narrow.blame(complaints, PORTS) == {"swp3": "% Unknown command[4]: x"}
    for n in (router_id, uplink):
        complaints = narrow.check_complaints(text, f"line {n}: % Unknown command[4]: x\n")
        assert narrow.owner(complaints[0], PORTS) is None
        assert narrow.blame(complaints, PORTS) is None, "a global line: nothing to narrow"
    # FRR's delta after a reload, context joined by " > ".
    leftover = narrow.delta_complaints(
        (), ("router bgp 65101 > address-family ipv4 unicast > neighbor swp1 route-map X in",))
    assert narrow.blame(leftover, PORTS) == {"swp1": leftover[0].words}
    assert narrow.blame([Complaint((), "% something")], PORTS) is None


def test_a_refused_peer_keeps_what_was_confirmed_and_a_new_one_gets_nothing() -> None:
    narrowed = narrow.revert(CHANGED, {"swp2"}, GOOD)
    assert narrowed.server_peers == (CHANGED.server_peers[0], GOOD.server_peers[1],
                                     CHANGED.server_peers[2])
    fresh = narrow.revert(CHANGED, {"swp2"}, None)
    assert fresh.server_peers[1] == ServerPeer("swp2", None)
    assert narrow.changed_ports(CHANGED, GOOD) == ["swp1", "swp2", "swp3"]
    assert narrow.refused_by_node(CHANGED, {"swp2": "% bad"})["srv2"].endswith("% bad")


async def test_elimination_finds_the_refused_peer_when_frr_names_no_line(
    tmp_path: Path,
) -> None:
    """An FRR whose message carries no line number: changed peers are checked one by one with
    FRR's real syntax check."""
    applier = FrrApplier(FrrConfig(config_file=str(tmp_path / "frr.conf")))
    applier.confirmed = GOOD
    blamed = await applier._blame(CHANGED, Objection([], checked=True))
    assert blamed is not None and set(blamed) == {"swp2"} and BAD in blamed["swp2"]
    # A fault that stays with every changed peer put back is not a peer's: nothing to narrow.
    broken = replace(CHANGED, router_id="10.0.0.1/40")
    assert await applier._blame(broken, Objection([], checked=True)) is None


def test_the_status_lists_the_nodes_frr_refused() -> None:
    nodes = Informer(cast(KubeApi, object()), "/api/v1/nodes", on_change=lambda: None)
    nodes.synced = nodes.connected = True
    state = ObservedState(started_at=time.time(), hostname="leaf1", nodes=nodes)
    view = AgentView(state)
    state.record(ApplyResult("frr", True, "applied-narrowed", time.time(), 0.1,
                             refused={"srv2": "FRR refused ...: % Unknown command"}))
    (refusal,) = view.status().refusals
    assert (refusal.kind, refusal.name) == ("node", "srv2")
    assert "Unknown command" in refusal.reason
    assert view.status().health == "ok"  # everyone else's changes applied
    # The value fixed: the next apply takes it and carries no refusal; the status clears.
    state.record(ApplyResult("frr", True, "applied", time.time(), 0.1))
    assert view.status().refusals == ()
