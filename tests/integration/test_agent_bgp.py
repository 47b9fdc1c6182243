"""The agent on a real FRR leaf, driven through the Kubernetes API test server.

Every assertion polls FRR's JSON or the leaf kernel with a deadline (topotest style). The lab is
shared by the module; tests run in file order and put back what they change.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from typing import Any

import pytest

from lab.agent_lab import LEAF, SERVERS, AgentLab
from tests.integration.measurements import record

SPINE = "spine1"


@pytest.fixture(scope="module", autouse=True)
def nodes(env: AgentLab) -> Iterator[None]:
    for name in SERVERS:
        env.add_server_node(name)
    env.wait(
        lambda: all(env.established(SERVERS[n]["port"]) for n in SERVERS),
        60.0,
        "sessions with srv1..srv3 Established",
    )
    yield


def neighbor(env: AgentLab, port: str) -> dict[str, Any]:
    return env.lab.vtysh_json(LEAF, f"show bgp neighbors {port} json").get(port, {})


def connections(env: AgentLab) -> dict[str, int]:
    """How often each server session has come up: unchanged means no flap."""
    return {
        s["port"]: neighbor(env, s["port"]).get("connectionsEstablished", -1)
        for s in SERVERS.values()
    }


def spine_routes(env: AgentLab) -> dict[str, Any]:
    return env.lab.vtysh_json(SPINE, "show bgp ipv4 unicast json").get("routes", {})


def leaf_path(env: AgentLab, prefix: str) -> dict[str, Any]:
    paths = env.lab.vtysh_json(LEAF, f"show bgp ipv4 unicast {prefix} json").get("paths", [])
    return paths[0] if paths else {}


def test_sessions_established_and_pod_cidrs_installed(env: AgentLab) -> None:
    routes = {}

    def installed() -> bool:
        routes.update(env.kernel_routes())
        return all(s["cidr"] in routes and s["ip"] in routes for s in SERVERS.values())

    env.wait(installed, 30.0, "each node's pod CIDR and InternalIP in leaf1's kernel")
    for srv in SERVERS.values():
        assert routes[srv["cidr"]]["dev"] == srv["port"]
        assert routes[srv["cidr"]]["protocol"] == "bgp"
    env.wait(
        lambda: all(s["cidr"] in spine_routes(env) for s in SERVERS.values()),
        30.0,
        "pod CIDRs advertised to the spine",
    )


def test_prefixes_a_node_does_not_own_are_not_installed(env: AgentLab) -> None:
    # srv1 announces 10.99.0.0/24 (nobody's), 10.244.2.0/24 and 10.244.2.128/25 (srv2's).
    srv1_sent = env.lab.vtysh_json("srv1", "show bgp ipv4 unicast json")["routes"]
    assert {"10.99.0.0/24", "10.244.2.128/25"} <= set(srv1_sent), "lab must send the bait"
    received = neighbor(env, "swp1")["addressFamilyInfo"]["ipv4Unicast"]
    assert received["acceptedPrefixCounter"] == 2  # its pod CIDR and its InternalIP, only
    routes = env.kernel_routes()
    assert "10.99.0.0/24" not in routes and "10.244.2.128/25" not in routes
    assert routes["10.244.2.0/24"]["dev"] == "swp2"
    spine = spine_routes(env)
    assert "10.99.0.0/24" not in spine and "10.244.2.128/25" not in spine


def test_node_change_to_applied_config_latency(
    env: AgentLab, request: pytest.FixtureRequest
) -> None:
    """Time from a Node update at the API server to the change being live in FRR."""
    samples = []
    for i in range(5):
        cidr = f"10.244.{30 + i}.0/24"
        t0 = time.monotonic()
        env.api.patch_node("srv3", {"spec": {"podCIDRs": [cidr], "podCIDR": cidr}})
        env.wait(
            lambda c=cidr: c in env.lab.vtysh(LEAF, "show ip prefix-list KFA-NODE-swp3-V4"),
            15.0,
            f"{cidr} in srv3's prefix list",
        )
        samples.append(time.monotonic() - t0)
    original = SERVERS["srv3"]["cidr"]
    env.api.patch_node("srv3", {"spec": {"podCIDRs": [original], "podCIDR": original}})
    env.wait(lambda: original in env.kernel_routes(), 20.0, "srv3's pod CIDR back")
    line = (
        f"Node change -> FRR config live: median {statistics.median(samples):.2f}s, "
        f"max {max(samples):.2f}s over {len(samples)} changes"
    )
    record(request.config, line)
    print(line)
    assert max(samples) < 10.0


def test_cordon_drains_gracefully_and_uncordon_restores(env: AgentLab) -> None:
    cidr = SERVERS["srv1"]["cidr"]
    before = connections(env)
    env.api.patch_node("srv1", {"spec": {"unschedulable": True}})
    env.wait(lambda: leaf_path(env, cidr).get("locPrf") == 0, 20.0, "local-pref 0 on srv1")
    path = leaf_path(env, cidr)
    assert "graceful-shutdown" in path.get("community", {}).get("string", "")
    assert cidr in env.kernel_routes(), "draining keeps forwarding"

    def spine_prepended() -> bool:
        route = spine_routes(env).get(cidr, [{}])[0]
        return route.get("path", "").split().count("65101") == 4

    env.wait(spine_prepended, 20.0, "spine sees srv1's CIDR with a prepended AS path")
    env.api.patch_node("srv1", {"spec": {"unschedulable": False}})
    env.wait(lambda: leaf_path(env, cidr).get("locPrf") != 0, 20.0, "srv1 undrained")
    assert connections(env) == before, "cordon must not reset sessions"


def test_hostile_node_is_refused_and_nothing_reaches_frr(env: AgentLab) -> None:
    before = connections(env)
    env.api.admin(
        "inject/nodes",
        {
            "metadata": {
                "name": "evil\nrouter bgp 1",
                "annotations": {
                    "kube-fabric-agent.io/switch-port":
                        "leaf1/swp4\n neighbor swp4 remote-as internal"
                },
            },
            "spec": {"podCIDR": "10.244.66.0/24\nip prefix-list KFA-NODE-swp1-V4 permit any"},
        },
    )
    env.api.create_node(
        "intruder",
        annotations={"kube-fabric-agent.io/switch-port": "leaf1/swp4\n shutdown"},
        pod_cidrs=["10.244.1.0/25"],
    )
    env.wait(
        lambda: any("intruder" in r for r in env.status().get("refusals", [])),
        15.0,
        "the refusal in the agent's status",
    )
    refusals = env.status()["refusals"]
    assert any("evil" in r and "DNS-1123" in r for r in refusals)
    config = env.running_config()
    assert "remote-as internal" not in config and "router bgp 1\n" not in config
    assert "permit any" not in config
    assert env.agent_proc is not None and env.agent_proc.poll() is None
    assert connections(env) == before
    env.api.delete_node("intruder")


def test_api_server_restart_does_not_disturb_sessions(env: AgentLab) -> None:
    before = connections(env)
    env.stop_api()
    env.wait(
        lambda: env.status().get("serving_last_known_state"),
        30.0,
        "status to say the agent serves its last known state",
    )
    assert connections(env) == before
    assert all(s["cidr"] in env.kernel_routes() for s in SERVERS.values())
    env.start_api()  # same port, same objects and resourceVersions (state file)
    env.wait(
        lambda: env.status().get("kubernetes", {}).get("connected"), 30.0, "the agent reconnected"
    )
    # A change made after the restart still arrives.
    env.api.patch_node("srv3", {"metadata": {"labels": {"after-restart": "yes"}}})
    env.api.patch_node("srv1", {"spec": {"unschedulable": True}})
    env.wait(
        lambda: leaf_path(env, SERVERS["srv1"]["cidr"]).get("locPrf") == 0,
        20.0,
        "a change after the restart applied",
    )
    env.api.patch_node("srv1", {"spec": {"unschedulable": False}})
    env.wait(lambda: leaf_path(env, SERVERS["srv1"]["cidr"]).get("locPrf") != 0, 20.0, "undrained")
    assert connections(env) == before


def test_expired_resource_version_relists_without_disturbing_sessions(env: AgentLab) -> None:
    before = connections(env)
    relists = env.agent_log.read_text().count("relisting")
    env.stop_api()
    # Another replica takes a write the agent's server never streams; when ours comes back its
    # history starts after the agent's resourceVersion: the watch gets 410 Gone, and only a
    # relist can reveal that srv3 was deleted.
    with env.other_api_replica() as replica:
        replica.delete_node("srv3")
    env.start_api()
    env.wait(lambda: SERVERS["srv3"]["cidr"] not in env.kernel_routes(), 30.0,
             "srv3's routes withdrawn after the relist")
    assert env.agent_log.read_text().count("relisting") > relists
    assert {k: v for k, v in connections(env).items() if k != "swp3"} == {
        k: v for k, v in before.items() if k != "swp3"}
    env.add_server_node("srv3")
    env.wait(lambda: SERVERS["srv3"]["cidr"] in env.kernel_routes(), 30.0, "srv3 back")


def test_deleting_a_node_removes_its_session(env: AgentLab) -> None:
    env.api.delete_node("srv3")
    env.wait(
        lambda: "k8s-node:none" in neighbor(env, "swp3").get("nbrDesc", ""),
        20.0,
        "swp3 back to an unknown port",
    )
    config = env.running_config()
    assert "KFA-NODE-swp3" not in config
    assert " neighbor swp3 route-map KFA-DENY in" in config
    env.wait(
        lambda: SERVERS["srv3"]["cidr"] not in env.kernel_routes(),
        20.0,
        "srv3's pod CIDR withdrawn from the leaf",
    )
    env.wait(lambda: SERVERS["srv3"]["cidr"] not in spine_routes(env), 20.0, "and from the spine")
    env.add_server_node("srv3")
    env.wait(lambda: SERVERS["srv3"]["cidr"] in env.kernel_routes(), 30.0, "srv3 back")


def test_moving_a_node_to_another_port_follows(env: AgentLab) -> None:
    cidr = SERVERS["srv2"]["cidr"]
    env.lab.relink("leaf1:swp2", "leaf1:swp4")
    env.api.patch_node(
        "srv2", {"metadata": {"annotations": {"kube-fabric-agent.io/switch-port": "leaf1/swp4"}}}
    )
    env.wait(lambda: env.established("swp4"), 60.0, "srv2's session on swp4")
    env.wait(
        lambda: env.kernel_routes().get(cidr, {}).get("dev") == "swp4",
        30.0,
        "srv2's pod CIDR via swp4",
    )
    assert "KFA-NODE-swp2" not in env.running_config()
    # and back, so the cabling matches the topology file again
    env.lab.relink("leaf1:swp4", "leaf1:swp2")
    env.api.patch_node(
        "srv2", {"metadata": {"annotations": {"kube-fabric-agent.io/switch-port": "leaf1/swp2"}}}
    )
    env.wait(
        lambda: env.kernel_routes().get(cidr, {}).get("dev") == "swp2", 60.0, "srv2 back on swp2"
    )


def test_hand_edit_of_frr_is_repaired(env: AgentLab) -> None:
    cidr = SERVERS["srv1"]["cidr"]
    env.lab.vtysh(
        LEAF, "configure terminal", f"no ip prefix-list KFA-NODE-swp1-V4 seq 10 permit {cidr}"
    )
    env.wait(
        lambda: cidr in env.lab.vtysh(LEAF, "show ip prefix-list KFA-NODE-swp1-V4"),
        20.0,
        "the resync to put srv1's prefix back",
    )
    env.wait(lambda: cidr in env.kernel_routes(), 20.0, "srv1's pod CIDR back in the kernel")


def test_bgpd_crash_is_survived(env: AgentLab) -> None:
    env.lab.frr_restart(LEAF, "bgpd")
    env.wait(
        lambda: all(env.established(s["port"]) for s in SERVERS.values()),
        60.0,
        "sessions back after bgpd restarted",
    )
    env.wait(
        lambda: all(s["cidr"] in env.kernel_routes() for s in SERVERS.values()), 30.0, "routes back"
    )
    assert env.agent_proc is not None and env.agent_proc.poll() is None
    assert "KFA-NODE-swp1-IN-V4" in env.running_config()


def test_agent_restart_changes_nothing(env: AgentLab) -> None:
    before = connections(env)
    config = env.running_config()
    old_start = env.status()["started"]
    assert env.stop_agent() == 0
    assert env.running_config() == config, "stopping the agent must leave FRR as it is"
    env.start_agent()
    env.wait(
        lambda: (
            env.status().get("started") != old_start
            and (env.status().get("frr_last_apply") or {}).get("action") == "in-sync"
        ),
        30.0,
        "the restarted agent to find FRR already in sync",
    )
    assert connections(env) == before
    assert env.running_config() == config


def test_lldp_attaches_a_node_without_annotation(env: AgentLab) -> None:
    env.start_lldpd(LEAF, ["swp1", "swp2", "swp3", "swp4"], "leaf1")
    env.start_lldpd("srv3", ["eth1"], "srv3.lab.example")  # FQDN: matched by its first label
    env.api.delete_node("srv3")
    env.wait(lambda: SERVERS["srv3"]["cidr"] not in env.kernel_routes(), 20.0, "srv3 gone")
    srv = SERVERS["srv3"]
    env.api.create_node("srv3", pod_cidrs=[srv["cidr"]], internal_ip=srv["ip"])

    def attached_by_lldp() -> bool:
        return any(a["node"] == "srv3" and a["port"] == "swp3" and a["source"] == "lldp"
                   for a in env.status().get("attachments", []))
    env.wait(attached_by_lldp, 45.0, "srv3 attached to swp3 through LLDP")
    env.wait(lambda: srv["cidr"] in env.kernel_routes(), 30.0, "srv3's pod CIDR via LLDP")
    assert env.status().get("lldp_error") is None
    # An annotation takes precedence over LLDP, and the disagreement is reported.
    env.api.patch_node("srv3", {"metadata": {"annotations": {
        "kube-fabric-agent.io/switch-port": "leaf1/swp4"}}})
    env.wait(lambda: any("lldp says swp3 but annotation says swp4" in r
                         for r in env.status().get("refusals", [])), 20.0,
             "the LLDP/annotation disagreement reported")
    env.wait(lambda: srv["cidr"] not in env.kernel_routes(), 20.0,
             "srv3's routes follow the annotation (nothing on swp4)")
    env.api.patch_node("srv3", {"metadata": {"annotations": {
        "kube-fabric-agent.io/switch-port": "leaf1/swp3"}}})
    env.wait(lambda: srv["cidr"] in env.kernel_routes(), 30.0, "srv3 back on swp3")
