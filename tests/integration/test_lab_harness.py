"""The namespace harness realizes containerlab/leaf-servers.clab.yml -- the file users deploy
with containerlab -- and it behaves: FRR runs on every node with its bound config, the cabling is
right, BGP unnumbered comes up once the leaf has a BGP config, recabling moves a session, and
down() leaves nothing behind even when the test body raised.

Needs root (CI runs as root): without it these tests FAIL instead of skipping, so a CI that lost
its privileges cannot go green by running nothing.

The tests share one lab (module scope) and run in file order; the last one builds the lab again
on purpose (up() must first clear the leftovers of the same lab) and proves the teardown.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab import clab
from lab.netns import STATE_ROOT, Lab, LabError
from lab.topotest import run_and_expect, wait_until

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
LAB_FILE = REPO / "containerlab" / "leaf-servers.clab.yml"
SERVERS = {"srv1": 1, "srv2": 2, "srv3": 3}
FRR_PATTERN = "/usr/lib/frr/.* -N kfa-"
#: What the agent will render for real; here only enough to prove the wiring.
LEAF_BGP = [
    "configure terminal",
    "router bgp 65101",
    "bgp router-id 10.0.0.1",
    "no bgp ebgp-requires-policy",
    "neighbor swp1 interface remote-as external",
    "neighbor swp2 interface remote-as external",
    "neighbor swp3 interface remote-as external",
    "neighbor swp4 interface remote-as external",
    "neighbor swp51 interface remote-as external",
    "address-family ipv4 unicast",
    "network 10.0.0.1/32",
]


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.fail(
            "the lab integration tests need root (network namespaces, veth pairs, FRR daemons); "
            "CI runs them as root -- run: sudo .venv/bin/pytest -m integration tests/integration",
            pytrace=False,
        )


def frr_daemons_of_lab() -> list[str]:
    proc = subprocess.run(["pgrep", "-a", "-f", FRR_PATTERN], capture_output=True, text=True)
    return proc.stdout.splitlines()


def lab_namespaces() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith("kfa-")]


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    require_root()
    with Lab.from_file(LAB_FILE) as lab:
        print(f"\nlab up in {lab.up_seconds:.2f} s")
        yield lab


def leaf_peers(lab: Lab) -> dict[str, Any]:
    return lab.vtysh_json("leaf1", "show bgp ipv4 unicast summary json").get("peers", {})


def kernel_route(lab: Lab, node: str, prefix: str) -> dict[str, Any] | None:
    """The kernel's IPv4 route for ``prefix`` in ``node`` (ip -j shows host routes without /32)."""
    wanted = {prefix, prefix.removesuffix("/32")}
    return next((r for r in lab.ip_json(node, "route") if r.get("dst") in wanted), None)


def test_up_builds_the_topology_file(lab: Lab) -> None:
    assert lab.up_seconds is not None and lab.up_seconds < 20
    assert sorted(lab_namespaces()) == [f"kfa-{n}" for n in sorted(lab.topology.nodes)]

    links = {lk["ifname"]: lk for lk in lab.ip_json("leaf1", "link", "show")}
    assert set(links) == {"lo", *lab.topology.interfaces_of("leaf1")}  # swp4: no link, no port
    assert "swp4" not in links
    for port in ("swp1", "swp2", "swp3", "swp51"):
        assert links[port]["operstate"] == "UP", links[port]
    assert links["swp1"]["mtu"] == 9500  # containerlab's default
    assert links["swp51"]["mtu"] == 9216
    assert links["swp51"]["address"] == "02:00:00:01:00:51"
    assert lab.exec("leaf1", ["sysctl", "-n", "net.ipv4.ip_forward"]).stdout.strip() == "1"
    assert lab.exec("leaf1", ["hostname"]).stdout.strip() == "leaf1"
    assert lab.exec("leaf1", ["sh", "-c", "echo $KFA_NODE_ROLE"]).stdout.strip() == "leaf"

    for node, n in SERVERS.items():
        addrs = lab.ip_json(node, "addr", "show", "dev", "lo")[0]["addr_info"]
        assert {a["local"] for a in addrs} >= {f"192.168.10.{n}", f"10.244.{n}.10"}
        assert kernel_route(lab, node, f"10.244.{n}.0/24")["type"] == "blackhole"  # type: ignore[index]

        running = lab.vtysh(node, "show running-config")
        assert f"hostname {node}\n" in running
        assert f"router bgp 6520{n}\n" in running
        assert f"network 10.244.{n}.0/24" in running
        summary = lab.vtysh_json(node, "show bgp ipv4 unicast summary json")
        assert summary["as"] == 65200 + n
        assert summary["routerId"] == f"192.168.10.{n}"
        assert "eth1" in summary["peers"]

    pids = lab.frr("leaf1").pids()
    assert set(pids) == {"zebra", "bgpd", "staticd"}
    assert "router bgp" not in lab.vtysh("leaf1", "show running-config")  # agent's job
    assert lab.frr_conf_path("leaf1") == Path("/etc/frr/kfa-leaf1/frr.conf")
    assert "hostname leaf1" in lab.frr_conf_path("leaf1").read_text()


