"""The agent's kernel data plane in the lab: static and flannel VXLAN nodes reached with real
traffic from host1 behind the leaf; ownership, tamper repair, clean-up, restart without loss."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from lab.agent_lab import (
    FLANNEL_NODES,
    LEAF,
    STATIC_NODES,
    SWITCH_VTEP_MAC,
    AgentLab,
    flannel_annotations,
)
from tests.integration.expect import (
    SPINE,
    agent_settings,
    assert_json,
    bgp_table,
    expect_json,
    expected,
    hold_lab,
    owned_routes,
)
from tests.integration.measurements import record

PROTO = "233"  # dataplane.route_protocol default
HOST = "host1"
VTEP = "flannel.1"


@pytest.fixture(scope="module", autouse=True)
def dataplane_nodes(env: AgentLab) -> Iterator[None]:
    env.add_static_node("st1")
    for name in FLANNEL_NODES:
        env.add_flannel_node(name)
    env.wait(lambda: all(reachable(env, n["pod"]) for n in pods()), 60.0,
             "host1 reaching every static and overlay pod")
    yield


def pods() -> list[dict[str, str]]:
    return [*STATIC_NODES.values(), *FLANNEL_NODES.values()]


def reachable(env: AgentLab, ip: str) -> bool:
    res = env.lab.exec(HOST, ["ping", "-c1", "-W1", ip], check=False)
    return res.returncode == 0


def _bridge_fdb(env: AgentLab) -> list[dict[str, Any]]:
    """The VTEP's unicast FDB entries (those with a remote dst), as `bridge -j fdb` prints."""
    out = env.lab.exec(LEAF, ["bridge", "-j", "fdb", "show", "dev", VTEP], check=False).stdout
    return [e for e in json.loads(out or "[]") if e.get("dst")]


def neighbours(env: AgentLab) -> dict[str, str]:
    return {n["dst"]: n.get("lladdr", "") for n in env.lab.ip_json(LEAF, "neigh", "show",
                                                                    "dev", VTEP)}


def test_static_and_overlay_pods_reachable_from_behind_the_leaf(env: AgentLab) -> None:
    for pod in pods():
        assert reachable(env, pod["pod"]), pod
    # static: via the node's InternalIP; overlay: via the peer's <subnet>.0, onlink on the VTEP
    assert_json(owned_routes(env), expected("leaf1-dataplane-routes"), "the agent's routes")
    link = env.lab.ip_json(LEAF, "-d", "link", "show", VTEP)[0]
    assert_json(link, expected("leaf1-vtep"), "the agent's VTEP")
    assert {e["mac"]: e["dst"] for e in _bridge_fdb(env)} == {
        n["mac"]: n["public_ip"] for n in FLANNEL_NODES.values()}


def test_routed_pod_cidrs_are_redistributed_to_the_spine(env: AgentLab) -> None:
    expect_json(env, lambda: bgp_table(env, SPINE), expected("spine1-dataplane-routes"), 30.0,
                "static and overlay pod CIDRs at the spine, originated by the leaf")


def test_owned_route_deleted_by_hand_comes_back(env: AgentLab, request: pytest.FixtureRequest
                                                ) -> None:
    cidr = STATIC_NODES["st1"]["cidr"]
    t0 = time.monotonic()
    env.lab.exec(LEAF, ["ip", "route", "del", cidr, "proto", PROTO])
    env.wait(lambda: cidr in owned_routes(env), 5.0, "the deleted route restored")
    took = time.monotonic() - t0
    record(request.config, f"owned route deleted by hand -> restored: {took:.2f}s")
    assert took < 2.0


# Routes the agent does not own: ownership is the agent's protocol AND the main table.
FOREIGN = (
    # another protocol in the main table (an operator's, or another daemon's)
    ("10.244.99.0/24", "via", "192.168.10.5", "proto", "static"),
    # st1's pod CIDR in another table: the agent deletes its own 10.244.5.0/24 below
    ("10.244.5.0/24", "via", "192.168.10.5", "proto", "static", "table", "100"),
    # the agent's protocol in another table, at the CIDR the agent adds and deletes below
    ("10.244.55.0/24", "via", "192.168.10.5", "proto", PROTO, "table", "100"),
)


