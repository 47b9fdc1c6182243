"""The agent (re)started while the Kubernetes API server is down: nothing is applied and nothing
withdrawn until its first complete Node list, however long that takes; then it converges.

An empty Node store must never be mistaken for an empty cluster: planned from it, every server
session would lose its policy and every data plane route would go. The window below outlasts
the agent's debounce and two passes of each of its periodic loops (FRR and data plane resyncs,
read from the config the lab runs it with), and proves the agent was alive and retrying the API
all through it: a test that passed because the agent never started would prove nothing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from lab.agent_lab import FLANNEL_NODES, LEAF, SERVERS, AgentLab, lldpd_socket
from tests.integration.expect import (
    SPINE,
    agent_settings,
    bgp_prefix,
    bgp_summary,
    expect_json,
    expected,
    hold_lab,
    owned_routes,
    session_counters,
)
from tests.integration.measurements import record


@pytest.fixture(scope="module", autouse=True)
def converged(env: AgentLab) -> Iterator[None]:
    """BGP, static and overlay nodes, every session up and every route in place."""
    for name in SERVERS:
        env.add_server_node(name)
    env.add_static_node("st1")
    for name in FLANNEL_NODES:
        env.add_flannel_node(name)
    expect_json(env, lambda: bgp_summary(env), expected("leaf1-sessions"), 60.0,
                "sessions with srv1..srv3 and the spine Established")
    expect_json(env, env.kernel_routes, expected("leaf1-kernel-server-routes"), 30.0,
                "the nodes' routes in leaf1's kernel")
    expect_json(env, lambda: owned_routes(env), expected("leaf1-dataplane-routes"), 30.0,
                "the agent's data plane routes")
    env.wait(lambda: (env.status().get("kubernetes", {}).get("nodes") == 6
                      and (env.status().get("frr_last_apply") or {}).get("ok")
                      and (env.status().get("dataplane_last_apply") or {}).get("ok")),
             30.0, "the agent to have applied all six Nodes")
    yield


def snapshot(env: AgentLab) -> dict[str, Any]:
    """What the agent could withdraw or apply: FRR's running config and startup file, every
    session with its up/down counters, the agent's kernel routes."""
    return {
        "FRR running config": env.running_config(),
        "FRR startup file": env.lab.frr_conf_path(LEAF).read_text(),
        "sessions": session_counters(env),
        "agent's routes (proto 233)": owned_routes(env),
    }


def lldp_neighbors(env: AgentLab) -> dict[str, str]:
    """Port -> system name, as leaf1's lldpd sees its neighbours."""
    out = env.lab.exec(LEAF, ["lldpcli", "-u", lldpd_socket(env.lab, LEAF), "-f", "json",
                              "show", "neighbors"]).stdout
    interfaces = json.loads(out).get("lldp", {}).get("interface", [])
    if isinstance(interfaces, dict):  # lldpcli: an object when one port, a list otherwise
        interfaces = [{name: value} for name, value in interfaces.items()]
    return {port: next(iter(value["chassis"])) for entry in interfaces
            for port, value in entry.items()}