@pytest.fixture
def leaf_bgp(lab: Lab) -> Iterator[None]:
    """A minimal leaf BGP config for the duration of one test (the agent renders the real one)."""
    lab.vtysh("leaf1", *LEAF_BGP)
    yield
    # Not `no router bgp`: FRR 8.4.4's bgpd segfaults deleting an instance with interface
    # peers (peer_delete -> sockunion_same, seen here). A restart of bgpd with the saved
    # bootstrap config resets the leaf the way watchfrr would.
    lab.frr_restart("leaf1", "bgpd")


def test_bgp_unnumbered_comes_up_through_the_lab_wiring(lab: Lab, leaf_bgp: None) -> None:
    started = time.monotonic()
    run_and_expect(
        lambda: leaf_peers(lab),
        {
            "swp1": {"state": "Established", "remoteAs": 65201},
            "swp51": {"state": "Established", "remoteAs": 65000},
        },
        timeout=30,
    )
    print(f"\nsrv1 and spine1 sessions Established {time.monotonic() - started:.1f} s after config")
    route = wait_until(
        lambda: kernel_route(lab, "leaf1", "10.244.1.0/24"),
        timeout=10,
        desc="10.244.1.0/24 in leaf1's kernel",
    )
    assert route["dev"] == "swp1" and route["via"]["family"] == "inet6", route
    # BGP's hostname capability carries the node name, as from a container.
    neighbor = lab.vtysh_json("leaf1", "show bgp neighbors swp1 json")["swp1"]
    assert neighbor.get("hostname") == "srv1", neighbor.get("hostname")
    # The spine hears what the leaf advertises upstream (here: everything, no policy yet).
    wait_until(
        lambda: kernel_route(lab, "spine1", "10.244.1.0/24"),
        timeout=10,
        desc="10.244.1.0/24 at spine1",
    )
    # Data path: the pod address on srv1 answers from the leaf, routed by BGP.
    lab.spawn(
        "srv1",
        ["socat", "TCP-LISTEN:8080,bind=10.244.1.10,fork,reuseaddr", "SYSTEM:echo pod-srv1"],
    )
    wait_until(
        lambda: kernel_route(lab, "srv1", "10.0.0.1/32"),
        timeout=10,
        desc="leaf1's loopback at srv1 (return path)",
    )
    reply = run_and_expect(
        lambda: lab.exec(
            "leaf1", ["socat", "-T2", "-", "TCP:10.244.1.10:8080,connect-timeout=2"], input=""
        ).stdout.strip(),
        "pod-srv1",
        timeout=10,
    )
    assert reply == "pod-srv1"


