"""Headroom admission on the real leaf: with room for two nodes' routes, the newest node is
refused (its session accepts nothing, nothing reaches the kernel) and admitted by itself as
soon as another node leaves. FRR, the kernel and fabricctl agree at every step."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from lab.agent_lab import LEAF, SERVERS, AgentLab
from tests.integration.measurements import record


@pytest.fixture(scope="module")
def env() -> Iterator[AgentLab]:
    # Each BGP node costs two IPv4 routes (pod CIDR + InternalIP /32): 5 fit two nodes.
    headroom = {"capacity": {"ipv4_routes": 5}, "reserve_percent": 0}
    with AgentLab(prefix="kfah", config_extra={"headroom": headroom}) as lab_env:
        yield lab_env


def headroom_rows(env: AgentLab) -> dict[str, Any]:
    out = env.fabricctl_run("--json", "headroom")
    assert out.returncode == 0, out.stderr
    return {r["resource"]: r for r in json.loads(out.stdout)}


def prefix_list(env: AgentLab, port: str) -> str:
    return env.lab.vtysh(LEAF, f"show ip prefix-list KFA-NODE-{port}-V4")


def test_admission_refuses_the_newest_then_admits_it_when_room_returns(
        env: AgentLab, request: pytest.FixtureRequest) -> None:
    for name in ("srv1", "srv2", "srv3"):  # created in this order: srv3 is the newest
        env.add_server_node(name)
    cidr = {n: s["cidr"] for n, s in SERVERS.items()}
    env.wait(lambda: cidr["srv1"] in env.kernel_routes() and cidr["srv2"] in env.kernel_routes(),
             60.0, "srv1 and srv2 admitted")
    env.wait(lambda: any(r.startswith("headroom srv3") for r in env.status().get("refusals", [])),
             20.0, "srv3 refused for lack of room")
    refusal = next(r for r in env.status()["refusals"] if r.startswith("headroom srv3"))
    assert "ipv4_routes" in refusal
    assert cidr["srv3"] not in env.kernel_routes()
    assert "deny any" in prefix_list(env, "swp3")  # session up, accepting nothing
    assert cidr["srv3"] not in prefix_list(env, "swp3")
    rows = headroom_rows(env)
    v4 = rows["ipv4_routes"]
    assert (v4["capacity"], v4["desired"], v4["admitted"]) == (5, 6, 4)
    assert v4["source"] == "config" and v4["threshold"] == "raised"
    record(request.config, f"headroom in the lab: {json.dumps(v4)}")

    env.api.delete_node("srv1")
    env.wait(lambda: cidr["srv3"] in env.kernel_routes(), 30.0,
             "srv3 admitted once srv1 left")
    assert cidr["srv1"] not in env.kernel_routes()
    assert cidr["srv3"] in prefix_list(env, "swp3")
    assert not any(r.startswith("headroom") for r in env.status()["refusals"])
    v4 = headroom_rows(env)["ipv4_routes"]
    assert (v4["desired"], v4["admitted"]) == (4, 4)

    # srv1 returns: the programmed nodes keep their entries, the newcomer waits.
    env.add_server_node("srv1")
    env.wait(lambda: any(r.startswith("headroom srv1") for r in env.status()["refusals"]),
             20.0, "the returning srv1 waits: working state is never evicted")
    assert cidr["srv3"] in env.kernel_routes() and cidr["srv2"] in env.kernel_routes()
    assert cidr["srv1"] not in env.kernel_routes()
