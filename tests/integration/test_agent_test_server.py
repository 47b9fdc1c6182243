"""The agent against the API test server (lab/kubeapi), for what a real kube-apiserver cannot
be made to send on demand: objects its validation would refuse (a server of another version, a
bug, a restored backup). Everything else runs against the real server (conftest's ``env``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lab.agent_lab import SERVERS, AgentLab
from tests.integration.expect import bgp_summary, expect_json, expected, session_counters


@pytest.fixture(scope="module")
def env() -> Iterator[AgentLab]:
    with AgentLab(prefix="kfat", api="test") as lab_env:
        for name in SERVERS:
            lab_env.add_server_node(name)
        expect_json(lab_env, lambda: bgp_summary(lab_env), expected("leaf1-sessions"), 60.0,
                    "sessions with srv1..srv3 and the spine Established")
        yield lab_env


def test_objects_a_real_server_would_refuse_are_refused_and_nothing_reaches_frr(
    env: AgentLab,
) -> None:
    before = session_counters(env)
    env.api.admin("inject/nodes", {
        "metadata": {
            "name": "evil\nrouter bgp 1",
            "annotations": {"kube-fabric-agent.io/switch-port":
                            "leaf1/swp4\n neighbor swp4 remote-as internal"},
        },
        "spec": {"podCIDR": "10.244.66.0/24\nip prefix-list KFA-NODE-swp1-V4 permit any"},
    })
    env.api.admin("inject/nodes", {
        "metadata": {"name": "bad-cidr",
                     "annotations": {"kube-fabric-agent.io/switch-port": "leaf1/swp4"}},
        "spec": {"podCIDRs": ["10.244.4.0/40"]},
    })
    env.wait(lambda: sum(("evil" in r or "bad-cidr" in r)
                         for r in env.status().get("refusals", [])) >= 2,
             15.0, "both refusals in the agent's status")
    refusals = env.status()["refusals"]
    assert any("evil" in r and "DNS-1123" in r for r in refusals), refusals
    config = env.running_config()
    assert "remote-as internal" not in config and "router bgp 1\n" not in config
    assert "permit any" not in config and "10.244.4.0" not in config
    assert env.agent_proc is not None and env.agent_proc.poll() is None
    assert session_counters(env) == before