def reregister_static(env: AgentLab, name: str, cidr: str) -> None:
    """A Node's pod CIDR cannot change on a real API server: it is deleted and registered
    again with the new one (as a node rebuilt by its owner)."""
    env.api.delete_node(name)
    env.add_static_node(name, cidr=cidr)


def foreign_routes(env: AgentLab) -> dict[str, list[dict[str, Any]]]:
    return {"main, proto static": env.lab.ip_json(LEAF, "route", "show", "proto", "static"),
            "table 100": env.lab.ip_json(LEAF, "route", "show", "table", "100")}


def test_foreign_routes_are_never_touched_while_the_agent_works(env: AgentLab) -> None:
    """The foreign routes stay through work the agent is seen doing in the window: a Node change
    (st1's pod CIDR moves: the agent deletes its route whose destination has a twin in table
    100 and adds one whose destination and protocol have a twin there), the repair of its route
    deleted by hand (a re-dump of the route table holding the foreign routes), a full resync
    period, and the move back. "Nothing happened to them" alone would also pass with an agent
    that did nothing."""
    st1, moved = STATIC_NODES["st1"], "10.244.55.0/24"
    resync = float(agent_settings(env)["dataplane"]["resync_seconds"])
    for route in FOREIGN:
        env.lab.exec(LEAF, ["ip", "route", "add", *route])
    before = foreign_routes(env)
    assert [r["dst"] for r in before["main, proto static"]] == ["10.244.99.0/24"], before
    assert sorted(r["dst"] for r in before["table 100"]) == ["10.244.5.0/24", moved], before

    def untouched() -> None:
        assert foreign_routes(env) == before, "a foreign route changed"

    def owned_exactly(present: str, absent: str) -> bool:
        routes = owned_routes(env)
        return (routes.get(present, {}).get("gateway") == st1["ip"]) and absent not in routes
    try:
        reregister_static(env, "st1", moved)
        hold_lab(env, untouched, until=lambda: owned_exactly(moved, st1["cidr"]),
                 timeout=15.0, desc=f"the agent's route to st1 moved from {st1['cidr']} to {moved}")
        env.lab.exec(LEAF, ["ip", "route", "del", moved, "proto", PROTO])
        hold_lab(env, untouched, until=lambda: moved in owned_routes(env), timeout=10.0,
                 desc="the agent's route deleted by hand restored")
        hold_lab(env, untouched, seconds=resync + 2.0, desc="a full data plane resync period")
        assert owned_exactly(moved, st1["cidr"])
        reregister_static(env, "st1", st1["cidr"])
        hold_lab(env, untouched, until=lambda: owned_exactly(st1["cidr"], moved),
                 timeout=15.0, desc=f"the agent's route to st1 back at {st1['cidr']}")
    finally:
        for route in FOREIGN:
            env.lab.exec(LEAF, ["ip", "route", "del", *route], check=False)
        if env.api.get_node("st1")["spec"]["podCIDR"] != st1["cidr"]:
            reregister_static(env, "st1", st1["cidr"])
    env.wait(lambda: reachable(env, st1["pod"]), 30.0, "st1's pod reachable again")