def test_relink_moves_srv2_to_swp4_and_the_session_follows(lab: Lab, leaf_bgp: None) -> None:
    run_and_expect(lambda: leaf_peers(lab), {"swp2": {"state": "Established"}}, timeout=30)
    new = lab.relink("leaf1:swp2", "leaf1:swp4")
    assert str(new) == "srv2:eth1 <-> leaf1:swp4"
    names = {lk["ifname"] for lk in lab.ip_json("leaf1", "link", "show")}
    assert "swp4" in names and "swp2" not in names
    started = time.monotonic()
    run_and_expect(
        lambda: leaf_peers(lab),
        {"swp4": {"state": "Established", "remoteAs": 65202}},
        timeout=30,
    )
    print(f"\nsrv2 Established on swp4 {time.monotonic() - started:.1f} s after relink")
    route = wait_until(
        lambda: kernel_route(lab, "leaf1", "192.168.10.2/32"),
        timeout=10,
        desc="srv2's InternalIP in leaf1's kernel",
    )
    assert route["dev"] == "swp4", route
    # and back, so the cabling matches the file again for later tests
    lab.relink("leaf1:swp4", "leaf1:swp2")
    run_and_expect(lambda: leaf_peers(lab), {"swp2": {"state": "Established"}}, timeout=30)


def test_relink_refuses_a_cabled_or_unknown_endpoint(lab: Lab) -> None:
    with pytest.raises(Exception, match="already cabled"):
        lab.relink("leaf1:swp2", "leaf1:swp3")
    with pytest.raises(Exception, match="no link at leaf1:swp9"):
        lab.relink("leaf1:swp9", "leaf1:swp4")


def test_frr_restart_brings_a_daemon_back_with_the_saved_config(lab: Lab) -> None:
    old = lab.frr("srv3").pids()["bgpd"]
    new = lab.frr_restart("srv3", "bgpd")
    assert new != old
    assert lab.frr("srv3").pids()["bgpd"] == new
    assert "router bgp 65203" in lab.vtysh("srv3", "show running-config")


def test_a_lab_in_use_is_not_torn_down_by_another_user(lab: Lab) -> None:
    other = Lab.from_file(LAB_FILE, lock_timeout=0.5)
    with pytest.raises(LabError, match=f"in use by pid {os.getpid()}"):
        other.up()
    with pytest.raises(LabError, match="in use"):
        other.down()
    assert len(lab_namespaces()) == len(clab.load(LAB_FILE).nodes)
    assert set(lab.frr("leaf1").pids()) == {"zebra", "bgpd", "staticd"}


def test_down_leaves_nothing_even_when_the_body_raised(lab: Lab) -> None:
    """Runs last. The shared lab goes down; a separate process brings the lab up and exits (as a
    crashed run would leave it); a new Lab's up() must clear that, and its down() must leave
    nothing although the body raised with spawned processes (socat, sleep) running in and
    outside the namespaces."""
    lab.down()
    assert lab_namespaces() == [] and frr_daemons_of_lab() == []
    up = subprocess.run(
        [sys.executable, "-m", "lab", "up", str(LAB_FILE)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert up.returncode == 0, up.stderr
    assert len(lab_namespaces()) == len(clab.load(LAB_FILE).nodes) and frr_daemons_of_lab()

    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            conn.sendall(b"api-server\n")

    threading.Thread(target=serve, daemon=True).start()
    spawned: list[int] = []
    with pytest.raises(RuntimeError, match="test body failed"), Lab.from_file(LAB_FILE) as again:
        sleeper = again.spawn("leaf1", ["sleep", "600"])
        host_side, node_side = again.forward("leaf1", "127.0.0.1:6443", f"127.0.0.1:{port}")
        spawned += [sleeper.pid, host_side.pid, node_side.pid]
        out = again.exec("leaf1", ["socat", "-T2", "-", "TCP:127.0.0.1:6443"], input="")
        assert out.stdout == "api-server\n"
        raise RuntimeError("test body failed")
    server.close()

    assert lab_namespaces() == []
    assert frr_daemons_of_lab() == []
    for pid in spawned:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()
    assert not (STATE_ROOT / "kfa").exists()
    for node in lab.topology.nodes:
        assert not Path(f"/var/run/frr/kfa-{node}").exists()
        assert not Path(f"/etc/frr/kfa-{node}").exists()
    # down() is idempotent: the module fixture calls it once more at teardown.
    Lab.from_file(LAB_FILE).down()
