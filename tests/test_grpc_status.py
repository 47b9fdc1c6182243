"""The status service end to end: a real grpc.aio server on a real unix socket (and a real
mutual-TLS TCP listener), fabricctl run as a subprocess (also as another user), plain gRPC
clients for reflection, health and event streams. Nothing of gRPC is mocked; the provider is a
plain class with realistic data (tests/fake_status.py).

The server runs on the test's own event loop, so every client runs either as a subprocess
(awaited with asyncio) or in a thread: a blocking call on the loop would deadlock against it.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agent import fabricctl
from agent.status.grpc_gen import status_pb2 as pb
from agent.status.grpc_gen import status_pb2_grpc as pb_grpc
from agent.status.model import EventLog
from agent.status.server import (
    MAX_STREAMS_PER_CLIENT,
    SERVICE_NAME,
    SocketInUse,
    StatusServer,
    client_identity,
)
from lab.kubeapi.client import wait_for
from tests.fake_status import FakeProvider
from tests.grpcurl import grpcurl, grpcurl_json

REPO = Path(__file__).resolve().parents[1]
_SCRIPT = Path(sys.executable).parent / "fabricctl"
# The installed console script is what operators run; fall back to the module in a checkout
# that was not pip-installed.
CTL = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "agent.fabricctl"]
CONTRACT_RESOURCES = [
    "ipv4_routes", "ipv6_routes", "nexthops", "neighbors", "fdb_entries", "remote_vteps",
]


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


async def run_ctl(*args: str, user: str | None = None, limit: float = 30) -> Result:
    """Run fabricctl and wait for it without blocking the loop that serves it."""
    cmd = [*CTL, *args]
    if user is not None:
        entry = pwd.getpwnam(user)
        cmd = ["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}",
               "--clear-groups", "--", *cmd]
    proc = await asyncio.create_subprocess_exec(
        *cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        async with asyncio.timeout(limit):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return Result(proc.returncode, out.decode(), err.decode())


@dataclass
class Served:
    server: StatusServer
    provider: FakeProvider
    events: EventLog
    path: Path

    @property
    def target(self) -> str:
        return f"unix:{self.path}"


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    # Not tmp_path: its parents are 0700, and the permission tests need a directory another
    # user can traverse, so that only the socket's own mode decides.
    path = Path(tempfile.mkdtemp(prefix="kfa-status-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def served(sock_dir: Path) -> AsyncIterator[Served]:
    provider, events = FakeProvider(), EventLog()
    path = sock_dir / "agent.sock"
    server = StatusServer(provider, events, socket_path=path)
    await server.start()
    try:
        yield Served(server, provider, events, path)
    finally:
        await server.stop(grace=0.5)


# ---- the socket ----


async def test_socket_mode_group_and_lifecycle(sock_dir: Path) -> None:
    path = sock_dir / "agent.sock"
    nogroup = pwd.getpwnam("nobody").pw_gid
    server = StatusServer(FakeProvider(), EventLog(), socket_path=path, socket_group=nogroup)
    await server.start()
    try:
        st = os.lstat(path)
        assert stat.S_ISSOCK(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == 0o660
        assert (st.st_uid, st.st_gid) == (os.geteuid(), nogroup)
        assert sorted(os.listdir(sock_dir)) == ["agent.sock"]  # staging directory gone
        # A second agent must not steal a live socket.
        with pytest.raises(SocketInUse, match="already serves"):
            await StatusServer(FakeProvider(), EventLog(), socket_path=path).start()
        assert os.lstat(path).st_ino == st.st_ino
    finally:
        await server.stop(grace=0.1)
    assert not path.exists()


async def test_a_stale_socket_is_replaced_and_a_regular_file_is_not(sock_dir: Path) -> None:
    path = sock_dir / "agent.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # bound, never listening: what a crashed agent leaves
    async with StatusServer(FakeProvider(), EventLog(), socket_path=path):
        assert (await run_ctl("--socket", str(path), "status")).code == 0
    path.write_text("not a socket")
    with pytest.raises(SocketInUse, match="not a socket"):
        await StatusServer(FakeProvider(), EventLog(), socket_path=path).start()
    assert path.read_text() == "not a socket"


def test_tcp_needs_mutual_tls() -> None:
    with pytest.raises(ValueError, match="tls_cert, tls_key and tls_client_ca"):
        StatusServer(FakeProvider(), EventLog(), socket_path=None, tcp_address="127.0.0.1:0")
    with pytest.raises(ValueError, match="too long"):
        StatusServer(FakeProvider(), EventLog(), socket_path="/run/" + "x" * 100)


# ---- fabricctl: the contract's commands and shapes ----


def table_rows(text: str) -> list[list[str]]:
    """Rows of a fabricctl table split on runs of 2+ spaces (cells never contain those)."""
    import re

    return [re.split(r"\s{2,}", line.strip()) for line in text.splitlines() if line.strip()]


async def test_attachments(served: Served) -> None:
    human = await run_ctl("--socket", str(served.path), "attachments")
    assert human.code == 0, human.err
    rows = table_rows(human.out)
    assert rows[0] == ["PORT", "NODE", "SOURCE", "ROUTING", "BGP", "ACCEPTED", "PODS",
                       "PREFIXES", "NOTE"]
    assert rows[1][:7] == ["swp1", "node-a", "annotation", "bgp", "established", "3", "3"]
    assert rows[1][7] == "10.244.1.0/24, fd00:10:244:1::/64, 192.168.10.11/32"
    assert rows[2][-1] == "draining"
    assert rows[4][:5] == ["swp4", "node-d", "annotation", "vxlan", "not_configured"]
    assert rows[4][-1] == "vtep 192.168.10.14"

    doc = (await run_ctl("--socket", str(served.path), "attachments", "--json")).json()
    assert isinstance(doc, list) and len(doc) == 4
    for entry in doc:
        assert {"node", "port", "routing"} <= entry.keys()
    assert doc[0] == {
        "port": "swp1",
        "node": "node-a",
        "source": "annotation",
        "routing": "bgp",
        "bgp_state": "established",
        "prefixes": ["10.244.1.0/24", "fd00:10:244:1::/64", "192.168.10.11/32"],
        "prefixes_accepted": 3,
        "draining": False,
        "node_ips": ["192.168.10.11"],
        "vtep": None,
        "pods": 3,
    }
    assert [(e["port"], e["routing"]) for e in doc] == [
        ("swp1", "bgp"), ("swp2", "bgp"), ("swp3", "static"), ("swp4", "vxlan")
    ]


async def test_headroom(served: Served) -> None:
    human = await run_ctl("--socket", str(served.path), "headroom")
    assert human.code == 0, human.err
    rows = table_rows(human.out)
    assert rows[0] == ["RESOURCE", "USED", "DESIRED", "CAPACITY", "PERCENT", "THRESHOLD",
                       "NODES LEFT", "SOURCE"]
    assert [r[0] for r in rows[1:]] == CONTRACT_RESOURCES
    assert rows[1][:7] == ["ipv4_routes", "1204", "1206", "81920", "1.5%", "ok", "26900"]
    assert rows[5][:7] == ["fdb_entries", "-", "12", "unlimited", "-", "unknown", "-"]

    doc = (await run_ctl("--json", "--socket", str(served.path), "headroom")).json()
    assert [e["resource"] for e in doc] == CONTRACT_RESOURCES
    for entry in doc:
        assert {"resource", "used", "desired", "capacity", "source", "nodes_left"} <= entry.keys()
    assert doc[0]["used"] == 1204 and doc[0]["capacity"] == 81920
    assert doc[0]["nodes_left"] == 26900 and doc[0]["source"].startswith("Spectrum-2")
    assert doc[4]["capacity"] is None and doc[4]["nodes_left"] is None and doc[4]["used"] is None


async def test_status(served: Served) -> None:
    human = await run_ctl("--socket", str(served.path), "status")
    assert human.code == 0, human.err
    lines = human.out.splitlines()
    assert lines[0] == "kube-fabric-agent 0.1.0 on leaf1: ok"
    assert "connected, synced, 212 nodes, last contact 0.4 s ago" in human.out
    assert "frr        ok      reloaded" in human.out
    assert "refusals: 2" in human.out
    # The refused name carries an escaped newline; it must reach the terminal escaped.
    assert "'node-x\\nrouter bgp 1'" in human.out
    assert not any(line.startswith("router bgp") for line in lines)

    doc = (await run_ctl("--socket", str(served.path), "status", "--json")).json()
    assert doc["health"] == "ok" and doc["version"] == "0.1.0"
    assert doc["started_at"] == "2026-11-18T11:06:40.000Z"
    assert doc["kubernetes"] == {
        "connected": True, "synced": True, "last_error": None, "seconds_since_contact": 0.4,
        "resource_version": "48213", "nodes": 212, "serving_last_known_state": False,
    }
    assert [(a["applier"], a["ok"], a["action"]) for a in doc["last_applies"]] == [
        ("frr", True, "reloaded"), ("dataplane", True, "applied")
    ]
    assert doc["last_applies"][0]["at"] == "2026-11-18T11:07:41.500Z"
    assert doc["refusals"][1] == {
        "kind": "prefix", "name": "node-b 10.99.0.0/24", "reason": "outside fabric.pod_supernets"
    }


async def test_routes_and_vteps(served: Served) -> None:
    routes = await run_ctl("--socket", str(served.path), "routes")
    assert routes.code == 0, routes.err
    rows = table_rows(routes.out)
    assert rows[0] == ["PREFIX", "OWNER", "ROUTING", "NEXT HOP", "DEVICE", "STATE"]
    assert ["10.244.4.0/24", "node-d", "vxlan", "10.244.4.0", "flannel.1", "missing"] in rows
    assert ["10.244.9.0/24", "-", "static", "192.168.10.19", "-", "stale"] in rows
    doc = (await run_ctl("--socket", str(served.path), "routes", "--json")).json()
    assert doc[3] == {"prefix": "10.244.3.0/24", "owner": "node-c", "routing": "static",
                      "next_hop": "192.168.10.13", "device": "", "desired": True,
                      "observed": True, "state": "ok"}
    vteps = (await run_ctl("--socket", str(served.path), "vteps", "--json")).json()
    assert vteps == [{"owner": "node-d", "vtep_ip": "192.168.10.14", "mac": "aa:bb:cc:00:00:04",
                      "pod_cidr": "10.244.4.0/24", "vni": 1, "desired": True, "observed": True,
                      "state": "ok"}]


async def test_locate(served: Served) -> None:
    doc = (await run_ctl("--socket", str(served.path), "locate", "10.244.1.17", "--json")).json()
    assert (doc["node"], doc["port"], doc["routing"]) == ("node-a", "swp1", "bgp")
    assert doc["matched"] == "pod_ip" and doc["route_prefix"] == "10.244.1.0/24"
    assert doc["pod"]["namespace"] == "shop" and doc["pod"]["name"] == "web-1"

    human = await run_ctl("--socket", str(served.path), "locate", "shop/cache-0")
    assert human.code == 0, human.err
    assert human.out.splitlines()[0] == "pod shop/cache-0 (10.244.4.5, Running)"
    assert "  port      swp4" in human.out and "  vtep      192.168.10.14" in human.out

    node = (await run_ctl("--socket", str(served.path), "locate", "192.168.10.13",
                          "--json")).json()
    assert (node["matched"], node["node"], node["port"]) == ("node_ip", "node-c", "swp3")


async def test_locate_not_found_and_malformed(served: Served) -> None:
    missing = await run_ctl("--socket", str(served.path), "locate", "10.99.0.1")
    assert missing.code == fabricctl.EXIT_NOT_FOUND
    assert missing.out == ""
    assert missing.err == ("fabricctl: 10.99.0.1 is no pod, node or Service VIP address behind "
                           "this leaf\n")
    bad = await run_ctl("--socket", str(served.path), "locate", "node-a\nrouter bgp 1")
    assert bad.code == fabricctl.EXIT_USAGE
    assert bad.err.count("\n") == 1 and "not a pod IP" in bad.err


CONTRACT_SERVICE_FIELDS = {"vip", "service", "policy", "nodes_permitted", "nodes_announcing",
                           "state"}


async def test_services(served: Served) -> None:
    human = await run_ctl("--socket", str(served.path), "services")
    assert human.code == 0, human.err
    rows = table_rows(human.out)
    assert rows[0] == ["VIP", "SERVICE", "POLICY", "STATE", "PERMITTED", "ANNOUNCING", "NOTE"]
    assert rows[1] == ["203.0.113.10", "shop/web", "Cluster", "ok",
                       "node-a (swp1), node-b (swp2)", "node-a, node-b", "-"]
    assert rows[2] == ["203.0.113.20", "shop/db", "Local", "no-announcer", "node-a (swp1)", "-",
                       "-"]
    assert rows[3][:6] == ["203.0.113.30", "shop/api, shop/api-canary", "mixed", "ok",
                           "node-a (swp1), node-b (swp2)", "node-b"]
    assert rows[4] == ["198.51.100.7", "shop/legacy", "Cluster", "refused", "-", "-",
                       "198.51.100.7 is outside fabric.service_pools"]
    assert rows[5][0] == "2001:db8:5::10" and len(rows) == 6

    result = await run_ctl("--socket", str(served.path), "services", "--json")
    assert result.code == 0, result.err
    doc = result.json()
    assert isinstance(doc, list) and len(doc) == 5
    for entry in doc:
        assert CONTRACT_SERVICE_FIELDS <= entry.keys()
    assert doc[2] == {
        "vip": "203.0.113.30", "service": "shop/api", "services": ["shop/api", "shop/api-canary"],
        "policy": "mixed", "nodes_permitted": ["node-a", "node-b"],
        "nodes_announcing": ["node-b"], "state": "ok", "reason": None,
        "prefix": "203.0.113.30/32", "ports": {"node-a": "swp1", "node-b": "swp2"},
    }
    assert [(e["state"], e["reason"]) for e in doc if e["state"] != "ok"] == [
        ("no-announcer", None), ("refused", "198.51.100.7 is outside fabric.service_pools")]


async def test_services_when_the_fib_is_not_known_and_when_there_are_none(
        served: Served) -> None:
    from agent.status.services import service_infos
    from tests.fake_status import ATTACHMENTS, SERVICE_VIPS

    served.provider.services = lambda: service_infos(  # type: ignore[method-assign]
        SERVICE_VIPS, ATTACHMENTS, None)
    doc = (await run_ctl("--socket", str(served.path), "services", "--json")).json()
    assert [(e["state"], e["nodes_announcing"]) for e in doc] == [
        ("unknown", None), ("unknown", None), ("unknown", None), ("refused", None),
        ("unknown", None)]
    human = await run_ctl("--socket", str(served.path), "services")
    assert table_rows(human.out)[1][3:6] == ["unknown", "node-a (swp1), node-b (swp2)",
                                             "unknown"]
    served.provider.services = lambda: []  # type: ignore[method-assign]
    none = await run_ctl("--socket", str(served.path), "services", "--json")
    assert (none.code, none.json()) == (0, [])


async def test_locate_a_service_vip(served: Served) -> None:
    doc = (await run_ctl("--socket", str(served.path), "locate", "203.0.113.30", "--json")).json()
    assert {"node", "port"} <= doc.keys()
    assert (doc["matched"], doc["node"], doc["port"]) == ("service_vip", "node-b", "swp2")
    assert doc["route_prefix"] == "203.0.113.30/32" and doc["bgp_state"] == "established"
    assert doc["service"]["services"] == ["shop/api", "shop/api-canary"]
    assert doc["service"]["ports"] == {"node-a": "swp1", "node-b": "swp2"}

    human = await run_ctl("--socket", str(served.path), "locate", "203.0.113.30")
    assert human.code == 0, human.err
    lines = human.out.splitlines()
    assert lines[:4] == ["service VIP 203.0.113.30: ok",
                         "  services  shop/api, shop/api-canary",
                         "  policy    mixed",
                         "  prefix    203.0.113.30/32"]
    assert table_rows("\n".join(lines[5:])) == [
        ["NODE", "PORT", "PERMITTED", "ANNOUNCING"],
        ["node-a", "swp1", "yes", "no"],
        ["node-b", "swp2", "yes", "yes"]]

    refused = await run_ctl("--socket", str(served.path), "locate", "198.51.100.7")
    assert refused.out.splitlines() == [
        "service VIP 198.51.100.7: refused", "  services  shop/legacy", "  policy    Cluster",
        "  prefix    198.51.100.7/32", "  reason    198.51.100.7 is outside fabric.service_pools",
        "  no node is permitted to announce it, and none does"]
    ipv6 = (await run_ctl("--socket", str(served.path), "locate", "2001:DB8:5::10",
                          "--json")).json()
    assert (ipv6["node"], ipv6["port"], ipv6["service"]["vip"]) == ("node-a", "swp1",
                                                                   "2001:db8:5::10")


async def test_grpcurl_lists_services_through_reflection(served: Served) -> None:
    reply = await asyncio.to_thread(grpcurl_json, served.path, f"{SERVICE_NAME}/ListServices")
    first = reply["services"][0]
    assert (first["vip"], first["service"], first["state"]) == (
        "203.0.113.10", "shop/web", "SERVICE_VIP_STATE_OK")
    assert first["nodes_announcing"] == ["node-a", "node-b"] and first["announcing_known"]
    assert "ports" not in first  # once for the whole list, not per VIP
    assert reply["ports"] == {"node-a": "swp1", "node-b": "swp2"}


async def test_service_events_reach_fabricctl(served: Served) -> None:
    served.events.emit("service_vip_added", "203.0.113.10",
                       "shop/web (Cluster); nodes permitted: node-a, node-b")
    served.events.emit("vip_refused", "198.51.100.7",
                       "shop/legacy (Cluster): 198.51.100.7 is outside fabric.service_pools")
    served.events.emit("service_vip_removed", "203.0.113.40", "no longer named by shop/old "
                       "(Cluster)")
    human = await run_ctl("--socket", str(served.path), "events")
    assert [line.split()[2:4] for line in human.out.splitlines()] == [
        ["service_vip_added", "203.0.113.10"], ["vip_refused", "198.51.100.7"],
        ["service_vip_removed", "203.0.113.40"]]
    doc = (await run_ctl("--socket", str(served.path), "events", "--json", "--kind",
                         "vip_refused", "--kind", "service_vip_removed")).json()
    assert [(e["seq"], e["kind"]) for e in doc] == [(2, "vip_refused"),
                                                    (3, "service_vip_removed")]


async def test_services_exit_codes(served: Served, sock_dir: Path) -> None:
    down = await run_ctl("--socket", str(sock_dir / "nope.sock"), "services", "--json")
    assert (down.code, down.out) == (fabricctl.EXIT_NOT_RUNNING, "")

    def broken() -> Any:
        raise RuntimeError("FIB reading broke")

    served.provider.services = broken  # type: ignore[method-assign]
    failed = await run_ctl("--socket", str(served.path), "services")
    assert failed.code == fabricctl.EXIT_ERROR and "FIB reading broke" in failed.err


async def test_events_history_and_follow(served: Served) -> None:
    served.events.emit("node_attached", "node-a", "swp1 (annotation)")
    served.events.emit("session_up", "swp1", "node-a established")
    served.events.emit("refusal", "node-x", "name is not a DNS-1123 subdomain")

    history = await run_ctl("--socket", str(served.path), "events")
    assert history.code == 0, history.err
    assert [line.split()[1:4] for line in history.out.splitlines()] == [
        ["1", "node_attached", "node-a"], ["2", "session_up", "swp1"], ["3", "refusal", "node-x"],
    ]
    doc = (await run_ctl("--socket", str(served.path), "events", "--json", "--kind",
                         "session_up")).json()
    assert [(e["seq"], e["kind"], e["subject"]) for e in doc] == [(2, "session_up", "swp1")]
    assert doc[0]["message"] == "node-a established" and doc[0]["time"].endswith("Z")

    proc = await asyncio.create_subprocess_exec(
        *CTL, "--socket", str(served.path), "events", "--follow", "--json",
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(20):
            seen = [json.loads(await proc.stdout.readline()) for _ in range(3)]
            assert [e["seq"] for e in seen] == [1, 2, 3]
            served.events.emit("session_down", "swp1", "node-a Idle (hold timer expired)")
            live = json.loads(await proc.stdout.readline())
        assert (live["seq"], live["kind"], live["subject"]) == (4, "session_down", "swp1")
    finally:
        proc.kill()
        await proc.wait()
    # The server noticed the client leaving and dropped its subscription.
    await wait_for(lambda: served.events.subscribers == 0, timeout=10)


async def test_provider_failure_is_an_error_not_a_crash(served: Served) -> None:
    def broken() -> Any:
        raise RuntimeError("route table unreadable")

    served.provider.routes = broken  # type: ignore[method-assign]
    result = await run_ctl("--socket", str(served.path), "routes")
    assert result.code == fabricctl.EXIT_ERROR
    assert "INTERNAL" in result.err and "route table unreadable" in result.err
    assert (await run_ctl("--socket", str(served.path), "vteps")).code == 0


# ---- fabricctl: when the agent cannot be reached ----


async def test_exit_code_when_the_socket_does_not_exist(sock_dir: Path) -> None:
    result = await run_ctl("--socket", str(sock_dir / "nope.sock"), "status")
    assert result.code == fabricctl.EXIT_NOT_RUNNING
    assert result.err.startswith("fabricctl: no status socket at ") and result.err.count("\n") == 1
    assert result.out == ""
    result = await run_ctl("--socket", str(sock_dir / "no-dir" / "agent.sock"), "attachments",
                           "--json")
    assert result.code == fabricctl.EXIT_NOT_RUNNING and result.out == ""


async def test_exit_code_when_nothing_listens(sock_dir: Path) -> None:
    path = sock_dir / "agent.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()
    result = await run_ctl("--socket", str(path), "status")
    assert result.code == fabricctl.EXIT_NOT_RUNNING
    assert "stale socket" in result.err


async def test_exit_code_when_the_agent_does_not_answer(sock_dir: Path) -> None:
    path = sock_dir / "agent.sock"
    mute = socket.socket(socket.AF_UNIX)
    mute.bind(str(path))
    mute.listen(8)  # accepts connections into the backlog, never speaks
    try:
        result = await run_ctl("--socket", str(path), "--timeout", "1", "headroom")
    finally:
        mute.close()
    assert result.code == fabricctl.EXIT_TIMEOUT
    assert "did not answer in time" in result.err


def _can_switch_user() -> bool:
    return os.geteuid() == 0 and shutil.which("setpriv") is not None


@pytest.mark.skipif(not _can_switch_user(), reason="needs root and setpriv to run as nobody")
async def test_exit_code_when_the_socket_is_not_accessible(served: Served) -> None:
    # The socket is 0660 root:root (the agent's user and no group given): nobody may not.
    result = await run_ctl("--socket", str(served.path), "status", user="nobody")
    assert result.code == fabricctl.EXIT_PERMISSION, result.err
    assert result.err.startswith(f"fabricctl: permission denied on {served.path}")
    assert result.err.count("\n") == 1


@pytest.mark.skipif(not _can_switch_user(), reason="needs root and setpriv to run as nobody")
async def test_the_socket_group_grants_access(sock_dir: Path) -> None:
    path = sock_dir / "agent.sock"
    group = pwd.getpwnam("nobody").pw_gid
    async with StatusServer(FakeProvider(), EventLog(), socket_path=path, socket_group=group):
        result = await run_ctl("--socket", str(path), "attachments", "--json", user="nobody")
    assert result.code == 0, result.err
    assert [e["node"] for e in result.json()] == ["node-a", "node-b", "node-c", "node-d"]


# ---- plain gRPC clients: reflection, health, event streams ----


async def test_grpcurl_lists_describes_and_calls_through_reflection(served: Served) -> None:
    """grpcurl knows nothing of the agent but what reflection serves."""
    listed = await asyncio.to_thread(grpcurl, served.path, "list")
    assert listed.returncode == 0, listed.stderr
    assert SERVICE_NAME == "kube_fabric_agent.v1.FabricStatus"
    assert {SERVICE_NAME, "grpc.health.v1.Health"} <= set(listed.stdout.split())
    described = await asyncio.to_thread(grpcurl, served.path, "describe", SERVICE_NAME)
    assert described.returncode == 0, described.stderr
    assert "rpc GetStatus" in described.stdout and "rpc WatchEvents" in described.stdout
    health = await asyncio.to_thread(grpcurl_json, served.path, "grpc.health.v1.Health/Check",
                                     data={"service": SERVICE_NAME})
    assert health == {"status": "SERVING"}
    reply = await asyncio.to_thread(grpcurl_json, served.path, f"{SERVICE_NAME}/GetStatus")
    assert reply["health"] == "HEALTH_OK"
    assert reply["version"] == "0.1.0" and reply["kubernetes"]["nodes"] == 212


async def test_health_checking(served: Served) -> None:
    async with grpc.aio.insecure_channel(served.target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", SERVICE_NAME):
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        await served.server.set_serving(False)
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=5)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_watch_events_in_order_with_history_for_late_clients(served: Served) -> None:
    log = served.events
    log.emit("node_attached", "node-a", "swp1")
    async with grpc.aio.insecure_channel(served.target) as channel:
        stub = pb_grpc.FabricStatusStub(channel)
        early = stub.WatchEvents(pb.WatchEventsRequest())
        first = await asyncio.wait_for(early.read(), 10)
        assert (first.seq, first.kind) == (1, pb.EVENT_KIND_NODE_ATTACHED)
        await wait_for(lambda: log.subscribers == 1, timeout=10)
        kinds = ["pod_added", "pod_removed", "session_up", "session_down", "apply_result",
                 "threshold_crossed", "refusal", "node_detached"]
        for i, kind in enumerate(kinds * 25):
            log.emit(kind, f"subject-{i}", f"message {i}")
        got = [await asyncio.wait_for(early.read(), 10) for _ in range(200)]
        assert [e.seq for e in got] == list(range(2, 202))
        assert pb.EventKind.Name(got[0].kind) == "EVENT_KIND_POD_ADDED"
        assert got[-1].subject == "subject-199"

        # A late client gets the retained history first, then live events.
        late = stub.WatchEvents(pb.WatchEventsRequest(after_seq=195))
        replay = [await asyncio.wait_for(late.read(), 10) for _ in range(6)]
        assert [e.seq for e in replay] == [196, 197, 198, 199, 200, 201]
        log.emit("session_up", "swp2", "node-b established")
        assert (await asyncio.wait_for(late.read(), 10)).seq == 202
        assert (await asyncio.wait_for(early.read(), 10)).seq == 202

        # history_only ends the stream; kinds filter.
        history = [e async for e in stub.WatchEvents(pb.WatchEventsRequest(
            history_only=True, kinds=[pb.EVENT_KIND_NODE_DETACHED]))]
        assert len(history) == 25 and {e.kind for e in history} == {pb.EVENT_KIND_NODE_DETACHED}

        early.cancel()
        late.cancel()
        await wait_for(lambda: log.subscribers == 0, timeout=10)


async def test_stopping_the_server_ends_event_streams(sock_dir: Path) -> None:
    events = EventLog()
    server = StatusServer(FakeProvider(), events, socket_path=sock_dir / "agent.sock")
    await server.start()
    async with grpc.aio.insecure_channel(f"unix:{sock_dir / 'agent.sock'}") as channel:
        stream = pb_grpc.FabricStatusStub(channel).WatchEvents(pb.WatchEventsRequest())
        await wait_for(lambda: events.subscribers == 1, timeout=10)
        await server.stop(grace=5)
        async with asyncio.timeout(5):  # ended by the server, not by the grace period
            assert await stream.read() == grpc.aio.EOF
        assert await stream.code() == grpc.StatusCode.OK


# ---- TCP with mutual TLS ----


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_cert: Path  # a client certificate from another CA
    rogue_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _make_ca(d: Path, name: str) -> None:
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2",
             "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)


def _make_leaf(d: Path, name: str, ca: str, ext: str) -> None:
    (d / f"{name}.ext").write_text(ext)
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext",
             cwd=d)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    _make_ca(d, "ca")
    _make_ca(d, "rogue-ca")
    _make_leaf(d, "server", "ca", "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
               "extendedKeyUsage=serverAuth\n")
    _make_leaf(d, "client", "ca", "extendedKeyUsage=clientAuth\n")
    _make_leaf(d, "rogue", "rogue-ca", "extendedKeyUsage=clientAuth\n")
    return Pki(d / "ca.crt", d / "server.crt", d / "server.key", d / "client.crt",
               d / "client.key", d / "rogue.crt", d / "rogue.key")


async def _get_status(address: str, creds: grpc.ChannelCredentials) -> pb.GetStatusResponse:
    async with grpc.aio.secure_channel(address, creds) as channel:
        return await pb_grpc.FabricStatusStub(channel).GetStatus(pb.GetStatusRequest(), timeout=5)


async def test_tls_listener_requires_a_client_certificate(pki: Pki) -> None:
    server = StatusServer(
        FakeProvider(), EventLog(), socket_path=None, tcp_address="127.0.0.1:0",
        tls_cert=pki.server_cert, tls_key=pki.server_key, tls_client_ca=pki.ca,
    )
    await server.start()
    try:
        address = f"127.0.0.1:{server.tcp_port}"
        ca = pki.ca.read_bytes()
        good = grpc.ssl_channel_credentials(ca, pki.client_key.read_bytes(),
                                            pki.client_cert.read_bytes())
        reply = await _get_status(address, good)
        assert reply.switch_hostname == "leaf1"

        for creds in (
            grpc.ssl_channel_credentials(ca),  # no client certificate
            grpc.ssl_channel_credentials(ca, pki.rogue_key.read_bytes(),
                                         pki.rogue_cert.read_bytes()),  # wrong CA
        ):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await _get_status(address, creds)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE

        async with grpc.aio.insecure_channel(address) as plain:  # no TLS at all
            with pytest.raises(grpc.aio.AioRpcError):
                await pb_grpc.FabricStatusStub(plain).GetStatus(pb.GetStatusRequest(), timeout=5)

        ctl = await run_ctl("--address", address, "--tls-ca", str(pki.ca), "--tls-cert",
                            str(pki.client_cert), "--tls-key", str(pki.client_key),
                            "attachments", "--json")
        assert ctl.code == 0, ctl.err
        assert len(ctl.json()) == 4
        refused = await run_ctl("--address", address, "--tls-ca", str(pki.ca), "--tls-cert",
                                str(pki.rogue_cert), "--tls-key", str(pki.rogue_key), "status")
        assert refused.code == fabricctl.EXIT_NOT_RUNNING, refused.err
    finally:
        await server.stop(grace=0.1)


@pytest.mark.parametrize(("peer", "identity"), [
    ("ipv4:192.0.2.7:41234", "ipv4:192.0.2.7"),
    ("ipv4:192.0.2.7:41235", "ipv4:192.0.2.7"),  # another connection, the same client
    ("ipv6:[2001:db8::7]:41234", "ipv6:2001:db8::7"),
    ("unix:", "the unix socket"),
    ("unix:/run/x.sock", "the unix socket"),
])
def test_client_identity(peer: str, identity: str) -> None:
    assert client_identity(peer) == identity


async def test_one_client_cannot_hold_every_stream(sock_dir: Path, pki: Pki) -> None:
    events = EventLog()
    server = StatusServer(
        FakeProvider(), events, socket_path=sock_dir / "agent.sock", tcp_address="127.0.0.1:0",
        tls_cert=pki.server_cert, tls_key=pki.server_key, tls_client_ca=pki.ca,
    )
    await server.start()
    creds = grpc.ssl_channel_credentials(pki.ca.read_bytes(), pki.client_key.read_bytes(),
                                         pki.client_cert.read_bytes())
    try:
        async with (grpc.aio.insecure_channel(f"unix:{sock_dir / 'agent.sock'}") as local,
                    grpc.aio.secure_channel(f"127.0.0.1:{server.tcp_port}", creds) as remote):
            hog = pb_grpc.FabricStatusStub(local)
            held = [hog.WatchEvents(pb.WatchEventsRequest()) for _ in range(MAX_STREAMS_PER_CLIENT)]
            await wait_for(lambda: events.subscribers == MAX_STREAMS_PER_CLIENT, timeout=10)

            # One more is refused, with a message that says why.
            extra = hog.WatchEvents(pb.WatchEventsRequest())
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await asyncio.wait_for(extra.read(), 10)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert f"at most {MAX_STREAMS_PER_CLIENT} per client" in (info.value.details() or "")
            # ... and it did not become a subscription.
            assert events.subscribers == MAX_STREAMS_PER_CLIENT

            # Unary calls from the same socket are still answered.
            reply = await hog.GetStatus(pb.GetStatusRequest(), timeout=5)
            assert reply.switch_hostname == "leaf1"

            # Another client is served, streams included.
            other = pb_grpc.FabricStatusStub(remote)
            follow = other.WatchEvents(pb.WatchEventsRequest(skip_history=True))
            await wait_for(lambda: events.subscribers == MAX_STREAMS_PER_CLIENT + 1, timeout=10)
            events.emit("session_up", "swp1", "node-a established")
            got = await asyncio.wait_for(follow.read(), 10)
            assert got.subject == "swp1"
            assert (await other.GetStatus(pb.GetStatusRequest(), timeout=5)).version

            # A closed stream gives its slot back.
            held.pop().cancel()
            await wait_for(lambda: events.subscribers == MAX_STREAMS_PER_CLIENT, timeout=10)
            again = hog.WatchEvents(pb.WatchEventsRequest(skip_history=True))
            await wait_for(lambda: events.subscribers == MAX_STREAMS_PER_CLIENT + 1, timeout=10)
            for stream in [*held, again, follow]:
                stream.cancel()
            await wait_for(lambda: events.subscribers == 0, timeout=10)
            await wait_for(lambda: not server.stream_limit.open, timeout=10)
    finally:
        await server.stop(grace=0.1)


@pytest.mark.skipif(not _can_switch_user(), reason="needs root and setpriv to run as nobody")
async def test_a_socket_group_the_agent_is_not_in_is_a_clear_start_error(sock_dir: Path) -> None:
    # The agent runs as frr, not root: it can only give the socket one of its own groups.
    os.chmod(sock_dir, 0o777)
    script = (
        "import asyncio, sys\n"
        "from agent.status.server import StatusServer\n"
        "from agent.status.model import EventLog\n"
        "from tests.fake_status import FakeProvider\n"
        "async def main():\n"
        f"    s = StatusServer(FakeProvider(), EventLog(), socket_path='{sock_dir}/agent.sock',\n"
        "                     socket_group=0)\n"
        "    try:\n"
        "        await s.start()\n"
        "    except PermissionError as exc:\n"
        "        print(exc)\n"
        "        sys.exit(7)\n"
        "asyncio.run(main())\n"
    )
    entry = pwd.getpwnam("nobody")
    proc = await asyncio.create_subprocess_exec(
        "setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--clear-groups", "--",
        sys.executable, "-c", script, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    async with asyncio.timeout(30):
        out, err = await proc.communicate()
    assert proc.returncode == 7, err.decode()
    assert "not a member of it" in out.decode()
    assert os.listdir(sock_dir) == []  # neither the socket nor the staging directory is left
