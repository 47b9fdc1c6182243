"""The gRPC status service of the agent running on leaf1, queried by fabricctl and by a plain
gRPC client that knows the service only through reflection (grpcurl)."""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from lab.agent_lab import REPO, SERVERS, AgentLab
from tests.grpcurl import grpcurl, grpcurl_json
from tests.integration.expect import bgp_summary, expect_json, expected

SERVICE = "kube_fabric_agent.v1.FabricStatus"


@pytest.fixture(scope="module", autouse=True)
def nodes(env: AgentLab) -> Iterator[None]:
    for name in SERVERS:
        env.add_server_node(name)
    expect_json(env, lambda: bgp_summary(env), expected("leaf1-sessions"), 60.0,
                "sessions Established")
    yield


def ctl(env: AgentLab, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    res = env.fabricctl_run(*args)
    if check:
        assert res.returncode == 0, res.stderr
    return res


def ctl_json(env: AgentLab, *args: str) -> Any:
    return json.loads(ctl(env, *args, "--json").stdout)


def test_attachments_and_status(env: AgentLab) -> None:
    def all_established() -> bool:
        rows = {a["port"]: a for a in ctl_json(env, "attachments")}
        return all(rows.get(s["port"], {}).get("bgp_state") == "established"
                   for s in SERVERS.values())
    env.wait(all_established, 30.0, "fabricctl attachments to show established sessions")
    rows = {a["port"]: a for a in ctl_json(env, "attachments")}
    for name, srv in SERVERS.items():
        row = rows[srv["port"]]
        assert (row["node"], row["routing"]) == (name, "bgp")
        assert srv["cidr"] in row["prefixes"]
    status = ctl_json(env, "status")
    assert status["health"] == "ok", status
    assert status["kubernetes"]["connected"] is True
    table = ctl(env, "attachments").stdout
    assert "srv1" in table and "established" in table
    headroom = {r["resource"]: r for r in ctl_json(env, "headroom")}
    assert set(headroom) == {"ipv4_routes", "ipv6_routes", "nexthops", "neighbors",
                             "fdb_entries", "remote_vteps", "nexthop_groups"}
    assert headroom["ipv4_routes"]["desired"] >= 6  # three pod CIDRs, three host routes


def test_locate_a_pod_created_in_the_api(env: AgentLab) -> None:
    env.api.create_pod("web-1", "shop", node_name="srv2", pod_ip="10.244.2.23")

    def located() -> Any:
        res = ctl(env, "locate", "10.244.2.23", "--json", check=False)
        return json.loads(res.stdout) if res.returncode == 0 else None
    env.wait(located, 20.0, "fabricctl locate to find the pod")
    answer = located()
    assert (answer["node"], answer["port"]) == ("srv2", "swp2")
    assert answer["pod"]["namespace"] == "shop" and answer["pod"]["name"] == "web-1"
    by_name = ctl_json(env, "locate", "shop/web-1")
    assert by_name["port"] == "swp2"
    # inside srv2's pod CIDR: located by prefix even though no pod has that IP
    assert ctl_json(env, "locate", "10.244.2.99")["matched"] == "pod_prefix"
    nowhere = ctl(env, "locate", "10.1.2.3", check=False)
    assert nowhere.returncode == 5, nowhere.stderr


def test_watch_events_delivers_a_scripted_scenario_in_order(env: AgentLab) -> None:
    follower = subprocess.Popen(
        env.fabricctl_argv("--json", "events", "--follow"), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True, cwd=REPO)
    seen: list[tuple[str, str]] = []

    def read() -> None:  # a blocking readline must not sit inside a poll with a deadline
        assert follower.stdout is not None
        for line in follower.stdout:
            event = json.loads(line)
            seen.append((event["kind"], event["subject"]))
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        env.api.create_pod("api-0", "shop", node_name="srv1", pod_ip="10.244.1.40")
        env.wait(lambda: ctl(env, "locate", "shop/api-0", check=False).returncode == 0, 20.0,
                 "the pod indexed")
        env.lab.exec("srv3", ["ip", "link", "set", "dev", "eth1", "down"])
        env.wait(lambda: not env.established("swp3"), 30.0, "srv3's session down")
        env.lab.exec("srv3", ["ip", "link", "set", "dev", "eth1", "up"])
        env.wait(lambda: env.established("swp3"), 60.0, "srv3's session up again")
        wanted = [("pod_added", "shop/api-0"), ("session_down", "swp3"), ("session_up", "swp3")]

        def in_order() -> bool:
            """Each wanted event after the previous one (the replayed history holds an earlier
            session_up of swp3, which must not count)."""
            at = 0
            for w in wanted:
                try:
                    at = seen.index(w, at) + 1
                except ValueError:
                    return False
            return True
        env.wait(in_order, 30.0, f"the scenario's events in order (seen: {seen})")
    finally:
        follower.terminate()
        follower.wait(timeout=10)
        reader.join(timeout=10)


def test_grpcurl_through_reflection(env: AgentLab) -> None:
    """grpcurl, knowing the service only by reflection, lists, describes and calls it."""
    sock = env.workdir / "agent.sock"
    listed = grpcurl(sock, "list")
    assert listed.returncode == 0, listed.stderr
    assert {SERVICE, "grpc.health.v1.Health"} <= set(listed.stdout.split())
    assert "rpc ListAttachments" in grpcurl(sock, "describe", SERVICE).stdout
    assert grpcurl_json(sock, "grpc.health.v1.Health/Check") == {"status": "SERVING"}
    reply = grpcurl_json(sock, f"{SERVICE}/ListAttachments")
    nodes = {a["node"] for a in next(iter(reply.values()))}
    assert set(SERVERS) <= nodes, reply