def test_vtep_mac_change_leaves_no_stale_entries(env: AgentLab) -> None:
    node = FLANNEL_NODES["fl1"]
    new_mac = "0a:58:0a:f4:07:77"
    # flannel recreated its device with a new MAC and updated the Node annotation
    set_node_vtep_mac(env, "fl1", new_mac)
    env.api.patch_node("fl1", {"metadata": {"annotations": flannel_annotations(
        node["public_ip"], new_mac)}})
    env.wait(lambda: new_mac in {e["mac"] for e in _bridge_fdb(env)}, 15.0, "new FDB entry")
    assert node["mac"] not in {e["mac"] for e in _bridge_fdb(env)}
    assert neighbours(env)["10.244.7.0"] == new_mac
    env.wait(lambda: reachable(env, node["pod"]), 15.0, "fl1's pod reachable with its new MAC")
    set_node_vtep_mac(env, "fl1", node["mac"])
    env.api.patch_node("fl1", {"metadata": {"annotations": flannel_annotations(
        node["public_ip"], node["mac"])}})
    env.wait(lambda: reachable(env, node["pod"]), 15.0, "fl1 back to its MAC")
    assert new_mac not in {e["mac"] for e in _bridge_fdb(env)}


def test_pings_flow_with_zero_loss_across_an_agent_restart(env: AgentLab,
                                                          request: pytest.FixtureRequest
                                                          ) -> None:
    targets = [STATIC_NODES["st1"]["pod"], FLANNEL_NODES["fl2"]["pod"]]
    pingers = [env.lab.spawn(HOST, ["ping", "-i", "0.02", "-W", "1", "-w", "60", ip],
                             stdout=subprocess.PIPE, text=True) for ip in targets]
    try:
        old_start = env.status()["started"]
        assert env.stop_agent() == 0
        env.start_agent()
        env.wait(lambda: env.status().get("started") != old_start
                 and (env.status().get("dataplane_last_apply") or {}).get("ok"), 30.0,
                 "the restarted agent's first data-plane apply")
        applied = env.status()["dataplane_last_apply"]
        assert applied["changes"] == 0, f"a restart must adopt, not reprogram: {applied}"
    finally:
        for p in pingers:
            p.send_signal(2)  # SIGINT: ping prints its statistics
    for ip, p in zip(targets, pingers, strict=True):
        out, _ = p.communicate(timeout=10)
        m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
        assert m, out
        sent, got = int(m.group(1)), int(m.group(2))
        record(request.config, f"agent restart: {ip} {got}/{sent} pings answered")
        assert sent > 20 and got == sent, out


def test_node_deletion_cleans_every_kernel_object(env: AgentLab) -> None:
    fl2 = FLANNEL_NODES["fl2"]
    env.api.delete_node("fl2")
    env.wait(lambda: fl2["cidr"] not in owned_routes(env), 15.0, "fl2's route removed")
    assert fl2["mac"] not in {e["mac"] for e in _bridge_fdb(env)}
    assert "10.244.8.0" not in neighbours(env)
    env.api.delete_node("st1")
    env.wait(lambda: STATIC_NODES["st1"]["cidr"] not in owned_routes(env), 15.0,
             "st1's route removed")
    env.api.delete_node("fl1")
    env.wait(lambda: not _has_link(env), 15.0, "the VTEP removed with the last overlay node")
    assert owned_routes(env) == {}
    # and back, for whatever runs after
    env.add_static_node("st1")
    for name in FLANNEL_NODES:
        env.add_flannel_node(name)
    env.wait(lambda: all(reachable(env, n["pod"]) for n in pods()), 60.0, "all back")


def set_node_vtep_mac(env: AgentLab, node: str, mac: str) -> None:
    """What flanneld does when its VTEP comes back with another MAC: the device's address
    changes and flanneld writes its peers' entries (here: the switch) again."""
    env.lab.exec(node, ["ip", "link", "set", "dev", VTEP, "address", mac])
    env.lab.exec(node, ["ip", "neigh", "replace", "10.244.250.0", "lladdr", SWITCH_VTEP_MAC,
                        "dev", VTEP, "nud", "permanent"])
    env.lab.exec(node, ["bridge", "fdb", "replace", SWITCH_VTEP_MAC, "dev", VTEP, "dst",
                        "10.0.0.1", "self", "permanent"])


def _has_link(env: AgentLab) -> bool:
    return env.lab.exec(LEAF, ["ip", "link", "show", VTEP], check=False).returncode == 0