def test_agent_started_while_the_api_is_down_applies_nothing_until_the_first_list(
        env: AgentLab, request: pytest.FixtureRequest) -> None:
    settings = agent_settings(env)
    debounce = settings["frr"]["debounce_ms"] / 1000.0
    periods = (float(settings["frr"]["resync_seconds"]),
               float(settings["dataplane"]["resync_seconds"]))
    window = 2 * max(periods) + 10 * debounce + 1.0  # every periodic loop runs at least twice
    assert window < 60.0, "the lab's agent config makes this window too long for a test"

    old_started = env.status()["started"]
    assert env.stop_agent() == 0
    before = snapshot(env)
    ports = [s["port"] for s in SERVERS.values()] + ["swp51"]
    assert all(before["sessions"][p]["state"] == "Established" for p in ports), before
    assert len(before["agent's routes (proto 233)"]) == 3, before
    env.stop_api()
    # Meanwhile the cluster changes (through another API server replica): the agent learns it
    # only from its first list, once its own API server is back.
    with env.other_api_replica() as replica:
        replica.patch_node("srv1", {"spec": {"unschedulable": True}})
    # LLDP neighbours the agent has not seen yet: its first LLDP poll marks it dirty at once,
    # so a reconcile is due from the start and only the guard keeps it from applying.
    env.start_lldpd(LEAF, [s["port"] for s in SERVERS.values()], LEAF)
    for name in SERVERS:
        env.start_lldpd(name, ["eth1"], name)
    env.wait(lambda: lldp_neighbors(env) == {s["port"]: n for n, s in SERVERS.items()}, 30.0,
             "leaf1's lldpd to see srv1..srv3")
    log_from = env.agent_log.stat().st_size
    env.start_agent()

    status_writes: set[float] = set()

    def nothing_applied_or_withdrawn() -> None:
        now = snapshot(env)
        for what, was in before.items():
            assert now[what] == was, f"{what} changed while the API server was down"
        assert env.agent_proc is not None and env.agent_proc.poll() is None, "agent exited"
        status = env.status()
        if status.get("started") != old_started:  # the new agent's own status
            assert status["kubernetes"]["synced"] is False, status
            assert status["frr_last_apply"] is None, status
            assert status["dataplane_last_apply"] is None, status
            status_writes.add((env.workdir / "status.json").stat().st_mtime)

    hold_lab(env, nothing_applied_or_withdrawn, until=lambda: status_writes, timeout=30.0,
             desc="the restarted agent's first status")
    window_start = time.time()
    checks = hold_lab(env, nothing_applied_or_withdrawn, seconds=window,
                      desc=f"{window:.1f} s of the agent running with the API server down")

    # The agent ran through the window: alive (checked at every poll), still writing its status
    # in the window's second half, and retrying an API it could not reach.
    assert max(status_writes) >= window_start + window / 2, (
        f"the agent's status was last written {max(status_writes) - window_start:.1f} s into "
        f"a {window:.1f} s window")
    status = env.status()
    assert not status["kubernetes"]["connected"] and status["kubernetes"]["last_error"], status
    assert status["lldp_error"] is None, "the agent's LLDP poller reached lldpd (and saw news)"
    log = env.agent_log.read_bytes()[log_from:].decode(errors="replace")
    assert "API server unavailable" in log, log[-2000:]

    env.start_api()
    api_back = time.monotonic()
    env.wait(lambda: env.status().get("kubernetes", {}).get("synced"), 60.0,
             "the agent's first complete Node list")
    record(request.config, f"agent started with the API server down: nothing changed in "
           f"{window:.1f} s ({checks} checks); synced {time.monotonic() - api_back:.1f} s after "
           "the API server came back")
    cidr = SERVERS["srv1"]["cidr"]
    expect_json(env, lambda: bgp_prefix(env, LEAF, cidr), expected("leaf1-srv1-cordoned"),
                30.0, "the cordon made while the API server was down, applied on the leaf")
    expect_json(env, lambda: bgp_prefix(env, SPINE, cidr), expected("spine1-srv1-cordoned"),
                20.0, "and seen at the spine")
    after = snapshot(env)
    assert after["sessions"] == before["sessions"], "no session reset, before or after the list"
    assert after["agent's routes (proto 233)"] == before["agent's routes (proto 233)"]
    status = env.status()
    assert status["kubernetes"]["nodes"] == 6, status["kubernetes"]
    assert status["dataplane_last_apply"]["ok"], status["dataplane_last_apply"]
    assert status["dataplane_last_apply"]["changes"] == 0, "the data plane was adopted as it was"
    assert status["frr_last_apply"]["ok"], status["frr_last_apply"]
    assert status["refusals"] == [], "LLDP and the annotations agree"

    env.api.patch_node("srv1", {"spec": {"unschedulable": False}})
    expect_json(env, lambda: bgp_prefix(env, LEAF, cidr), expected("leaf1-srv1-uncordoned"),
                20.0, "srv1 undrained")
